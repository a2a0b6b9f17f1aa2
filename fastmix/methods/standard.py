"""Standard (non-adversarial) training: cross-entropy on the clean batch."""
from __future__ import annotations

from .base import Method, StepOutput, register


@register
class Standard(Method):
    """``loss = CE(f(x), y)``. Ignores eps/alpha/steps (kept so every method takes the same options)."""

    name = "standard"
    uses_attack = False

    def loss(self, x, y, idx) -> StepOutput:
        logits = self.ctx.model(x)
        return StepOutput(self.ce(logits, y), logits)
