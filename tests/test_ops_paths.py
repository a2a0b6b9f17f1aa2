"""The kernel paths the generic op tests do not reach (issue 17 items 9-10, issue 11 items 2 and 5).

Every available backend (torch, C++, Triton under TRITON_INTERPRET=1, CUDA/Triton on a
GPU) against the torch reference on: the forced split-L2 Triton path, CIFAR-size fp32
samples (the vectorised, register-resident CUDA path), bf16 with even and odd sample
sizes, channels-last, storage-offset views, soft-CE/CW with C > 2048 (the block-per-row
CUDA path), int32 and int64 indices and labels.  Then the memory-safety contract of the
C++ kernels (an index or label out of range raises, in a subprocess so that a crash
fails the test instead of killing pytest; dim-0 layout checks), the C++ autograd of
soft_ce_fwd / cw_margin_fwd / mix right after `import fastmix._C`, the cancellation-free
soft-CE gradient against an fp64 reference, and the host-side launch plan of the CUDA
L2 kernels.  Shapes are small: the file runs in well under a minute on two cores.
"""
import functools
import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from _tol import assert_close
from conftest import device_backends

import fastmix.ops as fops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB = device_backends()
DB_IDS = [f"{d}-{b}" for d, b in DB]
HAS_CPP = "cpp" in fops.available_backends("cpu")
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="fastmix._C is not built (python setup.py build_ext --inplace)")


def _per_sample(v, x):
    return v.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


def _pgd_case(shape, dtype, device, fmt=torch.contiguous_format):
    B = shape[0]
    xn = torch.rand(shape, device=device).to(dtype)
    eps = torch.rand(B, device=device) * 0.05 + 0.01
    x = (xn.float() + (torch.rand(shape, device=device) * 2 - 1) * _per_sample(eps, xn)).clamp(0, 1).to(dtype)
    g = torch.randn(shape, device=device).to(dtype)
    g.view(-1)[::5] = 0
    if fmt is not torch.contiguous_format:
        x, g, xn = (t.contiguous(memory_format=fmt) for t in (x, g, xn))
    return x, g, xn, eps


def _check_pgd(backend, x, g, xn, eps, norm, dtype):
    alpha = 0.01 if norm == "linf" else 0.3
    out = fops.pgd_step(x, g, xn, eps, alpha, norm=norm, backend=backend, check=False)
    ref = fops.pgd_step_ref(x, g, xn, eps, alpha, norm=norm)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, ref, dtype, what=f"{backend} pgd_step {norm} {tuple(x.shape)} {dtype}")
    if norm == "linf" and dtype == torch.float32:
        assert torch.equal(out, ref), "the L-inf step is bitwise equal to the reference in float32"
    return out


# ----------------------------------------------------------------------------- CIFAR fp32
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_cifar_fp32(device, backend, norm):
    """3x32x32 float32: VEC=4 packs, ITEMS=4 register-resident L2 on CUDA."""
    x, g, xn, eps = _pgd_case((6, 3, 32, 32), torch.float32, device)
    _check_pgd(backend, x, g, xn, eps, norm, torch.float32)
    gen = torch.Generator(device=device).manual_seed(3)
    out = fops.random_start(xn, eps, norm=norm, generator=gen, backend=backend, check=False)
    ref = fops.random_start_ref(xn, eps, norm=norm, generator=torch.Generator(device=device).manual_seed(3))
    assert_close(out, ref, torch.float32, what=f"{backend} random_start {norm}")


# ---------------------------------------------------------------------- bf16 even / odd
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (5, 3, 7, 9)], ids=["even", "odd"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_bf16_even_odd(device, backend, shape):
    """bf16: D a multiple of 8 (ITEMS=2 packs of 8 on CUDA) and an odd D (scalar path)."""
    dt = torch.bfloat16
    x, g, xn, eps = _pgd_case(shape, dt, device)
    for norm in ("linf", "l2"):
        _check_pgd(backend, x, g, xn, eps, norm, dt)
    pool = torch.rand((7,) + shape[1:], device=device).to(dt)
    lam = torch.rand(shape[0], device=device)
    idx = torch.randint(0, 7, (shape[0],), device=device)
    assert_close(fops.mix(x, pool, lam, idx, backend=backend, check=False), fops.mix_ref(x, pool, lam, idx), dt,
                 what=f"{backend} mix bf16")
    C = shape[-1] + 2  # 18 (even) and 11 (odd) classes
    z = (torch.randn(shape[0], C, device=device) * 3).to(dt)
    y = torch.randint(0, C, (shape[0],), device=device)
    got = fops.soft_cross_entropy(z, y, y.roll(1), 0.7, 0.9, 1.0, reduction="none", backend=backend, check=False)
    ref = fops.soft_cross_entropy_ref(z, y, y.roll(1), 0.7, 0.9, 1.0, reduction="none")
    assert_close(got, ref, torch.float32, what=f"{backend} soft_ce bf16", rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------- channels-last
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_channels_last(device, backend):
    cl = torch.channels_last
    x, g, xn, eps = _pgd_case((3, 4, 8, 6), torch.float32, device, fmt=cl)
    for norm in ("linf", "l2"):
        out = _check_pgd(backend, x, g, xn, eps, norm, torch.float32)
        assert out.is_contiguous(memory_format=cl), "the output keeps x's memory format"
    lam = torch.rand(3, device=device)
    idx = torch.tensor([2, 0, 0], device=device)
    out = fops.mix(x, xn, lam, idx, backend=backend, check=False)
    assert out.is_contiguous(memory_format=cl)
    assert_close(out, fops.mix_ref(x, xn, lam, idx), torch.float32, what=f"{backend} mix channels-last")


# --------------------------------------------------------------------- storage offsets
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_storage_offset_views(device, backend):
    """Views that start inside a larger storage (x = big[1:5]) give the results of their
    contiguous copies."""
    shape = (4, 3, 5, 5)
    big = torch.rand((9,) + shape[1:], device=device)
    x, g, xn = big[1:5], torch.randn((7,) + shape[1:], device=device)[3:7], big[5:9]
    assert x.storage_offset() > 0 and g.storage_offset() > 0 and x.is_contiguous()
    eps = torch.full((4,), 0.03, device=device)
    for norm in ("linf", "l2"):
        got = fops.pgd_step(x, g, xn, eps, 0.2, norm=norm, backend=backend, check=False)
        want = fops.pgd_step(x.clone(), g.clone(), xn.clone(), eps, 0.2, norm=norm, backend=backend, check=False)
        if norm == "linf" or device == "cpu":
            assert torch.equal(got, want), f"{backend} {norm}: a storage-offset view differs from its copy"
        else:  # on a GPU the misaligned view takes the scalar path: another summation order
            assert_close(got, want, torch.float32)
        assert_close(got, fops.pgd_step_ref(x, g, xn, eps, 0.2, norm=norm), torch.float32)
    idx = torch.tensor([3, 3, 0, 1], device=device)
    lam = torch.rand(4, device=device)
    got = fops.mix(x, xn, lam, idx, backend=backend, check=False)
    assert torch.equal(got, fops.mix(x.clone(), xn.clone(), lam, idx, backend=backend, check=False))
    z = torch.randn(10, 6, device=device)[2:7]
    y = torch.randint(0, 6, (5,), device=device)
    got = fops.soft_cross_entropy(z, y, reduction="none", backend=backend, check=False)
    assert_close(got, F.cross_entropy(z, y, reduction="none"), torch.float32)


# --------------------------------------------------------------------------- C > 2048
@pytest.mark.parametrize("C", [2500, 4099])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_many_classes(device, backend, C):
    """soft-CE and CW with C > 2048: one block per row on CUDA, a multi-block row in Triton."""
    B = 3
    z = (torch.randn(B, C, device=device) * 4).requires_grad_()
    y = torch.randint(0, C, (B,), device=device)
    yb = torch.randint(0, C, (B,), device=device)
    w = torch.tensor([1.0, 0.6, 0.3], device=device)
    got = fops.soft_cross_entropy(z, y, yb, w, 0.9, 0.8, reduction="sum", backend=backend, check=False)
    (gz,) = torch.autograd.grad(got, z)
    z2 = z.detach().clone().requires_grad_()
    ref = fops.soft_cross_entropy_ref(z2, y, yb, w, torch.full((B,), 0.9), torch.full((B,), 0.8), "sum")
    (gr,) = torch.autograd.grad(ref, z2)
    assert_close(got, ref, torch.float32, what=f"{backend} soft_ce C={C}", rtol=1e-5, atol=1e-4)
    assert_close(gz, gr, torch.float32, what=f"{backend} soft_ce grad C={C}", atol=1e-6)
    m = fops.cw_margin(z, y, kappa=1.0, reduction="none", backend=backend, check=False)
    assert torch.equal(m, fops.cw_margin_ref(z.detach(), y, kappa=1.0, reduction="none")), "CW is exact"


# ------------------------------------------------------------------ int32 / int64 indices
@pytest.mark.parametrize("itype", [torch.int32, torch.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("device,backend", DB, ids=DB_IDS)
def test_index_dtypes(device, backend, itype):
    a = torch.rand(5, 2, 3, 4, device=device)
    pool = torch.rand(9, 2, 3, 4, device=device)
    idx = torch.tensor([8, 0, 3, 3, 7], device=device, dtype=itype)
    lam = torch.rand(5, device=device)
    got = fops.mix(a, pool, lam, idx, backend=backend, check=False)
    if backend == "triton" and device != "cpu":  # Triton may fuse a*b + c on a GPU (docs/OPS.md)
        assert_close(got, fops.mix_ref(a, pool, lam, idx.long()), torch.float32)
    else:
        assert torch.equal(got, fops.mix_ref(a, pool, lam, idx.long())), "mix is bitwise equal to its reference"
    z = torch.randn(5, 7, device=device)
    y = torch.tensor([6, 0, 2, 2, 5], device=device, dtype=itype)
    got = fops.soft_cross_entropy(z, y, reduction="none", backend=backend, check=False)
    assert_close(got, F.cross_entropy(z, y.long(), reduction="none"), torch.float32)
    m = fops.cw_margin(z, y, reduction="none", backend=backend, check=False)
    assert torch.equal(m, fops.cw_margin_ref(z, y.long(), reduction="none"))


# ------------------------------------------------------------- forced split-L2 (Triton)
def _triton_pgd_module():
    """The Triton module holding FORCE_L2_CHUNKS (its package may be renamed)."""
    for name in ("fastmix.ops.triton.pgd_step", "fastmix.kernels.pgd", "fastmix.triton.pgd", "fastmix.ops.triton.pgd", "fastmix.triton_kernels.pgd",
                 "fastmix.ops.pgd_step", "fastmix.ops.pgd"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "FORCE_L2_CHUNKS"):
            return mod
    return None


TRITON = [(d, b) for d, b in DB if b == "triton"]


@pytest.mark.parametrize("chunks", [2, 3, 7, 64])
@pytest.mark.parametrize("device,backend", TRITON, ids=[f"{d}-{b}" for d, b in TRITON])
def test_triton_forced_l2_split(device, backend, chunks):
    """The split-L2 Triton path (partial sums in a (B, n_chunks) buffer), which a GPU takes
    when B < SMs, forced on the interpreter for 2, 3, 7 and 64 chunks per sample."""
    mod = _triton_pgd_module()
    if mod is None:
        pytest.skip("no Triton module with FORCE_L2_CHUNKS found")
    # D = 2*64*64 = 8192: 64 requested chunks are capped by the 2048-element block
    # granularity (4 chunks); 2, 3 and 7 give 2, 3 and 4.
    x, g, xn, eps = _pgd_case((2, 2, 64, 64), torch.float32, device)
    old = mod.FORCE_L2_CHUNKS
    mod.FORCE_L2_CHUNKS = chunks
    try:
        plan = getattr(mod, "_l2_plan", None)
        if plan is not None:
            assert plan(2, x[0].numel(), x.device)[0] > 1, "the split path is taken"
        _check_pgd(backend, x, g, xn, eps, "l2", torch.float32)
        x_ = x.clone()
        fops.pgd_step_(x_, g, xn, eps, 0.3, norm="l2", backend=backend, check=False)
        assert_close(x_, fops.pgd_step_ref(x, g, xn, eps, 0.3, norm="l2"), torch.float32, what="in place, split")
        gen = torch.Generator(device=device).manual_seed(1)
        out = fops.random_start(xn, eps, norm="l2", generator=gen, backend=backend, check=False)
        ref = fops.random_start_ref(xn, eps, norm="l2", generator=torch.Generator(device=device).manual_seed(1))
        assert_close(out, ref, torch.float32, what="random_start l2, split")
    finally:
        mod.FORCE_L2_CHUNKS = old


# ===================================================================== C++ memory safety
_BAD_CALLS = {
    "mix_raw_big": "ops.mix(a, a, lam, torch.tensor([0, 1, 2, 10**6]))",
    "mix_raw_neg": "ops.mix(a, a, lam, torch.tensor([0, -1, 2, 3]))",
    "mix_public_big": "fops.mix(a, a, 0.5, index=torch.tensor([0, 1, 2, 10**6]), backend='cpp', check=False)",
    "mix_public_neg": "fops.mix(a, a, 0.5, index=torch.tensor([0, 1, -4, 3]), backend='cpp', check=False)",
    "sce_raw_big": "ops.soft_ce_fwd(z, torch.tensor([0, 1, 10**9, 3]), y, w, w, w)",
    "sce_raw_neg": "ops.soft_ce_fwd(z, y, torch.tensor([0, 1, -1, 3]), w, w, w)",
    "sce_public_big": "fops.soft_cross_entropy(z, torch.tensor([0, 1, 10**9, 3]), backend='cpp', check=False)",
    "sce_public_neg": "fops.soft_cross_entropy(z, torch.tensor([0, -2, 1, 3]), backend='cpp', check=False)",
    "sce_bwd_raw": "ops.soft_ce_bwd(w, z, w, torch.tensor([0, 1, 10**9, 3]), y, w, w, w)",
    "cw_raw_big": "ops.cw_margin_fwd(z, torch.tensor([0, 10**9, 1, 3]), 0.0)",
    "cw_public_neg": "fops.cw_margin(z, torch.tensor([0, 1, 1, -3]), backend='cpp', check=False)",
    "cw_bwd_jstar": "ops.cw_margin_bwd(w, z, y, torch.tensor([0, 1, 10**9, 3]), w - 1, 0.0)",
}


# the argument and the bad value each message must name
_BAD_NAMES = {"mix_raw_big": ("index", "1000000"), "mix_raw_neg": ("index", "-1"),
              "mix_public_big": ("index", "1000000"), "mix_public_neg": ("index", "-4"),
              "sce_raw_big": ("ya", "1000000000"), "sce_raw_neg": ("yb", "-1"),
              "sce_public_big": ("ya", "1000000000"), "sce_public_neg": ("ya", "-2"),
              "sce_bwd_raw": ("ya", "1000000000"), "cw_raw_big": ("y", "1000000000"),
              "cw_public_neg": ("y", "-3"), "cw_bwd_jstar": ("jstar", "1000000000")}


@functools.lru_cache(maxsize=None)
def _bad_call_outcomes():
    """Runs every bad call in ONE subprocess (a crash there fails the tests, not pytest);
    returns ({case: message}, returncode, stderr)."""
    lines = ["import torch, fastmix._C, fastmix.ops as fops",
             "ops = torch.ops.fastmix",
             "a = torch.rand(4, 3, 8, 8); lam = torch.rand(4)",
             "z = torch.randn(4, 10); y = torch.tensor([1, 2, 3, 4]); w = torch.ones(4)"]
    for case, call in _BAD_CALLS.items():
        lines += [f"print({case!r}, 'START', flush=True)",
                  "try:", f"    {call}",
                  "except IndexError as e:", f"    print({case!r}, 'RAISED', str(e).splitlines()[0], flush=True)",
                  "else:", f"    print({case!r}, 'NO_ERROR', flush=True)"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=300,
                       env=env, cwd=ROOT)
    out = {}
    for line in r.stdout.splitlines():
        case, _, rest = line.partition(" ")
        out[case] = rest
    return out, r.returncode, r.stderr[-2000:]


@needs_cpp
@pytest.mark.parametrize("case", list(_BAD_CALLS))
def test_cpp_out_of_range_raises(case):
    """An index or label out of range (too large or negative) is an IndexError from the
    C++ loop, never a crash, whether the op is called raw (torch.ops.fastmix.*) or
    through the public function with backend="cpp", check=False."""
    out, rc, err = _bad_call_outcomes()
    assert case in out, f"the subprocess died before {case} (exit {rc}): {err}"
    msg = out[case]
    assert msg.startswith("RAISED"), f"{case}: {msg!r} (the subprocess exit {rc}: {err})"
    arg, value = _BAD_NAMES[case]
    # e.g. "mix: index[3] = 1000000 is out of range for 4 rows of b (need 0 <= index < 4)"
    assert f" {arg}[" in msg and f"= {value} is out of range" in msg and f"need 0 <= {arg} <" in msg, msg


@needs_cpp
def test_cpp_rejects_batch_strides():
    """Dimension 0 is checked too (issue 17.3): an expand()-ed x_nat or a [::2] slice of
    grad is rejected instead of being read as a dense block."""
    ops = torch.ops.fastmix
    x = torch.rand(4, 3, 5, 5)
    g = torch.randn(8, 3, 5, 5)[::2]
    e, a = torch.full((4,), 0.03), torch.full((4,), 0.01)
    with pytest.raises(RuntimeError, match="grad has strides"):
        ops.pgd_step(x, g, x, e, a, 0, 0.0, 1.0)
    xn = torch.rand(1, 3, 5, 5).expand(4, 3, 5, 5)
    with pytest.raises(RuntimeError, match="x_nat has strides"):
        ops.pgd_step(x, g.contiguous(), xn, e, a, 2, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="noise has strides"):
        ops.random_start(x, torch.rand(1, 3, 5, 5).expand(4, 3, 5, 5), e, e, 0, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="dense"):
        ops.mix(x, torch.rand(8, 3, 5, 5)[::2], a, torch.zeros(4, dtype=torch.long))
    # and the public functions hand the kernels dense copies, equal to the contiguous result
    got = fops.pgd_step(x, g, xn, e, 0.01, backend="cpp", check=False)
    assert torch.equal(got, fops.pgd_step(x, g.contiguous(), xn.contiguous(), e, 0.01, backend="cpp", check=False))


# ===================================================================== C++ autograd
@needs_cpp
def test_cpp_autograd_right_after_import():
    """soft_ce_fwd, cw_margin_fwd and mix backpropagate through their C++ Autograd
    kernels with nothing but `import fastmix._C` (no Python autograd registered)."""
    code = textwrap.dedent("""
        import torch, fastmix._C
        ops = torch.ops.fastmix
        for n in ("soft_ce_fwd", "cw_margin_fwd", "mix"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key("fastmix::" + n, "Autograd"), n
        z = torch.randn(5, 7, requires_grad=True); y = torch.tensor([0, 6, 2, 2, 1]); w = torch.rand(5)
        loss, lse = ops.soft_ce_fwd(z, y, y.roll(1), w, torch.full((5,), 0.9), torch.ones(5))
        (gz,) = torch.autograd.grad(loss.sum() + 0.5 * lse.sum(), z)
        t = w[:, None] * (0.9 * torch.nn.functional.one_hot(y, 7) + 0.1 / 6 * (1 - torch.nn.functional.one_hot(y, 7)))
        t = t + (1 - w)[:, None] * torch.nn.functional.one_hot(y.roll(1), 7)
        p = torch.softmax(z.detach(), 1)
        assert torch.allclose(gz, p - t + 0.5 * p, atol=1e-6), (gz - (1.5 * p - t)).abs().max()
        m, j = ops.cw_margin_fwd(z, y, 0.5)
        assert not j.requires_grad
        (gc,) = torch.autograd.grad(m.sum(), z)
        want = torch.zeros(5, 7); act = m.detach() < 0.5
        want[torch.arange(5)[act], j[act]] = 1.0; want[torch.arange(5)[act], y[act]] = -1.0
        assert torch.equal(gc, want)
        a = torch.randn(3, 4, requires_grad=True); b = torch.randn(5, 4, requires_grad=True)
        lam = torch.rand(3, requires_grad=True); idx = torch.tensor([4, 0, 4])
        ga, gb, gl = torch.autograd.grad((ops.mix(a, b, lam, idx) ** 2).sum(), (a, b, lam))
        a2, b2, l2 = (t.detach().clone().requires_grad_() for t in (a, b, lam))
        ra, rb, rl = torch.autograd.grad(((l2[:, None] * a2 + (1 - l2[:, None]) * b2[idx]) ** 2).sum(), (a2, b2, l2))
        assert torch.allclose(ga, ra, atol=1e-6) and torch.allclose(gb, rb, atol=1e-6) and torch.allclose(gl, rl, atol=1e-5)
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr[-3000:]


@needs_cpp
@pytest.mark.parametrize("name", ["soft_ce_fwd", "cw_margin_fwd", "mix"])
def test_cpp_autograd_opcheck(name):
    """torch.library.opcheck (schema, autograd registration, fake tensors, AOT dispatch)
    with the C++ Autograd kernel and the Python fakes together."""
    B = 4
    z = torch.randn(B, 7, requires_grad=True)
    y = torch.randint(0, 7, (B,))
    f = torch.rand(B)
    fops.soft_cross_entropy(z.detach(), y, backend="cpp")  # registers the fakes where that is lazy
    args = {
        "soft_ce_fwd": (z, y, y.flip(0), f, f, f),
        "cw_margin_fwd": (z, y, 0.5),
        "mix": (torch.randn(B, 3, 2, 2, requires_grad=True), torch.randn(5, 3, 2, 2, requires_grad=True),
                torch.rand(B, requires_grad=True), torch.randint(0, 5, (B,))),
    }[name]
    torch.library.opcheck(getattr(torch.ops.fastmix, name).default, args)


# ============================================================ soft-CE gradient precision
def _saturated_logits(B, C, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (B,), generator=g)
    margin = torch.linspace(4.0, 40.0, B, dtype=torch.float64)  # p_y from ~0.9 to 1 - 1e-17
    z[torch.arange(B), y] = z.max(1).values + margin
    return z, y


def _stable_ref(z64, y):
    """softmax - onehot in float64, the true class as -(sum of the other probabilities):
    float64's own p_y - 1 cancels too once 1 - p_y < 1e-16."""
    p = torch.softmax(z64, 1)
    rows = torch.arange(z64.shape[0])
    ref = p.clone()
    p[rows, y] = 0.0
    ref[rows, y] = -p.sum(1)
    return ref


@pytest.mark.parametrize("C", [10, 1000])
@pytest.mark.parametrize("device,backend", [(d, b) for d, b in DB if b in ("cpp", "cuda")],
                         ids=[f"{d}-{b}" for d, b in DB if b in ("cpp", "cuda")])
def test_soft_ce_grad_precision(device, backend, C):
    """flash-attn's rule on saturated softmaxes: the gradient's error against an fp64
    reference is at most twice that of torch's own float32 F.cross_entropy.  With
    p_y - 1 the true-class gradient would keep no digits (p_y rounds to 1)."""
    z64, y = _saturated_logits(64, C, seed=C)
    ref = _stable_ref(z64, y)
    z32 = z64.float().to(device).requires_grad_()
    (g_torch,) = torch.autograd.grad(F.cross_entropy(z32, y.to(device), reduction="sum"), z32)
    (g_ours,) = torch.autograd.grad(
        fops.soft_cross_entropy(z32, y.to(device), reduction="sum", backend=backend, check=False), z32)
    err_torch = (g_torch.double().cpu() - ref).abs().max().item()
    err_ours = (g_ours.double().cpu() - ref).abs().max().item()
    assert err_ours <= 2 * err_torch, f"max error {err_ours:.3g} > 2 x torch's {err_torch:.3g}"
    # the true-class entries keep their relative precision (torch's are off by ~100%)
    rows = torch.arange(64)
    true_ref = ref[rows, y]
    rel = ((g_ours.double().cpu()[rows, y] - true_ref).abs() / true_ref.abs()).max().item()
    assert rel < 1e-5, f"true-class gradient relative error {rel:.3g}"
    # and the loss of a saturated row is its tiny value, not the ulp of the logits
    loss = fops.soft_cross_entropy(z32.detach(), y.to(device), reduction="none", backend=backend, check=False)
    loss_ref = -torch.log_softmax(z64, 1)[rows, y]
    lt = F.cross_entropy(z32.detach(), y.to(device), reduction="none").double().cpu()
    assert (loss.double().cpu() - loss_ref).abs().max() <= 2 * (lt - loss_ref).abs().max() + 1e-30


@pytest.mark.parametrize("device,backend", [(d, b) for d, b in DB if b in ("cpp", "cuda")],
                         ids=[f"{d}-{b}" for d, b in DB if b in ("cpp", "cuda")])
def test_soft_ce_grad_precision_mixed_target(device, backend):
    """The same form with a mixed, label-smoothed target: (1 - t_y) - sum_{c != y} p_c."""
    C = 10
    z64, ya = _saturated_logits(32, C, seed=7)
    yb = (ya + 3) % C
    w = torch.linspace(0.5, 1.0, 32)
    sa = torch.full((32,), 0.95)
    t = fops.soft_target_ref(ya, yb, w, sa, torch.ones(32), C).double()
    ref = torch.softmax(z64, 1) - t
    z32 = z64.float().to(device).requires_grad_()
    (g,) = torch.autograd.grad(fops.soft_cross_entropy(z32, ya.to(device), yb.to(device), w.to(device),
                                                       sa.to(device), reduction="sum", backend=backend,
                                                       check=False), z32)
    eager = -(t.float().to(device) * F.log_softmax(z32, 1)).sum()
    (ge,) = torch.autograd.grad(eager, z32)
    assert (g.double().cpu() - ref).abs().max() <= 2 * (ge.double().cpu() - ref).abs().max()


# ================================================================== CUDA L2 launch plan
@needs_cpp
def test_cuda_l2_split_plan():
    """The host-side decision of the CUDA L2 kernels (csrc/l2_plan.h, exposed as
    fastmix::l2_split_plan), tested on the CPU: split only when the batch leaves SMs idle
    and samples are large; chunks are whole block sweeps, cover the sample exactly, and
    give about 4 blocks per SM; otherwise one block per sample with the fewest
    register-resident items that hold it."""
    plan = torch.ops.fastmix.l2_split_plan
    sms = 132
    # CIFAR batch: fused, a 3072-element sample in registers (768 packs of 4 -> 4 items)
    assert plan(512, 3072, 4, sms) == [1, 3072, 4]
    assert plan(4, 3072, 4, sms) == [1, 3072, 4], "3072 < 2 x 4096: too small to split"
    assert plan(1, 784, 1, sms) == [1, 784, 4]
    assert plan(8, 4096, 8, sms) == [1, 4096, 2]
    assert plan(8, 1 << 16, 4, sms) == [16, 4096, 0], "8 samples of 64k: 16 chunks of 4096 each"
    assert plan(512, 150528, 4, sms) == [1, 150528, 0], "B >= SMs: one streaming block per sample"
    for B, D, vec in [(16, 150528, 4), (1, 150528, 4), (2, 3 * 299 * 299, 1), (100, 1 << 20, 8), (16, 8192, 4)]:
        n, chunk, items = plan(B, D, vec, sms)
        assert n > 1 and items == 0, (B, D, vec)
        assert chunk % (256 * vec) == 0, "a chunk is whole sweeps of the block"
        assert (n - 1) * chunk < D <= n * chunk, "the chunks cover the sample, none empty"
        assert chunk >= 4096, "no chunk below the split's minimum"
        assert B * n <= 4 * sms + B, "about 4 blocks per SM, not more"
    # the forced split of the Triton test hook, and its cap
    assert plan(2, 8192, 4, sms, 3)[0] == 3
    assert plan(2, 8192, 4, sms, 64)[0] == 8, "a chunk is at least one 1024-element sweep"
    assert plan(2, 1 << 24, 1, sms, 5000)[0] == 1024, "at most 1024 partials per sample"
    # deterministic: the plan depends on the shape only
    assert plan(16, 150528, 4, sms) == plan(16, 150528, 4, sms)
