"""APGD-CE, APGD-DLR and APGD-T (Croce and Hein, ICML 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks").

Each run: a random start on the sphere of radius eps (L-inf: ``x + eps*t/max|t|``), step
size ``eta = 2*eps``, a momentum step ``x_{k+1} = P(x_k + 0.75*(P(x_k + eta*sign g_k) - x_k)
+ 0.25*(x_k - x_{k-1}))`` (plain step at k = 0) and, at checkpoints spaced 22%, then
shrinking by 3% down to 6% of the steps, the step size halved and the iterate reset to the
best point for every sample whose loss increased in at most ``rho`` of the steps since the
last checkpoint, or that was not halved last time and whose best loss did not improve.

The K steps are vectorised over the batch and free of host syncs (the checkpoint schedule
is known in advance; per-sample decisions are ``torch.where``). Between runs (restarts,
target classes) ``compact=True`` attacks only the samples still robust, at the cost of one
host read per run.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import _validate as validate
from ..ops.target import SoftTarget
from .checks import check_eps, check_images, check_int, check_labels, check_norm
from .loop import input_grad
from .losses import make_loss
from .modes import attack_mode, autocast_context, autocast_dtype

__all__ = ["apgd"]


def _column(v: Tensor, x: Tensor) -> Tensor:
    """A view of the ``(B,)`` tensor ``v`` (values or a bool mask, any dtype) as ``(B, 1, ..., 1)``,
    broadcastable against ``x``. Not ``ops``' per-sample conversion: no copy, no cast."""
    return v.view((-1,) + (1,) * (x.dim() - 1))


def _project(v: Tensor, x: Tensor, eps: Tensor, norm: str) -> Tensor:
    # A pgd_step with alpha = 0 is exactly the projection onto the eps-ball and [0, 1].
    return ops.pgd_step(v, v, x, eps, 0.0, norm=norm, check=False)


def _start(x: Tensor, eps: Tensor, norm: str, gen) -> Tensor:
    flat = lambda t: t.flatten(1)  # noqa: E731
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=torch.float32) - 1
        t = t / _column(flat(t).abs().amax(dim=1), x)
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
        t = t / (_column(flat(t).norm(dim=1), x) + 1e-12)
    return (x + _column(eps, x) * t).clamp_(0.0, 1.0).to(x.dtype)


def _run(model, loss_fn, x, target, label, eps, *, steps, norm, rho, amp, gen, eot):
    """One APGD run on ``x`` ``(B, ...)``; returns ``(x_best_adv, still_robust (B,) bool)``."""
    where = lambda m, a, b: torch.where(_column(m, a) if a.dim() > 1 else m, a, b)  # noqa: E731
    grad = lambda z: input_grad(model, loss_fn, z, target, amp=amp, eot=eot, eot_batch=1)  # noqa: E731
    k = max(int(0.22 * steps), 1)
    k_min, k_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)

    x_adv = _start(x, eps, norm, gen)
    g, out, loss = grad(x_adv)
    robust = out.argmax(dim=1) == label
    x_best_adv, x_best, g_best, loss_best = x_adv, x_adv, g, loss
    loss_steps = torch.zeros((steps,) + loss.shape, device=x.device)
    step = 2.0 * eps
    x_old = x_adv
    loss_best_last, reduced_last = loss_best, torch.ones_like(robust)
    since = 0
    for i in range(steps):
        a = 0.75 if i > 0 else 1.0
        z = ops.pgd_step(x_adv, g, x, eps, step, norm=norm, check=False)
        x_adv, x_old = _project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_old), x, eps, norm), x_adv
        g, out, loss = grad(x_adv)
        ok = out.argmax(dim=1) == label
        x_best_adv = where(~ok, x_adv, x_best_adv)
        robust = robust & ok
        loss_steps[i] = loss
        better = loss > loss_best
        x_best, g_best, loss_best = where(better, x_adv, x_best), where(better, g, g_best), \
            where(better, loss, loss_best)
        since += 1
        if since == k:  # checkpoint
            # how often the loss went up over the last k steps (row -1 wraps to the unwritten
            # last row, zeros, exactly as the reference implementation reads it)
            prev = loss_steps.roll(1, dims=0)
            ups = (loss_steps[i - k + 1:i + 1] > prev[i - k + 1:i + 1]).sum(dim=0)
            halve = (ups <= k * rho) | (~reduced_last & (loss_best_last >= loss_best))
            reduced_last, loss_best_last = halve, loss_best
            step = torch.where(halve, step / 2, step)
            x_adv, g = where(halve, x_best, x_adv), where(halve, g_best, g)
            since, k = 0, max(k - k_decr, k_min)
    return x_best_adv, robust


def apgd(model: nn.Module, x: Tensor, y: Tensor, *, eps, steps: int = 100, norm: str = "linf",
         loss: str | None = None, targeted: bool = False, n_target_classes: int = 9, restarts: int = 1,
         rho: float = 0.75, seed: int | None = None, eot_iter: int = 1, bn_mode="eval", autocast=None,
         channels_last: bool = False, compact: bool = True, check: bool = True,
         verbose: bool = False) -> Tensor:
    """Auto-PGD. ``targeted=False``: APGD-CE (``loss="ce"``) or APGD-DLR (``"dlr"``);
    ``targeted=True``: APGD-T, one run per target class, the 2nd..(n_target_classes+1)-th
    most likely class on the clean input, with the targeted DLR loss (``loss="dlr"``,
    default) or targeted CE (``"ce"``).

    Args:
        model, x, eps, norm, bn_mode, autocast, channels_last, check: as for
            :func:`fastmix.attacks.pgd`.  y: ``(B,)`` int64 true labels.
        steps: iterations per run (AutoAttack uses 100).  restarts: runs per target class.
        rho: the checkpoint's oscillation threshold (0.75).
        seed: seeds a private generator for the random starts (None: torch's global RNG).
        eot_iter: gradient averaged over this many forward passes (randomised models).
        compact: attack only the still-robust samples in each run (one host read per run).
        verbose: print the robust accuracy after each run.
    Returns:
        ``(B, ...)`` adversarial images: for each sample fooled by some run, the first
        misclassified iterate of that run; ``x`` itself elsewhere.
    """
    x = check_images("x", x, check).detach()
    y = check_labels("y", y, x, check)
    if isinstance(y, SoftTarget):
        raise ValueError("apgd needs hard labels y, got a SoftTarget")
    check_int("steps", steps, 1)
    check_int("restarts", restarts, 1)
    check_int("eot_iter", eot_iter, 1)
    check_int("n_target_classes", n_target_classes, 1)
    check_norm(norm)
    norm = "linf" if norm in ("linf", "Linf", "inf") else "l2"
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        raise ValueError(f"rho must be a number in (0, 1], got {rho!r}")
    loss = loss or ("dlr" if targeted else "ce")
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
    base, sign = make_loss(loss, targeted)
    loss_fn = base if sign > 0 else (lambda out, t: -base(out, t))
    eps_t = check_eps("eps", eps, x.shape[0], x.device, check)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = autocast_dtype(autocast)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
    gen = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)

    with attack_mode(model, bn_mode):
        with torch.no_grad(), autocast_context(x.device, amp):
            logits = model(x)
        C = logits.shape[1]
        need = 4 if (targeted and loss == "dlr") else (3 if loss == "dlr" else 2)
        if C < need:
            raise ValueError(f"the {'targeted ' if targeted else ''}{loss} loss needs at least {need} "
                             f"classes, the model has {C}")
        if targeted and n_target_classes > C - 1:
            raise ValueError(f"n_target_classes must be at most C - 1 = {C - 1}, got {n_target_classes}")
        if check:
            validate.in_range("y", y, 0, C - 1, f" (the model has C={C} classes)")
        order = logits.argsort(dim=1, descending=True) if targeted else None
        robust = logits.argmax(dim=1) == y
        adv = x.clone()
        for tc in (range(1, n_target_classes + 1) if targeted else [None]):
            for r in range(restarts):
                idx = robust.nonzero().squeeze(1) if compact else None
                if idx is not None and idx.numel() == 0:
                    return adv
                sub = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))  # noqa: E731
                ys = sub(y)
                target = ys
                if tc is not None:
                    yt = sub(order[:, tc])
                    target = torch.stack([ys, yt], dim=1) if loss == "dlr" else yt
                xb, still = _run(model, loss_fn, sub(x), target, ys, sub(eps_t), steps=steps, norm=norm,
                                 rho=float(rho), amp=amp, gen=gen, eot=eot_iter)
                if idx is None:
                    fooled = robust & ~still
                    adv = torch.where(_column(fooled, adv), xb, adv)
                    robust = robust & still
                else:
                    hit = idx[~still]
                    adv[hit] = xb[~still]
                    robust[hit] = False
                if verbose:
                    what = f"target {tc + 1}, " if tc is not None else ""
                    print(f"apgd-{'t' if targeted else loss} {what}restart {r}: robust accuracy "
                          f"{robust.float().mean().item():.2%}")
    return adv
