"""IAT: Interpolated Adversarial Training (Lamb et al. 2019), with input mixup or
manifold mixup."""
from __future__ import annotations

import torch

from .. import ops
from ..models import hooks
from ._mixup import dominant_label, mixup_target, parse_lam_dist, sample_lam, soft_ce
from .base import Method, StepOutput, register


@register
class IAT(Method):
    """``L = (L_clean + L_adv) / 2``: the mixup loss on the clean batch and the mixup loss
    on its PGD-K adversarial batch (METHODS.md, IAT).

    As in the IAT code that ships with Mixup Inference (METHODS.md section 4): the attack
    runs with BatchNorm in eval mode against the hard labels; the clean and adversarial
    batches are each mixed with their own permutation and per-sample lambda, and both go
    through *one* training-mode forward (``[x; x_adv]``, so BatchNorm sees shared
    statistics). Mixing is one :func:`fastmix.ops.mix` over the ``2B`` rows with a gather
    index that stays inside each half (``perm_clean`` for the first B rows, ``B +
    perm_adv`` for the rest), so the mean soft CE over the ``2B`` rows *is*
    ``(L_clean + L_adv) / 2``.

    Manifold mixup (``manifold=True``, CLI ``iat-manifold``): the mixing point is drawn per
    step from ``mix_layers`` and lambda ~ Beta(2, 2); input mixup uses Beta(1, 1) = U(0, 1)
    and calls the model as ``model(x_mixed)`` (any images -> logits module works).
    ``mix_layers`` names modules of the model (``("layer1", "layer2")``: mix right after
    them, through forward hooks, :mod:`fastmix.models.hooks`; the input is always a
    candidate) or, on fastmix's own models, numbers their mixing points (0 = the input,
    1 = after block 1, 2 = after block 2: ``forward(x, mix_layer, mix_fn)``), the default
    there. A model of your own needs ``mix_layers`` names for manifold mixup.

    Args:
        manifold: mix at a random layer instead of the input.
        lam_dist: ``"beta:A"``, ``"uniform"`` or ``"const:L"``; None: Beta(1, 1) for mixup,
            Beta(2, 2) for manifold mixup (the paper's choices).
        mix_layers: the candidate mixing points of manifold mixup: module names (a tuple,
            or ``"layer1,layer2"`` from the CLI) or fastmix mixing points ``(0, 1, 2)``;
            None: the model's own points (fastmix models: ``(0, 1, 2)``).
    Stats logged per epoch: ``iat_loss_clean``, ``iat_loss_adv``.
    """

    name = "iat"
    attack_bn = "eval"
    default_manifold = False

    def __init__(self, *, manifold: bool | None = None, lam_dist=None, mix_layers=None, **kw):
        super().__init__(**kw)
        self.manifold = self.default_manifold if manifold is None else bool(manifold)
        if lam_dist is None:
            lam_dist = "beta:2.0" if self.manifold else "beta:1.0"
        self._lam = parse_lam_dist(lam_dist)
        self.lam_dist = lam_dist
        self.mix_layers = hooks.parse_mix_layers(mix_layers)
        self._points = self.mix_layers

    def bind(self, ctx) -> None:
        super().bind(ctx)
        if self.manifold:  # resolve the mixing points on this model (names must exist)
            self._points = hooks.check_mix_layers(ctx.module, self.mix_layers, self.name)

    def draw_layer(self) -> int:
        """The mixing point of this step: 0 for input mixup; for manifold mixup one of
        ``mix_layers`` (an int mixing point or a module name), from the global CPU
        generator (no device sync)."""
        if not self.manifold:
            return 0
        points = self._points if self._points is not None else (0, 1, 2)
        return points[int(torch.randint(len(points), (1,)))]

    def loss(self, x, y, idx) -> StepOutput:
        B, dev = x.shape[0], x.device
        x_adv = self.attack(x, y)
        xx = torch.cat([x, x_adv.to(x.dtype)])
        yy = torch.cat([y, y])
        # Each half keeps its own pairing: clean rows pair with clean rows, adversarial with adversarial.
        perm = torch.cat([torch.randperm(B), B + torch.randperm(B)]).to(dev)
        lam = sample_lam(*self._lam, 2 * B, dev)
        layer = self.draw_layer()
        logits = hooks.mixed_forward(self.ctx.model, self.ctx.module, xx, layer,
                                     lambda h: ops.mix(h, h, lam, perm, check=False))
        target = mixup_target(yy, lam, perm)
        per = soft_ce(logits, target, reduction="none")
        l_clean, l_adv = per[:B].mean(), per[B:].mean()
        loss = 0.5 * (l_clean + l_adv)
        # Training accuracy: the adversarial half, scored against each row's dominant label.
        return StepOutput(loss, logits[B:], dominant_label(target)[B:],
                          stats={"iat_loss_clean": l_clean.detach(), "iat_loss_adv": l_adv.detach()})


@register
class IATManifold(IAT):
    """:class:`IAT` with manifold mixup (a random mixing point among input, block 1, block 2)."""

    name = "iat-manifold"
    default_manifold = True
