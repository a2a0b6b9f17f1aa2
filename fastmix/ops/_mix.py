"""Batched gather-mixing (METHODS.md 1.3; Mixup, Zhang et al. 2018): ``fastmix::mix``,
``out[i] = lam_i * a[i] + (1 - lam_i) * b[index_i]``.

One vertical slice: wrapper, metadata contract, reference, fake and autograd (w.r.t.
``a``, ``b`` and ``lam``). Kernels: ``csrc/cpu/attack_cpu.cpp``, ``csrc/cuda/attack_cuda.cu``,
``fastmix/ops/triton/mix.py``. An ``index`` outside ``[0, Nb)`` is an error in every
kernel (C++ loop check, device assert), checked or not.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from . import _library as L
from . import _validate as V
from ._pgd_step import per_sample_ref


def mix_ref(a: Tensor, b: Tensor, lam, index: Tensor) -> Tensor:
    """Batched gather-mixing, plain eager torch: ``lam[i]*a[i] + (1-lam[i])*b[index[i]]``
    in float32, rounded once to ``a``'s dtype (``index_select`` raises on a bad index)."""
    l = per_sample_ref(lam, a)
    out = l * a.float() + (1.0 - l) * b.index_select(0, index).float()
    return out.to(a.dtype)


def mix(a: Tensor, b: Tensor, lam, index: Tensor, *, backend: str | None = None,
        check: bool | None = None) -> Tensor:
    """Batched gather-mixing (METHODS.md 1.3): ``out[i] = lam[i]*a[i] + (1-lam[i])*b[index[i]]``.

    Args:
        a: ``(B, ...)`` float32/bfloat16/float16, any layout (channels-last kept).
        b: ``(Nb, ...)`` with ``a``'s per-sample shape and dtype (``b`` may be ``a``, or a pool).
        lam: a float or a ``(B,)`` float tensor (values outside [0, 1] extrapolate,
            e.g. AVmixup's vertex ``x + gamma*delta`` is ``mix(x, x_adv, 1 - gamma, arange)``).
        index: ``(B,)`` int64/int32 tensor with values in ``[0, Nb)``; a value outside is
            an error raised by the kernel on every backend (no host read needed).
        check: ``True`` (or ``FASTMIX_CHECK=1`` with the default None) also scans ``a``,
            ``b`` for NaN/inf and ``index`` for its range up front (host reads).
    Differentiable w.r.t. ``a``, ``b`` and a tensor ``lam`` (manifold mixup mixes hidden features).
    """
    V.float_tensor("a", a, min_dim=1)
    V.float_tensor("b", b, min_dim=1)
    if b.shape[1:] != a.shape[1:]:
        raise ValueError(f"b must have a's per-sample shape {tuple(a.shape[1:])}, got {tuple(b.shape[1:])}")
    V.same_dtype("b", b, "a", a)
    V.same_device("b", b, "a", a)
    B = a.shape[0]
    V.index_tensor("index", index, B)
    V.same_device("index", index, "a", a)
    scan = V.scans(check)
    if scan:
        V.finite("a", a)
        V.finite("b", b)
        if B > 0:
            V.in_range("index", index, 0, b.shape[0] - 1, f" (b has {b.shape[0]} rows)")
    lam_t = V.per_sample("lam", lam, B, a.device, check=scan)
    index = index.to(torch.int64).contiguous()
    bk = _backend.resolve(a.device, backend)
    if bk == "torch":
        return mix_ref(a, b, lam_t, index)
    fmt = L.memory_format(a)
    return L.kernel("mix", bk)(a.contiguous(memory_format=fmt), b.contiguous(memory_format=fmt), lam_t, index)


# ------------------------------------------------------------------ fake, autograd, register
def _fake(a, b, lam, index):
    return torch.empty_like(a)


def _setup_context(ctx, inputs, output):
    a, b, lam, index = inputs
    ctx.b_rows = b.shape[0]
    need_lam = ctx.needs_input_grad[2]
    ctx.save_for_backward(lam, index, a if need_lam else None, b if need_lam else None)


def _backward(ctx, g):
    lam, index, a, b = ctx.saved_tensors
    shape = (-1,) + (1,) * (g.dim() - 1)
    l = lam.reshape(shape)
    ga = gb = gl = None
    if ctx.needs_input_grad[0]:
        ga = (g.float() * l).to(g.dtype)
    if ctx.needs_input_grad[1]:
        contrib = (g.float() * (1.0 - l)).to(g.dtype)
        gb = g.new_zeros((ctx.b_rows,) + tuple(g.shape[1:])).index_add_(0, index, contrib)
    if ctx.needs_input_grad[2]:
        diff = a.float() - b.index_select(0, index).float()
        gl = (diff * g.float()).reshape(g.shape[0], -1).sum(1)
    return ga, gb, gl, None


L.register("mix", fake=_fake, backward=_backward, setup_context=_setup_context)
