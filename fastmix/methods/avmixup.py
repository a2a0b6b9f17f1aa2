"""AVmixup: Adversarial Vertex Mixup (Lee et al. 2020)."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ._mixup import soft_ce
from .base import Method, StepOutput, register


def adversarial_vertex(x: Tensor, x_adv: Tensor, gamma: float) -> Tensor:
    """AVmixup's Eq. 12: ``x_av = x + gamma * (x_adv - x)``, not clipped (a virtual point).

    Written as the mix op with ``lam = 1 - gamma`` (``lam*x + (1-lam)*x_adv``), which
    extrapolates for ``gamma > 1`` (OPS.md: lam outside [0, 1] is allowed).
    x, x_adv: ``(B, ...)`` float in [0, 1]; returns ``(B, ...)`` (may leave [0, 1]).
    """
    B = x.shape[0]
    idx = torch.arange(B, device=x.device)
    return ops.mix(x, x_adv.to(x.dtype), 1.0 - gamma, idx, check=False)


def avmixup_inputs(x: Tensor, x_av: Tensor, alpha: Tensor) -> Tensor:
    """AVmixup's Eq. 13 (input): ``x_hat = alpha_i x + (1 - alpha_i) x_av``, clipped to [0, 1].

    alpha: float32 ``(B,)`` in [0, 1]. The clip keeps the training input a valid image
    (METHODS.md, AVmixup); ``x_av`` itself may lie outside [0, 1] when ``gamma > 1``.
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
    """``delta = PGD_K(x, y) - x``; vertex ``x_av = x + gamma delta``; ``alpha_i ~ U(0, 1)``;
    train on ``x_hat = alpha x + (1 - alpha) x_av`` with the label
    ``alpha phi(y, lambda1) + (1 - alpha) phi(y, lambda2)`` (Algorithm 1 of the paper).
    Only the virtual samples are trained on (no clean or plain adversarial term).

    BatchNorm is in train mode during the attack: the TensorFlow original builds the PGD
    graph with ``is_training=True`` (METHODS.md section 4); ``attack_bn="eval"`` changes it.
    (In train mode the attack's forwards also move the BatchNorm running statistics, as in
    PyTorch ports that attack in train mode; whether the TF graph ran its update ops during
    the attack depends on its control dependencies, which the paper does not state.)

    Args:
        gamma: vertex scale (>= 1 in the paper; 2.0 for CIFAR, 1.0 with Feature Scattering).
        lambda1, lambda2: label-smoothing factors (1.0 and 0.1; 0.5 / 0.7 with Feature Scattering).
    Stats: ``avmixup_alpha`` (mean alpha of the epoch's draws).
    """

    name = "avmixup"
    attack_bn = "train"

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
        alpha = torch.rand(x.shape[0]).to(x.device)  # per-sample U(0, 1), global CPU stream
        x_hat = avmixup_inputs(x, adversarial_vertex(x, x_adv, self.gamma), alpha)
        target = avmixup_target(y, alpha, self.lambda1, self.lambda2)
        logits = self.ctx.model(x_hat)
        return StepOutput(soft_ce(logits, target), logits, stats={"avmixup_alpha": alpha.mean()})
