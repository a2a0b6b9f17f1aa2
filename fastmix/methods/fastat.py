"""FastAT: "Fast is better than free" (Wong, Rice & Kolter 2020)."""
from __future__ import annotations

import warnings

import torch

from .base import Method, StepOutput, register


@register
class FastAT(Method):
    """FGSM with a uniform random start and step ``alpha = 1.25 eps``; ``loss = CE(f(x_adv), y)``.
    BatchNorm is in train mode during the attack (Wong et al.'s code never switches it).

    Catastrophic-overfitting detector: after each epoch, PGD-``probe_steps`` accuracy on a
    fixed held-out batch; when it falls more than ``co_drop`` below the best seen so far
    the method warns and logs ``fastat_co = True`` (Wong et al. stop early on the same
    signal; GIF's Table 3 shows the collapse to ~0% PGD accuracy).

    Args:
        alpha: FGSM step; ``None`` is ``1.25 * eps``.
        probe_steps: PGD steps of the detector's attack (step ``eps / 4``).
        co_drop: absolute accuracy drop that counts as a collapse (default 0.2).
    """

    name = "fastat"
    attack_bn = "train"

    def __init__(self, *, alpha: float | None = None, probe_steps: int = 10, co_drop: float = 0.2, **kw):
        eps = kw.get("eps", 8 / 255)
        super().__init__(alpha=1.25 * eps if alpha is None else alpha, **kw)
        if not isinstance(probe_steps, int) or probe_steps < 1:
            raise ValueError(f"probe_steps must be an int >= 1, got {probe_steps!r}")
        if not 0 < co_drop <= 1:
            raise ValueError(f"co_drop must be in (0, 1], got {co_drop}")
        self.probe_steps, self.co_drop = probe_steps, float(co_drop)
        self.best_probe = -1.0
        self.co_epoch = 0  # first epoch a collapse was seen (0: none)

    def loss(self, x, y, idx) -> StepOutput:
        from .. import attacks
        bn_mode, bn_ctx = self.attack_bn_context()
        with bn_ctx:
            x_adv = attacks.fgsm_rs(self.ctx.attack_model, x, y, eps=self.eps, alpha=self.alpha, bn_mode=bn_mode,
                                    check=False, **self.ctx.attack_options)
        self.after_attack(x_adv, self.attack_bn)
        logits = self.ctx.model(x_adv)
        return StepOutput(self.ce(logits, y), logits)

    def end_epoch(self, epoch, probe=None) -> dict:
        if probe is None:
            return {}
        x, y = probe
        model = self.ctx.attack_model
        was_training = model.training
        model.eval()
        x_adv = self.attack(x, y, steps=self.probe_steps, alpha=self.eps / 4, random_start=True, bn_mode="eval")
        with torch.no_grad():
            acc = (model(x_adv).argmax(1) == y).float().mean().item()
        model.train(was_training)
        collapsed = self.best_probe >= 0 and acc < self.best_probe - self.co_drop
        if collapsed:
            if not self.co_epoch:
                self.co_epoch = epoch
            warnings.warn(f"FastAT catastrophic overfitting at epoch {epoch}: PGD-{self.probe_steps} accuracy on "
                          f"the held-out probe fell to {acc:.3f} from a best of {self.best_probe:.3f}; "
                          f"use the best checkpoint, a smaller alpha, or early stopping", RuntimeWarning)
        self.best_probe = max(self.best_probe, acc)
        return {"fastat_probe_pgd_acc": acc, "fastat_co": bool(collapsed)}

    def state_dict(self) -> dict:
        return {"best_probe": self.best_probe, "co_epoch": self.co_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_probe, self.co_epoch = float(state["best_probe"]), int(state["co_epoch"])
