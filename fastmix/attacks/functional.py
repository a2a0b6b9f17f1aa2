"""Functional attacks: PGD (CE, soft CE, CW, KL, any loss), FGSM, FGSM-RS, the feature
attack (AIT) and EOT-PGD (Mixup Inference's adaptive attack), each a few lines on the
shared :class:`~fastmix.attacks.loop.Loop` (METHODS.md 1.1).

Common arguments:
    model: an ``nn.Module`` mapping ``(B, C, H, W)`` images in [0, 1] to ``(B, K)`` logits
        (normalisation inside the model). Its modules' modes and its parameters'
        ``requires_grad`` are restored after the attack, also on an exception.
    x: ``(B, ...)`` float32 (or bfloat16/float16) images in ``[0, 1]``.
    y: ``(B,)`` int64 labels in ``[0, K)``, or a :class:`SoftTarget` (CE only).
    eps: L-inf or L2 radius, a float >= 0 or a ``(B,)`` tensor.  alpha: step size (same forms).
    steps: K >= 1.  norm: ``"linf"`` or ``"l2"``.
    bn_mode: ``"eval"`` (default), ``"train"`` (AVmixup, FastAT), ``"keep"``, or
        torchattacks' ``(model, batchnorm, dropout)`` training triple.
    autocast: None (the input's precision), ``"bf16"`` or ``"fp16"`` for the forward and
        backward passes (the iterate and the step stay in ``x``'s dtype).
    channels_last: run on a channels-last copy of a 4-D ``x`` (returned in that layout).
    cuda_graph: on a GPU, capture the whole K-step loop in one CUDA graph on the first
        call for a shape and replay it for later batches of that shape (eager elsewhere).
        Replays skip the value checks; the model's parameters must keep their storage.
    fold_bn: for the duration of the attack, fold every BatchNorm that is in eval mode into
        the convolution before it (:func:`fastmix.attacks.fold.fold_bn`): the same function
        within float32 rounding, one conv instead of conv + BN per pair, forward and backward.
        The model is untouched afterwards. No effect on BatchNorms in training mode.
    check: validate values up front and at the first step (one host sync each);
        ``False`` makes the whole call free of host syncs.
Returns the adversarial images (dtype of ``x``), or an :class:`AttackResult` with GAIRAT's
kappa when ``return_kappa=True``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..ops import _validate as validate
from ..ops.target import SoftTarget, label_of
from .checks import check_eps, check_images, check_int, check_labels, check_norm
from .losses import feature_loss, make_loss
from .loop import AttackResult, Loop, run
from .fold import fold_bn as _fold_bn
from .modes import attack_mode, autocast_context, autocast_dtype

__all__ = ["pgd", "fgsm", "fgsm_rs", "feature_attack", "eot_pgd"]


def _prepare_inputs(x, y, eps, alpha, steps, norm, check, channels_last, *, y_required=True, loss="ce"):
    x = check_images("x", x, check).detach()
    if y is not None or y_required:
        if y is None:
            raise ValueError("y (the labels) is required for this loss")
        y = check_labels("y", y, x, check)
    check_int("steps", steps, 1)
    check_norm(norm)
    if isinstance(y, SoftTarget) and not (loss == "ce" or callable(loss)):
        raise ValueError(f"a SoftTarget y needs loss='ce' (or a callable), got loss={loss!r}")
    B = x.shape[0]
    eps_t = check_eps("eps", eps, B, x.device, check)
    alpha_t = check_eps("alpha", alpha, B, x.device, check)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, eps_t, alpha_t


def _graph_key(cuda_graph, *settings):
    """The settings a captured attack is keyed by (the cache keys the model itself), or None
    for an eager attack. A callable is named by ``id`` here and matched by identity there."""
    return settings if cuda_graph else None


def _callables(*objs):
    return tuple(o for o in objs if callable(o))


def pgd(model: nn.Module, x: Tensor, y, *, eps, alpha, steps: int, norm: str = "linf",
        loss="ce", random_start: bool = True, targeted: bool = False, restarts: int = 1,
        confidence: float = 0.0, bn_mode="eval", return_kappa: bool = False, autocast=None,
        channels_last: bool = False, cuda_graph: bool = False, fold_bn: bool = False, check: bool = True):
    """Projected gradient descent (Madry et al.), METHODS.md 1.1.

    Args (beyond the module's common ones):
        loss: ``"ce"`` (hard or :class:`SoftTarget`), ``"cw"`` (the margin
            ``min(max_{j!=y} z_j - z_y, confidence)``), ``"kl"`` (TRADES:
            ``KL(softmax f(x) || softmax f(x_k))`` with ``x_0 = x + 0.001 N(0, I)``; ``y``
            may be None), ``"dlr"``, or ``fn(logits, y) -> (B,)`` per-sample loss.
        random_start: start from a random point: uniform in the eps-ball, or for
            ``loss="kl"`` TRADES's ``x + 0.001 N(0, I)``; ``False``: start at ``x`` (every
            loss, so two calls give the same result).
        targeted: ``y`` holds target classes; the attack descends the loss towards them.
        restarts: R >= 1 runs; per sample the run that misclassifies (targeted: hits the
            target) is kept, ties broken by the higher final loss.
        confidence: the CW kappa (>= 0).
        return_kappa: also return GAIRAT's kappa (needs hard labels or a SoftTarget).
    """
    check_int("restarts", restarts, 1)
    if loss == "dlr" and targeted:  # targeted DLR compares the label with a target: (B, 2) pairs
        raise ValueError("loss='dlr' with targeted=True needs the true label and the target per sample; "
                         "use fastmix.attacks.apgd(..., loss='dlr', targeted=True) (APGD-T)")
    loss_fn, sign = make_loss(loss, targeted, confidence)
    kl = loss == "kl"
    x, y, eps_t, alpha_t = _prepare_inputs(x, y, eps, alpha, steps, norm, check, channels_last,
                                           y_required=not kl, loss=loss)
    label = label_of(y)
    if return_kappa and label is None:
        raise ValueError("return_kappa=True needs labels y")
    amp = autocast_dtype(autocast)
    prepare = (lambda xn, _: torch.log_softmax(model(xn).float(), dim=1)) if kl else None
    loop = Loop(model, loss_fn, steps=steps, norm=norm, sign=sign, amp=amp, prepare=prepare,
                  start=("normal" if kl else "uniform") if random_start else None, count=return_kappa)
    key = _graph_key(cuda_graph, bool(fold_bn), "pgd", norm, steps, loss if isinstance(loss, str) else id(loss),
                     random_start, targeted, float(confidence), str(bn_mode), amp, return_kappa)
    with attack_mode(model, bn_mode), _fold_bn(model, bool(fold_bn)):
        best = None
        for r in range(restarts):
            x_adv, kappa = run(loop, x, eps_t, alpha_t, y, label if return_kappa else None,
                               check=check and r == 0, graph_key=key, model=model, callables=_callables(loss))
            if restarts > 1:
                best = _keep_better(best, x_adv, kappa, model, loop, x, y, label, sign, targeted, amp)
        if best is not None:
            x_adv, kappa = best[0], best[1]
    return AttackResult(x_adv, kappa) if return_kappa else x_adv


def _keep_better(best, x_adv, kappa, model, loop, x, y, label, sign, targeted, amp):
    """Per sample, keep the restart that succeeded, then the one with the higher loss."""
    with torch.no_grad(), autocast_context(x.device, amp):
        out = model(x_adv)
    lv = loop.loss_fn(out, loop.target(x, y)).float() * sign
    if label is None:
        ok = torch.zeros_like(lv, dtype=torch.bool)
    else:
        hit = out.argmax(dim=1) == label
        ok = hit if targeted else ~hit
    if best is None:
        return x_adv, kappa, lv, ok
    bx, bk, bl, bo = best
    take = (ok & ~bo) | ((ok == bo) & (lv > bl))
    shape = (-1,) + (1,) * (x_adv.dim() - 1)
    return (torch.where(take.view(shape), x_adv, bx), None if kappa is None else torch.where(take, kappa, bk),
            torch.where(take, lv, bl), ok | bo)


def fgsm(model: nn.Module, x: Tensor, y, *, eps, loss="ce", targeted: bool = False, bn_mode="eval",
         **kw):
    """FGSM (Goodfellow et al.): one step of size ``eps`` from ``x``, no random start."""
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, loss=loss, random_start=False,
               targeted=targeted, bn_mode=bn_mode, **kw)


def fgsm_rs(model: nn.Module, x: Tensor, y, *, eps, alpha=None, loss="ce", bn_mode="eval", **kw):
    """FGSM with a uniform random start (FastAT, Wong et al.): one step of ``alpha``
    (default ``1.25*eps``) from ``x + U(-eps, eps)``, projected onto the eps-ball."""
    if alpha is None:  # an invalid eps is reported by pgd, which checks eps first
        alpha = 1.25 * eps if isinstance(eps, (int, float, Tensor)) else eps
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=1, loss=loss, random_start=True,
               bn_mode=bn_mode, **kw)


def feature_attack(model: nn.Module, x: Tensor, partner: Tensor | None = None, *, eps, alpha=None,
                   steps: int = 1, distance: str = "cos", random_start: bool = True, bn_mode="eval",
                   autocast=None, channels_last: bool = False, cuda_graph: bool = False, fold_bn: bool = False,
                   check: bool = True) -> Tensor:
    """AIT's feature-space attack (Zhang & Xu; METHODS.md AIT): move ``x`` towards a
    partner in the penultimate feature space of ``model.features``.

    ``x_0 = x + U(-eps, eps)``; ``steps`` times ``x_{k+1} = P(x_k - alpha*sign(grad
    D(feat(x_k), feat(x'))))`` with ``D`` the cosine distance (``distance="cos"``) or the L2
    distance (``"l2"``), ``P`` the projection onto the L-inf eps-ball and [0, 1].

    Args:
        partner: ``(B, ...)`` images like ``x``; default ``x.flip(0)`` (AIT's reversed batch).
        alpha: default ``eps`` (AIT's single step).
    """
    features = getattr(model, "features", None)
    if not callable(features):
        raise ValueError(f"model must have a features(x) method for the feature attack; "
                         f"{type(model).__name__} has none")
    alpha = eps if alpha is None else alpha
    x, _, eps_t, alpha_t = _prepare_inputs(x, None, eps, alpha, steps, "linf", check, channels_last,
                                           y_required=False)
    partner = x.flip(0) if partner is None else check_images("partner", partner, check).detach()
    validate.same_shape("partner", partner, "x", x)
    amp = autocast_dtype(autocast)
    loop = Loop(features, feature_loss(distance), steps=steps, sign=-1.0, amp=amp,
                  prepare=lambda xn, p: features(p), start="uniform" if random_start else None)
    key = _graph_key(cuda_graph, bool(fold_bn), "feature", steps, distance, random_start, str(bn_mode), amp)
    with attack_mode(model, bn_mode), _fold_bn(model, bool(fold_bn)):
        return run(loop, x, eps_t, alpha_t, partner, None, check=check, graph_key=key, model=model)[0]


def eot_pgd(model: nn.Module, x: Tensor, y, *, transform: Callable[[Tensor], Tensor], eot_iter: int,
            eps, alpha, steps: int, norm: str = "linf", loss="ce", random_start: bool = True,
            targeted: bool = False, eot_batch: int | None = None, bn_mode="eval", autocast=None,
            channels_last: bool = False, cuda_graph: bool = False, fold_bn: bool = False,
            check: bool = True) -> Tensor:
    """PGD whose gradient is the expectation over random transforms (Athalye et al.), the
    adaptive attack on Mixup Inference (METHODS.md 3).

    Each step sums the input gradient over ``eot_iter`` draws of ``transform`` applied to the
    current iterate (the direction of the mean), ``eot_batch`` draws per forward pass as one
    ``(eot_batch*B, ...)`` batch (default all ``eot_iter``: one pass per step).

    Args:
        transform: ``(n*B, ...) -> (n*B, ...)``, differentiable, drawing its randomness per
            row (row ``r*B + i`` is a draw for sample ``i``), e.g. MI's
            ``lam*x + (1-lam)*x_s`` with ``x_s`` drawn from a clean pool.
        eot_iter: N >= 1 draws per step.
    """
    check_int("eot_iter", eot_iter, 1)
    if eot_batch is not None:
        check_int("eot_batch", eot_batch, 1)
    if not callable(transform):
        raise ValueError(f"transform must be a callable x -> x', got {type(transform).__name__}")
    loss_fn, sign = make_loss(loss, targeted)
    if loss == "kl":
        raise ValueError("eot_pgd supports the losses 'ce', 'cw', 'dlr' or a callable, not 'kl'")
    x, y, eps_t, alpha_t = _prepare_inputs(x, y, eps, alpha, steps, norm, check, channels_last, loss=loss)
    amp = autocast_dtype(autocast)
    loop = Loop(model, loss_fn, steps=steps, norm=norm, sign=sign, amp=amp,
                  start="uniform" if random_start else None, eot=eot_iter, eot_batch=eot_batch,
                  transform=transform)
    key = _graph_key(cuda_graph, bool(fold_bn), "eot", id(transform), eot_iter, eot_batch, norm, steps,
                     loss if isinstance(loss, str) else id(loss), random_start, targeted, str(bn_mode), amp)
    with attack_mode(model, bn_mode), _fold_bn(model, bool(fold_bn)):
        return run(loop, x, eps_t, alpha_t, y, None, check=check, graph_key=key, model=model,
                   callables=_callables(transform, loss))[0]
