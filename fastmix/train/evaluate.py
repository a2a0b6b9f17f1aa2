"""Accuracy under named attacks, over a loader, with the model in eval mode.

Attack names: ``clean``; ``fgsm``; ``pgdK`` (PGD-K with cross-entropy, random start);
``cwK`` (PGD-K on the CW margin loss). Every attack uses the L-inf radius ``eps`` in pixel
units and step ``alpha`` (default ``eps / 4``: 2/255 at CIFAR's 8/255, the papers' PGD-20).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from . import dist

_SPEC = re.compile(r"^(clean|fgsm|pgd|cw)(\d*)$")


def parse_attack(spec: str, eps: float, alpha: float | None = None) -> Callable | None:
    """``spec`` -> ``attack(model, x, y) -> x_adv`` (``None`` for ``clean``); ValueError names a bad spec."""
    m = _SPEC.match(spec.strip().lower())
    if not m or (m.group(1) in ("pgd", "cw") and not m.group(2)) or (m.group(1) in ("clean", "fgsm") and m.group(2)):
        raise ValueError(f"attack must be clean, fgsm, pgd<K> or cw<K> (e.g. pgd20, cw20), got {spec!r}")
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps}")
    kind, k = m.group(1), int(m.group(2) or 0)
    if kind == "clean":
        return None
    if kind != "fgsm" and k < 1:
        raise ValueError(f"attack {spec!r} needs at least one step")
    alpha = eps / 4 if alpha is None else alpha
    from .. import attacks
    if kind == "fgsm":
        return lambda model, x, y: attacks.fgsm(model, x, y, eps=eps, bn_mode="eval", check=False)
    loss = "ce" if kind == "pgd" else "cw"
    return lambda model, x, y: attacks.pgd(model, x, y, eps=eps, alpha=alpha, steps=k, loss=loss,
                                           random_start=True, bn_mode="eval", check=False)


@torch.no_grad()
def _correct(model, x, y) -> Tensor:
    return (model(x).argmax(1) == y).sum()


def accuracy(model: nn.Module, batches: Iterable, attacks: dict[str, Callable | None], *,
             seed: int = 0, autocast: Callable | None = None) -> dict[str, float]:
    """Accuracy of ``model`` under each attack over ``batches`` of ``(x, y, ...)``.

    The model is put in eval mode and restored; the global RNGs are forked and seeded
    with ``seed`` (so an evaluation neither depends on nor disturbs the training stream);
    in a distributed run the counts are summed over ranks (each rank passes its shard).
    Returns ``{name: accuracy in [0, 1]}``.
    """
    was_training = model.training
    model.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    counts = None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for batch in batches:
            x, y = batch[0], batch[1]
            if counts is None:
                counts = torch.zeros(len(attacks) + 1, dtype=torch.int64, device=x.device)
            ctx = autocast() if autocast is not None else torch.autocast(x.device.type, enabled=False)
            with ctx:
                for i, atk in enumerate(attacks.values()):
                    x_in = x if atk is None else atk(model, x, y)
                    counts[i] += _correct(model, x_in, y)
            counts[-1] += y.shape[0]
    model.train(was_training)
    if counts is None:
        raise ValueError("the evaluation set is empty")
    counts = dist.all_reduce_sum(counts).tolist()
    return {name: counts[i] / max(counts[-1], 1) for i, name in enumerate(attacks)}
