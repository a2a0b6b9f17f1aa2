import torch, traceback
from torch import nn
from fastmix.methods.mixup_inference import MixupInference
torch.manual_seed(0)
m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
px = torch.rand(40, 1, 8, 8); py = torch.arange(40) % 10
def t(name, f):
    try:
        r = f(); print(name, "->", "OK", tuple(r.shape) if hasattr(r, "shape") else r, "nan" if hasattr(r,"isnan") and bool(r.isnan().any()) else "")
    except Exception as e:
        print(name, "->", type(e).__name__, str(e).splitlines()[0][:150])
mi = lambda **k: MixupInference(m, px, py, **k)
t("nan input", lambda: mi()(torch.full((2, 1, 8, 8), float("nan"))))
t("x255", lambda: mi()(torch.rand(2, 1, 8, 8) * 255))
t("float64", lambda: mi()(torch.rand(2, 1, 8, 8).double()))
t("float64 pool", lambda: MixupInference(m, px.double(), py)(torch.rand(2, 1, 8, 8)))
t("empty batch", lambda: mi()(torch.rand(0, 1, 8, 8)))
t("empty pool", lambda: MixupInference(m, px[:0], py[:0]))
t("num_classes 5", lambda: mi(num_classes=5))
t("num_classes 12", lambda: mi(num_classes=12)(torch.rand(2, 1, 8, 8)))
t("pool x255", lambda: MixupInference(m, px * 255, py)(torch.rand(2, 1, 8, 8)))
t("pool nan", lambda: MixupInference(m, px * float('nan'), py)(torch.rand(2, 1, 8, 8)))
