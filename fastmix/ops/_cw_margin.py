"""The Carlini-Wagner margin loss (Carlini & Wagner 2017) as ascended by the attacker:
``fastmix::cw_margin_fwd`` (margin and the best other class ``jstar``) and
``fastmix::cw_margin_bwd``.

One vertical slice: wrapper, metadata contract, reference, fakes and the autograd of
``cw_margin_fwd``. Kernels: ``csrc/cpu/loss_cpu.cpp``, ``csrc/cuda/loss_cuda.cu``,
``fastmix/ops/triton/cw_margin.py``. NaN: a NaN among the other logits is their max
(jstar is the first NaN, as torch.argmax); a NaN margin compares false against kappa,
so the row's margin is kappa and its gradient 0, in the reference and every kernel.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from . import _library as L
from . import _validate as V
from ._soft_cross_entropy import check_logits, labels


def cw_margin_ref(logits: Tensor, y: Tensor, *, kappa: float = 0.0, reduction: str = "mean") -> Tensor:
    """The Carlini-Wagner margin loss the attacker *ascends*, plain eager torch.

    ``min(max_{j != y} z_j - z_y, kappa)``, i.e. the negated C&W objective
    ``max(z_y - max_{j != y} z_j, -kappa)``: the clamp stops pushing a sample once it is
    misclassified by a margin of ``kappa``.  Per row in float32, then reduced.
    """
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    raw = other - zy
    m = torch.where(raw < kappa, raw, torch.full_like(raw, kappa))
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return L.reduce(m, reduction)


def cw_margin(logits: Tensor, y: Tensor, *, kappa: float = 0.0, reduction: str = "mean",
              backend: str | None = None, check: bool | None = None) -> Tensor:
    """The Carlini-Wagner margin loss, in the direction an attack ascends.

    ``min(max_{j != y} z_j - z_y, kappa)`` per row: the negation of C&W's
    ``max(z_y - max_{j != y} z_j, -kappa)``, so PGD maximising it pushes the best wrong
    class above the true one until the margin reaches ``kappa`` (>= 0).
    ``logits`` is ``(B, C)`` float, ``y`` ``(B,)`` integer labels in ``[0, C)`` (a label
    outside is an error raised by the kernel). ``check=True`` (or ``FASTMIX_CHECK=1``)
    also scans the logits and labels (host reads).
    Differentiable w.r.t. ``logits``: ``+1`` at the best other class, ``-1`` at ``y``
    while the margin is below ``kappa``.
    """
    scan = V.scans(check)
    check_logits(logits, scan)
    V.reduction(reduction)
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not (float(kappa) >= 0.0):
        raise ValueError(f"kappa must be a number >= 0, got {kappa!r}")
    B, C = logits.shape
    y = labels("y", y, B, C, logits.device, scan)
    bk = _backend.resolve(logits.device, backend)
    if bk == "torch":
        return cw_margin_ref(logits, y, kappa=float(kappa), reduction=reduction)
    return L.call_first_output("cw_margin_fwd", bk, _EAGER, reduction, logits.contiguous(), y, float(kappa))


# ------------------------------------------------------------------ fakes, autograd, register
def _fake_fwd(logits, y, kappa):
    B = logits.shape[0]
    return (logits.new_empty((B,), dtype=torch.float32), logits.new_empty((B,), dtype=torch.int64))


def _fake_bwd(grad, logits, y, jstar, margin, kappa):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, y, kappa = inputs
    margin, jstar = output
    ctx.kappa = kappa
    ctx.save_for_backward(logits, y, jstar, margin)


def _make_backward(backend):
    bwd = L.kernel("cw_margin_bwd", backend)

    def backward(ctx, g_margin, g_jstar):
        logits, y, jstar, margin = ctx.saved_tensors
        if g_margin is None:
            g_margin = torch.zeros_like(margin)
        return bwd(g_margin.float().contiguous(), logits, y, jstar, margin, ctx.kappa), None, None
    return backward


L.register("cw_margin_bwd", fake=_fake_bwd)
L.register("cw_margin_fwd", fake=_fake_fwd, make_backward=_make_backward, setup_context=_setup_context)
_EAGER = {k: L.eager_first_output("cw_margin_fwd", b, _setup_context, _make_backward)
          for k, b in (("native", "cpp"), ("triton", "triton"))}
