"""IAT: Interpolated Adversarial Training (Lamb et al. 2019), with input mixup or
manifold mixup."""
from __future__ import annotations

import torch

from .. import ops
from ..models import hooks
from ._mixup import dominant_label, mixup_target, parse_lam_dist, sample_lam, soft_ce
from .base import Method, StepOutput, register


VARIANTS = ("paper", "mi-code")


@register
class IAT(Method):
    """``L = (L_c + L_a) / 2``: the mixup loss on the clean batch and the mixup loss on its
    PGD adversarial batch (METHODS.md, IAT), attacked with BatchNorm in eval mode against
    the true labels (the paper's choice; the code shipped with Mixup Inference attacks
    the model's predictions).

    ``variant="paper"`` (default): Algorithm 1 as printed, two loss calls per update. ``L_c``
    is one training-mode forward of the mixed clean batch (run before the attack, in the
    algorithm's order), ``L_a`` a second one of the mixed adversarial batch; each call
    draws its own permutation, its own lambda (one per batch, as mixup and manifold
    mixup draw it) and, for manifold mixup, its own mixing layer, and BatchNorm sees each
    batch's own statistics.

    ``variant="mi-code"``: the IAT code that ships with Mixup Inference (METHODS.md section
    4): the clean and adversarial batches are each mixed with their own permutation and a
    per-sample lambda and go through *one* training-mode forward (``[x; x_adv]``, shared
    BatchNorm statistics, one mixing layer for both). Mixing is one
    :func:`fastmix.ops.mix` over the ``2B`` rows with a gather index that stays inside each
    half (``perm_clean`` for the first B rows, ``B + perm_adv`` for the rest), so the mean
    soft CE over the ``2B`` rows *is* ``(L_c + L_a) / 2``. One forward of 2B rows instead
    of two of B: the same FLOPs, fewer kernel launches.

    Manifold mixup (``manifold=True``, CLI ``iat-manifold``): the mixing point is drawn per
    forward from ``mix_layers`` and lambda ~ Beta(2, 2); input mixup uses Beta(1, 1) = U(0, 1)
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
        variant: ``"paper"`` or ``"mi-code"`` (above).
        steps: PGD steps, default 7 (the paper's section 4.1: "we always perform adversarial
            training using a 7-step PGD attack").
    Stats logged per epoch: ``iat_loss_clean``, ``iat_loss_adv``.
    """

    name = "iat"
    attack_bn = "eval"
    default_steps = 7  # IAT section 4.1: "we always perform adversarial training using a 7-step PGD attack"
    default_manifold = False

    # variant: the paper's Algorithm 1 first; the MI-shipped code's shared forward as an option
    def __init__(self, *, manifold: bool | None = None, lam_dist=None, mix_layers=None, variant: str = "paper",
                 **kw):
        super().__init__(**kw)
        self.manifold = self.default_manifold if manifold is None else bool(manifold)
        if lam_dist is None:
            lam_dist = "beta:2.0" if self.manifold else "beta:1.0"
        self._lam = parse_lam_dist(lam_dist)
        self.lam_dist = lam_dist
        self.mix_layers = hooks.parse_mix_layers(mix_layers)
        self._points = self.mix_layers
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant

    def bind(self, ctx) -> None:
        super().bind(ctx)
        if self.manifold:  # resolve the mixing points on this model (names must exist)
            self._points = hooks.check_mix_layers(ctx.module, self.mix_layers, self.name)

    def draw_layer(self):
        """The mixing point of one forward: 0 for input mixup; for manifold mixup one of
        ``mix_layers`` (an int mixing point or a module name). A host-side choice (it
        selects a module): drawn from the global CPU generator, with no device copy and
        no sync."""
        if not self.manifold:
            return 0
        points = self._points if self._points is not None else (0, 1, 2)
        return points[int(torch.randint(len(points), (1,)))]

    def _mixup_loss(self, x, y):
        """One of Algorithm 1's ``Loss(f, Mix, x, y)`` calls: per-sample soft CE ``(B,)``,
        logits and target of one forward with one permutation and one lambda for the batch."""
        B = x.shape[0]
        perm = torch.randperm(B, device=x.device)
        lam = sample_lam(*self._lam, 1, x.device).repeat(B)
        logits = hooks.mixed_forward(self.ctx.model, self.ctx.module, x, self.draw_layer(),
                                     lambda h: ops.mix(h, h, lam, perm, check=False))
        target = mixup_target(y, lam, perm)
        return soft_ce(logits, target, reduction="none"), logits, target

    def loss(self, x, y, idx) -> StepOutput:
        B, dev = x.shape[0], x.device
        if self.variant == "paper":
            per_c, _, _ = self._mixup_loss(x, y)                       # L_c, before the attack
            x_adv = self.attack(x, y)
            per_a, logits_a, target_a = self._mixup_loss(x_adv.to(x.dtype), y)
            l_clean, l_adv = per_c.mean(), per_a.mean()
            loss = 0.5 * (l_clean + l_adv)
            return StepOutput(loss, logits_a, dominant_label(target_a),
                              stats={"iat_loss_clean": l_clean.detach(), "iat_loss_adv": l_adv.detach()})
        x_adv = self.attack(x, y)
        xx = torch.cat([x, x_adv.to(x.dtype)])
        yy = torch.cat([y, y])
        # Each half keeps its own pairing: clean rows pair with clean rows, adversarial with adversarial.
        perm = torch.cat([torch.randperm(B, device=dev), B + torch.randperm(B, device=dev)])
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
