"""Shared pieces of the mixup-family methods: interpolation weights, pairings and the
compact soft targets they imply (METHODS.md 1.2 and 1.3).

Every mixed input here is made by :func:`fastmix.ops.mix` (``lam*a + (1-lam)*b[index]``)
and every soft label is a :class:`fastmix.attacks.SoftTarget` (O(B) numbers) scored by
the fused :func:`fastmix.ops.soft_cross_entropy`; nothing builds a ``B x C`` target.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import ops


def parse_lam_dist(spec) -> tuple[str, float]:
    """``"uniform"`` -> U(0, 1); ``"beta:A"`` or a float ``A`` -> Beta(A, A); ``"const:L"`` -> L.

    Returns ``(kind, parameter)``; ValueError names a malformed spec.
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = f"beta:{float(spec)}"
    if not isinstance(spec, str):
        raise ValueError(f"lam_dist must be 'uniform', 'beta:A' or 'const:L', got {spec!r}")
    if spec == "uniform":
        return "uniform", 0.0
    kind, _, val = spec.partition(":")
    try:
        v = float(val)
    except ValueError:
        raise ValueError(f"lam_dist must be 'uniform', 'beta:A' or 'const:L', got {spec!r}") from None
    if kind == "beta" and v > 0:
        return "beta", v
    if kind == "const" and 0.0 <= v <= 1.0:
        return "const", v
    raise ValueError(f"lam_dist must be 'uniform', 'beta:A' (A > 0) or 'const:L' (L in [0, 1]), got {spec!r}")


def sample_lam(kind: str, param: float, n: int, device, generator: torch.Generator | None = None) -> Tensor:
    """``n`` interpolation weights, float32 ``(n,)`` in ``[0, 1]`` on ``device``.

    Drawn *on the device* (issue 13, item 4): a draw on the CPU followed by ``.to(device)``
    is a copy from pageable memory, which waits for the work queued before it (in a
    training step: the whole attack). ``generator`` defaults to the device's default
    generator, which the trainer seeds (``torch.manual_seed`` seeds every device) and
    saves per rank in every checkpoint. Beta(A, A) is ``G1 / (G1 + G2)`` with ``G1, G2``
    independent Gamma(A, 1) draws (``torch.distributions.Beta`` without its host-side
    argument validation).
    """
    if kind == "const":
        return torch.full((n,), param, dtype=torch.float32, device=device)
    if kind == "uniform":
        return torch.rand(n, device=device, generator=generator)
    g = torch._standard_gamma(torch.full((2, n), param, dtype=torch.float32, device=device), generator)
    # both draws underflowing to 0 (possible only for tiny A) gives 0, not 0/0
    return g[0] / (g[0] + g[1]).clamp_min(torch.finfo(torch.float32).tiny)


def mixup_target(y: Tensor, lam: Tensor, perm: Tensor):
    """The mixup label ``lam_i onehot(y_i) + (1 - lam_i) onehot(y_perm(i))`` in compact form
    (METHODS.md 1.2: ``ya = y``, ``yb = y[perm]``, ``w = lam``, ``sa = sb = 1``)."""
    from ..attacks import SoftTarget
    return SoftTarget(y, y[perm], lam, None, None)


def dominant_label(target) -> Tensor:
    """The label carrying the larger weight of a two-part target (``ya`` on ties), int64
    ``(B,)``: what a training accuracy on mixed inputs is scored against."""
    if target.w is None or target.yb is None:
        return target.ya
    w = target.w if isinstance(target.w, Tensor) else torch.full_like(target.ya, float(target.w), dtype=torch.float32)
    return torch.where(w >= 0.5, target.ya, target.yb)


def soft_ce(logits: Tensor, target, reduction: str = "mean") -> Tensor:
    """The fused soft-label cross-entropy against a SoftTarget (no host reads)."""
    return ops.soft_cross_entropy(logits, *target, reduction=reduction, check=False)
