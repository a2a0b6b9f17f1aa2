"""Triton kernels of the soft-label cross-entropy over compact targets (METHODS.md 1.2).

The target ``t = w*phi(ya, sa) + (1-w)*phi(yb, sb)`` with
``phi(y, s)_c = s if c == y else (1-s)/(C-1)`` covers one-hot, label smoothing and
Mixup / CutMix targets; it is never materialised: the forward only needs
``S = sum_c z_c``, ``z_ya`` and ``z_yb`` besides the logsumexp, and the backward
rebuilds ``t_c`` from the two labels per element.

Rows are processed in (BLOCK_B, BLOCK_C) tiles: several rows per program when C is
small (C = 10), one row looped in BLOCK_C chunks with an online (max-rescaled)
logsumexp when C is large.
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import cdiv, check_logits, check_vec, register, row_tiles, wrap_triton


@triton.jit
def _soft_ce_fwd_kernel(z_ptr, ya_ptr, yb_ptr, w_ptr, sa_ptr, sb_ptr, loss_ptr, lse_ptr, B, C,
                        BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """``lse_i = log sum_c exp z_ic``; ``loss_i = lse_i - sum_c t_ic z_ic`` with
    ``sum_c t_c z_c = w*(sa*z_ya + (1-sa)/(C-1)*(S - z_ya)) + (1-w)*(same for b)``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    # Padding rows re-read the last real row instead of being masked: their results
    # are never stored, and this keeps -inf - -inf (NaN) out of the online update.
    rows_c = tl.minimum(rows, B - 1)
    row_off = rows_c.to(tl.int64) * C
    m = tl.full([BLOCK_B], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_B], dtype=tl.float32)
    zsum = tl.zeros([BLOCK_B], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < C
        z = tl.load(z_ptr + row_off[:, None] + cols[None, :], mask=cmask[None, :],
                    other=float("-inf")).to(tl.float32)
        # Every chunk has >= 1 real column, so m_new is finite for finite logits.
        m_new = tl.maximum(m, tl.max(z, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
        zsum += tl.sum(tl.where(cmask[None, :], z, 0.0), axis=1)
        m = m_new
    lse = m + tl.log(s)

    ya = tl.load(ya_ptr + rows_c)
    yb = tl.load(yb_ptr + rows_c)
    z_ya = tl.load(z_ptr + row_off + ya).to(tl.float32)
    z_yb = tl.load(z_ptr + row_off + yb).to(tl.float32)
    w = tl.load(w_ptr + rows_c)
    sa = tl.load(sa_ptr + rows_c)
    sb = tl.load(sb_ptr + rows_c)
    cm1 = (C - 1).to(tl.float32)
    off_a = tl.div_rn(1.0 - sa, cm1)
    off_b = tl.div_rn(1.0 - sb, cm1)
    dot = w * (sa * z_ya + off_a * (zsum - z_ya)) + (1.0 - w) * (sb * z_yb + off_b * (zsum - z_yb))
    tl.store(loss_ptr + rows, lse - dot, mask=rmask)
    tl.store(lse_ptr + rows, lse, mask=rmask)


@triton.jit
def _soft_ce_bwd_kernel(gl_ptr, z_ptr, lse_ptr, ya_ptr, yb_ptr, w_ptr, sa_ptr, sb_ptr, out_ptr,
                        B, C, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """``dz_ic = grad_loss_i * (exp(z_ic - lse_i) - t_ic)``, elementwise over a 2-D grid
    (row tiles x column tiles); the softmax comes from the saved lse, no reduction."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = rows < B
    mask = rmask[:, None] & (cols < C)[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
    gl = tl.load(gl_ptr + rows, mask=rmask, other=0.0)
    ya = tl.load(ya_ptr + rows, mask=rmask, other=0)
    yb = tl.load(yb_ptr + rows, mask=rmask, other=0)
    w = tl.load(w_ptr + rows, mask=rmask, other=0.0)
    sa = tl.load(sa_ptr + rows, mask=rmask, other=0.0)
    sb = tl.load(sb_ptr + rows, mask=rmask, other=0.0)
    cm1 = (C - 1).to(tl.float32)
    off_a = tl.div_rn(1.0 - sa, cm1)
    off_b = tl.div_rn(1.0 - sb, cm1)
    ta = tl.where(cols[None, :] == ya[:, None], sa[:, None], off_a[:, None])
    tb = tl.where(cols[None, :] == yb[:, None], sb[:, None], off_b[:, None])
    t = w[:, None] * ta + (1.0 - w)[:, None] * tb
    p = tl.exp(z - lse[:, None])
    tl.store(out_ptr + offs, (gl[:, None] * (p - t)).to(out_ptr.dtype.element_ty), mask=mask)


def _check_targets(op, B, device, ya, yb, w, sa, sb):
    for name, t in (("ya", ya), ("yb", yb)):
        check_vec(op, name, t, B, torch.int64, device)
    for name, t in (("w", w), ("sa", sa), ("sb", sb)):
        check_vec(op, name, t, B, torch.float32, device)


@register("fastmix::soft_ce_fwd_triton", mutates_args=())
def soft_ce_fwd_triton(logits: Tensor, ya: Tensor, yb: Tensor, w: Tensor, sa: Tensor,
                       sb: Tensor) -> tuple[Tensor, Tensor]:
    op = "soft_ce_fwd"
    check_logits(op, logits)
    B, C = logits.shape
    _check_targets(op, B, logits.device, ya, yb, w, sa, sb)
    loss = torch.empty((B,), dtype=torch.float32, device=logits.device)
    lse = torch.empty((B,), dtype=torch.float32, device=logits.device)
    if B == 0:
        return loss, lse
    block_b, block_c, warps = row_tiles(B, C)
    wrap_triton(_soft_ce_fwd_kernel)[(cdiv(B, block_b),)](
        logits, ya, yb, w, sa, sb, loss, lse, B, C, BLOCK_B=block_b, BLOCK_C=block_c,
        num_warps=warps)
    return loss, lse


@soft_ce_fwd_triton.register_fake
def _(logits, ya, yb, w, sa, sb):
    B = logits.shape[0]
    return (logits.new_empty((B,), dtype=torch.float32),
            logits.new_empty((B,), dtype=torch.float32))


@register("fastmix::soft_ce_bwd_triton", mutates_args=())
def soft_ce_bwd_triton(grad_loss: Tensor, logits: Tensor, lse: Tensor, ya: Tensor, yb: Tensor,
                       w: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
    op = "soft_ce_bwd"
    check_logits(op, logits)
    B, C = logits.shape
    check_vec(op, "grad_loss", grad_loss, B, torch.float32, logits.device)
    check_vec(op, "lse", lse, B, torch.float32, logits.device)
    _check_targets(op, B, logits.device, ya, yb, w, sa, sb)
    out = torch.empty((B, C), dtype=logits.dtype, device=logits.device)
    if B == 0:
        return out
    block_b, block_c, warps = row_tiles(B, C)
    # Row tiles on grid axis 0 (no 65535 limit); column tiles are few.
    wrap_triton(_soft_ce_bwd_kernel)[(cdiv(B, block_b), cdiv(C, block_c))](
        grad_loss, logits, lse, ya, yb, w, sa, sb, out, B, C, BLOCK_B=block_b, BLOCK_C=block_c,
        num_warps=warps)
    return out


@soft_ce_bwd_triton.register_fake
def _(grad_loss, logits, lse, ya, yb, w, sa, sb):
    return torch.empty((logits.shape[0], logits.shape[1]), dtype=logits.dtype,
                       device=logits.device)
