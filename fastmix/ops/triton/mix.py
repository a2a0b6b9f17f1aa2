"""Triton kernel of batched gather-mixing (``mix``, METHODS.md 1.3; Mixup, Zhang et al. 2018):
``out[i] = lam_i * a[i] + (1 - lam_i) * b[index_i]``.

The gather is fused into the blend, so ``b[index]`` is never materialised. ``a`` and
``b`` share their per-sample layout (kernel form), so sample ``j`` of ``b`` is the
storage block ``[j*D, (j+1)*D)`` whatever the batch size of ``b``.

Memory safety: an ``index`` outside ``[0, Nb)`` fails the kernel's device assert, and
its gather is masked off (that sample's output is NaN) so nothing outside ``b`` is
read even where the assert is compiled out; under the interpreter the launcher raises.
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (SAFE_JIT, cdiv, check, check_images, check_index_values, check_vec,
                      device_guard, pow2, register, warps_for, wrap_triton)

_MAX_BLOCK = 2048


@triton.jit(**SAFE_JIT)
def _mix_kernel(a_ptr, b_ptr, lam_ptr, index_ptr, out_ptr, D, Nb, n_chunks, BLOCK: tl.constexpr):
    """One (sample, block) per program, so lam and the gathered row are scalar loads."""
    pid = tl.program_id(0)
    s = pid // n_chunks
    offs = (pid - s * n_chunks) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    lam = tl.load(lam_ptr + s)
    j = tl.load(index_ptr + s)  # int64: j*D cannot overflow
    ok = (j >= 0) & (j < Nb)
    tl.device_assert(ok, "fastmix::mix_triton: index out of range [0, Nb)")
    a = tl.load(a_ptr + s.to(tl.int64) * D + offs, mask=mask, other=0.0).to(tl.float32)
    jv = tl.zeros([BLOCK], dtype=tl.int64) + j  # a block-shaped mask (the interpreter wants one)
    bmask = mask & (jv >= 0) & (jv < Nb)
    b = tl.load(b_ptr + tl.where(ok, j, 0) * D + offs, mask=bmask, other=float("nan")).to(tl.float32)
    y = lam * a + (1.0 - lam) * b
    tl.store(out_ptr + s.to(tl.int64) * D + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@register("fastmix::mix_triton", mutates_args=())
def mix_triton(a: Tensor, b: Tensor, lam: Tensor, index: Tensor) -> Tensor:
    op = "mix"
    check_images(op, a, b, same_batch=False)
    B = a.shape[0]
    check(b.dim() == a.dim() and b.shape[1:] == a.shape[1:], op,
          f"per-sample shapes differ: a {tuple(a.shape)}, b {tuple(b.shape)}")
    check_vec(op, "lam", lam, B, torch.float32, a.device)
    check_vec(op, "index", index, B, torch.int64, a.device)
    out = torch.empty_like(a)
    D = a.numel() // B if B > 0 else 0
    if D == 0:
        return out
    check_index_values(op, "index", index, b.shape[0])
    block = min(_MAX_BLOCK, max(16, pow2(D)))
    n_chunks = cdiv(D, block)
    with device_guard(a):
        wrap_triton(_mix_kernel)[(B * n_chunks,)](a, b, lam, index, out, D, b.shape[0], n_chunks,
                                                  BLOCK=block, num_warps=warps_for(block))
    return out
