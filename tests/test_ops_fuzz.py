"""Hypothesis fuzz: random shapes, dtypes, radii and targets against the reference."""
import torch
from _tol import assert_close
from conftest import device_backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmix.ops as fops

BACKENDS = [b for d, b in device_backends() if d == "cpu" and b != "triton"]  # the interpreter is slow
DT = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(B=st.integers(1, 9), D=st.integers(1, 300), dtype=DT, norm=st.sampled_from(["linf", "l2"]),
       eps=st.floats(0.0, 1.0), alpha=st.floats(-0.5, 0.5), seed=st.integers(0, 2**16),
       backend=st.sampled_from(BACKENDS))
def test_fuzz_pgd_step(B, D, dtype, norm, eps, alpha, seed, backend):
    g = torch.Generator().manual_seed(seed)
    xn = torch.rand(B, D, generator=g).to(dtype)
    x = torch.rand(B, D, generator=g).to(dtype)
    grad = torch.randn(B, D, generator=g).to(dtype)
    out = fops.pgd_step(x, grad, xn, eps, alpha, norm=norm, backend=backend)
    assert_close(out, fops.pgd_step_ref(x, grad, xn, eps, alpha, norm=norm), dtype, what="fuzz pgd_step")


@SETTINGS
@given(B=st.integers(1, 9), C=st.integers(2, 1100), dtype=DT, seed=st.integers(0, 2**16),
       scale=st.floats(0.01, 30.0), backend=st.sampled_from(BACKENDS))
def test_fuzz_soft_cross_entropy(B, C, dtype, seed, scale, backend):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(B, C, generator=g) * scale).to(dtype).requires_grad_(True)
    ya, yb = torch.randint(0, C, (B,), generator=g), torch.randint(0, C, (B,), generator=g)
    w, sa, sb = (torch.rand(B, generator=g) for _ in range(3))
    out = fops.soft_cross_entropy(z, ya, yb, w, sa, sb, reduction="none", backend=backend)
    zr = z.detach().clone().requires_grad_(True)
    ref = fops.soft_cross_entropy_ref(zr, ya, yb, w, sa, sb, reduction="none")
    assert_close(out, ref, torch.float32, what="fuzz soft_ce", rtol=1e-4, atol=1e-4 * max(1.0, scale))
    out.sum().backward()
    ref.sum().backward()
    assert_close(z.grad, zr.grad, dtype, what="fuzz soft_ce grad")


@SETTINGS
@given(B=st.integers(1, 6), Nb=st.integers(1, 6), D=st.integers(1, 200), dtype=DT, seed=st.integers(0, 2**16),
       backend=st.sampled_from(BACKENDS))
def test_fuzz_mix(B, Nb, D, dtype, seed, backend):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(B, D, generator=g).to(dtype), torch.randn(Nb, D, generator=g).to(dtype)
    lam, idx = torch.rand(B, generator=g) * 3 - 1, torch.randint(0, Nb, (B,), generator=g)
    assert_close(fops.mix(a, b, lam, idx, backend=backend), fops.mix_ref(a, b, lam, idx), dtype, what="fuzz mix")
