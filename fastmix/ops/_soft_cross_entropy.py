"""Cross-entropy against the compact two-part soft target (METHODS.md 1.2):
``fastmix::soft_ce_fwd`` (loss and logsumexp per row) and ``fastmix::soft_ce_bwd``.

One vertical slice: wrapper, metadata contract, reference, fakes and the autograd of
``soft_ce_fwd`` (for the Triton op, and for the C++ op where the extension has no C++
Autograd kernel of its own). Kernels: ``csrc/cpu/loss_cpu.cpp``, ``csrc/cuda/loss_cuda.cu``,
``fastmix/ops/triton/soft_cross_entropy.py``.

Numerics, the same in the reference and the kernels (docs/OPS.md):
- an infinite row max is not subtracted (torch.logsumexp): a row of -inf has lse -inf,
  a row holding +inf has lse +inf;
- a class whose target weight is 0 contributes 0 to ``sum_c t_c z_c``, so a -inf logit
  the target excludes leaves the loss finite (as F.cross_entropy);
- the gradient at a label class holding more than half the probability (``p_c > 1/2``)
  is ``(1 - t_c) - sum_{c' != c} p_c'`` rather than ``p_c - t_c``, which cancels when
  the softmax saturates; so the fused op's true-class gradient is at least as
  accurate as torch's own fp32 cross-entropy. Elsewhere ``p_c - t_c`` is exact enough
  (and the complement form would cancel instead).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from . import _library as L
from . import _validate as V


# ------------------------------------------------------------------------------ reference
def _as_f32(v, B, dev):
    if v is None:
        return torch.ones(B, device=dev, dtype=torch.float32)
    if isinstance(v, Tensor):
        return v.to(device=dev, dtype=torch.float32).reshape(B)
    return torch.full((B,), float(v), device=dev, dtype=torch.float32)


def _onehot(y: Tensor, C: int, like: Tensor) -> Tensor:
    # scatter (not F.one_hot, which reads the labels back to check them): an out-of-range
    # label raises inside the scatter kernel
    return torch.zeros_like(like).scatter_(1, y.long()[:, None], 1.0)


def _phis(ya, yb, w, sa, sb, C, like):
    """(phi_a, phi_b, onehot_a, onehot_b) as dense (B, C) float32 matrices."""
    oa, ob = _onehot(ya, C, like), _onehot(yb, C, like)
    phi_a = sa[:, None] * oa + ((1.0 - sa) / (C - 1))[:, None] * (1.0 - oa)
    phi_b = sb[:, None] * ob + ((1.0 - sb) / (C - 1))[:, None] * (1.0 - ob)
    return phi_a, phi_b, oa, ob


def soft_target_ref(ya: Tensor, yb: Tensor, w: Tensor, sa: Tensor, sb: Tensor, num_classes: int) -> Tensor:
    """The dense B x C target ``w*phi(ya,sa) + (1-w)*phi(yb,sb)`` (for tests and debugging)."""
    B = ya.shape[0]
    dev = ya.device
    like = torch.empty(B, num_classes, device=dev, dtype=torch.float32)
    w, sa, sb = _as_f32(w, B, dev), _as_f32(sa, B, dev), _as_f32(sb, B, dev)
    phi_a, phi_b, _, _ = _phis(ya, yb, w, sa, sb, num_classes, like)
    return w[:, None] * phi_a + (1.0 - w)[:, None] * phi_b


class _SoftCERef(torch.autograd.Function):
    """The reference loss, its gradient written out so that the label classes use the
    cancellation-free form (autograd of logsumexp would give ``p_c - t_c``)."""

    @staticmethod
    def forward(ctx, logits, labels, weights):
        # labels (2, B) = [ya, yb], weights (3, B) = [w, sa, sb]: stacked, because Dynamo
        # does not trace an autograd.Function given one tensor twice (ya is yb for hard labels)
        ya, yb = labels[0], labels[1]
        w, sa, sb = weights[0], weights[1], weights[2]
        z = logits.float()
        C = z.shape[1]
        phi_a, phi_b, oa, ob = _phis(ya, yb, w, sa, sb, C, z)
        t = w[:, None] * phi_a + (1.0 - w)[:, None] * phi_b
        lse = torch.logsumexp(z, dim=1)
        dot = torch.where(t == 0, torch.zeros_like(z), t * z).sum(dim=1)
        ctx.save_for_backward(z, lse, t, phi_a, phi_b, oa, ob, w)
        ctx.dtype = logits.dtype
        return lse - dot

    @staticmethod
    def backward(ctx, g):
        z, lse, t, phi_a, phi_b, oa, ob, w = ctx.saved_tensors
        p = torch.exp(z - lse[:, None])
        q_a = (p * (1.0 - oa)).sum(dim=1, keepdim=True)  # sum of the other classes' p
        q_b = (p * (1.0 - ob)).sum(dim=1, keepdim=True)
        one_minus_t = w[:, None] * (1.0 - phi_a) + (1.0 - w)[:, None] * (1.0 - phi_b)
        # complement form where the class dominates (p > 1/2: p - t would cancel), p - t elsewhere
        label = ((oa + ob) > 0) & (p > 0.5)
        d = torch.where(label, one_minus_t - torch.where(oa > 0, q_a, q_b), p - t)
        return (g.float()[:, None] * d).to(ctx.dtype), None, None


def soft_cross_entropy_ref(logits: Tensor, ya: Tensor, yb: Tensor | None = None, w=None, sa=None, sb=None,
                           reduction: str = "mean") -> Tensor:
    """Cross-entropy against the compact soft target, through a dense B x C target.

    Loss per row ``lse(z) - sum_{c: t_c > 0} t_c z_c`` in float32, reduced by ``reduction``;
    ``w``, ``sa``, ``sb`` are floats or ``(B,)`` tensors (None: 1).
    """
    B = logits.shape[0]
    dev = logits.device
    yb = ya if yb is None else yb
    labels = torch.stack([ya.long(), yb.long()])
    weights = torch.stack([_as_f32(w, B, dev), _as_f32(sa, B, dev), _as_f32(sb, B, dev)])
    loss = _SoftCERef.apply(logits, labels, weights)
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return L.reduce(loss, reduction)


# ------------------------------------------------------------------------------- contract
def labels(name, y, B, C, device, scan):
    """A (B,) label tensor, int64 contiguous; its range is scanned only with ``scan``
    (the kernels reject an out-of-range label themselves)."""
    V.index_tensor(name, y, B)
    if y.device != device:
        raise ValueError(f"{name} is on {y.device} but logits is on {device}; put them on one device")
    if scan and B > 0:
        V.in_range(name, y, 0, C - 1, f" (logits have C={C} classes)")
    return y.to(torch.int64).contiguous()


def check_logits(logits, scan):
    V.float_tensor("logits", logits, dim=2)
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes, got shape {tuple(logits.shape)}")
    if scan:
        V.finite("logits", logits)


def soft_cross_entropy(logits: Tensor, ya: Tensor, yb: Tensor | None = None, w=None, sa=None, sb=None,
                       reduction: str = "mean", *, backend: str | None = None,
                       check: bool | None = None) -> Tensor:
    """Cross-entropy against the compact soft target of METHODS.md 1.2, fused.

    ``t = w*phi(ya, sa) + (1-w)*phi(yb, sb)`` with ``phi(y, s)`` = ``s`` on class ``y`` and
    ``(1-s)/(C-1)`` elsewhere; the loss per row is ``logsumexp(z) - sum_c t_c z_c`` and its
    gradient ``softmax(z) - t``, computed from the O(B) numbers without a B x C target.

    Args:
        logits: ``(B, C)`` float32/bfloat16/float16, ``C >= 2`` (accumulated in float32).
        ya, yb: ``(B,)`` integer labels in ``[0, C)``; ``yb`` defaults to ``ya``. A label
            outside is an error raised by the kernel on every backend.
        w, sa, sb: floats or ``(B,)`` tensors in ``[0, 1]``; defaults 1 (the hard label).
        reduction: ``"none"`` (float32 ``(B,)``), ``"mean"`` or ``"sum"``.
        check: ``True`` (or ``FASTMIX_CHECK=1`` with the default None) also scans the
            logits for NaN/inf and the label and weight tensors for their ranges (host
            reads); metadata is always checked.
    Differentiable w.r.t. ``logits`` (the targets are constants).
    """
    scan = V.scans(check)
    check_logits(logits, scan)
    V.reduction(reduction)
    B, C = logits.shape
    dev = logits.device
    ya = labels("ya", ya, B, C, dev, scan)
    yb = ya if yb is None else labels("yb", yb, B, C, dev, scan)
    if w is None and sa is None and sb is None:  # hard label: one shared tensor of ones
        w = sa = sb = torch.ones((B,), dtype=torch.float32, device=dev)
    else:
        w = V.per_sample("w", 1.0 if w is None else w, B, dev, lo=0.0, hi=1.0, check=scan)
        sa = V.per_sample("sa", 1.0 if sa is None else sa, B, dev, lo=0.0, hi=1.0, check=scan)
        sb = V.per_sample("sb", 1.0 if sb is None else sb, B, dev, lo=0.0, hi=1.0, check=scan)
    bk = _backend.resolve(dev, backend)
    if bk == "torch":
        return soft_cross_entropy_ref(logits, ya, yb, w, sa, sb, reduction)
    return L.call_first_output("soft_ce_fwd", bk, _EAGER, reduction, logits.contiguous(), ya, yb, w, sa, sb)


# ------------------------------------------------------------------ fakes, autograd, register
def _fake_fwd(logits, ya, yb, w, sa, sb):
    B = logits.shape[0]
    return (logits.new_empty((B,), dtype=torch.float32), logits.new_empty((B,), dtype=torch.float32))


def _fake_bwd(grad_loss, logits, lse, ya, yb, w, sa, sb):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, ya, yb, w, sa, sb = inputs
    loss, lse = output
    ctx.save_for_backward(logits, lse, ya, yb, w, sa, sb)


def _make_backward(backend):
    bwd = kernel_of("soft_ce_bwd", backend)

    def backward(ctx, g_loss, g_lse):
        logits, lse, ya, yb, w, sa, sb = ctx.saved_tensors
        if g_loss is None:
            g_loss = torch.zeros_like(lse)
        grad = bwd(g_loss.float().contiguous(), logits, lse, ya, yb, w, sa, sb)
        if g_lse is not None:  # d lse / d z = softmax(z)
            grad = grad + (g_lse.float()[:, None] * torch.exp(logits.float() - lse[:, None])).to(grad.dtype)
        # Targets (w, sa, sb) are treated as constants: no method differentiates through them.
        return grad, None, None, None, None, None
    return backward


kernel_of = L.kernel
L.register("soft_ce_bwd", fake=_fake_bwd)
L.register("soft_ce_fwd", fake=_fake_fwd, make_backward=_make_backward, setup_context=_setup_context)
_EAGER = {k: L.eager_first_output("soft_ce_fwd", b, _setup_context, _make_backward)
          for k, b in (("native", "cpp"), ("triton", "triton"))}
