"""Every available backend of every op against the torch reference.

Inputs are fresh random tensors (seeded per test), in odd shapes, contiguous,
channels-last and non-contiguous, in each dtype; outputs and gradients are compared
with one tolerance table (tests/_tol.py). Independent checks (F.cross_entropy with
a dense probability target, explicit loops) guard the references themselves.
"""
import pytest
import torch
import torch.nn.functional as F
from _tol import assert_close
from conftest import device_backends

import fastmix.ops as fops
from fastmix.ops import _library

DB = device_backends()
DB_IDS = [f"{d}-{b}" for d, b in DB]
COMPILED = [(d, b) for d, b in DB if b != "torch"]
COMPILED_IDS = [f"{d}-{b}" for d, b in COMPILED]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DT_IDS = ["fp32", "bf16", "fp16"]
SHAPES = [(7, 3, 33, 31), (4, 1, 28, 28), (3, 5)]
LAYOUTS = ["contiguous", "channels_last", "strided"]
_ULP = {torch.float32: 1e-6, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}  # at 1.0, a bit over half-ulp


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    if layout == "strided":  # a non-contiguous view: every other element of a wider tensor
        wide = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        v = wide[..., ::2]
        assert not v.is_contiguous()
        return v
    return t


def _pgd_inputs(shape, dtype, device, layout, eps_kind):
    B = shape[0]
    x_nat = torch.rand(shape, device=device).to(dtype)
    eps = torch.rand(B, device=device) * 0.1 + 0.01 if eps_kind == "tensor" else 8 / 255
    e = eps if isinstance(eps, float) else eps.reshape((B,) + (1,) * (len(shape) - 1))
    x = (x_nat.float() + (torch.rand(shape, device=device) * 2 - 1) * e).clamp(0, 1).to(dtype)
    grad = torch.randn(shape, device=device).to(dtype)
    grad.view(-1)[::7] = 0  # sign ties at zero gradient must give a zero step
    return _layout(x, layout), _layout(grad, layout), _layout(x_nat, layout), eps


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_pgd_step(device, backend, norm, dtype, shape, layout):
    x, g, xn, eps = _pgd_inputs(shape, dtype, device, layout, "tensor" if shape[0] % 2 else "float")
    alpha = 2 / 255 if norm == "linf" else 0.5
    out = fops.pgd_step(x, g, xn, eps, alpha, norm=norm, backend=backend)
    ref = fops.pgd_step_ref(x, g, xn, eps, alpha, norm=norm)
    assert out.dtype == dtype and out.shape == x.shape
    if layout == "channels_last" and len(shape) == 4:
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, ref, dtype, what=f"pgd_step {norm}")
    if norm == "linf" and dtype == torch.float32:
        # the L-inf formula has one rounding per operation: fp32 results are bit-exact
        assert torch.equal(out, ref)
    # the constraints hold whatever the backend
    d = (out.float() - xn.float()).reshape(shape[0], -1)
    e = eps if isinstance(eps, float) else eps[:, None]
    slack = _ULP[dtype]
    if norm == "linf":
        assert bool((d.abs() <= e + slack).all())
    else:  # rounding each element to the dtype moves the L2 norm by up to sqrt(D) half-ulps
        assert bool((d.norm(dim=1, keepdim=True) <= e + slack * d.shape[1] ** 0.5).all())
    assert float(out.float().min()) >= 0.0 and float(out.float().max()) <= 1.0


def test_pgd_step_ref_matches_loop():
    """The reference against a literal per-element reading of METHODS.md 1.1."""
    x, g, xn = torch.rand(2, 6), torch.randn(2, 6), torch.rand(2, 6)
    eps, alpha = 0.1, 0.05
    out = fops.pgd_step_ref(x, g, xn, eps, alpha)
    for i in range(2):
        for j in range(6):
            s = (g[i, j] > 0).float() - (g[i, j] < 0).float()
            v = min(max(float(x[i, j] + alpha * s), float(xn[i, j]) - eps), float(xn[i, j]) + eps)
            assert abs(float(out[i, j]) - min(max(v, 0.0), 1.0)) < 1e-6
    out2 = fops.pgd_step_ref(x, g, xn, 0.2, 0.3, norm="l2")
    for i in range(2):
        y = x[i] + 0.3 * g[i] / (g[i].norm() + 1e-10)
        d = y - xn[i]
        y = xn[i] + d * min(1.0, 0.2 / float(d.norm()))
        assert torch.allclose(out2[i], y.clamp(0, 1), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_pgd_step_inplace(device, backend, norm, layout):
    x, g, xn, eps = _pgd_inputs((5, 3, 9, 11), torch.float32, device, layout, "tensor")
    expected = fops.pgd_step_ref(x, g, xn, eps, 0.02, norm=norm)
    ptr = x.data_ptr()
    ret = fops.pgd_step_(x, g, xn, eps, 0.02, norm=norm, backend=backend)
    assert ret is x and x.data_ptr() == ptr
    assert_close(x, expected, what="pgd_step_")


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_pgd_stepper_repeats_the_reference_step(device, backend, norm, layout):
    """K steps through one stepper equal K steps of the reference, in place."""
    x, _, xn, eps = _pgd_inputs((5, 3, 9, 11), torch.float32, device, layout, "tensor")
    ref = x.clone()
    with fops.use_backend(backend):
        step = fops.pgd_stepper(xn, eps, -0.02 if norm == "linf" else 0.3, norm=norm)
    ptr = x.data_ptr()
    for k in range(3):
        g = _layout(torch.randn(x.shape, device=device), layout)
        ref = fops.pgd_step_ref(ref, g, xn, eps, -0.02 if norm == "linf" else 0.3, norm=norm)
        assert step(x, g) is x
        assert_close(x, ref, what=f"pgd_stepper step {k}")
    assert x.data_ptr() == ptr


def test_pgd_stepper_checks_what_it_is_given():
    xn = torch.rand(4, 1, 5, 5)
    with pytest.raises(ValueError, match="eps"):
        fops.pgd_stepper(xn, -0.1, 0.01)
    with pytest.raises(ValueError, match="x_nat"):
        fops.pgd_stepper(xn.long(), 0.1, 0.01)
    step = fops.pgd_stepper(xn, 0.1, 0.01)
    x = xn.clone()
    with pytest.raises(ValueError, match="grad must have the shape of x"):
        step(x, torch.randn(4, 1, 5, 4))
    with pytest.raises(ValueError, match="x_nat must have the shape of x"):
        step(x[:2], torch.randn(2, 1, 5, 5))
    with pytest.raises(ValueError, match="grad must be float32"):
        step(x, torch.randn(4, 1, 5, 5, dtype=torch.float64))
    # another dtype for the iterate: the full op's contract decides (x_nat's dtype required)
    with pytest.raises(ValueError, match="dtype"):
        step(x.half(), torch.randn(4, 1, 5, 5))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_random_start(device, backend, norm, dtype, layout):
    shape = (6, 3, 17, 15)
    xn = _layout(torch.rand(shape, device=device).to(dtype), layout)
    eps = torch.linspace(0.0, 0.5, shape[0], device=device)
    gen = torch.Generator(device=device).manual_seed(123)
    out = fops.random_start(xn, eps, norm=norm, generator=gen, backend=backend)
    gen = torch.Generator(device=device).manual_seed(123)
    ref = fops.random_start_ref(xn, eps, norm=norm, generator=gen)
    assert_close(out, ref, dtype, what=f"random_start {norm}")
    d = (out.float() - xn.float()).reshape(shape[0], -1)
    slack = _ULP[dtype]
    if norm == "linf":
        assert bool((d.abs() <= eps[:, None] + slack).all())
    else:
        assert bool((d.norm(dim=1) <= eps + slack * d.shape[1] ** 0.5).all())
    assert bool((d[0] == 0).all())  # eps = 0 leaves the input as it is
    assert 0.0 <= float(out.float().min()) and float(out.float().max()) <= 1.0


def test_random_start_is_uniform_in_the_ball():
    """Moments of the draw away from the clip: U(-eps, eps) per element (L-inf); radius
    distributed as U^(1/D) (L2), so the mean radius is eps * D / (D + 1)."""
    xn = torch.full((4000, 3), 0.5)
    out = fops.random_start(xn, 0.2)
    d = out - xn
    assert abs(float(d.mean())) < 0.005 and abs(float(d.var()) - 0.2 ** 2 / 3) < 0.001
    out = fops.random_start(xn, 0.2, norm="l2")
    r = (out - xn).norm(dim=1)
    assert abs(float(r.mean()) - 0.2 * 3 / 4) < 0.005


def _mix_inputs(shape, dtype, device, layout, pool):
    B = shape[0]
    a = torch.randn(shape, device=device).to(dtype)
    b = torch.randn((B + pool,) + shape[1:], device=device).to(dtype)
    lam = torch.rand(B, device=device)
    index = torch.randint(0, B + pool, (B,), device=device)
    return _layout(a, layout), _layout(b, layout), lam, index


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_mix(device, backend, dtype, shape, layout):
    a, b, lam, index = _mix_inputs(shape, dtype, device, layout, pool=3)
    a.requires_grad_(True)
    b.requires_grad_(True)
    lam.requires_grad_(True)
    out = fops.mix(a, b, lam, index, backend=backend)
    ref_in = [t.detach().clone().requires_grad_(True) for t in (a, b, lam)]
    ref = fops.mix_ref(ref_in[0], ref_in[1], ref_in[2], index)
    assert_close(out, ref, dtype, what="mix")
    if layout == "channels_last" and len(shape) == 4:
        assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    assert_close(a.grad, ref_in[0].grad, dtype, what="mix grad a")
    assert_close(b.grad, ref_in[1].grad, dtype, what="mix grad b")
    assert_close(lam.grad, ref_in[2].grad, torch.float32, what="mix grad lam", rtol=2e-2, atol=2e-2)


def test_mix_ref_independent():
    a, b = torch.randn(4, 3), torch.randn(6, 3)
    lam, idx = torch.tensor([0.0, 0.25, 1.0, -1.0]), torch.tensor([5, 0, 2, 2])
    out = fops.mix(a, b, lam, idx)
    for i in range(4):
        assert torch.allclose(out[i], lam[i] * a[i] + (1 - lam[i]) * b[idx[i]], atol=1e-6)


def _soft_targets(B, C, device, kind):
    ya = torch.randint(0, C, (B,), device=device)
    if kind == "hard":
        return ya, None, None, None, None
    yb = torch.randint(0, C, (B,), device=device)
    return ya, yb, torch.rand(B, device=device), torch.rand(B, device=device), torch.rand(B, device=device)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("C", [2, 10, 37, 1000])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_soft_cross_entropy(device, backend, dtype, C, kind, reduction):
    B = 13
    logits = (torch.randn(B, C, device=device) * 3).to(dtype)
    if kind == "soft":
        logits = logits[:, :].t().contiguous().t()  # a column-major (non-contiguous) input
    tgt = _soft_targets(B, C, device, kind)
    z = logits.detach().clone().requires_grad_(True)
    out = fops.soft_cross_entropy(z, *tgt, reduction=reduction, backend=backend)
    zr = logits.detach().clone().requires_grad_(True)
    ref = fops.soft_cross_entropy_ref(zr, *tgt, reduction=reduction)
    assert out.dtype == torch.float32
    assert_close(out, ref, torch.float32, what="soft_ce loss", rtol=1e-4, atol=1e-4 * (1 if reduction != "sum" else B))
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    assert z.grad.dtype == dtype
    assert_close(z.grad, zr.grad, dtype, what="soft_ce grad")


@pytest.mark.parametrize("C", [2, 10, 100])
def test_soft_ce_matches_torch_cross_entropy(C):
    """Independent check: F.cross_entropy with the dense probability target."""
    B = 32
    logits = torch.randn(B, C, requires_grad=True)
    ya, yb, w, sa, sb = _soft_targets(B, C, "cpu", "soft")
    t = fops.soft_target_ref(ya, yb, w, sa, sb, C)
    assert torch.allclose(t.sum(1), torch.ones(B), atol=1e-6)
    expected = F.cross_entropy(logits, t)
    got = fops.soft_cross_entropy(logits, ya, yb, w, sa, sb)
    assert torch.allclose(got, expected, atol=1e-5)
    (ge,) = torch.autograd.grad(expected, logits)
    (gg,) = torch.autograd.grad(got, logits)
    assert torch.allclose(gg, ge, atol=1e-6)
    hard = fops.soft_cross_entropy(logits, ya)
    assert torch.allclose(hard, F.cross_entropy(logits, ya), atol=1e-5)
    smooth = fops.soft_cross_entropy(logits, ya, sa=0.9)
    ls = F.cross_entropy(logits, ya, label_smoothing=0.1 * C / (C - 1))
    assert torch.allclose(smooth, ls, atol=1e-5)


@pytest.mark.parametrize("kappa", [0.0, 2.0])
@pytest.mark.parametrize("C", [2, 10, 1000])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_cw_margin(device, backend, dtype, C, kappa):
    B = 11
    logits = (torch.randn(B, C, device=device) * 2).to(dtype)
    y = torch.randint(0, C, (B,), device=device)
    z = logits.clone().requires_grad_(True)
    zr = logits.clone().requires_grad_(True)
    out = fops.cw_margin(z, y, kappa=kappa, reduction="none", backend=backend)
    ref = fops.cw_margin_ref(zr, y, kappa=kappa, reduction="none")
    assert_close(out, ref, torch.float32, what="cw_margin", rtol=1e-5, atol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    # the kernels give the whole gradient to the first best other class; autograd of the
    # reference's amax splits it among tied maxima, so rows with a tie are left out
    other = logits.float().scatter(1, y[:, None], float("-inf"))
    untied = (other == other.amax(1, keepdim=True)).sum(1) == 1
    assert_close(z.grad[untied], zr.grad[untied], dtype, what="cw_margin grad")


def test_cw_margin_ref_loop():
    z = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0]])
    y = torch.tensor([1, 1])
    got = fops.cw_margin_ref(z, y, kappa=1.0, reduction="none")
    assert got.tolist() == [-1.0, 1.0]  # row 0: 2 - 3; row 1: 5 - 0 clamped at kappa


# -------------------------------------------------------------------------- opcheck
def _opcheck_cases(device):
    B, shape = 3, (3, 2, 5, 4)
    x, g, xn = torch.rand(shape, device=device), torch.randn(shape, device=device), torch.rand(shape, device=device)
    e = torch.full((B,), 0.1, device=device)
    a = torch.full((B,), 0.05, device=device)
    z = torch.randn(B, 7, device=device, requires_grad=True)
    y = torch.randint(0, 7, (B,), device=device)
    f = torch.rand(B, device=device)
    mix_a = torch.randn(shape, device=device, requires_grad=True)
    mix_b = torch.randn((5,) + shape[1:], device=device, requires_grad=True)
    idx = torch.randint(0, 5, (B,), device=device)
    lse = torch.logsumexp(z.detach(), 1)
    margin, jstar = fops.cw_margin_ref(z.detach(), y, reduction="none"), torch.zeros(B, dtype=torch.int64, device=device)
    return {
        "pgd_step": (x, g, xn, e, a, 0, 0.0, 1.0),
        "pgd_step_l2": (x, g, xn, e, a, 2, 0.0, 1.0),
        "pgd_step_": (x.clone(), g, xn, e, a, 0, 0.0, 1.0),
        "random_start": (xn, torch.rand(shape, device=device), e, torch.empty(0, device=device), 0, 0.0, 1.0),
        "random_start_l2": (xn, torch.randn(shape, device=device), e, torch.rand(B, device=device), 2, 0.0, 1.0),
        "mix": (mix_a, mix_b, torch.rand(B, device=device), idx),
        "soft_ce_fwd": (z, y, y.flip(0), f, f, f),
        "soft_ce_bwd": (torch.rand(B, device=device), z.detach(), lse, y, y, f, f, f),
        "cw_margin_fwd": (z, y, 0.5),
        "cw_margin_bwd": (torch.rand(B, device=device), z.detach(), y, jstar, margin, 0.5),
    }


_OPCHECK = [(d, b, name) for d, b in COMPILED for name in _opcheck_cases("cpu")]


@pytest.mark.parametrize("device,backend,name", _OPCHECK, ids=[f"{d}-{b}-{n}" for d, b, n in _OPCHECK])
def test_opcheck(device, backend, name):
    args = _opcheck_cases(device)[name]
    opname = name.replace("_l2", "")
    op = _library.kernel(opname, backend)
    torch.library.opcheck(op, args)


def test_opcheck_compile_through_public_op():
    """The public op works under torch.compile (fake kernels registered)."""
    b = fops.pick_backend("cpu")
    f = torch.compile(lambda z, y: fops.soft_cross_entropy(z, y, backend=b, check=False), backend="eager",
                      fullgraph=False)
    z, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    assert torch.allclose(f(z, y), F.cross_entropy(z, y), atol=1e-5)
