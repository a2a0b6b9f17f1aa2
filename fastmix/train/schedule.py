"""Learning-rate schedules evaluated per optimiser step, with a one-number state.

``piecewise``: ``lr * gamma**k`` after the k-th milestone epoch (GIF/Madry: 60 epochs,
/10 at 30 and 45). ``onecycle``: linear from 0 to ``lr`` over the first 2/5 of training,
then linearly back to 0 (Wong et al.'s FastAT, evaluated at fractional epochs).
``constant``: ``lr`` throughout.
"""
from __future__ import annotations

from typing import Sequence

KINDS = ("piecewise", "onecycle", "constant")


class LRSchedule:
    """``lr()`` is the rate for the next optimiser step; ``step()`` advances one step.

    Args:
        kind: ``piecewise``, ``onecycle`` or ``constant``.
        lr: the base (piecewise, constant) or peak (onecycle) rate, > 0.
        epochs: training length in epochs, >= 1.
        steps_per_epoch: optimiser steps per epoch, >= 1.
        milestones: piecewise epochs (ints in ``[1, epochs]``); ``None``: halfway and 3/4.
        gamma: piecewise factor per milestone (default 0.1).
        peak: onecycle's peak position as a fraction of training (default 0.4).
    """

    def __init__(self, kind: str, lr: float, epochs: int, steps_per_epoch: int, *,
                 milestones: Sequence[int] | None = None, gamma: float = 0.1, peak: float = 0.4):
        if kind not in KINDS:
            raise ValueError(f"schedule must be one of {', '.join(KINDS)}, got {kind!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs}, {steps_per_epoch}")
        if milestones is None:
            milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        milestones = [int(m) for m in milestones]
        if any(not 1 <= m <= epochs for m in milestones):
            raise ValueError(f"milestones must be epochs in [1, {epochs}], got {milestones}")
        if not 0 < peak < 1:
            raise ValueError(f"peak must be in (0, 1), got {peak}")
        self.kind, self.base, self.epochs, self.spe = kind, float(lr), int(epochs), int(steps_per_epoch)
        self.milestones, self.gamma, self.peak = sorted(milestones), float(gamma), float(peak)
        self.t = 0  # optimiser steps taken

    def lr(self, step: int | None = None) -> float:
        t = self.t if step is None else step
        if self.kind == "constant":
            return self.base
        if self.kind == "piecewise":
            epoch = t // self.spe  # completed epochs
            return self.base * self.gamma ** sum(epoch >= m for m in self.milestones)
        frac = (t + 0.5) / (self.epochs * self.spe)  # onecycle, at the middle of the step
        if frac <= self.peak:
            return self.base * frac / self.peak
        return self.base * max(0.0, (1.0 - frac) / (1.0 - self.peak))

    def step(self) -> None:
        self.t += 1

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
