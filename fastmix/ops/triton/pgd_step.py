"""Triton kernels of the PGD update (``pgd_step``, ``pgd_step_``) and of ``random_start``.

Formulas: docs/OPS.md (METHODS.md 1.1, Madry et al. 2018 for L-inf; the L2 step and
its 1e-10 guard follow torchattacks' PGDL2). Inputs are in the kernel form: dense,
identical strides, sample ``i`` is the storage block ``[i*D, (i+1)*D)``, so every
kernel indexes raw storage and never looks at shapes or strides.

Work split: a program handles one (sample, chunk) pair, the chunk being looped over
in ``BLOCK``-element steps, so per-sample scalars (eps, alpha, norms) are scalar
loads. L-inf is purely elementwise (chunk = one block). L2 needs per-sample norms:

* fused (default): one program per sample computes the norms itself, then writes;
  one launch, and the second and third passes mostly hit L2 cache;
* split (few samples of large D, e.g. ImageNet batches smaller than the SM count):
  a first kernel writes per-chunk partial sums of squares to a (B, n_chunks) buffer,
  later kernels reduce a sample's partials (fixed order, deterministic) and go on,
  so all SMs work even when B is small.
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (cdiv, check, check_images, check_vec, device_guard, num_sms, pow2, register,
                      warps_for, wrap_triton)

# Same constants as fastmix/ops/reference.py (kept literal in the kernels).
L2_GRAD_EPS = 1e-10
L2_NOISE_EPS = 1e-12

# Test hook: None picks the L2 work split by heuristic; an int forces that many chunks
# per sample (1 = fused single kernel) so that both paths can be checked on any device
# (set ``fastmix.ops.triton.pgd_step.FORCE_L2_CHUNKS``).
FORCE_L2_CHUNKS = None

_ELT_MAX_BLOCK = 2048    # elementwise programs: one block each
_FUSED_MAX_BLOCK = 4096  # fused L2: whole CIFAR sample (3072) in one step per pass
_SPLIT_BLOCK = 2048
_SPLIT_MIN_CHUNK = 4096  # below this the partial-sum round trip is not worth it
_SPLIT_MAX_CHUNKS = 1024  # partials of one sample are reduced in a single block


# ----------------------------------------------------------------------------------
# Helpers (inlined into the kernels)

@triton.jit
def _sumsq(ptr, base, start, stop, BLOCK: tl.constexpr):
    """sum of v^2 over storage [base+start, base+stop), fp32 lane accumulators."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(start, stop, BLOCK):
        offs = k + tl.arange(0, BLOCK)
        v = tl.load(ptr + base + offs, mask=offs < stop, other=0.0).to(tl.float32)
        acc += v * v
    return tl.sum(acc, axis=0)


@triton.jit
def _l2_offset(x_ptr, g_ptr, nat_ptr, base, offs, mask, alpha, denom):
    """(d, x_nat) with d = x + alpha*g/denom - x_nat, the reference's order of ops;
    div_rn because the default fp32 division on the GPU is approximate."""
    x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    nat = tl.load(nat_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    y = x + alpha * tl.div_rn(g, denom)
    return y - nat, nat


@triton.jit
def _offset_sumsq(x_ptr, g_ptr, nat_ptr, base, start, stop, alpha, denom, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(start, stop, BLOCK):
        offs = k + tl.arange(0, BLOCK)
        d, _ = _l2_offset(x_ptr, g_ptr, nat_ptr, base, offs, offs < stop, alpha, denom)
        acc += d * d  # masked lanes load zeros, so d is 0 there
    return tl.sum(acc, axis=0)


@triton.jit
def _partials_norm(p_ptr, s, n_chunks, NCH_P2: tl.constexpr):
    idx = tl.arange(0, NCH_P2)
    v = tl.load(p_ptr + s * n_chunks + idx, mask=idx < n_chunks, other=0.0)
    return tl.sqrt_rn(tl.sum(v, axis=0))


@triton.jit
def _program_range(D, CHUNK, n_chunks):
    pid = tl.program_id(0)
    s = pid // n_chunks
    start = (pid - s * n_chunks) * CHUNK
    stop = tl.minimum(start + CHUNK, D)
    return pid, s, start, stop, s.to(tl.int64) * D


# ----------------------------------------------------------------------------------
# Kernels

@triton.jit
def _pgd_step_kernel(x_ptr, g_ptr, nat_ptr, eps_ptr, alpha_ptr, out_ptr, gsq_ptr, dsq_ptr,
                     D, CHUNK, n_chunks, lo, hi,
                     NORM: tl.constexpr, NORMS_FROM_PARTIALS: tl.constexpr,
                     NCH_P2: tl.constexpr, BLOCK: tl.constexpr):
    """One PGD step (OPS.md): L-inf ``clip(clip(x + alpha*sign(g), x_nat -+ eps), lo, hi)``;
    L2 ``clip(x_nat + f*d, lo, hi)``, ``d = x + alpha*g/(||g||+1e-10) - x_nat``,
    ``f = min(1, eps/||d||)``. ``out_ptr`` may be ``x_ptr`` (in-place): every element
    is read and then written by the same program, and (fused L2) all reads of the
    norm passes happen before the first write."""
    pid, s, start, stop, base = _program_range(D, CHUNK, n_chunks)
    eps = tl.load(eps_ptr + s)
    alpha = tl.load(alpha_ptr + s)
    if NORM == 0:
        for k in range(start, stop, BLOCK):
            offs = k + tl.arange(0, BLOCK)
            mask = offs < stop
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            nat = tl.load(nat_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            sgn = tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0))  # sign(0) = 0
            y = x + alpha * sgn
            y = tl.minimum(tl.maximum(y, nat - eps), nat + eps)
            y = tl.minimum(tl.maximum(y, lo), hi)
            tl.store(out_ptr + base + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        if NORMS_FROM_PARTIALS:
            denom = _partials_norm(gsq_ptr, s, n_chunks, NCH_P2) + 1e-10
            dn = _partials_norm(dsq_ptr, s, n_chunks, NCH_P2)
        else:  # one program per sample: start == 0, stop == D
            denom = tl.sqrt_rn(_sumsq(g_ptr, base, start, stop, BLOCK)) + 1e-10
            dn = tl.sqrt_rn(_offset_sumsq(x_ptr, g_ptr, nat_ptr, base, start, stop, alpha, denom,
                                          BLOCK))
        # dn == 0 means d == 0 (factor irrelevant); the guard only avoids 0-division.
        factor = tl.where(dn > 0, tl.minimum(tl.div_rn(eps, tl.where(dn > 0, dn, 1.0)), 1.0), 1.0)
        for k in range(start, stop, BLOCK):
            offs = k + tl.arange(0, BLOCK)
            mask = offs < stop
            d, nat = _l2_offset(x_ptr, g_ptr, nat_ptr, base, offs, mask, alpha, denom)
            y = nat + d * factor
            y = tl.minimum(tl.maximum(y, lo), hi)
            tl.store(out_ptr + base + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sumsq_partial_kernel(src_ptr, out_ptr, D, CHUNK, n_chunks, BLOCK: tl.constexpr):
    """Split L2, first stage: out[s, c] = sum of src^2 over chunk c of sample s."""
    pid, s, start, stop, base = _program_range(D, CHUNK, n_chunks)
    tl.store(out_ptr + pid, _sumsq(src_ptr, base, start, stop, BLOCK))


@triton.jit
def _pgd_offset_partial_kernel(x_ptr, g_ptr, nat_ptr, alpha_ptr, gsq_ptr, out_ptr,
                               D, CHUNK, n_chunks, NCH_P2: tl.constexpr, BLOCK: tl.constexpr):
    """Split L2 pgd_step, second stage: partial sums of d^2 (needs the full ||g||)."""
    pid, s, start, stop, base = _program_range(D, CHUNK, n_chunks)
    alpha = tl.load(alpha_ptr + s)
    denom = _partials_norm(gsq_ptr, s, n_chunks, NCH_P2) + 1e-10
    tl.store(out_ptr + pid, _offset_sumsq(x_ptr, g_ptr, nat_ptr, base, start, stop, alpha, denom,
                                          BLOCK))


@triton.jit
def _random_start_kernel(nat_ptr, noise_ptr, eps_ptr, radius_ptr, out_ptr, nsq_ptr,
                         D, CHUNK, n_chunks, lo, hi,
                         NORM: tl.constexpr, NORMS_FROM_PARTIALS: tl.constexpr,
                         NCH_P2: tl.constexpr, BLOCK: tl.constexpr):
    """Random start in the eps-ball (OPS.md): L-inf ``x_nat + eps*(2u - 1)`` with
    ``u ~ U[0,1)``; L2 ``x_nat + eps*radius*n/max(||n||, 1e-12)`` with ``n ~ N(0, I)``;
    both clipped to [lo, hi]. ``noise`` is float32 whatever the image dtype."""
    pid, s, start, stop, base = _program_range(D, CHUNK, n_chunks)
    eps = tl.load(eps_ptr + s)
    if NORM == 0:
        for k in range(start, stop, BLOCK):
            offs = k + tl.arange(0, BLOCK)
            mask = offs < stop
            nat = tl.load(nat_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            u = tl.load(noise_ptr + base + offs, mask=mask, other=0.0)
            y = nat + eps * (2.0 * u - 1.0)
            y = tl.minimum(tl.maximum(y, lo), hi)
            tl.store(out_ptr + base + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        if NORMS_FROM_PARTIALS:
            nn = _partials_norm(nsq_ptr, s, n_chunks, NCH_P2)
        else:  # one program per sample: start == 0, stop == D
            nn = tl.sqrt_rn(_sumsq(noise_ptr, base, start, stop, BLOCK))
        nn = tl.maximum(nn, 1e-12)
        scale = eps * tl.load(radius_ptr + s)
        for k in range(start, stop, BLOCK):
            offs = k + tl.arange(0, BLOCK)
            mask = offs < stop
            nat = tl.load(nat_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            z = tl.load(noise_ptr + base + offs, mask=mask, other=0.0)
            y = nat + scale * tl.div_rn(z, nn)
            y = tl.minimum(tl.maximum(y, lo), hi)
            tl.store(out_ptr + base + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------
# Launch planning

def _elementwise_plan(D: int):
    block = min(_ELT_MAX_BLOCK, max(16, pow2(D)))
    return block, cdiv(D, block), warps_for(block)


def _l2_plan(B: int, D: int, device: torch.device):
    """(n_chunks, CHUNK, BLOCK, num_warps); n_chunks == 1 means the fused kernel."""
    if FORCE_L2_CHUNKS is not None:
        want = max(1, int(FORCE_L2_CHUNKS))
    else:
        sms = num_sms(device)
        # Split only when the batch alone leaves SMs idle and samples are big enough
        # to cut into chunks of >= _SPLIT_MIN_CHUNK; aim at ~4 programs per SM.
        want = 1 if B >= sms else min(D // _SPLIT_MIN_CHUNK, cdiv(4 * sms, B))
    want = max(1, min(want, _SPLIT_MAX_CHUNKS))
    if want > 1:
        block = min(_SPLIT_BLOCK, max(16, pow2(D)))
        chunk = cdiv(cdiv(D, want), block) * block
        n_chunks = cdiv(D, chunk)  # <= want: chunk was rounded up
        if n_chunks > 1:
            return n_chunks, chunk, block, warps_for(block)
    block = min(_FUSED_MAX_BLOCK, max(16, pow2(D)))
    return 1, D, block, warps_for(block, per_thread=16)


def _check_per_sample(op, B, device, **vecs):
    for name, t in vecs.items():
        check_vec(op, name, t, B, torch.float32, device)


def _pgd_step_launch_impl(op: str, x: Tensor, grad: Tensor, x_nat: Tensor, eps: Tensor, alpha: Tensor,
                     out: Tensor, norm: int, lo: float, hi: float) -> None:
    check_images(op, x, grad, x_nat)
    B = x.shape[0]
    _check_per_sample(op, B, x.device, eps=eps, alpha=alpha)
    check(norm in (0, 2), op, f"norm must be 0 (L-inf) or 2 (L2), got {norm}")
    lo, hi = float(lo), float(hi)  # an int here would make Triton compile an i32 variant
    D = x.numel() // B if B > 0 else 0
    if D == 0:
        return
    if norm == 0:
        block, n_chunks, warps = _elementwise_plan(D)
        wrap_triton(_pgd_step_kernel)[(B * n_chunks,)](
            x, grad, x_nat, eps, alpha, out, eps, eps, D, block, n_chunks, lo, hi,
            NORM=0, NORMS_FROM_PARTIALS=False, NCH_P2=1, BLOCK=block, num_warps=warps)
        return
    n_chunks, chunk, block, warps = _l2_plan(B, D, x.device)
    if n_chunks == 1:
        wrap_triton(_pgd_step_kernel)[(B,)](
            x, grad, x_nat, eps, alpha, out, eps, eps, D, D, 1, lo, hi,
            NORM=2, NORMS_FROM_PARTIALS=False, NCH_P2=1, BLOCK=block, num_warps=warps)
        return
    gsq = torch.empty((B, n_chunks), dtype=torch.float32, device=x.device)
    dsq = torch.empty((B, n_chunks), dtype=torch.float32, device=x.device)
    grid = (B * n_chunks,)
    nch_p2 = pow2(n_chunks)
    wrap_triton(_sumsq_partial_kernel)[grid](grad, gsq, D, chunk, n_chunks, BLOCK=block,
                                             num_warps=warps)
    wrap_triton(_pgd_offset_partial_kernel)[grid](x, grad, x_nat, alpha, gsq, dsq, D, chunk,
                                                  n_chunks, NCH_P2=nch_p2, BLOCK=block,
                                                  num_warps=warps)
    wrap_triton(_pgd_step_kernel)[grid](
        x, grad, x_nat, eps, alpha, out, gsq, dsq, D, chunk, n_chunks, lo, hi,
        NORM=2, NORMS_FROM_PARTIALS=True, NCH_P2=nch_p2, BLOCK=block, num_warps=warps)


def _random_start_launch_impl(x_nat: Tensor, noise: Tensor, eps: Tensor, radius: Tensor, out: Tensor,
                         norm: int, lo: float, hi: float) -> None:
    op = "random_start"
    check_images(op, x_nat, noise, same_dtype=False)
    check(noise.dtype == torch.float32, op, f"noise must be float32, got {noise.dtype}")
    B = x_nat.shape[0]
    check(norm in (0, 2), op, f"norm must be 0 (L-inf) or 2 (L2), got {norm}")
    _check_per_sample(op, B, x_nat.device, eps=eps)
    if norm == 2:
        _check_per_sample(op, B, x_nat.device, radius=radius)
    lo, hi = float(lo), float(hi)
    D = x_nat.numel() // B if B > 0 else 0
    if D == 0:
        return
    if norm == 0:
        block, n_chunks, warps = _elementwise_plan(D)
        # radius is unused (possibly empty) for L-inf: pass eps in its slot.
        wrap_triton(_random_start_kernel)[(B * n_chunks,)](
            x_nat, noise, eps, eps, out, eps, D, block, n_chunks, lo, hi,
            NORM=0, NORMS_FROM_PARTIALS=False, NCH_P2=1, BLOCK=block, num_warps=warps)
        return
    n_chunks, chunk, block, warps = _l2_plan(B, D, x_nat.device)
    if n_chunks == 1:
        wrap_triton(_random_start_kernel)[(B,)](
            x_nat, noise, eps, radius, out, eps, D, D, 1, lo, hi,
            NORM=2, NORMS_FROM_PARTIALS=False, NCH_P2=1, BLOCK=block, num_warps=warps)
        return
    nsq = torch.empty((B, n_chunks), dtype=torch.float32, device=x_nat.device)
    grid = (B * n_chunks,)
    wrap_triton(_sumsq_partial_kernel)[grid](noise, nsq, D, chunk, n_chunks, BLOCK=block,
                                             num_warps=warps)
    wrap_triton(_random_start_kernel)[grid](
        x_nat, noise, eps, radius, out, nsq, D, chunk, n_chunks, lo, hi,
        NORM=2, NORMS_FROM_PARTIALS=True, NCH_P2=pow2(n_chunks), BLOCK=block, num_warps=warps)


def _pgd_step_launch(op, x, *args):
    with device_guard(x):
        _pgd_step_launch_impl(op, x, *args)


def _random_start_launch(x_nat, *args):
    with device_guard(x_nat):
        _random_start_launch_impl(x_nat, *args)


# ----------------------------------------------------------------------------------
# Ops (fakes and the rest of the op contract: fastmix/ops/pgd_step.py, random_start.py)

@register("fastmix::pgd_step_triton", mutates_args=())
def pgd_step_triton(x: Tensor, grad: Tensor, x_nat: Tensor, eps: Tensor, alpha: Tensor,
                    norm: int, lo: float, hi: float) -> Tensor:
    out = torch.empty_like(x)
    _pgd_step_launch("pgd_step", x, grad, x_nat, eps, alpha, out, norm, lo, hi)
    return out


@register("fastmix::pgd_step__triton", mutates_args={"x"})
def pgd_step__triton(x: Tensor, grad: Tensor, x_nat: Tensor, eps: Tensor, alpha: Tensor,
                     norm: int, lo: float, hi: float) -> None:
    _pgd_step_launch("pgd_step_", x, grad, x_nat, eps, alpha, x, norm, lo, hi)


@register("fastmix::random_start_triton", mutates_args=())
def random_start_triton(x_nat: Tensor, noise: Tensor, eps: Tensor, radius: Tensor, norm: int,
                        lo: float, hi: float) -> Tensor:
    out = torch.empty_like(x_nat)
    _random_start_launch(x_nat, noise, eps, radius, out, norm, lo, hi)
    return out

