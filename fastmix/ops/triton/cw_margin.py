"""Triton kernels of the Carlini-Wagner margin loss (Carlini & Wagner 2017), as ascended by
the attacker: ``margin_i = min(max_{j != y_i} z_ij - z_{i,y_i}, kappa)``.

The forward keeps the arg-max ``jstar`` (first index on ties; a NaN counts as the max,
as in torch.argmax and the C++ kernel) so that the backward is a pure scatter of two
values per row and never re-scans the logits. A NaN margin compares false against
kappa, so such a row's margin is kappa and its gradient zero, as in the reference.
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (SAFE_JIT, cdiv, check_index_values, check_logits, check_vec, device_guard,
                      register, row_tiles, wrap_triton)


@triton.jit(**SAFE_JIT)
def _cw_margin_fwd_kernel(z_ptr, y_ptr, margin_ptr, jstar_ptr, B, C, kappa,
                          BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """Running (max, first arg-max) over BLOCK_C column chunks, excluding column y."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    rows_c = tl.minimum(rows, B - 1)  # padding rows recompute the last row, never stored
    row_off = rows_c.to(tl.int64) * C
    y = tl.load(y_ptr + rows_c)
    ok = (y >= 0) & (y < C)
    tl.device_assert(ok, "fastmix::cw_margin_fwd_triton: y out of range [0, C)")
    best = tl.full([BLOCK_B], float("-inf"), tl.float32)
    best_j = tl.full([BLOCK_B], C, tl.int32)  # C = "none yet"
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        valid = (cols[None, :] < C) & (cols[None, :] != y[:, None])
        z = tl.load(z_ptr + row_off[:, None] + cols[None, :], mask=cols[None, :] < C,
                    other=float("-inf")).to(tl.float32)
        z = tl.where(valid, z, float("-inf"))
        isnan = valid & (z != z)
        nan_j = tl.min(tl.where(isnan, cols[None, :], C), axis=1)  # first NaN, C if none
        cmax = tl.max(z, axis=1)
        # First valid column reaching the chunk max; `valid` keeps a row whose other
        # logits are all -inf from picking y or a padding column.
        cj = tl.min(tl.where(valid & (z == cmax[:, None]), cols[None, :], C), axis=1)
        chunk_nan = nan_j < C
        cmax = tl.where(chunk_nan, float("nan"), cmax)
        cj = tl.where(chunk_nan, nan_j, cj)
        # A NaN already found stays (first NaN wins); else a NaN chunk wins; else strict >
        # keeps the earlier chunk on ties across chunks.
        best_nan = best != best
        take = (~best_nan) & (chunk_nan | (cmax > best) | ((best_j == C) & (cj < C)))
        best = tl.where(take, cmax, best)
        best_j = tl.where(take, cj, best_j)
    zy = tl.load(z_ptr + row_off + tl.where(ok, y, 0), mask=ok, other=float("nan")).to(tl.float32)
    raw = best - zy
    margin = tl.where(raw < kappa, raw, kappa)
    tl.store(margin_ptr + rows, margin, mask=rmask)
    tl.store(jstar_ptr + rows, best_j.to(tl.int64), mask=rmask)


@triton.jit
def _cw_margin_bwd_kernel(g_ptr, y_ptr, jstar_ptr, margin_ptr, out_ptr, B, C, kappa,
                          BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """``+g_i`` at jstar_i, ``-g_i`` at y_i for rows still below kappa, zeros elsewhere
    (the zero fill is done here, saving a separate memset launch)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = rows < B
    mask = rmask[:, None] & (cols < C)[None, :]
    g = tl.load(g_ptr + rows, mask=rmask, other=0.0)
    y = tl.load(y_ptr + rows, mask=rmask, other=0)
    j = tl.load(jstar_ptr + rows, mask=rmask, other=0)
    active = tl.load(margin_ptr + rows, mask=rmask, other=0.0) < kappa
    g = tl.where(active, g, 0.0)
    val = tl.where(cols[None, :] == j[:, None], g[:, None],
                   tl.where(cols[None, :] == y[:, None], -g[:, None], 0.0))
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    tl.store(out_ptr + offs, val.to(out_ptr.dtype.element_ty), mask=mask)


@register("fastmix::cw_margin_fwd_triton", mutates_args=())
def cw_margin_fwd_triton(logits: Tensor, y: Tensor, kappa: float) -> tuple[Tensor, Tensor]:
    op = "cw_margin_fwd"
    check_logits(op, logits)
    B, C = logits.shape
    check_vec(op, "y", y, B, torch.int64, logits.device)
    margin = torch.empty((B,), dtype=torch.float32, device=logits.device)
    jstar = torch.empty((B,), dtype=torch.int64, device=logits.device)
    if B == 0:
        return margin, jstar
    check_index_values(op, "y", y, C)
    block_b, block_c, warps = row_tiles(B, C)
    with device_guard(logits):
        wrap_triton(_cw_margin_fwd_kernel)[(cdiv(B, block_b),)](
            logits, y, margin, jstar, B, C, float(kappa), BLOCK_B=block_b, BLOCK_C=block_c,
            num_warps=warps)
    return margin, jstar


@register("fastmix::cw_margin_bwd_triton", mutates_args=())
def cw_margin_bwd_triton(grad: Tensor, logits: Tensor, y: Tensor, jstar: Tensor, margin: Tensor,
                         kappa: float) -> Tensor:
    op = "cw_margin_bwd"
    check_logits(op, logits)
    B, C = logits.shape
    check_vec(op, "grad", grad, B, torch.float32, logits.device)
    check_vec(op, "y", y, B, torch.int64, logits.device)
    check_vec(op, "jstar", jstar, B, torch.int64, logits.device)
    check_vec(op, "margin", margin, B, torch.float32, logits.device)
    out = torch.empty((B, C), dtype=logits.dtype, device=logits.device)
    if B == 0:
        return out
    block_b, block_c, warps = row_tiles(B, C)
    with device_guard(logits):
        wrap_triton(_cw_margin_bwd_kernel)[(cdiv(B, block_b), cdiv(C, block_c))](
            grad, y, jstar, margin, out, B, C, float(kappa), BLOCK_B=block_b, BLOCK_C=block_c,
            num_warps=warps)
    return out
