"""The run configuration: one dataclass, stored in every checkpoint, that rebuilds the run.

``TrainConfig.for_dataset(name, **overrides)`` fills in the dataset's defaults
(:data:`fastmix.data.DATASET_DEFAULTS`); anything passed explicitly wins.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..data.defaults import DATASET_DEFAULTS  # noqa: F401  (re-exported: fastmix.train.DATASET_DEFAULTS)

AMP_MODES = ("none", "bf16", "fp16")
COMPILE_MODES = ("none", "model", "graphs")


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    method / method_opts: the method's name and its extra options (e.g. ``{"beta": 6}``).
    dataset / data_dir / download: see :func:`fastmix.data.load`.
    model / model_opts: see :func:`fastmix.models.build`.
    epochs, batch_size (global, over all ranks), lr, momentum, weight_decay, nesterov:
        SGD and its length. schedule: ``piecewise`` (milestones: epochs, default E/2 and
        3E/4; gamma), ``onecycle`` or ``constant``.
    fused_sgd: step SGD with torch's fused kernel where the parameters allow it (the same
        update rule in one call per step instead of a few ops per parameter: 1.5-2% of a
        digits CNN step on the CPU; its results differ from torch's default loop in the
        last bits, which training then amplifies like any rounding change). False: torch's
        default implementation, bit for bit. A run resumed from a checkpoint written
        before this option existed keeps the default implementation it started with.
    eps, alpha, steps: the training attack (pixel units; alpha None is the method's
        default: eps/4, or 1.25 eps for FastAT).
    eval_steps, eval_alpha, eval_samples, eval_every: the held-out PGD evaluation that
        picks best.pt (alpha None is eps/4; eval_samples caps the held-out subset).
    probe_size: the fixed held-out batch handed to the method after each epoch.
    amp: ``none``, ``bf16`` (autocast) or ``fp16`` (autocast + grad scaler).
    channels_last: channels-last model and batches.
    fold_bn: fold each BatchNorm into the convolution before it while an eval-mode attack
        runs (the training attacks of PGD-AT, TRADES, GAIRAT, AIT, IAT, GIF/AT-mixup on those
        bases, and the held-out evaluation): the same function up to float32 rounding,
        one conv instead of conv + BN per pair; see :mod:`fastmix.attacks.fold`. Attacks in
        training-mode BN (FastAT, AVmixup) are unaffected. ``None`` (default): on unless
        ``compile="model"`` (compiled code keeps the unfolded forward); True with
        ``compile="model"`` is an error.
    compile: ``none``; ``model`` (torch.compile the model, for attacks and training; on the
        CPU too, through Inductor's C++ backend);
        ``graphs`` (each attack's K-step loop captured in one CUDA graph and replayed,
        the training forward compiled), GPU only: eager elsewhere, with a warning.
    seed, deterministic: seeding and ``torch.use_deterministic_algorithms`` (cuDNN
        autotuning off). cudnn_benchmark: ``torch.backends.cudnn.benchmark`` during the run
        (None: on for a GPU run unless deterministic). Both process-wide switches hold only
        while ``Trainer.fit`` runs and are restored afterwards.
    threads: CPU intra-op threads (``torch.set_num_threads``) for the run; None: torch's
        current count. The count used is recorded (config.json, last.pt) and reused on
        resume, because CPU results depend on it.
    out, resume, overwrite: the run directory; continue the run in it from ``out/last.pt``
        (its stored configuration; a field given differently is an error), or replace the
        run in it. A directory holding a run is never reused without one of the two.
    stop_after: stop cleanly after this epoch (as if killed right after its checkpoint).
    device: ``auto``, ``cpu``, ``cuda``.
    progress: tqdm progress bars on rank 0.
    """
    method: str = "at"
    method_opts: dict = field(default_factory=dict)
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    model: str = "cnn"
    model_opts: dict = field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    fused_sgd: bool = True
    schedule: str = "piecewise"
    milestones: list | None = None
    gamma: float = 0.1
    eps: float = 0.1
    alpha: float | None = None
    steps: int = 10
    eval_steps: int = 20
    eval_alpha: float | None = None
    eval_samples: int = 1000
    eval_every: int = 1
    probe_size: int = 256
    amp: str = "none"
    channels_last: bool = False
    fold_bn: bool | None = None
    compile: str = "none"
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None
    cudnn_benchmark: bool | None = None
    out: str = "runs/run"
    resume: bool = False
    overwrite: bool = False
    stop_after: int | None = None
    device: str = "auto"
    progress: bool = True

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "TrainConfig":
        if dataset not in DATASET_DEFAULTS:
            raise ValueError(f"dataset must be one of {', '.join(DATASET_DEFAULTS)}, got {dataset!r}")
        kw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DATASET_DEFAULTS[dataset].items()}
        given = {k: v for k, v in overrides.items() if v is not None and v != {}}
        if given.get("model", kw["model"]) != kw["model"]:
            kw.pop("model_opts", None)  # the default model's options belong to that model
        kw.update(given)
        if "steps" not in given:  # a method whose paper fixes its attack length (IAT: PGD-7) keeps it
            from ..methods import METHODS
            paper_steps = getattr(METHODS.get(kw.get("method", cls.method)), "default_steps", None)
            if paper_steps is not None:
                kw["steps"] = paper_steps
        return cls(dataset=dataset, **kw)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def need(cond, name, want):
            if not cond:
                raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an int >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an int >= 1")
        need(self.lr > 0, "lr", "> 0")
        need(0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(0 <= self.eps <= 1, "eps", "in [0, 1] (pixel units)")
        need(self.alpha is None or self.alpha > 0, "alpha", "None or > 0")
        need(isinstance(self.steps, int) and self.steps >= 1, "steps", "an int >= 1")
        need(isinstance(self.eval_steps, int) and self.eval_steps >= 1, "eval_steps", "an int >= 1")
        need(self.eval_samples >= 1, "eval_samples", ">= 1")
        need(self.eval_every >= 1, "eval_every", ">= 1")
        need(self.amp in AMP_MODES, "amp", f"one of {AMP_MODES}")
        need(self.compile in COMPILE_MODES, "compile", f"one of {COMPILE_MODES}")
        need(self.fold_bn is None or isinstance(self.fold_bn, bool), "fold_bn", "None, True or False")
        need(not (self.fold_bn is True and self.compile == "model"), "fold_bn",
             "None or False with compile='model' (compiled code keeps the unfolded forward)")
        need(self.stop_after is None or self.stop_after >= 1, "stop_after", "None or >= 1")
        need(self.threads is None or (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                      and self.threads >= 1), "threads", "None or an int >= 1")
        need(not (self.resume and self.overwrite), "overwrite", "False with resume=True (continue the run, or "
             "replace it: not both)")
        need(isinstance(self.model_opts, dict), "model_opts", "a dict")
        need(isinstance(self.method_opts, dict), "method_opts", "a dict")
        need(self.cudnn_benchmark in (None, True, False), "cudnn_benchmark", "None, True or False")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
             "auto, cpu or cuda[:i]")

    @property
    def folds_bn(self) -> bool:
        """Whether eval-mode attacks run with BatchNorm folded (``fold_bn`` resolved)."""
        return self.compile != "model" if self.fold_bn is None else self.fold_bn

    #: fields that may differ when resuming: where and how the run is watched, not what it computes
    RESUME_FREE = ("out", "resume", "overwrite", "stop_after", "progress", "device", "data_dir", "download")

    def resume_conflicts(self, stored: dict) -> list[tuple[str, object, object]]:
        """``(field, this value, stored value)`` for each result-changing field that differs
        from a stored run's configuration (``threads=None`` means "the stored count")."""
        out = []
        for f in dataclasses.fields(self):
            if f.name in self.RESUME_FREE or f.name not in stored:
                continue
            mine, theirs = getattr(self, f.name), stored[f.name]
            if f.name == "threads" and mine is None:
                continue
            if _norm(mine) != _norm(theirs):
                out.append((f.name, mine, theirs))
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _norm(v):
    # JSON/torch round trips turn tuples into lists and ints into floats in places
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
