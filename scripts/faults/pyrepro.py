import sys, torch, warnings
from torch import nn
warnings.simplefilter("ignore")
import fastmix
from fastmix.attacks import PGD, FGSM, APGD, AutoAttack, CW
torch.manual_seed(0)
class NaNNet(nn.Module):
    def __init__(self):
        super().__init__(); self.l = nn.Linear(64, 10)
    def forward(self, x):
        return self.l(x.flatten(1)) * float("nan")
good = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
x = torch.rand(4, 1, 8, 8); y = torch.tensor([0, 1, 2, 3])
def t(name, f):
    try:
        r = f(); print(f"{name:38s} -> returned {tuple(r.shape)} (changed: {bool((r != x).any())})")
    except Exception as e:
        print(f"{name:38s} -> {type(e).__name__}: {str(e).splitlines()[0][:160]}")
print("## 8 NaN model output")
for A, kw in ((PGD, dict(steps=2)), (FGSM, {}), (CW, dict(steps=2)), (APGD, dict(steps=2)), (AutoAttack, dict(attacks=("apgd-ce",), steps=2))):
    t(f"{A.__name__}(nan model)", lambda A=A, kw=kw: A(NaNNet(), eps=0.1, **kw)(x, y))
print("## 11 AutoAttack / APGD arguments")
t("AutoAttack fp16 images", lambda: AutoAttack(good, eps=0.1, attacks=("apgd-ce",), steps=2)(x.half(), y))
t("AutoAttack bf16 images", lambda: AutoAttack(good, eps=0.1, attacks=("apgd-ce",), steps=2)(x.bfloat16(), y))
g64 = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
t("AutoAttack float64 model", lambda: AutoAttack(g64, eps=0.1, attacks=("apgd-ce",), steps=2)(x, y))
t("AutoAttack(attacks='apgd-ce')", lambda: AutoAttack(good, eps=0.1, attacks="apgd-ce", steps=2)(x, y))
t("APGD(seed='abc')", lambda: APGD(good, eps=0.1, steps=2, seed="abc")(x, y))
