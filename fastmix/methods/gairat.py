"""GAIRAT: geometry-aware instance-reweighted adversarial training (Zhang et al. 2021)."""
from __future__ import annotations

import torch

from .base import Method, StepOutput, register


def gairat_weights(kappa, steps: int, lam: float):
    """``w_i = (1 + tanh(lam + 5 (1 - 2 kappa_i / K))) / 2``: float32 ``(B,)`` from int ``(B,)`` kappa in ``[0, K]``."""
    return (1.0 + torch.tanh(lam + 5.0 * (1.0 - 2.0 * kappa.float() / steps))) / 2.0


@register
class GAIRAT(Method):
    """Madry AT with per-sample weights from the geometry value ``kappa_i``: the number of
    PGD steps at which the iterate was still classified correctly (checked before each
    step, so ``0 <= kappa <= K``; counting continues after a misclassification, as in the
    official code). Loss ``sum_i (w_i / sum_j w_j) CE_i`` over the *global* batch (the
    weight sum is all-reduced across ranks, so DDP gives the single-process loss).

    The first ``burn_in`` epochs are plain AT; reweighting starts at epoch ``burn_in + 1``.
    The default follows the official code, whose test ``(epoch + 1) >= begin_epoch`` (0-based
    epoch, ``begin_epoch = 60`` of 120) first reweights at epoch 60 counted from 1: 59 plain
    epochs, i.e. ``epochs // 2 - 1``. BatchNorm is in eval mode during the attack.

    Args:
        lam: the tanh offset lambda (default -1, the paper's fixed schedule).
        burn_in: epochs of unweighted AT; ``None``: ``epochs // 2 - 1`` (reweighting from
            epoch ``epochs // 2``, the official schedule).
    """

    name = "gairat"
    attack_bn = "eval"

    def __init__(self, *, lam: float = -1.0, burn_in: int | None = None, **kw):
        super().__init__(**kw)
        if burn_in is not None and (not isinstance(burn_in, int) or burn_in < 0):
            raise ValueError(f"burn_in must be None or an int >= 0, got {burn_in!r}")
        self.lam, self.burn_in = float(lam), burn_in

    @property
    def reweighting(self) -> bool:
        # official: reweight when (epoch0 + 1) >= begin_epoch = epochs // 2, epoch0 counted from 0
        burn = max(0, self.ctx.epochs // 2 - 1) if self.burn_in is None else self.burn_in
        return self.epoch > burn

    def loss(self, x, y, idx) -> StepOutput:
        x_adv, kappa = self.attack(x, y, return_kappa=True)
        logits = self.ctx.model(x_adv)
        ce = self.ce(logits, y, reduction="none")
        w = gairat_weights(kappa, self.steps, self.lam)
        stats = {"gairat_kappa": kappa.float().mean()}
        if not self.reweighting:
            return StepOutput(ce.mean(), logits, stats=stats)
        total = self.ctx.all_reduce_sum(w.sum())
        # DDP averages gradients over ranks, so each rank's share is scaled by world_size.
        loss = (w * ce).sum() * (self.ctx.world_size / total)
        # Spread of the normalised weights (global mean 1): their variance around 1, which
        # averages exactly over equal-sized rank shards, so DDP logs the single-process value.
        wn = w * (w.numel() * self.ctx.world_size / total)
        stats["gairat_w_var"] = (wn - 1.0).square().mean()
        return StepOutput(loss, logits, stats=stats)
