"""Madry et al.'s PGD adversarial training."""
from __future__ import annotations

from .base import Method, StepOutput, register


@register
class MadryAT(Method):
    """``loss = CE(f(PGD_K(x, y)), y)`` with a uniform random start.

    BatchNorm is in eval mode during the attack by default (the PyTorch ports used as
    baselines by TRADES, GAIRAT and GIF); ``attack_bn="train"`` gives Rice et al.'s variant.
    """

    name = "at"
    attack_bn = "eval"

    def loss(self, x, y, idx) -> StepOutput:
        x_adv = self.attack(x, y)
        logits = self.ctx.model(x_adv)
        return StepOutput(self.ce(logits, y), logits)
