"""fastmix's fused primitives (layer 1 of DESIGN.md).

Public ops (each also has a torch reference ``<op>_ref``):

- :func:`pgd_step` / :func:`pgd_step_` -- the PGD sign-step-project update (L-inf, L2)
- :func:`random_start` -- a uniform point of the eps-ball
- :func:`mix` -- batched gather-mixing ``lam*a + (1-lam)*b[index]``
- :func:`soft_cross_entropy` -- CE against the compact two-part soft target (METHODS.md 1.2)
- :func:`cw_margin` -- the Carlini-Wagner margin loss

Each call validates its arguments (``check=False`` skips the checks that read data back
to the host, for use inside attack loops and CUDA graphs), brings them into the kernel
form of ``docs/OPS.md`` and runs one backend: ``backend=`` if given, else
``FASTMIX_BACKEND``, else the fastest present (CUDA > Triton > torch on GPU, C++ > torch
on CPU).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from . import _validate as V
from ._registry import op as _op
from .reference import (
    cw_margin_ref,
    draw_random_start_noise,
    mix_ref,
    pgd_step_ref,
    random_start_from_noise_ref,
    random_start_ref,
    soft_cross_entropy_ref,
    soft_target_ref,
)
from .target import SoftTarget, label_of  # noqa: F401  (the compact target, beside the ops)

__all__ = [
    "pgd_step", "pgd_step_", "random_start", "mix", "soft_cross_entropy", "cw_margin",
    "pgd_step_ref", "random_start_ref", "mix_ref", "soft_cross_entropy_ref", "cw_margin_ref",
    "soft_target_ref", "available_backends", "pick_backend",
]


def available_backends(device="cpu") -> list[str]:
    """Backends that can run tensors on ``device`` in this process."""
    return _backend.backends_for(torch.device(device).type)


def pick_backend(device="cpu", backend: str | None = None) -> str:
    """The backend a call on ``device`` would use."""
    return _backend.pick(torch.device(device).type, backend)


def _memory_format(x: Tensor):
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _dense(t: Tensor, fmt) -> Tensor:
    return t.contiguous(memory_format=fmt)


# ------------------------------------------------------------------------------- pgd_step
def _check_pgd(x, grad, x_nat, check):
    V.float_tensor("x", x, min_dim=1)
    V.float_tensor("grad", grad)
    V.float_tensor("x_nat", x_nat)
    V.same_shape("grad", grad, "x", x)
    V.same_shape("x_nat", x_nat, "x", x)
    V.same_dtype("x_nat", x_nat, "x", x)
    V.same_device("grad", grad, "x", x)
    V.same_device("x_nat", x_nat, "x", x)
    if check:
        V.finite("x", x)
        V.finite("grad", grad)
        V.finite("x_nat", x_nat)


def pgd_step(x: Tensor, grad: Tensor, x_nat: Tensor, eps, alpha, *, norm: str = "linf",
             lo: float = 0.0, hi: float = 1.0, backend: str | None = None, check: bool = True) -> Tensor:
    """One PGD update (METHODS.md 1.1), returned as a new tensor.

    Args:
        x: current iterate, ``(B, ...)`` float32/bfloat16/float16, any layout.
        grad: gradient of the loss w.r.t. ``x``, same shape (any float dtype).
        x_nat: the clean input the ball is centred on, same shape and dtype as ``x``.
        eps: ball radius, a float or a ``(B,)`` tensor, ``>= 0``.
        alpha: step size, a float or a ``(B,)`` tensor (a negative value descends).
        norm: ``"linf"``: ``clip(clip(x + alpha*sign(grad), x_nat-eps, x_nat+eps), lo, hi)``;
            ``"l2"``: step ``alpha*grad/||grad||`` per sample, projection onto the L2
            ball of radius eps around ``x_nat``, then clip to ``[lo, hi]``.
        lo, hi: the valid input range.
        backend: ``"torch"``, ``"cpp"``, ``"cuda"`` or ``"triton"``; None picks one.
        check: validate values (NaN, eps < 0); False skips the host reads.
    Returns:
        the new iterate, dtype and layout of ``x``.
    """
    code, lo, hi, e, a, b = _prep_pgd(x, grad, x_nat, eps, alpha, norm, lo, hi, backend, check)
    if b == "torch":
        return pgd_step_ref(x, grad, x_nat, e, a, norm="linf" if code == 0 else "l2", lo=lo, hi=hi)
    fmt = _memory_format(x)
    return _op("pgd_step", b)(_dense(x, fmt), _dense(grad.to(x.dtype), fmt), _dense(x_nat, fmt), e, a, code, lo, hi)


def pgd_step_(x: Tensor, grad: Tensor, x_nat: Tensor, eps, alpha, *, norm: str = "linf",
              lo: float = 0.0, hi: float = 1.0, backend: str | None = None, check: bool = True) -> Tensor:
    """In-place :func:`pgd_step`: writes the new iterate into ``x`` and returns ``x``."""
    code, lo, hi, e, a, b = _prep_pgd(x, grad, x_nat, eps, alpha, norm, lo, hi, backend, check)
    fmt = _memory_format(x)
    if b == "torch" or not x.is_contiguous(memory_format=fmt):
        out = pgd_step(x, grad, x_nat, e, a, norm=norm, lo=lo, hi=hi, backend=b, check=False)
        return x.copy_(out)
    _op("pgd_step_", b)(x, _dense(grad.to(x.dtype), fmt), _dense(x_nat, fmt), e, a, code, lo, hi)
    return x


def _prep_pgd(x, grad, x_nat, eps, alpha, norm, lo, hi, backend, check):
    _check_pgd(x, grad, x_nat, check)
    code = V.norm_code(norm)
    lo, hi = V.bounds(lo, hi)
    B = x.shape[0]
    e = V.per_sample("eps", eps, B, x.device, lo=0.0, check=check)
    a = V.per_sample("alpha", alpha, B, x.device, check=check)
    return code, lo, hi, e, a, _backend.pick(x.device.type, backend)


# --------------------------------------------------------------------------- random_start
def random_start(x_nat: Tensor, eps, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
                 generator: torch.Generator | None = None, backend: str | None = None,
                 check: bool = True) -> Tensor:
    """A uniform random point of the eps-ball around ``x_nat``, clipped to ``[lo, hi]``.

    L-inf: ``x_nat + U(-eps, eps)`` per element.  L2: a uniform point of the D-dimensional
    ball (Gaussian direction, radius ``eps * U^(1/D)``).  The random draws come from torch
    (``generator`` if given), so every backend gives the same start for the same seed.
    ``eps`` is a float or a ``(B,)`` tensor, ``>= 0``.
    """
    V.float_tensor("x_nat", x_nat, min_dim=1)
    code = V.norm_code(norm)
    lo, hi = V.bounds(lo, hi)
    if check:
        V.finite("x_nat", x_nat)
    e = V.per_sample("eps", eps, x_nat.shape[0], x_nat.device, lo=0.0, check=check)
    b = _backend.pick(x_nat.device.type, backend)
    fmt = _memory_format(x_nat)
    noise, radius = draw_random_start_noise(x_nat, "linf" if code == 0 else "l2", generator)
    noise = _dense(noise, fmt)
    if b == "torch":
        return random_start_from_noise_ref(x_nat, noise, e, radius, norm="linf" if code == 0 else "l2", lo=lo, hi=hi)
    if radius is None:
        radius = noise.new_empty((0,))
    return _op("random_start", b)(_dense(x_nat, fmt), noise, e, radius, code, lo, hi)


# ------------------------------------------------------------------------------------ mix
def mix(a: Tensor, b: Tensor, lam, index: Tensor, *, backend: str | None = None, check: bool = True) -> Tensor:
    """Batched gather-mixing (METHODS.md 1.3): ``out[i] = lam[i]*a[i] + (1-lam[i])*b[index[i]]``.

    Args:
        a: ``(B, ...)`` float32/bfloat16/float16, any layout (channels-last kept).
        b: ``(Nb, ...)`` with ``a``'s per-sample shape and dtype (``b`` may be ``a``, or a pool).
        lam: a float or a ``(B,)`` float tensor (values outside [0, 1] extrapolate,
            e.g. AVmixup's vertex ``x + gamma*delta`` is ``mix(x, x_adv, 1 - gamma, arange)``).
        index: ``(B,)`` integer tensor with values in ``[0, Nb)``.
    Differentiable w.r.t. ``a``, ``b`` and a tensor ``lam`` (manifold mixup mixes hidden features).
    """
    V.float_tensor("a", a, min_dim=1)
    V.float_tensor("b", b, min_dim=1)
    if b.shape[1:] != a.shape[1:]:
        raise ValueError(f"b must have a's per-sample shape {tuple(a.shape[1:])}, got {tuple(b.shape[1:])}")
    V.same_dtype("b", b, "a", a)
    V.same_device("b", b, "a", a)
    B = a.shape[0]
    V.index_tensor("index", index, B)
    V.same_device("index", index, "a", a)
    if check:
        V.finite("a", a)
        V.finite("b", b)
        if B > 0:
            V.in_range("index", index, 0, b.shape[0] - 1, f" (b has {b.shape[0]} rows)")
    lam_t = V.per_sample("lam", lam, B, a.device, check=check)
    index = index.to(torch.int64).contiguous()
    bk = _backend.pick(a.device.type, backend)
    if bk == "torch":
        return mix_ref(a, b, lam_t, index)
    fmt = _memory_format(a)
    return _op("mix", bk)(_dense(a, fmt), _dense(b, fmt), lam_t, index)


# ----------------------------------------------------------------------- soft cross-entropy
def _labels(name, y, B, C, device, check):
    V.index_tensor(name, y, B)
    V.same_device(name, y, "logits", torch.empty(0, device=device))
    if check and B > 0:
        V.in_range(name, y, 0, C - 1, f" (logits have C={C} classes)")
    return y.to(torch.int64).contiguous()


def _check_logits(logits, check):
    V.float_tensor("logits", logits, dim=2)
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes, got shape {tuple(logits.shape)}")
    if check:
        V.finite("logits", logits)


def soft_cross_entropy(logits: Tensor, ya: Tensor, yb: Tensor | None = None, w=None, sa=None, sb=None,
                       reduction: str = "mean", *, backend: str | None = None, check: bool = True) -> Tensor:
    """Cross-entropy against the compact soft target of METHODS.md 1.2, fused.

    ``t = w*phi(ya, sa) + (1-w)*phi(yb, sb)`` with ``phi(y, s)`` = ``s`` on class ``y`` and
    ``(1-s)/(C-1)`` elsewhere; the loss per row is ``logsumexp(z) - sum_c t_c z_c`` and its
    gradient ``softmax(z) - t``, computed from the O(B) numbers without a B x C target.

    Args:
        logits: ``(B, C)`` float32/bfloat16/float16, ``C >= 2`` (accumulated in float32).
        ya, yb: ``(B,)`` integer labels in ``[0, C)``; ``yb`` defaults to ``ya``.
        w, sa, sb: floats or ``(B,)`` tensors in ``[0, 1]``; defaults 1 (the hard label).
        reduction: ``"none"`` (float32 ``(B,)``), ``"mean"`` or ``"sum"``.
    Differentiable w.r.t. ``logits`` (the targets are constants).
    """
    _check_logits(logits, check)
    V.reduction(reduction)
    B, C = logits.shape
    dev = logits.device
    ya = _labels("ya", ya, B, C, dev, check)
    yb = ya if yb is None else _labels("yb", yb, B, C, dev, check)
    w = V.per_sample("w", 1.0 if w is None else w, B, dev, lo=0.0, hi=1.0, check=check)
    sa = V.per_sample("sa", 1.0 if sa is None else sa, B, dev, lo=0.0, hi=1.0, check=check)
    sb = V.per_sample("sb", 1.0 if sb is None else sb, B, dev, lo=0.0, hi=1.0, check=check)
    bk = _backend.pick(dev.type, backend)
    if bk == "torch":
        return soft_cross_entropy_ref(logits, ya, yb, w, sa, sb, reduction)
    return _reduce(_FusedSoftCE.apply(bk, logits.contiguous(), ya, yb, w, sa, sb), reduction)


# -------------------------------------------------------------------------------- CW margin
def cw_margin(logits: Tensor, y: Tensor, *, kappa: float = 0.0, reduction: str = "mean",
              backend: str | None = None, check: bool = True) -> Tensor:
    """The Carlini-Wagner margin loss, in the direction an attack ascends.

    ``min(max_{j != y} z_j - z_y, kappa)`` per row: the negation of C&W's
    ``max(z_y - max_{j != y} z_j, -kappa)``, so PGD maximising it pushes the best wrong
    class above the true one until the margin reaches ``kappa`` (>= 0).
    Differentiable w.r.t. ``logits``: ``+1`` at the best other class, ``-1`` at ``y``
    while the margin is below ``kappa``.
    """
    _check_logits(logits, check)
    V.reduction(reduction)
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not (float(kappa) >= 0.0):
        raise ValueError(f"kappa must be a number >= 0, got {kappa!r}")
    B, C = logits.shape
    y = _labels("y", y, B, C, logits.device, check)
    bk = _backend.pick(logits.device.type, backend)
    if bk == "torch":
        return cw_margin_ref(logits, y, kappa=float(kappa), reduction=reduction)
    return _reduce(_FusedCW.apply(bk, logits.contiguous(), y, float(kappa)), reduction)


class _FusedSoftCE(torch.autograd.Function):
    """The public path's autograd for the fused loss: a plain autograd.Function costs
    about 80 us less per forward+backward than the op-level ``register_autograd`` (which
    stays registered for users of ``torch.ops.fastmix.*``), and at C = 10 that overhead,
    not the kernel, is the whole cost."""

    @staticmethod
    def forward(ctx, bk, logits, ya, yb, w, sa, sb):
        loss, lse = _op("soft_ce_fwd", bk)(logits, ya, yb, w, sa, sb)
        ctx.bk = bk
        ctx.save_for_backward(logits, lse, ya, yb, w, sa, sb)
        return loss

    @staticmethod
    def backward(ctx, g):
        logits, lse, ya, yb, w, sa, sb = ctx.saved_tensors
        grad = _op("soft_ce_bwd", ctx.bk)(g.float().contiguous(), logits, lse, ya, yb, w, sa, sb)
        return None, grad, None, None, None, None, None


class _FusedCW(torch.autograd.Function):
    """As :class:`_FusedSoftCE`, for the CW margin."""

    @staticmethod
    def forward(ctx, bk, logits, y, kappa):
        margin, jstar = _op("cw_margin_fwd", bk)(logits, y, kappa)
        ctx.bk, ctx.kappa = bk, kappa
        ctx.save_for_backward(logits, y, jstar, margin)
        return margin

    @staticmethod
    def backward(ctx, g):
        logits, y, jstar, margin = ctx.saved_tensors
        return None, _op("cw_margin_bwd", ctx.bk)(g.float().contiguous(), logits, y, jstar, margin, ctx.kappa), None, None


def _reduce(v: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    return v
