"""The method interface: one small object per paper's recipe, on the shared attacks and trainer.

A :class:`Method` turns a batch ``(x, y, idx)`` into a loss. The trainer owns everything
else (optimiser, schedule, AMP, DDP, checkpoints); a method owns only its recipe and the
state it carries across epochs, and declares how BatchNorm behaves while it attacks.

Life cycle, driven by :class:`fastmix.train.Trainer`::

    m = build("at", eps=0.1, alpha=0.025, steps=10)
    m.bind(ctx)                          # once: model handles, dataset size, ranks
    for epoch in 1..E:
        m.start_epoch(epoch)
        for x, y, idx in loader:         # model in train mode, inside autocast
            out = m.loss(x, y, idx)      # -> StepOutput(loss, logits, stats)
            out.loss.backward(); ...
        diag = m.end_epoch(epoch, probe) # -> {name: float} logged in metrics.jsonl
    m.state_dict() / m.load_state_dict() # saved in every checkpoint

Writing a new method (the mixup family extends this): subclass :class:`Method`, set
``name`` and ``attack_bn``, implement :meth:`loss` (and the state hooks if the method has
cross-epoch state), decorate with :func:`register`, and import the module in
``fastmix/methods/__init__.py``. Use ``self.ctx.model`` for forwards whose loss is
backpropagated (it may be DDP- or compile-wrapped) and :meth:`attack` (which uses
``self.ctx.attack_model``) for adversarial examples; compute losses with
``fastmix.ops.soft_cross_entropy``; reduce with ``self.ctx.all_reduce_sum`` when a loss
needs a global batch statistic. No ``.item()`` or per-sample Python in :meth:`loss`, and
no host-to-device copy: draw random numbers on the batch's device (``torch.rand(n,
device=x.device)``, :func:`fastmix.methods._mixup.sample_lam`), never on the CPU followed
by ``.to(device)`` -- a copy from pageable host memory waits for everything queued on the
stream before it (in a training step: the whole attack). The device's default generator
is seeded by the trainer (``torch.manual_seed`` seeds every device, per rank) and saved
in every checkpoint with the other RNG states. ``tests/test_methods_fidelity.py`` counts
the copies of every registered method's step.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from .. import ops
from ..attacks.modes import NULL_CONTEXT, module_list, plain_module_type

# BatchNorm while a method attacks: "eval" (running statistics), "train" (batch statistics,
# and every attack forward updates the running statistics, as in Wong et al.'s FastAT), or
# "batch" (batch statistics, running statistics untouched: AVmixup's TensorFlow original,
# which runs the attack with is_training=True but attaches UPDATE_OPS to the train step only).
BN_MODES = ("eval", "train", "batch")


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module):
    """BatchNorm layers in train mode normalise with the batch's statistics but leave
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` exactly as they were.

    Done by clearing ``track_running_stats`` for the duration: in train mode
    ``_BatchNorm.forward`` then passes no running buffers to ``F.batch_norm`` (batch
    statistics, no update) and skips the ``num_batches_tracked`` increment; the output is
    the same as with tracking on. In eval mode the layers still use their running
    statistics. Restored on exit, also when the body raises.
    """
    bns = [m for m in module_list(model) if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

    def put(flag):
        for m in bns:
            if plain_module_type(type(m)):
                m.__dict__["track_running_stats"] = flag  # what Module.__setattr__ ends up doing
            else:
                m.track_running_stats = flag
    try:
        put(False)
        yield model
    finally:
        put(True)


@dataclass
class StepOutput:
    """What :meth:`Method.loss` returns.

    loss: scalar tensor to backpropagate (this rank's share; the trainer does not rescale).
    logits: ``(B, K)`` logits the loss was computed on (for the logged training accuracy),
        with ``target`` the ``(B,)`` labels they are scored against (default: the batch's y).
    stats: scalar tensors averaged over the epoch's steps and logged (e.g. GAIRAT's weight spread).
    """
    loss: Tensor
    logits: Tensor | None = None
    target: Tensor | None = None
    stats: dict = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a bound method can use.

    model: the training forward ``model(x) -> (B, K)`` logits, any ``nn.Module`` (fastmix's
        models also take ``mix_layer``/``mix_fn``; a user's layers are reached by name through
        :mod:`fastmix.models.hooks`); may be a DDP or torch.compile wrapper. Backpropagate
        only through it.
    attack_model: the same parameters without the DDP wrapper (attacks run many forwards
        that are never backpropagated into the weights).
    module: the plain module under those wrappers (a :class:`fastmix.models.MixableNet` or a
        user's model), where named layers are resolved.
    num_classes, num_train: K and the training-set size (indices ``idx`` lie in ``[0, num_train)``).
    epochs, steps_per_epoch: the run's length.
    rank, world_size: this process's place in a distributed run.
    all_reduce_sum, all_gather_cat: collectives (identity in a single process).
    attack_options: extra keyword arguments the trainer wants on every attack call
        (e.g. ``cuda_graph=True`` when the run captures CUDA graphs).
    fetch: ``idx (n,) int64 -> (x (n, C, H, W) float32 in [0, 1], y (n,) int64)``, training
        samples by dataset index, unaugmented, on ``device`` (GIF and AT-mixup draw their
        interpolation pairs with it); None when the trainer has no dataset to offer.
    """
    model: Callable
    attack_model: nn.Module
    module: nn.Module
    num_classes: int
    num_train: int
    epochs: int
    steps_per_epoch: int = 1
    device: torch.device = torch.device("cpu")
    rank: int = 0
    world_size: int = 1
    all_reduce_sum: Callable[[Tensor], Tensor] = staticmethod(lambda t: t)
    all_gather_cat: Callable[[Tensor], Tensor] = staticmethod(lambda t: t)
    attack_options: dict = field(default_factory=dict)
    fetch: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None


class Method:
    """Base class. Subclasses set ``name`` and ``attack_bn`` and implement :meth:`loss`.

    Args (shared by every method; a method ignores those it does not use):
        eps: L-inf radius in ``[0, 1]`` pixel units (>= 0).
        alpha: attack step size (> 0); ``None``: ``eps / 4``.
        steps: attack steps K (>= 1); ``None``: the method's ``default_steps`` (else 10).
        random_start: start the PGD attack from a uniform point of the eps-ball.
        attack_bn: ``"eval"``, ``"train"`` or ``"batch"`` (see :data:`BN_MODES`): BatchNorm
            while attacking; ``None`` keeps the method's default (the paper's code,
            METHODS.md section 4).
    """

    name: ClassVar[str] = ""
    attack_bn: str = "eval"
    uses_attack: ClassVar[bool] = True
    # Set by a wrapper that judges the attack (GIF): after each attack, ``adv_pred`` holds
    # argmax f(x~), int64 (B,), from the attack's model and BN mode (see after_attack).
    track_adv_pred: bool = False
    adv_pred: Tensor | None = None
    # The paper's attack steps when the caller gives none (IAT: 7); None: 10. The trainer
    # reads it when the user gives no --steps (TrainConfig.for_dataset).
    default_steps: ClassVar[int | None] = None

    def __init__(self, *, eps: float = 8 / 255, alpha: float | None = None, steps: int | None = None,
                 random_start: bool = True, attack_bn: str | None = None):
        if not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
            raise ValueError(f"eps must be a number in [0, 1] (pixel units), got {eps!r}")
        alpha = eps / 4 if alpha is None else alpha
        if not isinstance(alpha, (int, float)) or alpha < 0 or (eps > 0 and alpha == 0):
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        if steps is None:
            steps = self.default_steps or 10
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if attack_bn is not None:
            if attack_bn not in BN_MODES:
                raise ValueError(f"attack_bn must be one of {BN_MODES}, got {attack_bn!r}")
            self.attack_bn = attack_bn
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.random_start = bool(random_start)
        self.ctx: MethodContext | None = None
        self.epoch = 0

    # ------------------------------------------------------------------ life cycle
    def bind(self, ctx: MethodContext) -> None:
        """Called once by the trainer before the first epoch (and before load_state_dict)."""
        self.ctx = ctx

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch; ``epoch`` counts from 1."""
        self.epoch = epoch

    def loss(self, x: Tensor, y: Tensor, idx: Tensor) -> StepOutput:
        """The training loss of one batch.

        Args:
            x: float ``(B, C, H, W)`` in ``[0, 1]``; y: int64 ``(B,)`` labels in ``[0, K)``
            (from the trainer) or a :class:`fastmix.attacks.SoftTarget` (when a wrapper
            such as GIF hands the method interpolated samples; every baseline accepts both);
            idx: int64 ``(B,)`` dataset indices of the batch's samples.
        The model is in train mode and the call runs inside the trainer's autocast.
        """
        raise NotImplementedError

    def end_epoch(self, epoch: int, probe: tuple[Tensor, Tensor] | None = None) -> dict:
        """Called after each epoch's last step with a fixed held-out batch ``probe = (x, y)``;
        returns diagnostics ``{name: float | bool}`` for metrics.jsonl."""
        return {}

    def state_dict(self) -> dict:
        """Cross-epoch state (tensors and plain values); the same on every rank."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def hparams(self) -> dict:
        """The constructor arguments that rebuild this method (stored in checkpoints)."""
        out = {}
        for cls in type(self).__mro__:
            if cls is object:
                continue
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.kind == p.KEYWORD_ONLY and p.name not in out and hasattr(self, p.name):
                    out[p.name] = getattr(self, p.name)
        return out

    # -------------------------------------- loop-level API (fastmix.methods.loop)
    def attach(self, model: nn.Module, **kw) -> "Method":
        """Bind to a model of your own for :meth:`step`, without a trainer (``train_data=``,
        ``epochs=``, ...: see :func:`fastmix.methods.loop.attach`). Returns ``self``."""
        from .loop import attach
        return attach(self, model, **kw)

    def step(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None = None) -> Tensor:
        """The scalar loss of one batch from a hand-written loop: ``loss = method.step(model,
        x, y)``; binds to ``model`` on first use (see :mod:`fastmix.methods.loop`)."""
        from .loop import step
        return step(self, model, x, y, idx)

    # ------------------------------------------------------------------- helpers
    def attack_bn_context(self, bn_mode: str | None = None):
        """``(bn_mode for fastmix.attacks, context manager to run the attack in)`` for this
        method's ``attack_bn`` (or ``bn_mode``): ``"batch"`` is the attacks' ``"train"``
        inside :func:`frozen_running_stats`."""
        mode = self.attack_bn if bn_mode is None else bn_mode
        if mode == "batch":
            return "train", frozen_running_stats(self.ctx.attack_model)
        return mode, NULL_CONTEXT

    def attack(self, x: Tensor, y: Tensor, **overrides) -> Tensor:
        """``fastmix.attacks.pgd`` against ``ctx.attack_model`` with this method's eps,
        alpha, steps, random start and BN mode, without host syncs (``check=False``: the
        loader's batches are valid by construction) and with the trainer's
        ``attack_options``; keyword arguments override all of them."""
        from .. import attacks
        asked = overrides.pop("bn_mode", None)
        bn_mode, ctx = self.attack_bn_context(asked)
        kw = dict(eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=self.random_start,
                  bn_mode=bn_mode, check=False, **self.ctx.attack_options)
        kw.update(overrides)
        with ctx:
            out = attacks.pgd(self.ctx.attack_model, x, y, **kw)
        self.after_attack(out.x_adv if isinstance(out, tuple) else out, self.attack_bn if asked is None else asked)
        return out

    def after_attack(self, x_adv: Tensor, bn_mode: str) -> None:
        """Called right after each training attack, before the training forward: with
        ``track_adv_pred`` set, records ``adv_pred = argmax f(x~)`` -- a no-grad forward of
        the attack model in the attack's BatchNorm mode, with the running statistics the
        attack saw (a ``"train"`` mode is measured with batch statistics and no update)."""
        if not self.track_adv_pred:
            return
        from ..attacks import attack_mode
        mode, ctx = self.attack_bn_context("batch" if bn_mode == "train" else bn_mode)
        model = self.ctx.attack_model
        with torch.no_grad(), ctx, attack_mode(model, mode):
            self.adv_pred = model(x_adv).argmax(1)

    @staticmethod
    def ce(logits: Tensor, y, reduction: str = "mean") -> Tensor:
        """Cross-entropy (no host reads) against hard labels ``y`` ``(B,)`` (torch's
        ``F.cross_entropy`` in float32: at C = 10 its one fused call costs a third of the
        soft-target op's argument handling, measured 135 vs 388 us forward+backward at
        B = 64 on the CPU) or a compact soft target (a :class:`fastmix.attacks.SoftTarget`,
        which GIF hands to its base method for the interpolated samples; the fused op)."""
        if isinstance(y, tuple):
            return ops.soft_cross_entropy(logits, *y, reduction=reduction, check=False)
        return torch.nn.functional.cross_entropy(logits.float(), y, reduction=reduction)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available as ``build(cls.name)`` and ``--method cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty `name`")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {METHODS[cls.name].__name__}")
    METHODS[cls.name] = cls
    return cls


def build(name: str, **kwargs) -> Method:
    """Instantiate a registered method; unknown options raise a ValueError that lists the valid ones."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {name!r}")
    cls = METHODS[name]
    valid = set()
    for c in cls.__mro__:
        if c is not object:
            valid |= {p.name for p in inspect.signature(c.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY}
    bad = sorted(set(kwargs) - valid)
    if bad:
        raise ValueError(f"method {name!r} has no option(s) {bad}; valid options: {sorted(valid)}")
    return cls(**kwargs)
