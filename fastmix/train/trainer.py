"""One training loop for every method (layer 4 of DESIGN.md).

The :class:`Trainer` owns the optimiser (SGD with momentum, weight decay, optional
Nesterov), the per-step learning-rate schedule, AMP (bf16 autocast, or fp16 with a
gradient scaler), channels-last, torch.compile / CUDA graphs (GPU only), DDP under
torchrun, evaluation on a held-out split, atomic checkpoints and ``metrics.jsonl``. A
method (:mod:`fastmix.methods`) supplies only the loss of a batch.

Files written to ``cfg.out`` (by rank 0):
    metrics.jsonl  one JSON object per epoch: epoch, lr, train_loss, train_acc, clean_acc,
                   pgd_acc, seconds (training time of the epoch), images_per_s,
                   eval_seconds, is_best, plus the method's diagnostics
    last.pt        the checkpoint after the latest epoch (everything needed to resume)
    best.pt        the checkpoint with the best held-out PGD accuracy so far
    config.json    the run's configuration

Resuming (``resume=True``) restores the model, optimiser, schedule, scaler, method
state, every RNG (python, numpy, torch CPU/CUDA per rank, the loader's generator), the
CPU thread count and the metric history, so a run stopped after epoch k and resumed
reproduces the uninterrupted run.

A run directory is never reused silently: ``out`` holding a run needs ``resume=True``
(then ``last.pt`` must exist and every result-changing field must match the stored run)
or ``overwrite=True``. Each epoch's checkpoints are committed by
:func:`fastmix.train.checkpoint.commit_epoch` (a new best staged, ``last.pt`` replaced,
the best moved into place), so a kill at any point leaves ``best.pt`` the best epoch the
history records, once resumed. Files are written with the user's umask.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import random
import time
import warnings

import numpy as np
import torch
from torch import nn

from .. import data as fdata
from .. import dist
from .. import methods as fmethods
from .. import models as fmodels
from ..models import user as user_models
from .. import progress
from ..attacks.specs import parse_attack
from ..checkpoint import load_model, resolve_device  # noqa: F401  (load_model re-exported)
from ..eval.suite import accuracy
from . import checkpoint as ckpt
from .config import TrainConfig
from .schedule import LRSchedule


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def make_sgd(params, **hparams) -> torch.optim.SGD:
    """``torch.optim.SGD(params, **hparams)`` with torch's fused kernel where every parameter
    allows it (floating point, on a device with fused optimiser kernels: CPU and CUDA).

    The same update rule as torch's default per-parameter loop (equal within float32
    rounding: ``tests/test_train.py::test_fused_sgd_matches_default_sgd``; it may round
    differently in the last bit, so a run is not bit-identical to one with the default
    loop) in one kernel call instead of a few Python-dispatched ops per parameter: on the
    CPU, 3.7x faster for the CNN's 13 parameters (built for 3x32x32 inputs: 1.68 ms ->
    0.45 ms) and 2.6x for PreActResNet-18's 56, 1.5-2% of a digits training step
    (``benchmarks/bench_train.py``, provider ``naive-fusedsgd``). Falls back to the default
    implementation where torch refuses the fused kernel (e.g. a parameter on a device
    without one)."""
    params = list(params)
    try:
        return torch.optim.SGD(params, **hparams, fused=True)
    except RuntimeError as e:  # torch refuses fused=True for this parameter set
        if "fused" not in str(e):
            raise
        return torch.optim.SGD(params, **hparams)


def build_model(cfg: TrainConfig, splits: fdata.Splits) -> nn.Module:
    """``cfg.model``: a built-in name (:func:`fastmix.models.build`) or an import string
    ``"pkg.mod:build"`` (:func:`fastmix.models.user.build`: called with the dataset's facts
    it declares and ``cfg.model_opts``)."""
    if user_models.is_import_string(cfg.model):
        return user_models.build(cfg.model, splits.num_classes, splits.in_channels, splits.image_size,
                                 mean=splits.mean, std=splits.std, **cfg.model_opts)
    if isinstance(cfg.model, str) and cfg.model.startswith("<"):
        raise ValueError(f"model={cfg.model!r} is a model object given to train(cfg, model=...); a run of it is "
                         f"rebuilt (resumed) only by passing the object again: Trainer(cfg, model=...)")
    return fmodels.build(cfg.model, splits.num_classes, splits.in_channels, splits.image_size,
                         mean=splits.mean, std=splits.std, **cfg.model_opts)


def object_model_name(model: nn.Module) -> str:
    """What ``cfg.model`` records for a model object: ``"<module.QualName>"`` (not buildable)."""
    t = type(model)
    return f"<{t.__module__}.{t.__qualname__}>"


class Trainer:
    """Train ``cfg.method`` on ``cfg.dataset``; :meth:`fit` runs the remaining epochs.

    Args:
        cfg: the run configuration (see :class:`TrainConfig`).
        splits: an already loaded dataset (default: ``fastmix.data.load`` from ``cfg``).
        model: a model of your own instead of ``cfg.model``: any ``nn.Module`` mapping
            ``(B, C, H, W)`` images in ``[0, 1]`` to ``(B, K)`` logits (normalise inside it),
            trained in place (moved to the run's device). Every method works with it; AIT
            and manifold mixup need its layers named (``method_opts={"features": "pool"}``,
            ``{"mix_layers": ("layer1", "layer2")}``). ``cfg.model`` is recorded as
            ``"<module.ClassName>"``; to resume such a run, pass the model again.
    """

    def __init__(self, cfg: TrainConfig, splits: fdata.Splits | None = None, *, model: nn.Module | None = None):
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module (images -> logits) or None, got {type(model).__name__}")
        self.info = dist.init("cuda" if cfg.device.startswith("cuda") or
                              (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = resolve_device(cfg.device, self.info.local_rank)
        if model is not None:  # before the run-directory check: a resumed run stored this name too
            cfg = dataclasses.replace(cfg, model=object_model_name(model), model_opts={})
        self.resumed_from = _check_run_dir(cfg)
        if self.resumed_from is not None:
            stored = self.resumed_from["config"]
            keep = {k: getattr(cfg, k) for k in TrainConfig.RESUME_FREE}
            # a run from before fused_sgd existed stepped torch's default SGD: continue it so
            old = {} if "fused_sgd" in stored else {"fused_sgd": False}
            cfg = TrainConfig.from_dict({**stored, **old, **keep})
        self.cfg = cfg
        # CPU results depend on the thread count: record the one used (a resume reuses it);
        # it is set, like the other process-wide switches, only while fit() runs
        if cfg.threads is None:
            self.cfg = cfg = dataclasses.replace(cfg, threads=torch.get_num_threads())
        # Process-wide switches are set only while fit() runs (or inside process_switches()),
        # and given back as they were found.
        self.cudnn_benchmark = (False if cfg.deterministic else
                                cfg.cudnn_benchmark if cfg.cudnn_benchmark is not None else self.device.type == "cuda")

        self.splits = splits if splits is not None else fdata.load(cfg.dataset, cfg.data_dir, download=cfg.download,
                                                                    seed=0)
        # The same initial weights on every rank (DDP would broadcast rank 0's anyway).
        seed_all(cfg.seed)
        self.module = build_model(cfg, self.splits) if model is None else model
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.module.to(self.device, memory_format=fmt)
        if self.info.active and self.device.type == "cuda":
            self.module = nn.SyncBatchNorm.convert_sync_batchnorm(self.module)
        # Each rank's attacks draw their own noise.
        seed_all(cfg.seed * 1_000_003 + 1 + self.info.rank)

        self.loader = fdata.DeviceLoader(self.splits.train, cfg.batch_size, shuffle=True, crop=self.splits.crop,
                                         flip=self.splits.flip, device=self.device, seed=cfg.seed,
                                         rank=self.info.rank, world_size=self.info.world_size,
                                         channels_last=cfg.channels_last)
        n_eval = min(cfg.eval_samples, len(self.splits.test))
        self.heldout = self.splits.test.subset(torch.arange(n_eval))
        self.eval_loader = fdata.DeviceLoader(self.heldout, max(cfg.batch_size, 256), shuffle=False,
                                              device=self.device, rank=self.info.rank,
                                              world_size=self.info.world_size, channels_last=cfg.channels_last)
        n_probe = min(cfg.probe_size, len(self.heldout))
        self.probe = (self.heldout.images[:n_probe].to(self.device, torch.float32).div_(255.0),
                      self.heldout.labels[:n_probe].to(self.device))

        self.attack_model, self.train_model = self._wrap(self.module)
        hp = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.optimizer = (make_sgd(self.module.parameters(), **hp) if cfg.fused_sgd
                          else torch.optim.SGD(self.module.parameters(), **hp))
        self.schedule = LRSchedule(cfg.schedule, cfg.lr, cfg.epochs, len(self.loader),
                                   milestones=cfg.milestones, gamma=cfg.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        shared = dict(eps=cfg.eps, steps=cfg.steps, **({} if cfg.alpha is None else {"alpha": cfg.alpha}))
        self.method = fmethods.build(cfg.method, **{**shared, **cfg.method_opts})  # method options win
        self.method.bind(fmethods.MethodContext(
            model=self.train_model, attack_model=self.attack_model, module=self.module,
            num_classes=self.splits.num_classes, num_train=len(self.splits.train), epochs=cfg.epochs,
            steps_per_epoch=len(self.loader), device=self.device, rank=self.info.rank,
            world_size=self.info.world_size, all_reduce_sum=dist.all_reduce_sum,
            all_gather_cat=dist.all_gather_cat,
            attack_options=self._attack_options(),
            fetch=self.loader.fetch))
        # Standard training with eps 0 is still judged at the dataset's usual radius.
        self.eval_eps = fdata.attack_eps(cfg.dataset, train_eps=cfg.eps)
        self.eval_attacks = {"clean_acc": None,
                             "pgd_acc": parse_attack(f"pgd{cfg.eval_steps}", self.eval_eps, cfg.eval_alpha)}
        self.epoch = 0
        self.history: list[dict] = []
        self.best = {"epoch": 0, "pgd_acc": -1.0}
        if self.resumed_from is not None:
            self._restore(self.resumed_from)
            self.resumed_from = None

    # ----------------------------------------------------------------- set-up
    def _wrap(self, module):
        """(attack model, training model) around the same parameters.

        ``compile="model"``: both are ``torch.compile(module)`` (static shapes: the training
        loader drops the last batch). ``compile="graphs"``: the attacks run the eager
        module with ``cuda_graph=True`` (each attack's K-step loop is captured once per
        shape and replayed; see ``ctx.attack_options``) and the training forward is
        compiled (default mode, so no CUDA graph is nested in another). With more than one
        process the training model is DDP-wrapped; attacks never go through DDP.
        """
        cfg = self.cfg
        attack_model = train_base = module
        if cfg.compile != "none":
            if self.device.type != "cuda" and cfg.compile == "graphs":
                warnings.warn(f"compile={cfg.compile!r} needs a GPU; running eager on {self.device}")
            else:
                compiled = torch.compile(module, dynamic=False)
                train_base = compiled
                if cfg.compile == "model":
                    attack_model = compiled
        train_model = train_base
        if self.info.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(module, device_ids=ids)
            if train_base is not module:
                train_model = torch.compile(train_model, dynamic=False)
        return attack_model, train_model

    def _attack_options(self) -> dict:
        """Keyword arguments of every training attack: CUDA-graph capture, BatchNorm folding."""
        opts = {}
        if self.cfg.compile == "graphs" and self.device.type == "cuda":
            opts["cuda_graph"] = True
        if self.cfg.folds_bn:
            opts["fold_bn"] = True
        return opts

    def process_switches(self):
        """The context in which the run's process-wide torch switches hold (``fit`` enters
        it; enter it yourself around direct ``train_epoch``/``evaluate`` calls): see
        :func:`process_switches`."""
        return process_switches(deterministic=self.cfg.deterministic, cudnn_benchmark=self.cudnn_benchmark,
                                threads=self.cfg.threads)

    def _autocast(self):
        if self.cfg.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        rng = dist.all_gather_object(ckpt.rng_state())  # every rank's RNGs, in rank order
        return {
            "format": ckpt.FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": {"name": self.method.name, "hparams": self.method.hparams(),
                       "state": self.method.state_dict()},
            "rng": rng,
            "loader": self.loader.state_dict(),
            "history": list(self.history),
            "best": dict(self.best),
            "data": self.splits.describe(),
            "model_args": {"name": self.cfg.model, "num_classes": self.splits.num_classes,
                           "in_channels": self.splits.in_channels, "image_size": self.splits.image_size,
                           "mean": self.splits.mean, "std": self.splits.std, **self.cfg.model_opts},
            "world_size": self.info.world_size,
        }

    def _restore(self, st: dict) -> None:
        self.module.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        for g in self.optimizer.param_groups:  # a checkpoint's groups name its writer's implementation
            g["fused"], g["foreach"] = self.optimizer.defaults["fused"], self.optimizer.defaults["foreach"]
        self.schedule.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.method.load_state_dict(st["method"]["state"])
        self.loader.load_state_dict(st["loader"])
        self.epoch, self.history, self.best = int(st["epoch"]), list(st["history"]), dict(st["best"])
        rng = st["rng"]
        if len(rng) == self.info.world_size:
            ckpt.set_rng_state(rng[self.info.rank])
        else:
            warnings.warn(f"checkpoint was written by {len(rng)} process(es), this run has "
                          f"{self.info.world_size}: RNG streams are re-seeded, so the run will not be bit-exact")
            seed_all(self.cfg.seed * 1_000_003 + 1 + self.info.rank + 7919 * self.epoch)
        if self.info.is_main:  # the metrics file always agrees with the checkpoint it resumes from
            ckpt.recover(self.cfg.out, st)  # a kill inside commit_epoch: finish or undo it
            ckpt.write_text_atomic("".join(json.dumps(h) + "\n" for h in self.history),
                                   os.path.join(self.cfg.out, "metrics.jsonl"))

    def _save(self, is_best: bool) -> None:
        state = self.state_dict()  # collective: every rank takes part
        if self.info.is_main:
            # best.pt is staged before last.pt and moved into place after it (ckpt.commit_epoch),
            # so a kill between the writes never leaves a best.pt that last.pt's history disowns
            ckpt.commit_epoch(state, self.cfg.out, is_best)
            with open(os.path.join(self.cfg.out, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(self.history[-1]) + "\n")
        dist.barrier()

    # ------------------------------------------------------------------ loop
    def train_step(self, x, y, idx) -> "fmethods.StepOutput":
        """One optimiser step on a batch: the scheduled lr, the method's loss under autocast,
        backward (through the grad scaler for fp16), SGD. No host synchronisation.

        Only what the step needs runs per step: autocast is entered only with AMP, the
        grad scaler only for fp16."""
        lr = self.schedule.lr()
        for g in self.optimizer.param_groups:
            if g["lr"] != lr:
                g["lr"] = lr
        if self.cfg.amp == "none":
            out = self.method.loss(x, y, idx)
        else:
            with self._autocast():
                out = self.method.loss(x, y, idx)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.scale(out.loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out.loss.backward()
            self.optimizer.step()
        self.schedule.step()
        return out

    def train_epoch(self) -> dict:
        """One pass over the training set; returns the epoch's training metrics."""
        cfg, dev = self.cfg, self.device
        self.method.start_epoch(self.epoch + 1)
        self.module.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = torch.zeros((), dtype=torch.int64, device=dev)
        scored = torch.zeros((), dtype=torch.int64, device=dev)  # rows train_acc counts (GIF: its m originals)
        stat_sums: dict[str, torch.Tensor] = {}
        lr0 = self.schedule.lr()
        bar = progress.bar(cfg.progress and self.info.is_main, self.loader.samples_per_epoch,
                           f"epoch {self.epoch + 1}/{cfg.epochs}", unit_scale=True)
        t0 = time.perf_counter()
        for step, (x, y, idx) in enumerate(self.loader):
            out = self.train_step(x, y, idx)
            b = y.shape[0]
            loss_sum += out.loss.detach().double() * b
            seen += b
            if out.logits is not None:
                target = y if out.target is None else out.target
                correct += (out.logits.detach().argmax(1) == target).sum()
                scored += target.shape[0]
            for k, v in out.stats.items():
                stat_sums[k] = stat_sums.get(k, 0) + v.detach().double()
            if bar is not None:
                bar.update(b * self.info.world_size)
                if step % 20 == 0:
                    # one host read every 20 steps, for the display only
                    bar.set_postfix(loss=f"{float(out.loss.detach()):.3f}",
                                    lr=f"{self.optimizer.param_groups[0]['lr']:.3g}")
        totals = dist.all_reduce_sum(torch.stack([loss_sum, correct.double(), seen.double(), scored.double()]))
        names = sorted(stat_sums)
        stats = {}
        if names:
            s = dist.all_reduce_sum(torch.stack([stat_sums[k] for k in names])) / (len(self.loader) *
                                                                                 self.info.world_size)
            stats = {k: float(v) for k, v in zip(names, s.tolist())}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        loss_tot, corr_tot, seen_tot, scored_tot = totals.tolist()
        return {"lr": lr0, "train_loss": loss_tot / max(seen_tot, 1), "train_acc": corr_tot / max(scored_tot, 1),
                "seconds": seconds, "images_per_s": seen_tot / seconds if seconds > 0 else float("nan"), **stats}

    def evaluate(self) -> dict:
        """Clean and PGD accuracy on the held-out subset (``cfg.eval_samples`` images)."""
        t0 = time.perf_counter()
        res = accuracy(self.attack_model, self.eval_loader, self.eval_attacks, seed=self.cfg.seed + 12345,
                       autocast=self._autocast if self.cfg.amp != "none" else None, fold_bn=self.cfg.folds_bn)
        res["eval_seconds"] = time.perf_counter() - t0
        return res

    def fit(self) -> list[dict]:
        """Run epochs ``epoch + 1 .. cfg.epochs`` (or up to ``cfg.stop_after``); returns the metric history."""
        cfg = self.cfg
        if self.info.is_main:
            os.makedirs(cfg.out, exist_ok=True)
            for name in os.listdir(cfg.out):  # torn writes of a killed run
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(cfg.out, name))
            if cfg.overwrite and self.epoch == 0:  # asked for: the old run's files go before the first write
                for name in RUN_FILES + (ckpt.PENDING_BEST,):
                    if os.path.isfile(os.path.join(cfg.out, name)):
                        os.unlink(os.path.join(cfg.out, name))
            ckpt.write_text_atomic(json.dumps(cfg.to_dict(), indent=1) + "\n", os.path.join(cfg.out, "config.json"))
            if self.epoch == 0:
                ckpt.write_text_atomic("", os.path.join(cfg.out, "metrics.jsonl"))
        try:
            with self.process_switches():
                self._fit_epochs()
        finally:
            dist.shutdown(self.info)
        return self.history

    def _fit_epochs(self) -> None:
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            row = {"epoch": self.epoch + 1}
            row.update(self.train_epoch())
            self.epoch += 1
            diag = self.method.end_epoch(self.epoch, self.probe)
            if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                row.update(self.evaluate())
            else:
                row.update(clean_acc=None, pgd_acc=None, eval_seconds=0.0)
            row.update(diag)
            is_best = row["pgd_acc"] is not None and row["pgd_acc"] > self.best["pgd_acc"]
            if is_best:
                self.best = {"epoch": self.epoch, "pgd_acc": row["pgd_acc"]}
            row["is_best"] = is_best
            self.history.append(row)
            self._save(is_best)
            if self.info.is_main and cfg.progress:
                print(_summary(row), flush=True)
            if cfg.stop_after is not None and self.epoch >= cfg.stop_after:
                break

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.json")


def _check_run_dir(cfg: TrainConfig) -> dict | None:
    """The run-directory rule: ``cfg.out`` holding a run is reused only with ``resume`` (it
    must then hold ``last.pt``, and result-changing fields must match the stored run) or
    ``overwrite``. Returns the checkpoint to resume from, or None."""
    out = cfg.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"out {out!r} is a file, not a run directory (choose another --out)")
    up = os.path.dirname(os.path.abspath(out))
    while up and not os.path.exists(up):
        up = os.path.dirname(up)
    if up and not os.path.isdir(up):
        raise NotADirectoryError(errno.ENOTDIR, f"out {out!r} lies under {up!r}, which is a file, not a directory "
                                 f"(choose another --out)")
    last = os.path.join(out, "last.pt")
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]
    if cfg.resume:
        if not os.path.isfile(last):
            held = f" (it holds {', '.join(present)} but no last.pt)" if present else ""
            where = f"{out} has no last.pt{held}" if os.path.isdir(out) else f"{out} does not exist"
            raise FileNotFoundError(f"cannot resume: {where}; nothing was changed (train without --resume to start "
                                    f"a new run, or give the --out of an existing run)")
        stored = ckpt.load(last)
        bad = cfg.resume_conflicts(stored["config"])
        if str(stored["config"].get("model", "")).startswith("<"):  # a model object: build_model says how
            bad = [b for b in bad if b[0] not in ("model", "model_opts")]
        if bad:
            flag = {"method_opts": "--opt", "model_opts": "--model-opt"}
            lines = ", ".join(f"{k}={mine!r} (stored: {theirs!r}; flag {flag.get(k, '--' + k.replace('_', '-'))})"
                              for k, mine, theirs in bad)
            raise ValueError(f"cannot resume {out}: {lines} differ from the run being resumed; drop them to "
                             f"continue it, or start a new run (another --out, or --overwrite)")
        return stored
    if present and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it, "
                              f"--overwrite to replace it, or choose another --out")
    return None


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True)

@contextlib.contextmanager
def process_switches(*, deterministic: bool = False, cudnn_benchmark: bool | None = None, threads: int | None = None):
    """Set torch's process-wide switches for a run, and restore each one on exit (also
    when the body raises).

    ``deterministic``: ``torch.use_deterministic_algorithms(True)``, cuDNN autotuning off
    and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set. ``cudnn_benchmark``:
    ``torch.backends.cudnn.benchmark`` (None: left as it is). ``threads``:
    ``torch.set_num_threads`` (None: left as it is; CPU results depend on it, so the
    trainer records the count and a resume reuses it).
    """
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.get_num_threads())
    try:
        if threads is not None and threads != before[4]:
            torch.set_num_threads(threads)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
        if torch.get_num_threads() != before[4]:
            torch.set_num_threads(before[4])
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = before[3]


def _summary(row: dict) -> str:
    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)
    return (f"epoch {row['epoch']:3d}  lr {row['lr']:.4g}  loss {f(row['train_loss'])}  "
            f"clean {f(row['clean_acc'])}  pgd {f(row['pgd_acc'])}  "
            f"{row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s" + ("  *best" if row["is_best"] else ""))


def train(cfg: TrainConfig, splits: fdata.Splits | None = None, *, model: nn.Module | None = None) -> Trainer:
    """Build a :class:`Trainer` for ``cfg`` (with your own ``model``, if given) and run it;
    returns the trainer (``.history``, ``.module``)."""
    t = Trainer(cfg, splits, model=model)
    t.fit()
    return t
