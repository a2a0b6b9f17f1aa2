"""AVmixup: Adversarial Vertex Mixup (Lee et al. 2020)."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ._mixup import soft_ce
from .base import Method, StepOutput, register


def adversarial_vertex(x: Tensor, x_adv: Tensor, gamma: float) -> Tensor:
    """AVmixup's Eq. 12, ``x_av = x + gamma * (x_adv - x)``, clipped to the image range.

    The paper leaves the clip unstated; the official TensorFlow code clips the vertex to
    [0, 1] before mixing (issue 13, item 2), so that is what this does: with ``gamma > 1``
    the unclipped vertex leaves [0, 1] and mixing it first, then clipping, gives another
    image (on digits at eps 0.2, gamma 2: 17% of the pixels, by up to 0.094).
    Written as the mix op with ``lam = 1 - gamma`` (``lam*x + (1-lam)*x_adv``), which
    extrapolates for ``gamma > 1`` (OPS.md: lam outside [0, 1] is allowed).
    x, x_adv: ``(B, ...)`` float in [0, 1]; returns ``(B, ...)`` in [0, 1].
    """
    B = x.shape[0]
    idx = torch.arange(B, device=x.device)
    # clip the vertex, then mix: the official code's order (the paper states no clip)
    return ops.mix(x, x_adv.to(x.dtype), 1.0 - gamma, idx, check=False).clamp_(0.0, 1.0)


def avmixup_inputs(x: Tensor, x_av: Tensor, alpha: Tensor) -> Tensor:
    """AVmixup's Eq. 13 (input): ``x_hat = alpha_i x + (1 - alpha_i) x_av``.

    alpha: float32 ``(B,)`` in [0, 1]; ``x`` and the (clipped) vertex ``x_av`` lie in
    [0, 1], so ``x_hat`` does too; the final clamp only removes float rounding.
    """
    idx = torch.arange(x.shape[0], device=x.device)
    return ops.mix(x, x_av, alpha, idx, check=False).clamp_(0.0, 1.0)


def avmixup_target(y: Tensor, alpha: Tensor, lambda1: float, lambda2: float):
    """AVmixup's Eq. 13 (label): ``alpha_i phi(y, lambda1) + (1 - alpha_i) phi(y, lambda2)``,
    i.e. ``SoftTarget(ya=y, yb=y, w=alpha, sa=lambda1, sb=lambda2)`` (METHODS.md 1.2)."""
    from ..attacks import SoftTarget
    return SoftTarget(y, y, alpha, lambda1, lambda2)


@register
class AVmixup(Method):
    """``delta = PGD_K(x, y) - x``; vertex ``x_av = clip(x + gamma delta)``; ``alpha_i ~ U(0, 1)``;
    train on ``x_hat = alpha x + (1 - alpha) x_av`` with the label
    ``alpha phi(y, lambda1) + (1 - alpha) phi(y, lambda2)`` (Algorithm 1 of the paper).
    Only the virtual samples are trained on (no clean or plain adversarial term).

    BatchNorm during the attack: ``attack_bn="batch"``, batch statistics without touching
    the running statistics. The official TensorFlow code builds the PGD graph with
    ``is_training=True`` but attaches ``UPDATE_OPS`` only to the train step, so its
    attack never moves the moving averages (issue 13, item 1); attacking in plain train
    mode instead (``attack_bn="train"``) would update them K + 1 times per step, mostly
    with PGD iterates. ``attack_bn="eval"`` attacks with the running statistics.

    Args:
        gamma: vertex scale (>= 1 in the paper; 2.0 for CIFAR, 1.0 with Feature Scattering).
        lambda1, lambda2: label-smoothing factors (1.0 and 0.1; 0.5 / 0.7 with Feature Scattering).
    Stats: ``avmixup_alpha`` (mean alpha of the epoch's draws).
    """

    name = "avmixup"
    attack_bn = "batch"  # official TF: is_training=True in the attack, UPDATE_OPS on the train step only

    def __init__(self, *, gamma: float = 2.0, lambda1: float = 1.0, lambda2: float = 0.1, **kw):
        super().__init__(**kw)
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        for n, v in (("lambda1", lambda1), ("lambda2", lambda2)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{n} must be in [0, 1], got {v}")
        self.gamma, self.lambda1, self.lambda2 = float(gamma), float(lambda1), float(lambda2)

    def loss(self, x, y, idx) -> StepOutput:
        x_adv = self.attack(x, y)
        alpha = torch.rand(x.shape[0], device=x.device)  # per-sample U(0, 1), drawn on the device
        x_hat = avmixup_inputs(x, adversarial_vertex(x, x_adv, self.gamma), alpha)
        target = avmixup_target(y, alpha, self.lambda1, self.lambda2)
        logits = self.ctx.model(x_hat)
        return StepOutput(soft_ce(logits, target), logits, stats={"avmixup_alpha": alpha.mean()})
