"""The losses an attack ascends: each maps ``(model output, target)`` to a float32 ``(B,)``
per-sample loss. A targeted attack descends (the step's sign flips), except where a
targeted form of its own is given (CW, DLR).

No loss validates anything (they run inside the K-step loop, which must stay free of host
syncs). The one check is :func:`check_target`, which the loop runs once, at its first
step, when the attack was called with ``check=True``: the same rule for every loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..ops import _validate as validate
from ..ops.target import SoftTarget

__all__ = ["make_loss", "dlr", "dlr_targeted", "feature_loss", "check_target"]


def check_target(out: Tensor, t) -> None:
    """Validate the model output and the target at an attack's first step (host syncs).

    ``out`` must be finite. Integer labels (``(B,)``, or ``(B, 2)`` for targeted DLR) must
    be classes of the ``(B, C)`` output; a :class:`SoftTarget`'s labels too, and its
    ``w``, ``sa``, ``sb`` must lie in [0, 1]. Float targets (TRADES's clean log-softmax,
    AIT's partner features) are the attack's own and are not checked.
    """
    validate.finite("the model's output", out)
    C = out.shape[1] if out.dim() == 2 else None
    if isinstance(t, SoftTarget):
        f = t.filled(check=False)
        for n, v in (("y.ya", f.ya), ("y.yb", f.yb)):
            if v.numel() > 0:
                validate.in_range(n, v, 0, C - 1, f" (the model has C={C} classes)")
        for n, v in (("y.w", f.w), ("y.sa", f.sa), ("y.sb", f.sb)):
            validate.in_range(n, v, 0.0, 1.0)
    elif isinstance(t, Tensor) and not t.is_floating_point() and C is not None and t.numel() > 0:
        validate.in_range("y", t, 0, C - 1, f" (the model has C={C} classes)")


def _ce(out, t):
    if isinstance(t, SoftTarget):
        return ops.soft_cross_entropy(out, *t, reduction="none", check=False)
    # Hard labels: torch's log-softmax CE, so that FGSM/PGD stay bit-identical to
    # torchattacks (tests/test_attacks_parity.py). The fused op is accurate enough here
    # (its true-class gradient has no p_y - 1 cancellation: tests/test_ops_numerics.py) and
    # was tried: it flips the sign of 67 of 392,000 FGSM pixels whose fp64 gradient is
    # below 5e-8 (agreeing with fp64 at 43 of them, torch's CE at 0), which grows to 1.4% of
    # PGD-10 pixels (robust accuracy 44.6% vs 44.7%), and on CPU it is 0.55x torch's CE at
    # C = 1000. Drop-in parity wins; soft targets use the fused op.
    return torch.nn.functional.cross_entropy(out.float(), t, reduction="none")


def _cw_targeted(out, t, kappa):
    # Ascend min(z_t - max_{j != t} z_j, kappa): push the target class kappa above the rest.
    z = out.float()
    zt = z.gather(1, t[:, None]).squeeze(1)
    other = z.scatter(1, t[:, None], float("-inf")).amax(dim=1)
    return torch.clamp(zt - other, max=kappa)


def _kl(out, log_p_nat):
    # TRADES: KL(softmax f(x_nat) || softmax f(x_k)), summed over classes (KLDivLoss(sum)).
    return (log_p_nat.exp() * (log_p_nat - torch.log_softmax(out.float(), dim=1))).sum(dim=1)


def dlr(out, y):
    """Croce & Hein's difference-of-logits-ratio loss, ``-(z_y - max_{j!=y} z_j) /
    (z_pi1 - z_pi3 + 1e-12)`` with ``pi`` the logits sorted in decreasing order."""
    z = out.float()
    top = z.topk(3, dim=1)
    zy = z.gather(1, y[:, None]).squeeze(1)
    best_other = torch.where(top.indices[:, 0] == y, top.values[:, 1], top.values[:, 0])
    return -(zy - best_other) / (top.values[:, 0] - top.values[:, 2] + 1e-12)


def dlr_targeted(out, yt):
    """Targeted DLR, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)``; ``yt`` is
    ``(B, 2)`` int64 holding ``[y, t]``."""
    z = out.float()
    top = z.topk(4, dim=1).values
    zy = z.gather(1, yt[:, :1]).squeeze(1)
    zt = z.gather(1, yt[:, 1:]).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def feature_loss(distance: str):
    """AIT's feature distance ``D(f, t)`` per sample: ``"cos"`` (1 - cosine similarity) or
    ``"l2"`` (Euclidean), on the flattened features."""
    def cos(f, t):
        return 1.0 - torch.cosine_similarity(f.float().flatten(1), t.float().flatten(1), dim=1)

    def l2(f, t):
        return (f.float() - t.float()).flatten(1).norm(dim=1)

    if distance not in ("cos", "l2"):
        raise ValueError(f"distance must be 'cos' or 'l2', got {distance!r}")
    return cos if distance == "cos" else l2


def make_loss(loss, targeted: bool, confidence: float = 0.0):
    """(per-sample loss fn, step sign) for ``loss`` in "ce", "cw", "kl", "dlr" or a callable
    ``fn(output, target) -> (B,)`` per-sample loss to ascend (descend when targeted)."""
    if callable(loss):
        return loss, (-1.0 if targeted else 1.0)
    if loss == "ce":
        return _ce, (-1.0 if targeted else 1.0)
    if loss == "cw":
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not confidence >= 0:
            raise ValueError(f"confidence (the CW kappa) must be a number >= 0, got {confidence!r}")
        if targeted:
            return (lambda out, t: _cw_targeted(out, t, float(confidence))), 1.0
        return (lambda out, t: ops.cw_margin(out, t, kappa=float(confidence), reduction="none", check=False)), 1.0
    if loss == "kl":
        if targeted:
            raise ValueError("loss='kl' (TRADES) has no targeted form; use targeted=False")
        return _kl, 1.0
    if loss == "dlr":
        return (dlr_targeted, 1.0) if targeted else (dlr, 1.0)
    raise ValueError(f"loss must be 'ce', 'cw', 'kl', 'dlr' or a callable, got {loss!r}")
