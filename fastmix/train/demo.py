"""The digits demo (``fastmix demo``, ``scripts/main.sh``): train each method on
scikit-learn's digits with the dataset's defaults, then score every last checkpoint under
clean / FGSM / PGD-20 / CW-20 on the held-out split.

>>> res = run_demo(["standard", "at"], out="runs/demo")
>>> print(demo_table(res))
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

from ..eval.suite import evaluate_checkpoint
from .config import TrainConfig
from .trainer import train

__all__ = ["DEMO_ATTACKS", "run_demo", "demo_table"]

DEMO_ATTACKS = ("clean", "fgsm", "pgd20", "cw20")


def run_demo(methods: Sequence[str] = ("standard", "at"), *, epochs: int | None = None, out: str = "runs/demo",
             seed: int = 0, progress: bool = True, log: Callable[[str], None] | None = None,
             overwrite: bool = False) -> dict:
    """Train each method on digits (``OUT/<method>/``) and evaluate its last checkpoint.

    ``overwrite``: replace the runs of an earlier demo in ``OUT`` (otherwise an error).
    Returns ``{"wall_s", "eps", "attacks", "out", "results": {method: {attack: accuracy,
    "train_s": seconds of training}}}``.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names, got {methods!r}")
    t0 = time.perf_counter()
    rows = {}
    for method in methods:
        cfg = TrainConfig.for_dataset("digits", method=method, epochs=epochs)
        cfg = TrainConfig.for_dataset("digits", method=method, epochs=cfg.epochs, eval_every=cfg.epochs,
                                      out=os.path.join(out, method), progress=progress, seed=seed,
                                      overwrite=overwrite)
        if log is not None:
            log(f"== training {method} on digits: {cfg.model} {cfg.model_opts}, {cfg.epochs} epochs, "
                f"eps {cfg.eps}, attack steps {cfg.steps}")
        t = train(cfg)
        rows[method] = dict(evaluate_checkpoint(os.path.join(cfg.out, "last.pt"), list(DEMO_ATTACKS),
                                                splits=t.splits, seed=seed).accuracy)
        rows[method]["train_s"] = sum(h["seconds"] for h in t.history)
    return {"wall_s": time.perf_counter() - t0, "eps": TrainConfig.for_dataset("digits").eps,
            "attacks": list(DEMO_ATTACKS), "out": out, "results": rows}


def demo_table(res: dict) -> str:
    """The clean-versus-robust markdown table of :func:`run_demo`'s result."""
    attacks = res["attacks"]
    head = f"| method   | {' | '.join(f'{k:>6s}' for k in attacks)} | train s |"
    lines = [head, "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"]
    for m, r in res["results"].items():
        cells = " | ".join(f"{100 * r[k]:5.1f}%" for k in attacks)
        lines.append(f"| {m:8s} | {cells} | {r['train_s']:7.1f} |")
    return "\n".join(lines)
