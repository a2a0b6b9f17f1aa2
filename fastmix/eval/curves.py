"""Accuracy curves and Mixup Inference on a checkpoint: the library side of ``fastmix plot
eps``, ``fastmix plot mi`` and ``fastmix eval --mi`` (the CLI only parses arguments).

- :func:`eps_curves`: robust accuracy of each checkpoint at each radius (one suite run per
  radius, on the same fixed-seed held-out subset).
- :func:`mi_split`: a checkpoint's model, the held-out images it is evaluated on and Mixup
  Inference's clean pool (the last ``pool`` held-out images; the evaluated ones come from
  the rest, so no image is in both).
- :func:`evaluate_checkpoint_mi`: plain vs MI accuracy under oblivious (and adaptive EOT)
  attacks, :func:`fastmix.methods.mixup_inference.evaluate` on that split.
- :func:`mi_curves`: MI accuracy at each lambda on each attack's images.

Every radius defaults by :func:`fastmix.data.attack_eps` (the training eps, or the
dataset's usual eps for a standard-trained checkpoint).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from .. import data as fdata
from ..attacks.specs import expand_attacks, parse_attack
from ..checkpoint import load_model
from ..methods.mixup_inference import MixupInference
from ..methods.mixup_inference import evaluate as evaluate_mi
from .suite import evaluate, load_heldout

__all__ = ["eps_curves", "default_eps_grid", "mi_split", "evaluate_checkpoint_mi", "mi_curves"]


def default_eps_grid(train_eps: float, points: int = 9) -> list[float]:
    """``points`` radii evenly spaced from 0 to twice ``train_eps`` (rounded to 6 digits)."""
    top = 2 * train_eps
    return [round(top * i / (points - 1), 6) for i in range(points)]


def eps_curves(checkpoints: Mapping[str, str], *, attack: str = "pgd20", eps_grid: Sequence[float] | None = None,
               samples: int | None = 500, subset_seed: int = 0, batch_size: int = 500, data_dir: str | None = None,
               device: str = "auto", seed: int = 0, progress: bool = False,
               log: Callable[[str], None] | None = None) -> dict:
    """Robust accuracy of each checkpoint (``{label: path}``) under ``attack`` at each radius.

    ``eps_grid`` defaults to :func:`default_eps_grid` of the checkpoint's training eps (of the
    first trained-with-an-attack checkpoint for a standard-trained one, else the dataset's
    usual eps). Returns ``{"attack", "train_eps", "samples", "subset_seed", "curves": {label:
    {eps: accuracy}}}`` (what ``fastmix plot eps --save-json`` writes).
    """
    if not checkpoints:
        raise ValueError("checkpoints: give at least one checkpoint")
    curves, train_eps = {}, None
    for lab, ck in checkpoints.items():
        model, x, y, info = load_heldout(ck, data_dir=data_dir, samples=samples, subset_seed=subset_seed,
                                         device=device)
        e_train = info["config"]["eps"]
        if train_eps is None and e_train > 0:
            train_eps = e_train
        grid = list(eps_grid) if eps_grid else default_eps_grid(
            fdata.attack_eps(info["dataset"], train_eps=e_train if e_train > 0 else train_eps))
        curves[lab] = {}
        for e in grid:
            res = evaluate(model, x, y, [attack], eps=e, batch_size=batch_size, seed=seed, progress=progress)
            curves[lab][e] = res.accuracy[attack]
        if log is not None:
            log(f"{lab}: " + ", ".join(f"{e:g}: {100 * v:.1f}%" for e, v in curves[lab].items()))
    return {"attack": attack, "train_eps": train_eps, "samples": samples, "subset_seed": subset_seed,
            "curves": curves}


def mi_split(checkpoint: str, *, pool: int | None = None, samples: int | None = None, data_dir: str | None = None,
             device: str = "auto"):
    """The model of ``checkpoint`` and its held-out split cut in two for Mixup Inference.

    Returns ``(model, config, (x, y), (pool_x, pool_y))``: float images in [0, 1] on the
    model's device; the pool is the last ``pool`` held-out images (default half), the
    evaluated images the first ``samples`` of the rest (default all of the rest).
    """
    model, st = load_model(checkpoint, device)
    cfg = st["config"]
    test = fdata.load(cfg["dataset"], data_dir or cfg.get("data_dir"), seed=0).test
    n_pool = len(test) // 2 if pool is None else pool
    if isinstance(n_pool, bool) or not isinstance(n_pool, int) or not 0 < n_pool < len(test):
        raise ValueError(f"pool must be an int in (0, {len(test)}) (held-out images), got {n_pool!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    dev = next(model.parameters()).device
    x = test.images.to(dev, torch.float32).div_(255.0)
    y = test.labels.to(dev)
    n_eval = len(test) - n_pool if samples is None else min(samples, len(test) - n_pool)
    return model, cfg, (x[:n_eval], y[:n_eval]), (x[-n_pool:], y[-n_pool:])


def evaluate_checkpoint_mi(checkpoint: str, attacks: Sequence[str] | str = ("clean", "pgd20"), *,
                           mode: str = "ol", eps: float | None = None, alpha: float | None = None,
                           lam: float | None = None, n: int | None = None, threshold: float = 0.2,
                           eot_iter: int = 0, samples: int | None = None, pool: int | None = None,
                           batch_size: int = 250, data_dir: str | None = None, device: str = "auto",
                           seed: int = 0) -> dict:
    """Plain vs Mixup-Inference accuracy of a checkpoint (``fastmix eval --mi``).

    Returns ``{"accuracy": {name: acc}, "eps", "samples", "pool", "mode"}`` with the names of
    :func:`fastmix.methods.mixup_inference.evaluate` (``name``, ``name+mi``, ``eot-name+mi``).
    """
    model, cfg, (x, y), (px, py) = mi_split(checkpoint, pool=pool, samples=samples, data_dir=data_dir,
                                            device=device)
    eps = fdata.attack_eps(cfg["dataset"], eps, train_eps=cfg["eps"])
    acc = evaluate_mi(model, x, y, px, py, attacks=expand_attacks(attacks), eps=eps, alpha=alpha, mode=mode,
                      lam=lam, n=n, threshold=threshold, eot_iter=eot_iter, batch_size=batch_size, seed=seed)
    return {"accuracy": acc, "eps": eps, "samples": x.shape[0], "pool": px.shape[0], "mode": mode}


def mi_curves(checkpoint: str, *, lams: Sequence[float], attacks: Sequence[str] | str = ("clean", "pgd20"),
              mode: str = "ol", n: int = 30, eps: float | None = None, samples: int = 500, pool: int | None = None,
              batch_size: int = 500, data_dir: str | None = None, device: str = "auto", seed: int = 0,
              log: Callable[[str], None] | None = None) -> dict:
    """MI accuracy at each lambda on each attack's images (crafted once, on the plain model:
    the oblivious threat model of the MI paper), plus the plain model's accuracy.

    Returns ``{"checkpoint", "mode", "n", "eps", "samples", "pool", "curves": {"<attack> (no
    MI)": {0.5: acc}, "<attack> + MI-<MODE>": {lam: acc}}}`` (``fastmix plot mi --save-json``).
    """
    if not checkpoint:
        raise ValueError("checkpoint: give a checkpoint")
    model, cfg, (xe, ye), (pool_x, pool_y) = mi_split(checkpoint, pool=pool, samples=samples, data_dir=data_dir,
                                                      device=device)
    dev = xe.device
    n_eval = xe.shape[0]
    eps = fdata.attack_eps(cfg["dataset"], eps, train_eps=cfg["eps"])
    curves: dict = {}
    for name in expand_attacks(attacks):
        captured = []
        atk = parse_attack(name, eps)

        def keep(model_, xb, yb, _atk=atk):
            xa = xb if _atk is None else _atk(model_, xb, yb)
            captured.append(xa.detach())
            return xa
        plain = evaluate(model, xe, ye, {name: keep}, eps=eps, batch_size=batch_size, seed=seed)
        xa = torch.cat(captured)
        curves[f"{name} (no MI)"] = {0.5: plain.accuracy[name]}
        row = curves.setdefault(f"{name} + MI-{mode.upper()}", {})
        for lam in lams:
            mi = MixupInference(model, pool_x, pool_y, mode=mode, lam=lam, n=n)
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(seed)
                hit = sum(int((mi(xa[s:s + batch_size]).argmax(1) == ye[s:s + batch_size]).sum())
                          for s in range(0, n_eval, batch_size))
            row[lam] = hit / n_eval
        if log is not None:
            log(f"{name}: plain {100 * plain.accuracy[name]:.1f}%, MI-{mode.upper()} "
                + ", ".join(f"lam {k:g}: {100 * v:.1f}%" for k, v in row.items()))
    return {"checkpoint": checkpoint, "mode": mode, "n": n, "eps": eps, "samples": n_eval, "pool": pool_x.shape[0],
            "curves": curves}
