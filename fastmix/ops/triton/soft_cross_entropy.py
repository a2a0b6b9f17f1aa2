"""Triton kernels of the soft-label cross-entropy over compact targets (METHODS.md 1.2).

The target ``t = w*phi(ya, sa) + (1-w)*phi(yb, sb)`` with
``phi(y, s)_c = s if c == y else (1-s)/(C-1)`` covers one-hot, label smoothing and
Mixup / CutMix targets; it is never materialised: the forward only needs
``S = sum_c z_c``, ``z_ya`` and ``z_yb`` besides the logsumexp, and the backward
rebuilds ``t_c`` from the two labels per element.

Rows are processed in (BLOCK_B, BLOCK_C) tiles: several rows per program when C is
small (C = 10), one row looped in BLOCK_C chunks with an online (max-rescaled)
logsumexp when C is large.

Numerics (shared with the reference, docs/OPS.md): an infinite row max is not
subtracted (torch.logsumexp's convention: a row of -inf gives lse -inf, a row holding
+inf gives +inf, never NaN); a class whose target weight is 0 contributes nothing to
``sum_c t_c z_c`` (a -inf logit the target excludes gives a finite loss, as in
F.cross_entropy); the gradient at a label class with ``p_c > 1/2`` is
``(1 - t_c) - sum_{c' != c} p_c'``, which keeps full relative precision when the softmax
saturates (``p_c - t_c`` with ``p_c`` near 1 cancels).
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (SAFE_JIT, cdiv, check_index_values, check_logits, check_vec, device_guard,
                      register, row_tiles, wrap_triton)

_ONE_TILE_MAX_C = 2048  # row_tiles' largest BLOCK_C: up to here a row is one column tile


@triton.jit
def _shift(m):
    # torch.logsumexp: an infinite max is not subtracted
    return tl.where((m == float("inf")) | (m == float("-inf")), 0.0, m)


@triton.jit
def _zero_weight_dot(wt, v):
    # wt * v, but 0 where the weight is 0 (so v = -inf or NaN from excluded classes drops out)
    return tl.where(wt == 0.0, 0.0, wt * v)


@triton.jit(**SAFE_JIT)
def _soft_ce_fwd_kernel(z_ptr, ya_ptr, yb_ptr, w_ptr, sa_ptr, sb_ptr, loss_ptr, lse_ptr, B, C,
                        BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """``lse_i = log sum_c exp z_ic``; ``loss_i = lse_i - sum_c t_ic z_ic`` with
    ``sum_c t_c z_c = w*(sa*z_ya + (1-sa)/(C-1)*(S - z_ya)) + (1-w)*(same for b)``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    # Padding rows re-read the last real row instead of being masked: their results
    # are never stored.
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
        m_new = tl.maximum(m, tl.max(z, axis=1))
        sh_old = _shift(m)
        sh_new = _shift(m_new)
        # s == 0 means every logit so far was -inf: keep 0 (0 * exp(+big) would be NaN)
        s = tl.where(s == 0.0, 0.0, s * tl.exp(sh_old - sh_new)) + \
            tl.sum(tl.exp(z - sh_new[:, None]), axis=1)
        zsum += tl.sum(tl.where(cmask[None, :], z, 0.0), axis=1)
        m = m_new
    lse = tl.log(s) + _shift(m)

    ya = tl.load(ya_ptr + rows_c)
    yb = tl.load(yb_ptr + rows_c)
    ok_a = (ya >= 0) & (ya < C)
    ok_b = (yb >= 0) & (yb < C)
    tl.device_assert(ok_a, "fastmix::soft_ce_fwd_triton: ya out of range [0, C)")
    tl.device_assert(ok_b, "fastmix::soft_ce_fwd_triton: yb out of range [0, C)")
    # masked gathers: a bad label reads nothing and makes its row's loss NaN
    z_ya = tl.load(z_ptr + row_off + tl.where(ok_a, ya, 0), mask=ok_a, other=float("nan")).to(tl.float32)
    z_yb = tl.load(z_ptr + row_off + tl.where(ok_b, yb, 0), mask=ok_b, other=float("nan")).to(tl.float32)
    w = tl.load(w_ptr + rows_c)
    sa = tl.load(sa_ptr + rows_c)
    sb = tl.load(sb_ptr + rows_c)
    cm1 = (C - 1).to(tl.float32)
    off_a = tl.div_rn(1.0 - sa, cm1)
    off_b = tl.div_rn(1.0 - sb, cm1)
    dot_a = _zero_weight_dot(sa, z_ya) + _zero_weight_dot(off_a, zsum - z_ya)
    dot_b = _zero_weight_dot(sb, z_yb) + _zero_weight_dot(off_b, zsum - z_yb)
    dot = _zero_weight_dot(w, dot_a) + _zero_weight_dot(1.0 - w, dot_b)
    tl.store(loss_ptr + rows, lse - dot, mask=rmask)
    tl.store(lse_ptr + rows, lse, mask=rmask)


@triton.jit
def _soft_ce_q_kernel(z_ptr, lse_ptr, ya_ptr, yb_ptr, q_ptr, C, BLOCK_C: tl.constexpr):
    """Rows longer than one tile: ``q_a = sum_{c != ya} p_c`` and ``q_b`` (one program per
    row), for the backward's label classes."""
    r = tl.program_id(0)
    row_off = r.to(tl.int64) * C
    lse = tl.load(lse_ptr + r)
    ya = tl.load(ya_ptr + r)
    yb = tl.load(yb_ptr + r)
    qa = tl.zeros([BLOCK_C], dtype=tl.float32)
    qb = tl.zeros([BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < C
        z = tl.load(z_ptr + row_off + cols, mask=cmask, other=0.0).to(tl.float32)
        p = tl.where(cmask, tl.exp(z - lse), 0.0)
        qa += tl.where(cols == ya, 0.0, p)
        qb += tl.where(cols == yb, 0.0, p)
    tl.store(q_ptr + 2 * r, tl.sum(qa, axis=0))
    tl.store(q_ptr + 2 * r + 1, tl.sum(qb, axis=0))


@triton.jit
def _soft_ce_bwd_kernel(gl_ptr, z_ptr, lse_ptr, ya_ptr, yb_ptr, w_ptr, sa_ptr, sb_ptr, q_ptr, out_ptr,
                        B, C, Q_FROM_TILE: tl.constexpr, BLOCK_B: tl.constexpr,
                        BLOCK_C: tl.constexpr):
    """``dz_ic = grad_loss_i * (p_ic - t_ic)``, ``p = exp(z - lse)``, elementwise over a 2-D
    grid (row tiles x column tiles); at the label classes ``p_c - t_c`` is computed as
    ``(1 - t_c) - sum_{c' != c} p_c'`` where ``p_c > 1/2`` (no cancellation). Labels are only compared here,
    never used as addresses, so a bad label cannot make this kernel read out of bounds."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = rows < B
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
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
    is_a = cols[None, :] == ya[:, None]
    is_b = cols[None, :] == yb[:, None]
    ta = tl.where(is_a, sa[:, None], off_a[:, None])
    tb = tl.where(is_b, sb[:, None], off_b[:, None])
    t = w[:, None] * ta + (1.0 - w)[:, None] * tb
    p = tl.where(mask, tl.exp(z - lse[:, None]), 0.0)
    if Q_FROM_TILE:  # the tile holds whole rows
        qa = tl.sum(tl.where(is_a, 0.0, p), axis=1)
        qb = tl.sum(tl.where(is_b, 0.0, p), axis=1)
    else:
        qa = tl.load(q_ptr + 2 * rows, mask=rmask, other=0.0)
        qb = tl.load(q_ptr + 2 * rows + 1, mask=rmask, other=0.0)
    one_m_t = w[:, None] * tl.where(is_a, 1.0 - sa[:, None], 1.0 - off_a[:, None]) + \
        (1.0 - w)[:, None] * tl.where(is_b, 1.0 - sb[:, None], 1.0 - off_b[:, None])
    q = tl.where(is_a, qa[:, None], qb[:, None])
    # complement form only where the class dominates (p > 1/2); below, it would cancel
    d = tl.where((is_a | is_b) & (p > 0.5), one_m_t - q, p - t)
    tl.store(out_ptr + offs, (gl[:, None] * d).to(out_ptr.dtype.element_ty), mask=mask)


def _check_targets(op, B, C, device, ya, yb, w, sa, sb):
    for name, t in (("ya", ya), ("yb", yb)):
        check_vec(op, name, t, B, torch.int64, device)
        check_index_values(op, name, t, C)
    for name, t in (("w", w), ("sa", sa), ("sb", sb)):
        check_vec(op, name, t, B, torch.float32, device)


@register("fastmix::soft_ce_fwd_triton", mutates_args=())
def soft_ce_fwd_triton(logits: Tensor, ya: Tensor, yb: Tensor, w: Tensor, sa: Tensor,
                       sb: Tensor) -> tuple[Tensor, Tensor]:
    op = "soft_ce_fwd"
    check_logits(op, logits)
    B, C = logits.shape
    _check_targets(op, B, C, logits.device, ya, yb, w, sa, sb)
    loss = torch.empty((B,), dtype=torch.float32, device=logits.device)
    lse = torch.empty((B,), dtype=torch.float32, device=logits.device)
    if B == 0:
        return loss, lse
    block_b, block_c, warps = row_tiles(B, C, max_block_c=_ONE_TILE_MAX_C)
    with device_guard(logits):
        wrap_triton(_soft_ce_fwd_kernel)[(cdiv(B, block_b),)](
            logits, ya, yb, w, sa, sb, loss, lse, B, C, BLOCK_B=block_b, BLOCK_C=block_c,
            num_warps=warps)
    return loss, lse


@register("fastmix::soft_ce_bwd_triton", mutates_args=())
def soft_ce_bwd_triton(grad_loss: Tensor, logits: Tensor, lse: Tensor, ya: Tensor, yb: Tensor,
                       w: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
    op = "soft_ce_bwd"
    check_logits(op, logits)
    B, C = logits.shape
    check_vec(op, "grad_loss", grad_loss, B, torch.float32, logits.device)
    check_vec(op, "lse", lse, B, torch.float32, logits.device)
    _check_targets(op, B, C, logits.device, ya, yb, w, sa, sb)
    out = torch.empty((B, C), dtype=logits.dtype, device=logits.device)
    if B == 0:
        return out
    block_b, block_c, warps = row_tiles(B, C, max_block_c=_ONE_TILE_MAX_C)
    one_tile = block_c >= C
    with device_guard(logits):
        if one_tile:
            q = lse  # unused
        else:
            q = torch.empty((B, 2), dtype=torch.float32, device=logits.device)
            wrap_triton(_soft_ce_q_kernel)[(B,)](logits, lse, ya, yb, q, C, BLOCK_C=block_c,
                                                 num_warps=warps)
        # Row tiles on grid axis 0 (no 65535 limit); column tiles are few.
        wrap_triton(_soft_ce_bwd_kernel)[(cdiv(B, block_b), cdiv(C, block_c))](
            grad_loss, logits, lse, ya, yb, w, sa, sb, q, out, B, C, Q_FROM_TILE=one_tile,
            BLOCK_B=block_b, BLOCK_C=block_c, num_warps=warps)
    return out
