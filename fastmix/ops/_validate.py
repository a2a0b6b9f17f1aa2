"""The metadata contract shared by every public op, and the opt-in value scans.

Every failure is a ``ValueError`` that names the argument and the offending value.
Metadata checks (type, dtype, rank, shape, device, Python-number ranges) cost nothing
and always run. Value scans (:func:`finite`, :func:`in_range`, a tensor's range in
:func:`per_sample`) read data back to the host (a device sync on a GPU), so an op runs
them only when asked: ``check=True``, or ``FASTMIX_CHECK=1`` in the environment (read
once at import) for the default ``check=None``. The user-facing entry points (an
attack's ``__call__``, the trainer's data load, ``fastmix eval``) scan their inputs
once per call; memory safety (an index or label out of range) is the kernels' job and
holds whether or not anything is scanned.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _backend


def scans(check) -> bool:
    """Whether an op call with ``check`` runs the value scans (None: FASTMIX_CHECK)."""
    return _backend.CHECK_BY_DEFAULT if check is None else bool(check)

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int64, torch.int32)


def tensor(name: str, t, *, dim: int | None = None, min_dim: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")
    if min_dim is not None and t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(t.shape)}")
    return t


def float_tensor(name: str, t, **kw) -> Tensor:
    t = tensor(name, t, **kw)
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got {t.dtype}")
    return t


def index_tensor(name: str, t, n: int) -> Tensor:
    t = tensor(name, t, dim=1)
    if t.dtype not in INDEX_DTYPES:
        raise ValueError(f"{name} must be an int64 (or int32) tensor of indices, got {t.dtype}")
    if t.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    return t


def same_shape(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")


def same_dtype(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")


def same_device(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                         f"put them on one device")


def finite(name: str, t: Tensor) -> None:
    """Raise if ``t`` holds a NaN or an infinity (reads back one boolean)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        raise ValueError(f"{name} contains a non-finite value ({t.flatten()[i].item()}) at flat index {i}")


def in_range(name: str, t: Tensor, lo: float | None, hi: float | None, what: str = "") -> None:
    bad = torch.zeros_like(t, dtype=torch.bool)
    if lo is not None:
        bad |= t < lo
    if hi is not None:
        bad |= t > hi
    bad |= torch.isnan(t) if t.is_floating_point() else bad
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must lie in {rng}{what}; got {t.flatten()[i].item()} at index {i}")


def per_sample(name: str, v, B: int, device, *, lo: float | None = None, hi: float | None = None,
               check: bool = True) -> Tensor:
    """A float or a (B,) tensor -> float32 (B,) contiguous tensor on ``device``. A Python
    number is range-checked always (no host read); a tensor's values only with ``check``."""
    if isinstance(v, Tensor):
        if not v.is_floating_point():
            raise ValueError(f"{name} must be a float or a float tensor of shape ({B},), got dtype {v.dtype}")
        if v.dim() == 0:
            v = v.reshape(1).expand(B)
        if v.shape != (B,):
            raise ValueError(f"{name} must be a float or a tensor of shape ({B},), got shape {tuple(v.shape)}")
        if v.device != device:
            raise ValueError(f"{name} is on {v.device} but the input is on {device}")
        out = v.to(torch.float32).contiguous()
        if check:
            in_range(name, out, lo, hi)
        return out
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a float or a tensor of shape ({B},), got {type(v).__name__}")
    v = float(v)
    if math.isnan(v) or math.isinf(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must be a finite number in {rng}, got {v}")
    return torch.full((B,), v, dtype=torch.float32, device=device)


def norm_code(norm: str) -> int:
    if norm in ("linf", "Linf", "inf"):
        return 0
    if norm in ("l2", "L2"):
        return 2
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def bounds(lo, hi) -> tuple[float, float]:
    for n, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
            raise ValueError(f"{n} must be a number, got {v!r}")
    if float(lo) > float(hi):
        raise ValueError(f"lo must not exceed hi, got lo={lo}, hi={hi}")
    return float(lo), float(hi)


def reduction(r: str) -> str:
    if r not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {r!r}")
    return r
