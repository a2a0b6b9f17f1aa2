"""The loop-level API: any method inside a training loop you wrote yourself.

One pattern for every method (``standard``, ``at``, ``trades``, ``gairat``, ``fastat``,
``at-mixup``, ``iat``, ``iat-manifold``, ``avmixup``, ``ait``, ``gif``)::

    import fastmix
    method = fastmix.methods.AVmixup(eps=8 / 255, steps=10)   # or fastmix.methods.build("avmixup", ...)
    for x, y in loader:                     # x: float (B, C, H, W) in [0, 1]; y: int64 (B,)
        loss = method.step(model, x, y)     # attack + mixing + the method's loss, a scalar
        opt.zero_grad(); loss.backward(); opt.step()

``model`` is any ``nn.Module`` mapping images in ``[0, 1]`` to logits (normalise inside
it), in training mode; it may be wrapped in DDP or ``torch.compile``. Nothing else is
needed for the input-space methods. Methods that need more say so in a ValueError that
names the option: AIT on a model without ``features(x)`` needs ``features="<module
name>"``, manifold mixup (``iat-manifold``) ``mix_layers=("<module name>", ...)``, GIF
and AT-mixup the training set (``method.attach(model, train_data=(images, labels))``) and
each batch's dataset indices (``method.step(model, x, y, idx)``).

:meth:`Method.step` binds the method to ``model`` on first use (and again when a
different model object is passed), with what :meth:`Method.attach` was last given.
``method.last`` holds the full :class:`StepOutput` of the latest step (the logits the
loss was computed on, the label they are scored against, the method's statistics).

Cross-epoch hooks (optional; the stateful methods use them):

- ``method.start_epoch(epoch)`` before each epoch (counting from 1). Without it the
  method stays in epoch 1 (the first call of ``step`` starts it).
- ``method.end_epoch(epoch, probe=(x_val, y_val))`` after each epoch; returns the
  method's diagnostics as a dict.

What they drive:

- **GIF** (and AT-mixup): ``end_epoch`` turns the originals misclassified under attack
  during the epoch into the attackable set ``A_t`` that the next epoch's interpolation
  pairs are drawn from; without it, pairs are drawn from ``A_0`` = the whole training
  set. The burn-in (``burn_in=``, default half of ``epochs``) counts the epochs given to
  ``start_epoch``.
- **GAIRAT**: reweighting starts after ``burn_in`` epochs (default half of ``epochs``),
  counted by ``start_epoch``.
- **FastAT**: ``end_epoch(epoch, probe)`` runs the catastrophic-overfitting detector
  (PGD accuracy on the held-out ``probe`` batch; a warning and ``fastat_co: True`` when
  it collapses). Without a probe it does nothing.

``attach(..., epochs=E)`` sets the run length behind those "half the run" defaults; it is
1 when not given, so there is no burn-in unless you ask (``epochs=`` or ``burn_in=``).
``method.state_dict()`` / ``load_state_dict()`` save and restore the cross-epoch state
with your own checkpoints.
"""
from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from .. import dist
from ..models import hooks
from .base import Method, MethodContext, StepOutput


def _dist_active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def _model_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _train_tensors(train_data, device):
    """``(images, labels)`` or an object with ``.images``/``.labels`` (a fastmix ImageSet) ->
    the two tensors on ``device``, validated."""
    if train_data is None:
        return None
    if isinstance(train_data, (tuple, list)) and len(train_data) == 2:
        images, labels = train_data
    elif hasattr(train_data, "images") and hasattr(train_data, "labels"):
        images, labels = train_data.images, train_data.labels
    else:
        raise ValueError(f"train_data must be (images, labels) or have .images and .labels, "
                         f"got {type(train_data).__name__}")
    if not isinstance(images, Tensor) or images.dim() != 4 or not (images.is_floating_point() or
                                                                   images.dtype == torch.uint8):
        raise ValueError(f"train_data images must be a float (in [0, 1]) or uint8 (N, C, H, W) tensor, got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if (not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (images.shape[0],)):
        raise ValueError(f"train_data labels must be int64 ({images.shape[0]},), got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    return images.to(device), labels.to(device)


def _fetcher(images: Tensor, labels: Tensor):
    scale = images.dtype == torch.uint8

    def fetch(idx: Tensor):
        x = images[idx]
        x = x.to(torch.float32).div_(255.0) if scale else x.to(torch.float32)
        return x, labels[idx]
    return fetch


def _needs_train_data(method: Method) -> bool:
    from .gif import GIF  # GIF and AT-mixup draw interpolation pairs from the training set
    return isinstance(method, GIF)


def attach(method: Method, model: nn.Module, *, train_data=None, epochs: int | None = None,
           num_classes: int | None = None, attack_model: nn.Module | None = None) -> Method:
    """Bind ``method`` to a model of your own, for :meth:`Method.step` (which calls this
    itself on first use, with the arguments of the last ``attach``).

    Args:
        model: the training forward, images ``(B, C, H, W)`` in ``[0, 1]`` -> logits
            ``(B, K)``; any ``nn.Module``, possibly wrapped in DDP or ``torch.compile``.
            Backpropagated through.
        train_data: ``(images, labels)``: ``(N, C, H, W)`` float in ``[0, 1]`` or uint8,
            and int64 ``(N,)``; or a :class:`fastmix.data.ImageSet`. Needed by GIF and
            AT-mixup (interpolation pairs are drawn from it by dataset index; the batch's
            ``idx`` passed to ``step`` index it too). Copied to the model's device once.
        epochs: the run's length (the "half the run" burn-in default of GIF and GAIRAT);
            default 1 (no burn-in unless ``burn_in=`` is given).
        num_classes: K, recorded in the context (no method needs it today).
        attack_model: what the attacks run on (default: ``model`` without its DDP wrapper,
            so an attack's forwards never synchronise gradients).
    Returns:
        ``method``, bound. Under ``torch.distributed`` the rank, world size and an
        all-reduce come from the default process group (GAIRAT normalises its weights and
        GIF merges its attackable set over all ranks).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module (images -> logits), got {type(model).__name__}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be None or an int >= 1, got {epochs!r}")
    plain = hooks.unwrap(model)
    device = _model_device(plain)
    given = dict(train_data=train_data, epochs=epochs, num_classes=num_classes, attack_model=attack_model)
    if attack_model is None:
        attack_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    data = _train_tensors(train_data, device)
    if data is None and _needs_train_data(method):
        raise ValueError(f"{method.name} draws its interpolation pairs from the training set: pass "
                         f"train_data=(images, labels) to method.attach(model, train_data=...) (and each batch's "
                         f"dataset indices to method.step(model, x, y, idx))")
    if num_classes is None and data is not None and data[1].numel():
        num_classes = int(data[1].max()) + 1  # once, at attach time
    ctx = MethodContext(
        model=model, attack_model=attack_model, module=plain, num_classes=num_classes,
        num_train=0 if data is None else int(data[0].shape[0]), epochs=1 if epochs is None else epochs,
        device=device, rank=tdist.get_rank() if _dist_active() else 0,
        world_size=tdist.get_world_size() if _dist_active() else 1,
        all_reduce_sum=dist.all_reduce_sum, all_gather_cat=dist.all_gather_cat,
        fetch=None if data is None else _fetcher(*data))
    method._loop_attach = given
    method._loop_model = model
    method.last = None  # the StepOutput of the latest step
    method.bind(ctx)
    return method


def step(method: Method, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None = None) -> Tensor:
    """The loss of one batch of ``method`` on ``model``, from a hand-written loop.

    Args:
        model: see :func:`attach`; in training mode (``model.train()``), as in any loop.
        x: float ``(B, C, H, W)`` images in ``[0, 1]`` on the model's device.
        y: int64 ``(B,)`` labels in ``[0, K)``.
        idx: int64 ``(B,)`` indices of the batch's samples in ``train_data``; needed by GIF
            and AT-mixup (the attackable set is kept per training sample), unused otherwise.
    Returns:
        the scalar loss to backpropagate (``method.last`` holds the whole
        :class:`StepOutput`). Runs inside your autocast, if any; reads nothing back to
        the host (checks metadata only; label range is checked by the fused loss kernel).
    """
    if getattr(method, "_loop_model", None) is not model or method.ctx is None:
        attach(method, model, **getattr(method, "_loop_attach", {}))
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float (B, C, H, W) tensor of images in [0, 1], got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    B = x.shape[0]
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (B,):
        raise ValueError(f"y must be int64 ({B},) labels, got {getattr(y, 'dtype', type(y).__name__)} "
                         f"{tuple(getattr(y, 'shape', ()))}")
    if idx is None:
        if _needs_train_data(method):
            raise ValueError(f"{method.name} keeps per-sample state over the training set: pass idx, the batch's "
                             f"int64 ({B},) indices into train_data, to method.step(model, x, y, idx)")
        idx = torch.arange(B, device=x.device)
    elif not isinstance(idx, Tensor) or idx.dtype != torch.int64 or idx.shape != (B,):
        raise ValueError(f"idx must be int64 ({B},) dataset indices, got {getattr(idx, 'dtype', type(idx).__name__)} "
                         f"{tuple(getattr(idx, 'shape', ()))}")
    if x.device != method.ctx.device or y.device != x.device or idx.device != x.device:
        raise ValueError(f"x, y and idx must be on the model's device {method.ctx.device}, got x on {x.device}, "
                         f"y on {y.device}, idx on {idx.device}")
    if method.epoch == 0:
        method.start_epoch(1)
    out: StepOutput = method.loss(x, y, idx)
    method.last = out
    return out.loss


__all__ = ["attach", "step"]
