"""Numerics the backends promise beyond the tolerance table (docs/OPS.md, issue 11.5, 17.6).

* The soft-CE true-class gradient at a saturated softmax: error against an fp64
  reference at most twice that of torch's own fp32 ``F.cross_entropy``.
* Infinite and NaN logits: every backend gives what the reference gives (a -inf logit the
  target excludes leaves the loss finite, a row holding +inf has loss +inf, CW treats
  NaN as the max), checked for the Triton kernels under the interpreter.
"""
import pytest
import torch
import torch.nn.functional as F
from conftest import device_backends

import fastmix.ops as fops

CPU_BACKENDS = [b for d, b in device_backends() if d == "cpu"]


def _saturated_logits(B=256, C=10, seed=0):
    """Rows whose true class holds p_y between 1 - 1e-2 and 1 - 1e-7 (the regime where
    p_y - 1 cancels), and a few misclassified rows."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g)
    y = torch.randint(0, C, (B,), generator=g)
    margin = torch.linspace(4.0, 18.0, B)
    z[torch.arange(B), y] += margin
    return z, y


def _grad(fn, z, *args):
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(z, *args), z)
    return g


@pytest.mark.parametrize("C", [10, 1000])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_true_class_gradient_accuracy(backend, C):
    z, y = _saturated_logits(C=C)
    exact = _grad(lambda t, y: F.cross_entropy(t, y, reduction="sum"), z.double(), y)
    torch_err = (_grad(lambda t, y: F.cross_entropy(t, y, reduction="sum"), z, y).double() - exact).abs()
    ours = _grad(lambda t, y: fops.soft_cross_entropy(t, y, reduction="sum", backend=backend), z, y).double()
    our_err = (ours - exact).abs()
    rows = torch.arange(z.shape[0])
    # the true class, where the cancellation happens, and the whole gradient
    t_ours, t_torch = float(our_err[rows, y].max()), float(torch_err[rows, y].max())
    a_ours, a_torch = float(our_err.max()), float(torch_err.max())
    # relative error at the true class, where the value is -(1 - p_y), tiny
    rel_ours = float((our_err[rows, y] / exact[rows, y].abs()).max())
    rel_torch = float((torch_err[rows, y] / exact[rows, y].abs()).max())
    ok = t_ours <= 2 * t_torch and a_ours <= 2 * a_torch and rel_ours <= 2 * rel_torch
    assert ok, (t_ours, t_torch, a_ours, a_torch, rel_ours, rel_torch)
    # and it is a real improvement where p_y is near 1: relative error near fp32 epsilon
    assert rel_ours < 1e-4, rel_ours


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_soft_target_gradient_label_classes_accuracy(backend):
    """Mixup targets (two labels, smoothing): label classes keep the precision too."""
    z, y = _saturated_logits(B=64, C=10, seed=1)
    yb = (y + 1) % 10
    w = torch.full((64,), 0.999)
    sa = torch.full((64,), 1.0)
    d = z.double()
    t = fops.soft_target_ref(y, yb, w, sa, sa, 10).double()
    exact = torch.softmax(d, 1) - t
    ours = _grad(lambda u: fops.soft_cross_entropy(u, y, yb, w, sa, sa, reduction="sum", backend=backend), z)
    zt = z.clone().requires_grad_(True)
    (tg,) = torch.autograd.grad((-(t.float() * torch.log_softmax(zt, 1))).sum(), zt)
    our_err = float((ours.double() - exact).abs().max())
    torch_err = float((tg.double() - exact).abs().max())
    assert our_err <= 2 * torch_err, (our_err, torch_err)


def _inf_cases():
    torch.manual_seed(3)
    C = 5000
    z1 = torch.randn(3, C) * 2
    z1[:, :2048] = float("-inf")  # masked logits the (hard) target excludes
    y1 = torch.tensor([3000, 4999, 2048])
    z2 = torch.randn(3, 10)
    z2[0, 7] = float("inf")  # +inf off the label: loss +inf
    y2 = torch.tensor([2, 2, 2])
    z3 = torch.randn(3, 10)
    z3[1] = float("-inf")  # a row of -inf
    y3 = torch.tensor([0, 1, 2])
    return [("masked -inf, C=5000", z1, y1), ("+inf off label", z2, y2), ("row of -inf", z3, y3)]


def _same(a, b):
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b)) | ((a - b).abs() <= 1e-4 * b.abs().clamp(min=1))).all())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_soft_ce_with_infinite_logits_matches_reference(backend):
    for name, z, y in _inf_cases():
        ref = fops.soft_cross_entropy_ref(z, y, reduction="none")
        got = fops.soft_cross_entropy(z, y, reduction="none", backend=backend)
        assert _same(got, ref), (name, got, ref)
    # the reference itself, against torch: masked -inf logits give F.cross_entropy's value
    name, z, y = _inf_cases()[0]
    assert torch.allclose(fops.soft_cross_entropy_ref(z, y, reduction="none"),
                          F.cross_entropy(z, y, reduction="none"), rtol=1e-5)
    assert torch.isfinite(fops.soft_cross_entropy_ref(z, y, reduction="none")).all()
    _, z, y = _inf_cases()[1]
    assert fops.soft_cross_entropy_ref(z, y, reduction="none")[0] == float("inf")


def test_soft_ce_lse_follows_torch_logsumexp_on_infinities():
    if "triton" not in CPU_BACKENDS:
        pytest.skip("the Triton interpreter is not available here")
    z = torch.randn(4, 3000)
    z[0, :2048] = float("-inf")
    z[1, 5] = float("inf")
    z[2] = float("-inf")
    y = torch.zeros(4, dtype=torch.int64)
    one = torch.ones(4)
    _, lse = torch.ops.fastmix.soft_ce_fwd_triton(z, y, y, one, one, one)
    want = torch.logsumexp(z, 1)
    assert _same(lse, want), (lse, want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cw_margin_nan_is_the_max(backend):
    torch.manual_seed(4)
    z = torch.randn(3, 10)
    z[0, 4] = float("nan")  # NaN among the others: margin kappa (NaN < kappa is false)
    z[1, 1] = float("nan")  # NaN at the label
    y = torch.tensor([1, 1, 2])
    ref = fops.cw_margin_ref(z, y, kappa=5.0, reduction="none")
    got = fops.cw_margin(z, y, kappa=5.0, reduction="none", backend=backend)
    assert _same(got, ref), (got, ref)
    assert got[0] == 5.0 and got[1] == 5.0
    if backend == "triton":
        _, jstar = torch.ops.fastmix.cw_margin_fwd_triton(z, y, 5.0)
        assert int(jstar[0]) == 4  # the first NaN, as torch.argmax and the C++ kernel
    if backend != "torch":  # (autograd of the reference's amax turns a NaN row's 0 into NaN)
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fops.cw_margin(zz, y, kappa=5.0, reduction="sum", backend=backend), zz)
        assert (g[:2] == 0).all()  # clamped rows: no gradient


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_soft_ce_rows_longer_than_one_tile(backend):
    """C > 2048: the Triton backward takes the per-row q kernel (rows span several column
    tiles); the saturated true class keeps its precision there too."""
    torch.manual_seed(5)
    B, C = 3, 3000
    z = torch.randn(B, C)
    y = torch.tensor([0, 2047, 2999])
    z[torch.arange(B), y] += torch.tensor([2.0, 14.0, 20.0])
    yb, w = torch.tensor([5, 2048, 1]), torch.tensor([1.0, 0.7, 0.999])
    sa = torch.tensor([1.0, 0.9, 1.0])
    g = _grad(lambda u: fops.soft_cross_entropy(u, y, yb, w, sa, sa, reduction="sum", backend=backend), z)
    t = fops.soft_target_ref(y, yb, w, sa, sa, C).double()
    exact = torch.softmax(z.double(), 1) - t
    rows = torch.arange(B)
    err = (g.double() - exact).abs()
    assert float(err.max()) < 1e-6, float(err.max())
    rel = (err[rows, y] / exact[rows, y].abs()).max()
    assert rel < 1e-3, float(rel)
