"""The input gradient and the K-step projected-gradient loop every attack is built on.

- gradients are taken w.r.t. the input only (``torch.autograd.grad``); the attacks run
  the model under :func:`~fastmix.attacks.modes.attack_mode`, so no weight gradient is
  computed or accumulated;
- the loop has no host synchronisation when ``check=False``, so :func:`run` can capture
  its K steps in one CUDA graph (:mod:`fastmix.attacks.graphs`) and replay it per batch.
"""
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..ops._pgd_step import stepper_unchecked
from ..ops._random_start import random_start_unchecked
from ..ops.target import SoftTarget, repeat_target
from . import graphs
from .losses import check_target
from .modes import autocast_context

__all__ = ["AttackResult", "input_grad", "Loop", "run"]


class AttackResult(NamedTuple):
    """What an attack returns with ``return_kappa=True``.

    - ``x_adv``: adversarial inputs, shape and dtype of ``x``, in ``[0, 1]``.
    - ``kappa``: ``(B,)`` int64, GAIRAT's count of the steps (0..K) at which the iterate
      was still classified correctly, checked before each step.
    """
    x_adv: Tensor
    kappa: Tensor


def input_grad(fwd, loss_fn, x: Tensor, target, *, amp=None, check=False, eot: int = 1,
               eot_batch: int | None = None, transform=None, need_loss: bool = True):
    """Gradient of ``sum_i loss_i`` w.r.t. the input only.

    Args:
        fwd: ``x -> output`` (logits or features).
        x: ``(B, ...)`` the point to differentiate at (not modified).
        target: what ``loss_fn`` compares the output with (labels, SoftTarget, tensor).
        check: validate the output and the target first (:func:`~fastmix.attacks.losses.check_target`).
        amp: autocast dtype for the forward (None: the input's precision).
        eot, eot_batch, transform: Expectation over Transformation: the gradient is summed
            over ``eot`` draws of ``transform(x)`` (the direction of the mean), ``eot_batch``
            draws per forward as one ``(eot_batch*B, ...)`` batch (default: all at once).
        need_loss: False skips the per-sample loss bookkeeping (the loss is then None):
            the K-step loop uses only the gradient and the output.
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
            with autocast_context(x.device, amp):
                out = fwd(inp)
            tgt = repeat_target(target, n)
            if check and done == 0:
                check_target(out, tgt)
            lv = loss_fn(out, tgt)
            if lv.shape != (n * B,):
                raise ValueError(f"the loss must return one value per sample, shape ({n * B},); "
                                 f"got shape {tuple(lv.shape)}")
            # d(sum_i lv_i)/dx, seeded with ones: the gradient of lv.sum() without the sum op
            # and its backward node (the same values: the sum's backward hands each sample 1.0)
            (g,) = torch.autograd.grad(lv, xg, grad_outputs=torch.ones_like(lv))
            if need_loss:
                lv = lv.detach().float().view(n, B).sum(0)
                loss_sum = lv if loss_sum is None else loss_sum + lv
            grad = g if grad is None else grad + g
            if out0 is None:
                out0 = out.detach() if n == 1 else out.detach()[:B]
            done += n
    if not need_loss:
        return grad, out0, None
    return grad, out0, loss_sum / eot if eot > 1 else loss_sum


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
        if start not in (None, "uniform", "normal"):
            raise ValueError(f"start must be None, 'uniform' or 'normal', got {start!r}")
        self.fwd, self.loss_fn, self.steps, self.norm = fwd, loss_fn, steps, norm
        self.start, self.sign, self.amp, self.count = start, sign, amp, count
        self.prepare = prepare
        self.eot = dict(eot=eot, eot_batch=eot_batch, transform=transform)

    def target(self, x_nat: Tensor, aux):
        if self.prepare is None:
            return aux
        with torch.no_grad(), autocast_context(x_nat.device, self.amp):
            return self.prepare(x_nat, aux)

    def __call__(self, x_nat: Tensor, eps: Tensor, alpha: Tensor, aux, label: Tensor | None,
                 check: bool = False):
        """``x_nat`` ``(B, ...)`` in [0, 1]; ``eps``, ``alpha`` float32 ``(B,)``; ``aux`` the
        raw target; ``label`` ``(B,)`` int64 or None. Returns ``(x_adv, kappa or None)``."""
        target = self.target(x_nat, aux)
        code = 0 if self.norm == "linf" else 2
        if self.start == "uniform":
            x = random_start_unchecked(x_nat, eps, code)
        elif self.start == "normal":  # TRADES; clipped to the image range like every iterate
            x = (x_nat + 0.001 * torch.randn_like(x_nat)).clamp_(0.0, 1.0)
        else:
            x = x_nat.clone()
        kappa = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if self.count else None
        update = stepper_unchecked(x_nat, eps, alpha * self.sign, code)
        for k in range(self.steps):
            g, out, _ = input_grad(self.fwd, self.loss_fn, x, target, amp=self.amp, need_loss=False,
                                   check=check and k == 0, **self.eot)
            if kappa is not None:  # still correct before this step (GAIRAT)
                kappa += out.argmax(dim=1) == label
            update(x, g)
        return x, kappa


def run(loop: Loop, x_nat, eps, alpha, aux, label, *, check: bool, graph_key=None, model=None,
        callables=()):
    """Run ``loop`` eagerly, or through the CUDA-graph cache when ``graph_key`` (the attack's
    settings) is given and the input is on a GPU (eager for every other case).

    ``model``: the attacked module, the cache's key (held weakly). ``callables``: objects
    ``graph_key`` names only by ``id`` (a custom loss, a transform), matched by identity."""
    if graph_key is None or not graphs.capturable(x_nat):
        return loop(x_nat, eps, alpha, aux, label, check=check)
    if model is None:
        raise ValueError("cuda_graph=True needs the attacked model (the cache's key)")
    soft = isinstance(aux, SoftTarget)
    if soft:  # static buffers need tensors for every field
        aux = aux.filled(check=False)
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
    return graphs.GRAPHS(model, (graph_key, soft, has_label), fn, tensors, check, callables)
