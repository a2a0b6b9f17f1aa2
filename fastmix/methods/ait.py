"""AIT: Adversarial Interpolation Training (Zhang & Xu 2020)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..models import hooks
from ._mixup import soft_ce
from .base import Method, StepOutput, register


def ait_partner(n: int, device=None) -> Tensor:
    """AIT's partner index: sample ``i`` is paired with ``n - 1 - i`` (the batch reversed,
    Algorithm 1's ``x'_i = x_{n-i+1}``), int64 ``(n,)``; not a random permutation."""
    return torch.arange(n - 1, -1, -1, device=device)


def ait_target(y: Tensor, eps_y: float, steps: int = 1):
    """AIT's adversarial label after ``steps`` = L label updates of Algorithm 1,
    ``y~ <- y~ - eps_y (y~ - y_bar')`` from ``y~ = onehot(y)`` with ``y_bar' = (1 - onehot(y'))
    / (C - 1)`` and ``y' = y`` reversed: ``w onehot(y) + (1 - w) y_bar'`` with
    ``w = (1 - eps_y)^L`` (Eq. 7 for L = 1). In compact form (METHODS.md 1.2) that is
    ``SoftTarget(ya=y, yb=y', w, sa=1, sb=0)``: ``phi(y', 0)`` is exactly ``y_bar'``.
    y: int64 ``(B,)``; eps_y in [0, 1]; steps >= 1."""
    from ..attacks import SoftTarget
    # Algorithm 1: L label updates of y~ <- (1 - eps_y) y~ + eps_y y_bar' leave (1 - eps_y)^L on y
    return SoftTarget(y, y[ait_partner(y.shape[0], y.device)], (1.0 - eps_y) ** steps, 1.0, 0.0)


@register
class AIT(Method):
    """Move each image towards its partner's penultimate features (cosine distance),
    label it away from the partner's class, train on the pair with soft CE.

    ``x_0 = x + U(-eps, eps)``; ``interp_steps`` (AIT's L, default 1) steps of
    ``x - eps * sign(grad D(feat(x), feat(x')))`` projected onto the eps-ball and [0, 1]
    (:func:`fastmix.attacks.feature_attack`, step size ``eps`` as in Algorithm 1, so the
    shared ``alpha``/``steps`` options are not used); target :func:`ait_target` after the
    same L label updates (weight ``(1 - eps_y)^L`` on ``y``).

    The official code deep-copies the network and puts the copy in eval mode for the
    attack; the same maths runs here on the live model with BatchNorm switched to eval
    and parameter gradients off (METHODS.md section 4), ``attack_bn`` changes the mode.

    Args:
        eps_y: label perturbation (0.5; 0.9 for CIFAR-100).
        interp_steps: L, the feature-attack steps (1).
        distance: ``"cos"`` (the paper's choice) or ``"l2"``.
        features: the name of the module whose output is the feature vector (a key of
            ``model.named_modules()``, read through a forward hook: :mod:`fastmix.models.hooks`;
            CLI ``--opt features=NAME``). None: the model's own ``features(x)`` (fastmix's
            models have one); a model with neither raises a ValueError naming this option.
    """

    name = "ait"
    attack_bn = "eval"

    def __init__(self, *, eps_y: float = 0.5, interp_steps: int = 1, distance: str = "cos",
                 features: str | None = None, **kw):
        super().__init__(**kw)
        if not 0.0 <= eps_y <= 1.0:
            raise ValueError(f"eps_y must be in [0, 1], got {eps_y}")
        if not isinstance(interp_steps, int) or interp_steps < 1:
            raise ValueError(f"interp_steps must be an int >= 1, got {interp_steps!r}")
        if distance not in ("cos", "l2"):
            raise ValueError(f"distance must be 'cos' or 'l2', got {distance!r}")
        if features is not None and (not isinstance(features, str) or not features):
            raise ValueError(f"features must be None or a module name, got {features!r}")
        self.eps_y, self.interp_steps, self.distance = float(eps_y), interp_steps, distance
        self.features = features
        self._feature_model = None

    def bind(self, ctx) -> None:
        super().bind(ctx)
        # What the feature attack runs on: the model's features(x), or a hook on the named module.
        self._feature_model = hooks.feature_model(ctx.attack_model, self.features, self.name)

    def loss(self, x, y, idx) -> StepOutput:
        from .. import attacks
        partner = x[ait_partner(x.shape[0], x.device)]
        bn_mode, bn_ctx = self.attack_bn_context()
        with bn_ctx:
            x_adv = attacks.feature_attack(self._feature_model, x, partner, eps=self.eps, alpha=self.eps,
                                           steps=self.interp_steps, distance=self.distance, random_start=True,
                                           bn_mode=bn_mode, check=False, **self.ctx.attack_options)
        logits = self.ctx.model(x_adv)
        return StepOutput(soft_ce(logits, ait_target(y, self.eps_y, self.interp_steps)), logits)
