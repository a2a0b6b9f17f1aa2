"""Bad input raises ValueError naming the argument and the value; nothing is coerced.

Metadata errors raise on every call; value errors (NaN, a tensor out of its range) are
found by the opt-in scans (``check=True``, or ``FASTMIX_CHECK=1`` for the default).
"""
import pytest
import torch

import fastmix.ops as fops

X = torch.rand(2, 3, 4, 4)


def _raises(match, fn, *a, **k):
    with pytest.raises(ValueError, match=match):
        fn(*a, **k)


def _scan_raises(match, fn, *a, **k):
    """A value error: found with check=True only."""
    with pytest.raises(ValueError, match=match):
        fn(*a, check=True, **k)


def test_pgd_step_errors():
    g, xn = torch.randn_like(X), X.clone()
    _raises(r"eps must .*-0\.1", fops.pgd_step, X, g, xn, -0.1, 0.01)
    _scan_raises(r"eps must lie in .*-1", fops.pgd_step, X, g, xn, torch.tensor([0.1, -1.0]), 0.01)
    _raises(r"eps must be a float or a tensor of shape \(2,\), got shape \(3,\)", fops.pgd_step, X, g, xn,
            torch.ones(3), 0.01)
    _raises(r"grad must have the shape of x", fops.pgd_step, X, g[:1], xn, 0.1, 0.01)
    _raises(r"x_nat must have the dtype of x", fops.pgd_step, X, g, xn.half(), 0.1, 0.01)
    _raises(r"x must be float32, bfloat16 or float16, got torch.float64", fops.pgd_step, X.double(), g, xn, 0.1, 0.01)
    bad = X.clone()
    bad[1, 2, 3, 0] = float("nan")
    _scan_raises(r"x contains a non-finite value \(nan\)", fops.pgd_step, bad, g, xn, 0.1, 0.01)
    _scan_raises(r"grad contains a non-finite value", fops.pgd_step, X, g.masked_fill(g > 1, float("inf")), xn, 0.1, 0.01)
    _raises(r"norm must be 'linf' or 'l2', got 'l1'", fops.pgd_step, X, g, xn, 0.1, 0.01, norm="l1")
    _raises(r"lo must not exceed hi", fops.pgd_step, X, g, xn, 0.1, 0.01, lo=1.0, hi=0.0)
    _raises(r"eps must be a finite number .* got nan", fops.pgd_step, X, g, xn, float("nan"), 0.01)
    _raises(r"x must be a torch.Tensor", fops.pgd_step, X.numpy(), g, xn, 0.1, 0.01)
    if torch.cuda.is_available():
        _raises(r"grad is on cuda", fops.pgd_step, X, g.cuda(), xn, 0.1, 0.01)


def test_random_start_errors():
    _raises(r"eps must .*-0\.5", fops.random_start, X, -0.5)
    _raises(r"x_nat must be float32", fops.random_start, X.to(torch.int64), 0.1)


def test_mix_errors():
    idx = torch.tensor([0, 1])
    _scan_raises(r"index must lie in \[0, 1\] \(b has 2 rows\); got 2", fops.mix, X, X, 0.5, torch.tensor([0, 2]))
    _scan_raises(r"index must lie in .* got -1", fops.mix, X, X, 0.5, torch.tensor([-1, 0]))
    _raises(r"index must be an int64", fops.mix, X, X, 0.5, idx.float())
    _raises(r"index must have shape \(2,\)", fops.mix, X, X, 0.5, torch.tensor([0, 1, 1]))
    _raises(r"b must have a's per-sample shape", fops.mix, X, X[:, :2], 0.5, idx)
    _raises(r"b must have the dtype of a", fops.mix, X, X.half(), 0.5, idx)
    _raises(r"lam must be a float or a tensor of shape \(2,\)", fops.mix, X, X, torch.rand(3), idx)
    _scan_raises(r"a contains a non-finite value", fops.mix, X.masked_fill(X > 0.5, float("nan")), X, 0.5, idx)


def test_soft_cross_entropy_errors():
    z = torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    _scan_raises(r"ya must lie in \[0, 9\] \(logits have C=10 classes\); got 10", fops.soft_cross_entropy, z,
            torch.tensor([0, 10, 1, 1]))
    _scan_raises(r"yb must lie in .* got -3", fops.soft_cross_entropy, z, y, torch.tensor([0, 1, -3, 1]))
    _scan_raises(r"w must lie in \[0.0, 1.0\]; got 1.5", fops.soft_cross_entropy, z, y, y, torch.tensor([0.5, 1.5, 0., 0.]))
    _raises(r"sa must be a finite number in \[0.0, 1.0\], got 2.0", fops.soft_cross_entropy, z, y, sa=2.0)
    _raises(r"logits must have 2 dimensions", fops.soft_cross_entropy, z[None], y)
    _raises(r"logits must have at least 2 classes", fops.soft_cross_entropy, z[:, :1], torch.zeros(4, dtype=torch.long))
    _scan_raises(r"logits contains a non-finite value \(nan\)", fops.soft_cross_entropy, z.masked_fill(z > 1, float("nan")), y)
    _raises(r"ya must be an int64", fops.soft_cross_entropy, z, y.float())
    _raises(r"reduction must be 'none', 'mean' or 'sum', got 'avg'", fops.soft_cross_entropy, z, y, reduction="avg")


def test_cw_margin_errors():
    z = torch.randn(4, 10)
    _scan_raises(r"y must lie in .* got 11", fops.cw_margin, z, torch.tensor([0, 1, 11, 2]))
    _raises(r"kappa must be a number >= 0, got -1", fops.cw_margin, z, torch.tensor([0, 1, 1, 2]), kappa=-1)


@pytest.mark.parametrize("check", [None, False])
def test_default_and_check_false_skip_value_scans_only(check):
    # metadata errors raise whatever check says; value scans run only when asked
    with pytest.raises(ValueError, match="grad must have the shape"):
        fops.pgd_step(X, X[:1], X, 0.1, 0.1, check=check)
    bad = X.clone()
    bad[0, 0, 0, 0] = float("nan")
    out = fops.pgd_step(bad, X, X, 0.1, 0.1, check=check)  # no host read, no error
    assert torch.isnan(out[0, 0, 0, 0])  # NaN propagates (clamp keeps it), it is not hidden
    z = torch.randn(4, 10).masked_fill(torch.eye(4, 10, dtype=torch.bool), float("nan"))
    assert torch.isnan(fops.soft_cross_entropy(z, torch.tensor([1, 2, 3, 4]), check=check))
    fops.pgd_step(X, X, X, torch.tensor([0.1, -1.0]), 0.1, check=check)  # a tensor eps is not scanned


def test_fastmix_check_env_turns_the_scans_on():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import torch, fastmix.ops as F\n"
            "x = torch.rand(2, 3); x[1, 1] = float('nan')\n"
            "try:\n    F.pgd_step(x, x, x, 0.1, 0.1)\nexcept ValueError as e:\n    print('ERR', e)\n"
            "F.pgd_step(x, x, x, 0.1, 0.1, check=False)\nprint('unchecked ok')\n")
    env = dict(os.environ, FASTMIX_CHECK="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ERR x contains a non-finite value (nan) at flat index 4" in r.stdout
    assert "unchecked ok" in r.stdout
