"""TRADES (Zhang et al. 2019)."""
from __future__ import annotations

import torch.nn.functional as F

from .base import Method, StepOutput, register


def kl_rows(logits_p, logits_q):
    """``KL(softmax p || softmax q)`` per row, ``(B,)`` float32, from two ``(B, K)`` logit tensors."""
    lp = F.log_softmax(logits_p.float(), dim=1)
    lq = F.log_softmax(logits_q.float(), dim=1)
    return (lp.exp() * (lp - lq)).sum(dim=1)


@register
class TRADES(Method):
    """``loss = CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, ``x_adv`` = K steps maximising
    that KL from ``x + 0.001 N(0, I)``.

    The natural-input CE follows TRADES's paper and code; GIF's Algorithm 2 prints CE on
    the adversarial input instead, which is not what TRADES does. The KL is the batch
    mean of the row sums (``KLDivLoss(reduction="sum") / B`` in the official code) and,
    as there, gradients flow through both the natural and the adversarial logits.
    BatchNorm is in eval mode during the attack (official code: ``model.eval()``). The
    attack is ``fastmix.attacks.pgd(loss="kl")``, which starts from ``x + 0.001 N(0, I)``.

    Args:
        beta: weight of the robust KL term (default 6, the paper's CIFAR-10 value).
    """

    name = "trades"
    attack_bn = "eval"

    def __init__(self, *, beta: float = 6.0, **kw):
        super().__init__(**kw)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def loss(self, x, y, idx) -> StepOutput:
        x_adv = self.attack(x, None, loss="kl")  # the KL attack needs no labels (y may be a SoftTarget)
        logits_nat = self.ctx.model(x)
        logits_adv = self.ctx.model(x_adv)
        natural = self.ce(logits_nat, y)
        robust = kl_rows(logits_nat, logits_adv).mean()
        return StepOutput(natural + self.beta * robust, logits_adv,
                          stats={"trades_kl": robust.detach()})
