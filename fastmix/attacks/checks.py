"""Argument checks shared by the attacks (ValueError naming the argument and the value)."""
from __future__ import annotations

import math

from torch import Tensor

from ..ops import _validate as validate
from ..ops.target import SoftTarget

__all__ = ["NORMS", "check_norm", "check_images", "check_labels", "check_int", "check_eps"]

#: the threat models, by name: the L-inf ball (sign steps) and the L2 ball (normalised steps)
NORMS = ("linf", "l2")


def check_norm(norm) -> str:
    """``norm``: ``"linf"`` or ``"l2"`` (the names every attack takes)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return norm


def check_images(name: str, x, check: bool) -> Tensor:
    """``x``: float tensor ``(B, ...)``, B >= 1; with ``check``, finite and in [0, 1]."""
    validate.float_tensor(name, x, min_dim=2)
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    if check and not bool(((x >= 0) & (x <= 1)).all()):  # one pass, one host read; NaN fails too
        validate.finite(name, x)
        validate.in_range(name, x, 0.0, 1.0, " (the image range)")
    return x


def check_labels(name: str, y, x: Tensor, check: bool):
    """``y``: ``(B,)`` int64/int32 labels (>= 0 with ``check``) or a SoftTarget whose
    tensors sit on ``x``'s device. The upper bound (``< C``) is checked by the loss op at
    the first step, once the number of classes is known."""
    if isinstance(y, SoftTarget):
        for n, v in zip(SoftTarget._fields, y):
            if isinstance(v, Tensor):
                if v.shape != (x.shape[0],):
                    raise ValueError(f"y.{n} must have shape ({x.shape[0]},), got {tuple(v.shape)}")
                validate.same_device(f"y.{n}", v, "x", x)
        validate.index_tensor("y.ya", y.ya, x.shape[0])
        if y.yb is not None:
            validate.index_tensor("y.yb", y.yb, x.shape[0])
        return y
    validate.index_tensor(name, y, x.shape[0])
    validate.same_device(name, y, "x", x)
    if check:
        validate.in_range(name, y, 0, None, " (class labels)")
    return y.long()


def check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


def check_eps(name: str, v, B: int, device, check: bool = True) -> Tensor:
    """eps / alpha-like radius: a float >= 0 or a (B,) tensor (>= 0 when checked)."""
    if not isinstance(v, Tensor) and not isinstance(v, bool) and isinstance(v, (int, float)) \
            and not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return validate.per_sample(name, v, B, device, lo=0.0, check=check)
