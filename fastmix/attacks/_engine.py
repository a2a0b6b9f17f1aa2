"""The shared attack engine (layer 2 of DESIGN.md): model state, targets, losses, the
input gradient, the K-step projected-gradient loop and its CUDA-graph capture.

Every attack in :mod:`fastmix.attacks` is a few lines on top of :class:`Loop`:

- gradients are taken w.r.t. the input only (``torch.autograd.grad``); parameters are
  set to ``requires_grad=False`` for the attack (:func:`attack_mode`), so no weight
  gradient is computed or accumulated, and everything is restored afterwards;
- the loop body has no host synchronisation (no ``.item()``, no branch on a tensor
  value; the fused ops run with ``check=False`` after the first step), so the K steps
  can be captured in one CUDA graph (:class:`_GraphCache`) and replayed per batch.
"""
from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import _validate as V

__all__ = ["SoftTarget", "AttackResult", "attack_mode", "Loop", "make_loss", "clear_graphs"]


# ------------------------------------------------------------------------------- targets
class SoftTarget(NamedTuple):
    """The compact two-part soft target of METHODS.md 1.2 (O(B) numbers, never B x C).

    ``t_i = w_i*phi(ya_i, sa_i) + (1 - w_i)*phi(yb_i, sb_i)`` with ``phi(y, s)`` = ``s`` on
    class ``y`` and ``(1 - s)/(C - 1)`` elsewhere. Fields, in the argument order of
    :func:`fastmix.ops.soft_cross_entropy` (so ``soft_cross_entropy(logits, *target)``):

    - ``ya``: ``(B,)`` int64 labels in ``[0, C)``; also the label an attack checks
      correctness against (GAIRAT's kappa, restarts).
    - ``yb``: ``(B,)`` int64 or None (= ``ya``).
    - ``w``, ``sa``, ``sb``: floats or ``(B,)`` float tensors in ``[0, 1]``, or None (= 1).
    """
    ya: Tensor
    yb: Tensor | None = None
    w: Tensor | float | None = None
    sa: Tensor | float | None = None
    sb: Tensor | float | None = None

    def dense(self, num_classes: int) -> Tensor:
        """The ``(B, C)`` float32 target (for tests and debugging)."""
        B, dev = self.ya.shape[0], self.ya.device
        f = [V.per_sample(n, 1.0 if v is None else v, B, dev) for n, v in
             (("w", self.w), ("sa", self.sa), ("sb", self.sb))]
        return ops.soft_target_ref(self.ya, self.ya if self.yb is None else self.yb, *f, num_classes)


class AttackResult(NamedTuple):
    """What an attack returns with ``return_kappa=True``.

    - ``x_adv``: adversarial inputs, shape and dtype of ``x``, in ``[0, 1]``.
    - ``kappa``: ``(B,)`` int64, GAIRAT's count of the steps (0..K) at which the iterate
      was still classified correctly, checked before each step.
    """
    x_adv: Tensor
    kappa: Tensor


def label_of(y) -> Tensor | None:
    """The hard label that decides 'still correct' for a target (``ya`` of a SoftTarget)."""
    return y.ya if isinstance(y, SoftTarget) else y


def _repeat(t, n: int):
    """A target repeated ``n`` times along the batch (sample ``r*B + i`` gets target ``i``)."""
    if n == 1 or t is None:
        return t
    if isinstance(t, SoftTarget):
        return SoftTarget(*(v.repeat(n) if isinstance(v, Tensor) else v for v in t))
    return t.repeat(n, *([1] * (t.dim() - 1)))


# ---------------------------------------------------------------------------- model state
BN_MODES = ("eval", "train", "keep")


def check_mode(mode):
    """Validate ``bn_mode``: "eval", "train", "keep" or torchattacks' triple
    ``(model_training, batchnorm_training, dropout_training)``."""
    if isinstance(mode, tuple) and len(mode) == 3 and all(isinstance(m, bool) for m in mode):
        return mode
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES} or a (model, batchnorm, dropout) "
                         f"tuple of bools, got {mode!r}")
    return mode


def _apply_mode(model: nn.Module, mode) -> None:
    if mode == "keep":
        return
    if isinstance(mode, str):
        model.train(mode == "train")
        return
    model_training, bn_training, dropout_training = mode
    model.train(model_training)
    if model_training:  # torchattacks' rule: match the module class names
        for m in model.modules():
            name = type(m).__name__
            if ("BatchNorm" in name and not bn_training) or ("Dropout" in name and not dropout_training):
                m.eval()


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn_mode="eval"):
    """Run an attack on ``model``: every parameter ``requires_grad=False`` (no weight
    gradient is ever computed), modules in ``bn_mode`` ("eval": BatchNorm uses running
    statistics, dropout off; "train": the whole model in training mode, as AVmixup and
    FastAT attack; "keep": untouched; or torchattacks' ``(model, batchnorm, dropout)``
    triple). Each module's ``training`` flag and each parameter's ``requires_grad`` are
    restored on exit, also when the body raises."""
    mode = check_mode(bn_mode)
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        _apply_mode(model, mode)
        yield model
    finally:
        for m, t in zip(modules, training):
            m.training = t
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def autocast_dtype(autocast) -> torch.dtype | None:
    """None, "bf16"/"bfloat16", "fp16"/"float16" or a torch dtype -> the autocast dtype."""
    table = {None: None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16,
             torch.bfloat16: torch.bfloat16, torch.float16: torch.float16}
    if autocast not in table:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    return table[autocast]


def _autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    # no weight-cast cache: a captured graph must re-cast the (updated) weights each replay
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


# ---------------------------------------------------------------------------------- losses
# A loss maps (model output, target, check) to a float32 (B,) per-sample loss that the
# attack *ascends*; a targeted attack descends (the step's sign flips), except where a
# targeted form of its own is given below.

def _ce(out, t, check):
    if isinstance(t, SoftTarget):
        return ops.soft_cross_entropy(out, *t, reduction="none", check=check)
    # Hard labels: torch's log-softmax CE. Its gradient at the true class, p_y - 1, keeps
    # more digits than the fused op's when the softmax saturates (measured 0.4% closer
    # at p_y = 0.9999), which keeps PGD bit-identical to torchattacks there.
    _check_classes(out, t, check)
    return torch.nn.functional.cross_entropy(out.float(), t, reduction="none")


def _check_classes(out, t, check):
    if check and t.numel() > 0:
        V.in_range("y", t, 0, out.shape[1] - 1, f" (the model has C={out.shape[1]} classes)")


def _cw_targeted(out, t, kappa, check):
    # Ascend min(z_t - max_{j != t} z_j, kappa): push the target class kappa above the rest.
    _check_classes(out, t, check)
    z = out.float()
    zt = z.gather(1, t[:, None]).squeeze(1)
    other = z.scatter(1, t[:, None], float("-inf")).amax(dim=1)
    return torch.clamp(zt - other, max=kappa)


def _kl(out, log_p_nat, check):
    # TRADES: KL(softmax f(x_nat) || softmax f(x_k)), summed over classes (KLDivLoss(sum)).
    return (log_p_nat.exp() * (log_p_nat - torch.log_softmax(out.float(), dim=1))).sum(dim=1)


def dlr(out, y, check=False):
    """Croce & Hein's difference-of-logits-ratio loss, ``-(z_y - max_{j!=y} z_j) /
    (z_pi1 - z_pi3 + 1e-12)`` with ``pi`` the logits sorted in decreasing order."""
    _check_classes(out, y, check)
    z = out.float()
    top = z.topk(3, dim=1)
    zy = z.gather(1, y[:, None]).squeeze(1)
    best_other = torch.where(top.indices[:, 0] == y, top.values[:, 1], top.values[:, 0])
    return -(zy - best_other) / (top.values[:, 0] - top.values[:, 2] + 1e-12)


def dlr_targeted(out, yt, check=False):
    """Targeted DLR, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)``; ``yt`` is
    ``(B, 2)`` int64 holding ``[y, t]``."""
    _check_classes(out, yt, check)
    z = out.float()
    top = z.topk(4, dim=1).values
    zy = z.gather(1, yt[:, :1]).squeeze(1)
    zt = z.gather(1, yt[:, 1:]).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _feature(distance):
    def cos(f, t, check):
        return 1.0 - torch.cosine_similarity(f.float().flatten(1), t.float().flatten(1), dim=1)

    def l2(f, t, check):
        return (f.float() - t.float()).flatten(1).norm(dim=1)

    if distance not in ("cos", "l2"):
        raise ValueError(f"distance must be 'cos' or 'l2', got {distance!r}")
    return cos if distance == "cos" else l2


def make_loss(loss, targeted: bool, confidence: float = 0.0):
    """(per-sample loss fn, step sign) for ``loss`` in "ce", "cw", "kl", "dlr" or a callable
    ``fn(output, target) -> (B,)`` per-sample loss to ascend (descend when targeted)."""
    if callable(loss):
        return (lambda out, t, check: loss(out, t)), (-1.0 if targeted else 1.0)
    if loss == "ce":
        return _ce, (-1.0 if targeted else 1.0)
    if loss == "cw":
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not confidence >= 0:
            raise ValueError(f"confidence (the CW kappa) must be a number >= 0, got {confidence!r}")
        if targeted:
            return (lambda out, t, check: _cw_targeted(out, t, float(confidence), check)), 1.0
        return (lambda out, t, check: ops.cw_margin(out, t, kappa=float(confidence), reduction="none",
                                                    check=check)), 1.0
    if loss == "kl":
        if targeted:
            raise ValueError("loss='kl' (TRADES) has no targeted form; use targeted=False")
        return _kl, 1.0
    if loss == "dlr":
        return (dlr_targeted, 1.0) if targeted else (dlr, 1.0)
    raise ValueError(f"loss must be 'ce', 'cw', 'kl', 'dlr' or a callable, got {loss!r}")


# ------------------------------------------------------------------------- input gradient
def input_grad(fwd, loss_fn, x: Tensor, target, *, amp=None, check=False, eot: int = 1,
               eot_batch: int | None = None, transform=None):
    """Gradient of ``sum_i loss_i`` w.r.t. the input only.

    Args:
        fwd: ``x -> output`` (logits or features).
        x: ``(B, ...)`` the point to differentiate at (not modified).
        target: what ``loss_fn`` compares the output with (labels, SoftTarget, tensor).
        amp: autocast dtype for the forward (None: the input's precision).
        eot, eot_batch, transform: Expectation over Transformation: the gradient is summed
            over ``eot`` draws of ``transform(x)`` (the direction of the mean), ``eot_batch``
            draws per forward as one ``(eot_batch*B, ...)`` batch (default: all at once).
    Returns:
        ``(grad like x, output of the first forward, per-sample loss (B,) float32
        averaged over the draws, detached)``.
    """
    B = x.shape[0]
    eot_batch = eot if eot_batch is None else eot_batch
    grad = loss_sum = out0 = None
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        done = 0
        while done < eot:  # host-side loop over chunks of draws
            n = min(eot_batch, eot - done)
            inp = xg if n == 1 else xg.unsqueeze(0).expand(n, *xg.shape).reshape(n * B, *xg.shape[1:])
            if transform is not None:
                inp = transform(inp)
            with _autocast(x.device, amp):
                out = fwd(inp)
            lv = loss_fn(out, _repeat(target, n), check and done == 0)
            if lv.shape != (n * B,):
                raise ValueError(f"the loss must return one value per sample, shape ({n * B},); "
                                 f"got shape {tuple(lv.shape)}")
            (g,) = torch.autograd.grad(lv.sum(), xg)
            lv = lv.detach().float().view(n, B).sum(0)
            grad, loss_sum = (g, lv) if grad is None else (grad + g, loss_sum + lv)
            out0 = out.detach()[:B] if out0 is None else out0
            done += n
    return grad, out0, loss_sum / eot if eot > 1 else loss_sum


# -------------------------------------------------------------------------------- the loop
class Loop:
    """K steps of projected sign-gradient (L-inf) or normalised-gradient (L2) ascent.

    ``x_0`` = ``x`` (``start=None``), a uniform point of the eps-ball (``"uniform"``) or
    ``x + 0.001*N(0, I)`` (``"normal"``, TRADES); then ``x_{k+1} = pgd_step(x_k, g_k)`` with
    ``g_k`` the input gradient of the loss, ``sign*alpha`` the step. ``prepare(x_nat,
    aux) -> target`` runs first (no grad), so a target that depends on the clean input
    (TRADES's clean softmax, AIT's partner features) is part of the captured graph.
    Calling it with tensors only, it has no host syncs when ``check=False``.
    """

    def __init__(self, fwd: Callable, loss_fn: Callable, *, steps: int, norm: str = "linf",
                 start: str | None = "uniform", sign: float = 1.0, amp=None,
                 prepare: Callable | None = None, count: bool = False,
                 eot: int = 1, eot_batch: int | None = None, transform: Callable | None = None):
        self.fwd, self.loss_fn, self.steps, self.norm = fwd, loss_fn, steps, norm
        self.start, self.sign, self.amp, self.count = start, sign, amp, count
        self.prepare = prepare
        self.eot = dict(eot=eot, eot_batch=eot_batch, transform=transform)

    def target(self, x_nat: Tensor, aux):
        if self.prepare is None:
            return aux
        with torch.no_grad(), _autocast(x_nat.device, self.amp):
            return self.prepare(x_nat, aux)

    def __call__(self, x_nat: Tensor, eps: Tensor, alpha: Tensor, aux, label: Tensor | None,
                 check: bool = False):
        """``x_nat`` ``(B, ...)`` in [0, 1]; ``eps``, ``alpha`` float32 ``(B,)``; ``aux`` the
        raw target; ``label`` ``(B,)`` int64 or None. Returns ``(x_adv, kappa or None)``."""
        target = self.target(x_nat, aux)
        if self.start == "uniform":
            x = ops.random_start(x_nat, eps, norm=self.norm, check=False)
        elif self.start == "normal":  # TRADES; clipped to the image range like every iterate
            x = (x_nat + 0.001 * torch.randn_like(x_nat)).clamp_(0.0, 1.0)
        else:
            x = x_nat.clone()
        kappa = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if self.count else None
        step = alpha * self.sign
        for k in range(self.steps):
            g, out, _ = input_grad(self.fwd, self.loss_fn, x, target, amp=self.amp,
                                   check=check and k == 0, **self.eot)
            if kappa is not None:  # still correct before this step (GAIRAT)
                kappa += out.argmax(dim=1) == label
            ops.pgd_step_(x, g, x_nat, eps, step, norm=self.norm, check=False)
        return x, kappa


# ------------------------------------------------------------------------------ CUDA graph
class _Captured:
    """One attack captured in a CUDA graph with static input and output buffers."""

    def __init__(self, fn: Callable, tensors: list[Tensor], model: nn.Module, check: bool):
        self.inputs = [torch.empty_like(t).copy_(t) for t in tensors]
        saved = [b.detach().clone() for b in model.buffers()]
        side = torch.cuda.Stream(device=tensors[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: autograd, cuDNN plans, lazy inits
            for i in range(3):
                fn(*self.inputs, check=check and i == 0)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # the warm-up must not move BatchNorm running statistics
            for b, v in zip(model.buffers(), saved):
                b.copy_(v)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs, check=False)

    def __call__(self, tensors: list[Tensor]):
        for s, t in zip(self.inputs, tensors):
            s.copy_(t)
        self.graph.replay()
        return tuple(None if o is None else o.clone() for o in self.outputs)


class _GraphCache:
    """Captured attacks keyed by (model, settings, input shapes/strides); least recently
    used evicted beyond ``size`` (each entry holds its model and static buffers)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: OrderedDict = OrderedDict()

    def __call__(self, key, fn, tensors: list[Tensor], model: nn.Module, check: bool):
        key = (key, tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors),
               tuple(p.data_ptr() for p in model.parameters()), tuple(m.training for m in model.modules()))
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Captured(fn, tensors, model, check)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return entry(tensors)


_GRAPHS = _GraphCache()


def clear_graphs() -> None:
    """Drop every captured attack graph (frees their static buffers and model references)."""
    _GRAPHS.entries.clear()


def run(loop: Loop, x_nat, eps, alpha, aux, label, *, check: bool, graph_key=None, model=None):
    """Run ``loop`` eagerly, or through the CUDA-graph cache when ``graph_key`` is given and
    the input is on a GPU (eager for every other case)."""
    if graph_key is None or not x_nat.is_cuda:
        return loop(x_nat, eps, alpha, aux, label, check=check)
    soft = isinstance(aux, SoftTarget)
    if soft:  # static buffers need tensors for every field
        B, dev = x_nat.shape[0], x_nat.device
        aux = SoftTarget(aux.ya, aux.ya if aux.yb is None else aux.yb,
                         *(V.per_sample(n, 1.0 if v is None else v, B, dev, check=False)
                           for n, v in (("w", aux.w), ("sa", aux.sa), ("sb", aux.sb))))
    leaves = list(aux) if soft else ([] if aux is None else [aux])
    has_label = label is not None
    tensors = [x_nat, eps, alpha] + ([label] if has_label else []) + leaves

    def fn(x_nat, eps, alpha, *rest, check):
        lab = rest[0] if has_label else None
        rest = rest[1:] if has_label else rest
        tgt = SoftTarget(*rest) if soft else (rest[0] if rest else None)
        return loop(x_nat, eps, alpha, tgt, lab, check=check)

    if any(not isinstance(t, Tensor) for t in tensors):
        raise ValueError("cuda_graph=True needs tensor inputs and targets")
    return _GRAPHS((graph_key, soft, has_label), fn, tensors, model, check)


# ------------------------------------------------------------------------------ validation
def check_images(name: str, x, check: bool) -> Tensor:
    """``x``: float tensor ``(B, ...)``, B >= 1; with ``check``, finite and in [0, 1]."""
    V.float_tensor(name, x, min_dim=2)
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    if check and not bool(((x >= 0) & (x <= 1)).all()):  # one pass, one host read; NaN fails too
        V.finite(name, x)
        V.in_range(name, x, 0.0, 1.0, " (the image range)")
    return x


def check_labels(name: str, y, x: Tensor, check: bool):
    """``y``: ``(B,)`` int64/int32 labels (>= 0 with ``check``) or a SoftTarget whose
    tensors sit on ``x``'s device. The upper bound (``< C``) is checked by the loss op at
    the first step, once the number of classes is known."""
    if isinstance(y, SoftTarget):
        for n, v in zip(SoftTarget._fields, y):
            if isinstance(v, Tensor):
                if v.shape != (x.shape[0],):
                    raise ValueError(f"y.{n} must have shape ({x.shape[0]},), got {tuple(v.shape)}")
                V.same_device(f"y.{n}", v, "x", x)
        V.index_tensor("y.ya", y.ya, x.shape[0])
        if y.yb is not None:
            V.index_tensor("y.yb", y.yb, x.shape[0])
        return y
    V.index_tensor(name, y, x.shape[0])
    V.same_device(name, y, "x", x)
    if check:
        V.in_range(name, y, 0, None, " (class labels)")
    return y.long()


def check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


def check_eps(name: str, v, B: int, device, check: bool = True) -> Tensor:
    """eps / alpha-like radius: a float >= 0 or a (B,) tensor (>= 0 when checked)."""
    if not isinstance(v, Tensor) and not isinstance(v, bool) and isinstance(v, (int, float)) \
            and not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return V.per_sample(name, v, B, device, lo=0.0, check=check)
