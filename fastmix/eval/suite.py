"""The evaluation suite: accuracy under named attacks, per attack and worst case.

- :func:`evaluate`: tensors in, :class:`SuiteResult` out (per-attack accuracy, worst-case
  accuracy, per-sample correctness, seconds per attack), in batches, with a progress bar.
- :func:`evaluate_checkpoint`: the same on the held-out split of the dataset a ``fastmix
  train`` checkpoint names, on all of it or a fixed-seed subset (``fastmix eval``).
- :func:`accuracy`: the count-only form over a loader, summed over DDP ranks (the trainer's
  per-epoch held-out evaluation uses it).

Worst case: a sample counts as robust only if it is classified correctly under every attack
that was run (``clean`` included when listed). AutoAttack is run as its standard sequence;
when its parts (``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``) are also requested on their own,
their per-sample results are reused instead of being recomputed (same settings, same samples:
AutoAttack runs each part only on the samples the previous parts left robust, and a sample
is robust to AutoAttack exactly when it survives every part).

Randomness: every attack on every batch runs under its own seed, derived from ``seed``, the
attack's name and the batch's position, inside a forked RNG; so a figure does not depend on
which other attacks ran or in what order, and the caller's RNG stream is left untouched.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import data as fdata
from .. import dist
from ..progress import bar as progress_bar
from ..attacks.specs import EvalAttack, expand_attacks, parse_attack
from ..checkpoint import load_model
from ..attacks.fold import fold_bn as _fold_bn

__all__ = ["evaluate", "evaluate_checkpoint", "accuracy", "SuiteResult", "select_subset", "load_heldout"]


@dataclass
class SuiteResult:
    """What :func:`evaluate` measured.

    Fields:
        accuracy: ``{attack name: accuracy in [0, 1]}`` in the order the attacks were given.
        worst_case: share of samples correct under every attack run (in [0, 1]).
        n: number of samples evaluated.  eps: the L-inf radius (pixel units).
        correct: ``{attack name: (n,) bool CPU tensor}``, per-sample correctness.
        seconds: ``{attack name: wall seconds}`` (AutoAttack's excludes the reused parts).
        meta: settings (alpha, apgd_steps, square_queries, AutoAttack's components, seed, and
            whatever the caller adds: checkpoint, dataset, subset).
    """
    accuracy: dict
    worst_case: float
    n: int
    eps: float
    correct: dict = field(repr=False, default_factory=dict)
    seconds: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: everything but the per-sample tensors."""
        return {"eps": self.eps, "n": self.n, "accuracy": dict(self.accuracy), "worst_case": self.worst_case,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, **self.meta}

    def table(self) -> str:
        """A plain-text table, one attack per line, then the worst case."""
        w = max([len(k) for k in self.accuracy] + [10])
        lines = [f"{k:>{w}s}  {100 * v:6.2f}%   ({self.seconds.get(k, 0.0):.1f} s)" for k, v in self.accuracy.items()]
        lines.append(f"{'worst case':>{w}s}  {100 * self.worst_case:6.2f}%   (robust to every attack above)")
        return "\n".join(lines)


def _attack_seed(seed: int, name: str, batch: int) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7919 + batch) % (2 ** 63 - 1)


def _devices(x: Tensor) -> list:
    return [x.device] if x.device.type == "cuda" else []


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@torch.no_grad()
def _predict(model, x) -> Tensor:
    return model(x).argmax(1)


def _resolve(attacks, eps, alpha, apgd_steps, square_queries) -> dict:
    if isinstance(attacks, Mapping):
        if not attacks:
            raise ValueError("attacks must name at least one attack, got an empty mapping")
        for k, v in attacks.items():
            if v is not None and not callable(v):
                raise ValueError(f"attacks[{k!r}] must be None (clean) or a callable (model, x, y) -> x_adv, "
                                 f"got {type(v).__name__}")
        return dict(attacks)
    return {n: parse_attack(n, eps, alpha, apgd_steps=apgd_steps, square_queries=square_queries)
            for n in expand_attacks(attacks)}


def _run_batches(model, batches: Iterable, named: dict, *, seed: int, autocast, on_batch, progress=None,
                 timing: dict | None = None):
    """The one evaluation loop. For each batch ``(x, y, ...)`` and each attack, seeds the RNG,
    crafts the adversarial batch and records per-sample correctness; AutoAttack entries
    reuse the per-sample results of their parts run alone. Calls
    ``on_batch(start, {name: (b,) bool}, b)`` per batch."""
    plain = {k: v for k, v in named.items() if not (isinstance(v, EvalAttack) and v.kind == "autoattack")}
    composite = {k: v for k, v in named.items() if k not in plain}
    by_key = {v.key(): k for k, v in plain.items() if isinstance(v, EvalAttack)}
    def finished(name, t0, device, b):  # one attack on one batch is done: time it, advance the bar
        if timing is not None:
            _sync(device)
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - t0
        if progress is not None:
            progress.set_postfix_str(name)
            progress.update(b)

    start = 0
    for bi, batch in enumerate(batches):
        x, y = batch[0], batch[1]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        ctx = autocast() if autocast is not None else torch.autocast(x.device.type, enabled=False)
        res: dict = {}
        with ctx:
            for name, atk in plain.items():
                t0 = time.perf_counter()
                if atk is None:
                    res[name] = _predict(model, x) == y
                else:
                    torch.manual_seed(_attack_seed(seed, name, bi))
                    res[name] = _predict(model, atk(model, x, y)) == y
                finished(name, t0, x.device, y.shape[0])
            for name, aa in composite.items():
                t0 = time.perf_counter()
                clean = next((res[k] for k, v in plain.items() if v is None), None)
                robust = (_predict(model, x) == y) if clean is None else clean.clone()
                for part in aa.components:
                    sub = aa.component(part)
                    if sub.key() in by_key:  # already run on its own: reuse
                        robust &= res[by_key[sub.key()]]
                        continue
                    idx = robust.nonzero().squeeze(1)
                    if idx.numel() == 0:
                        break
                    torch.manual_seed(_attack_seed(seed, part, bi))
                    xs, ys = x.index_select(0, idx), y.index_select(0, idx)
                    robust[idx] = _predict(model, sub(model, xs, ys)) == ys
                res[name] = robust
                finished(name, t0, x.device, y.shape[0])
        on_batch(start, {k: res[k] for k in named}, y.shape[0])
        start += y.shape[0]


def _check_data(x, y):
    if not isinstance(x, Tensor) or x.dim() < 2 or x.dtype not in (torch.uint8, torch.float32, torch.float16,
                                                                   torch.bfloat16, torch.float64):
        raise ValueError(f"x must be a float tensor in [0, 1] or a uint8 tensor of shape (N, C, H, W), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"y must be an int64 tensor of shape ({x.shape[0]},), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample, got an empty tensor")
    if x.is_floating_point():
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"x must lie in [0, 1] (pixel units), got values in [{lo:.4g}, {hi:.4g}]")


def _check_labels(model: nn.Module, x: Tensor, y: Tensor, device) -> None:
    """Every label in ``[0, K)``, K the model's class count (``model.num_classes``, else the
    width of its output on one image): one scan of ``y`` per :func:`evaluate` call, so no
    out-of-range label reaches the loss kernels (which index by label)."""
    k = getattr(model, "num_classes", None)
    if not isinstance(k, int) or isinstance(k, bool):
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                xb = x[:1].to(device)
                out = model(xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb)
        finally:
            model.train(was)
        k = out.shape[-1]
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"y must hold labels in [0, {k}) (the model has {k} classes), got labels in [{lo}, {hi}]")


def evaluate(model: nn.Module, x: Tensor, y: Tensor, attacks: Sequence[str] | str | Mapping = ("clean", "fgsm",
             "pgd20", "cw20"), *, eps: float, alpha: float | None = None, batch_size: int = 256, seed: int = 0,
             apgd_steps: int = 100, square_queries: int = 5000, progress: bool = False,
             autocast: Callable | None = None, device=None, fold_bn: bool = False) -> SuiteResult:
    """Accuracy of ``model`` under each attack, and the worst case over all of them.

    Args:
        model: maps float ``(B, C, H, W)`` images in [0, 1] to ``(B, K)`` logits; evaluated in
            eval mode (its mode is restored afterwards).
        x: ``(N, C, H, W)`` float in [0, 1], or uint8 in [0, 255] (scaled per batch).
        y: ``(N,)`` int64 labels.
        attacks: names (a list or a comma-separated string; ``"all"`` expands to
            clean, fgsm, pgd20, cw20, apgd-ce, apgd-t, autoattack; see
            :mod:`fastmix.attacks.specs`), or a mapping ``{name: None | fn(model, x, y) -> x_adv}``.
        eps: L-inf radius in [0, 1].  alpha: PGD/CW step (default eps/4).
        batch_size: images per batch (>= 1).  seed: the evaluation's seed.
        apgd_steps, square_queries: AutoAttack's budgets (standard: 100 and 5000).
        progress: show a tqdm bar (images x attacks).
        autocast: a context-manager factory wrapped around each batch (AMP), or None.
        device: where to run (default: the model's device); batches are moved there.
        fold_bn: fold each BatchNorm into the convolution before it for the whole evaluation
            (:func:`fastmix.attacks.fold.fold_bn`; the model runs in eval mode, so every
            conv -> BN pair folds): the same accuracies up to float32 rounding, faster attacks.
    Returns:
        :class:`SuiteResult`.
    """
    _check_data(x, y)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    named = _resolve(attacks, eps, alpha, apgd_steps, square_queries)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else x.device
    device = torch.device(device)
    _check_labels(model, x, y, device)
    N = x.shape[0]
    correct = {k: torch.zeros(N, dtype=torch.bool) for k in named}
    seconds: dict = {}

    def batches():
        for s in range(0, N, batch_size):
            yield x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)

    def store(start, res, b):
        for k, v in res.items():
            correct[k][start:start + b] = v.cpu()

    bar = progress_bar(progress, N * len(named), "eval")
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=_devices(torch.empty(0, device=device))), _fold_bn(model, fold_bn):
            _run_batches(model, batches(), named, seed=seed, autocast=autocast, on_batch=store, progress=bar,
                         timing=seconds)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    # exact fractions of the images (Python ints divided once), not float32 means such as
    # 0.7599999904632568: what --json prints is what a reader would compute from the counts
    acc = {k: int(v.sum()) / N if N else 0.0 for k, v in correct.items()}
    worst = torch.ones(N, dtype=torch.bool)
    for v in correct.values():
        worst &= v
    meta = {"alpha": (eps / 4 if alpha is None else alpha), "apgd_steps": apgd_steps,
            "square_queries": square_queries, "seed": seed, "batch_size": batch_size}
    aa = [v for v in named.values() if isinstance(v, EvalAttack) and v.kind == "autoattack"]
    if aa:
        meta["autoattack_components"] = list(aa[0].components)
    return SuiteResult(acc, int(worst.sum()) / N if N else 0.0, N, float(eps), correct, seconds, meta)


def accuracy(model: nn.Module, batches: Iterable, attacks: dict, *, seed: int = 0,
             autocast: Callable | None = None, fold_bn: bool = False) -> dict:
    """Accuracy of ``model`` under each attack over ``batches`` of ``(x, y, ...)`` (x float in
    [0, 1] ``(b, C, H, W)``, y int64 ``(b,)``), as ``{name: accuracy in [0, 1]}``.

    ``attacks`` maps names to ``None`` (clean) or ``fn(model, x, y) -> x_adv`` (e.g. from
    :func:`fastmix.eval.parse_attack`). The model is put in eval mode and restored; the RNGs
    are forked (the evaluation neither depends on nor disturbs the training stream); in a
    distributed run the counts are summed over ranks (each rank passes its shard).
    ``fold_bn``: as in :func:`evaluate`.
    """
    counts = None
    dev = None

    def add(start, res, b):
        nonlocal counts, dev
        first = next(iter(res.values()))
        if counts is None:
            dev = first.device
            counts = torch.zeros(len(attacks) + 1, dtype=torch.int64, device=dev)
        for i, v in enumerate(res.values()):
            counts[i] += v.sum()
        counts[-1] += b

    was_training = model.training
    model.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices), _fold_bn(model, fold_bn):
            _run_batches(model, batches, dict(attacks), seed=seed, autocast=autocast, on_batch=add)
    finally:
        model.train(was_training)
    if counts is None:
        raise ValueError("the evaluation set is empty")
    counts = dist.all_reduce_sum(counts).tolist()
    return {name: counts[i] / max(counts[-1], 1) for i, name in enumerate(attacks)}


def select_subset(n_total: int, samples: int | None, seed: int = 0) -> Tensor | None:
    """Indices of a fixed-seed random subset of ``samples`` out of ``n_total`` (sorted, int64),
    or ``None`` for all of them (``samples`` None or >= ``n_total``)."""
    if samples is None:
        return None
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    if samples >= n_total:
        return None
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g)[:samples].sort().values


def load_heldout(checkpoint: str, *, data_dir: str | None = None, samples: int | None = None,
                 subset_seed: int = 0, device: str = "auto", splits=None, model=None):
    """The model a checkpoint holds and the held-out images it is judged on (``model``: for a
    run of a model of your own, see :func:`fastmix.checkpoint.load_model`).

    Returns ``(model, x uint8 (n, C, H, W), y int64 (n,), info)``: ``info`` holds the
    checkpoint's configuration (``config``), the dataset name, the subset (``subset_seed``,
    ``indices`` of the held-out images, or None for all) and the split's size.
    """
    model, st = load_model(checkpoint, device, model=model)
    cfg = st["config"]
    if splits is None:
        splits = fdata.load(cfg["dataset"], data_dir or cfg.get("data_dir"), seed=0)
    test = splits.test
    idx = select_subset(len(test), samples, subset_seed)
    if idx is not None:
        test = test.subset(idx)
    info = {"config": cfg, "dataset": cfg["dataset"], "heldout": len(splits.test),
            "subset_seed": None if idx is None else subset_seed, "indices": None if idx is None else idx.tolist()}
    return model, test.images, test.labels, info


def evaluate_checkpoint(path: str, attacks: Sequence[str] | str = ("clean", "fgsm", "pgd20", "cw20"), *,
                        eps: float | None = None, alpha: float | None = None, samples: int | None = None,
                        subset_seed: int = 0, batch_size: int = 500, data_dir: str | None = None,
                        device: str = "auto", seed: int = 0, splits=None, progress: bool = False,
                        apgd_steps: int = 100, square_queries: int = 5000, model=None) -> SuiteResult:
    """:func:`evaluate` on the held-out split of the dataset a checkpoint names: all of it, or
    ``samples`` images drawn with ``subset_seed`` (the same images on every call).

    ``eps`` defaults to the training eps (the dataset's usual eps for a standard-trained
    model, whose training eps is 0). ``meta`` of the result records the checkpoint, the
    dataset and the subset. ``model``: for a run of a model of your own (an ``nn.Module`` or
    the import string that builds it; :func:`fastmix.checkpoint.load_model`).
    """
    model, x, y, info = load_heldout(path, data_dir=data_dir, samples=samples, subset_seed=subset_seed,
                                     device=device, splits=splits, model=model)
    cfg = info["config"]
    eps = fdata.attack_eps(cfg["dataset"], eps, train_eps=cfg["eps"])
    res = evaluate(model, x, y, attacks, eps=eps, alpha=alpha, batch_size=batch_size, seed=seed,
                   apgd_steps=apgd_steps, square_queries=square_queries, progress=progress)
    res.meta.update(checkpoint=path, dataset=info["dataset"], method=cfg.get("method"), heldout=info["heldout"],
                    subset_seed=info["subset_seed"])
    return res
