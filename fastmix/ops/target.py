"""The compact soft target (METHODS.md 1.2), beside the ops that consume it.

Every layer above the ops hands targets around as a :class:`SoftTarget` (O(B) numbers,
never a ``(B, C)`` matrix): the fused soft cross-entropy takes its fields as arguments
(``ops.soft_cross_entropy(logits, *target)``), the attacks ascend it, the mixup methods
build it. It lives here, at the bottom, so that no layer has to import another one
sideways to name it.
"""
from typing import NamedTuple

from torch import Tensor

__all__ = ["SoftTarget", "label_of", "repeat_target"]


class SoftTarget(NamedTuple):
    """The compact two-part soft target of METHODS.md 1.2 (O(B) numbers, never B x C).

    ``t_i = w_i*phi(ya_i, sa_i) + (1 - w_i)*phi(yb_i, sb_i)`` with ``phi(y, s)`` = ``s`` on
    class ``y`` and ``(1 - s)/(C - 1)`` elsewhere. Fields, in the argument order of
    :func:`fastmix.ops.soft_cross_entropy` (so ``soft_cross_entropy(logits, *target)``):

    - ``ya``: ``(B,)`` int64 labels in ``[0, C)``; also the label an attack checks
      correctness against (GAIRAT's kappa, restarts).
    - ``yb``: ``(B,)`` int64 or None (= ``ya``).
    - ``w``, ``sa``, ``sb``: floats or ``(B,)`` float tensors in ``[0, 1]``, or None (= 1).
    """
    ya: Tensor
    yb: Tensor | None = None
    w: Tensor | float | None = None
    sa: Tensor | float | None = None
    sb: Tensor | float | None = None

    def filled(self, *, check: bool = True) -> "SoftTarget":
        """The same target with every field a tensor: ``yb`` = ``ya`` when None, and ``w``,
        ``sa``, ``sb`` float32 ``(B,)`` (1 when None) on ``ya``'s device."""
        from ._validate import per_sample
        B, dev = self.ya.shape[0], self.ya.device
        return SoftTarget(self.ya, self.ya if self.yb is None else self.yb,
                          *(per_sample(n, 1.0 if v is None else v, B, dev, check=check)
                            for n, v in (("w", self.w), ("sa", self.sa), ("sb", self.sb))))

    def dense(self, num_classes: int) -> Tensor:
        """The ``(B, C)`` float32 target (for tests and debugging)."""
        from . import soft_target_ref
        return soft_target_ref(*self.filled(), num_classes)


def label_of(y) -> Tensor | None:
    """The hard label that decides 'still correct' for a target (``ya`` of a SoftTarget,
    the labels themselves otherwise, None for None)."""
    return y.ya if isinstance(y, SoftTarget) else y


def repeat_target(t, n: int):
    """A target repeated ``n`` times along the batch (sample ``r*B + i`` gets target ``i``):
    labels, a feature tensor, a SoftTarget (its tensor fields), or None."""
    if n == 1 or t is None:
        return t
    if isinstance(t, SoftTarget):
        return SoftTarget(*(v.repeat(n) if isinstance(v, Tensor) else v for v in t))
    return t.repeat(n, *([1] * (t.dim() - 1)))
