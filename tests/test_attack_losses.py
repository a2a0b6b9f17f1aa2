"""One validation rule for every attack loss (issue 12): no loss takes a ``check`` argument;
the loop validates the model output and the target once, at the first step, when the
attack is called with ``check=True`` (losses.check_target)."""
import pytest
import torch
from torch import nn

import fastmix.attacks as A
from fastmix.attacks import SoftTarget
from fastmix.attacks.losses import check_target, make_loss
from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

C = 5


class Net(nn.Module):
    def __init__(self, nan=False):
        super().__init__()
        self.fc = nn.Linear(12, C)
        self.nan = nan

    def features(self, x):
        f = x.flatten(1) * self.fc.weight.sum()
        return f * float("nan") if self.nan else f

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return z * float("nan") if self.nan else z


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 2, 2, generator=g), torch.tensor([0, 1, 2, 3])


KW = dict(eps=0.1, alpha=0.02, steps=2)


@pytest.mark.parametrize("loss,targeted", [("ce", False), ("ce", True), ("cw", False), ("cw", True),
                                           ("dlr", False)])
def test_every_loss_rejects_a_label_beyond_the_classes(loss, targeted):
    x, y = _data()
    bad = y.clone()
    bad[2] = C  # one past the last class
    with pytest.raises(ValueError, match=r"y must lie in .*C=5"):
        A.pgd(Net(), x, bad, loss=loss, targeted=targeted, **KW)
    A.pgd(Net(), x, y, loss=loss, targeted=targeted, **KW)  # in range: runs


@pytest.mark.parametrize("loss", ["ce", "cw", "dlr", "kl", "feature", "callable"])
def test_every_loss_rejects_a_non_finite_model_output(loss):
    x, y = _data()
    net = Net(nan=True)
    with pytest.raises(ValueError, match="the model's output contains a non-finite"):
        if loss == "feature":
            A.feature_attack(net, x, eps=0.1)
        elif loss == "callable":
            A.pgd(net, x, y, loss=lambda out, t: out.sum(1), **KW)
        else:
            A.pgd(net, x, None if loss == "kl" else y, loss=loss, **KW)
    # check=False: no validation, no host sync; the NaN simply propagates
    out = A.pgd(net, x, y, loss="ce", check=False, **KW)
    assert out.shape == x.shape


def test_targeted_dlr_in_pgd_names_apgd():
    x, y = _data()
    with pytest.raises(ValueError, match="APGD-T"):
        A.pgd(Net(), x, y, loss="dlr", targeted=True, **KW)


def test_soft_target_weights_are_checked_at_the_first_step():
    x, y = _data()
    with pytest.raises(ValueError, match=r"y.w must lie in"):
        A.pgd(Net(), x, SoftTarget(y, y.flip(0), torch.full((4,), 1.5)), **KW)
    with pytest.raises(ValueError, match=r"y.yb must lie in .*C=5"):
        A.pgd(Net(), x, SoftTarget(y, torch.full((4,), C)), **KW)


def test_check_target_ignores_float_targets_and_losses_take_two_arguments():
    out = torch.randn(4, C)
    check_target(out, torch.log_softmax(out, 1))  # TRADES's own target: not labels
    for name in ("ce", "cw", "dlr"):
        fn, _ = make_loss(name, False)
        assert fn(out, torch.tensor([0, 1, 2, 3])).shape == (4,)
    assert A.dlr(out, torch.tensor([0, 1, 2, 3])).shape == (4,)
