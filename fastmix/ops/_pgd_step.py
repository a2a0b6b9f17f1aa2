"""The PGD update (METHODS.md 1.1): ``fastmix::pgd_step`` and its in-place form ``pgd_step_``.

One vertical slice: the public wrappers, their metadata contract, the torch reference,
the fake kernels (for every compiled variant) and the registration. The op has no
gradient (attacks step on ``x`` outside autograd). Kernels: ``csrc/cpu/attack_cpu.cpp``,
``csrc/cuda/attack_cuda.cu``, ``fastmix/ops/triton/pgd_step.py``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from . import _library as L
from . import _validate as V

# Numerical guards shared by every backend (the kernels use the same constants).
L2_GRAD_EPS = 1e-10  # torchattacks' PGDL2 adds 1e-10 to the gradient norm


# ------------------------------------------------------------------------------ reference
def per_sample_ref(v, x: Tensor) -> Tensor:
    """A float or a (B,) tensor as a float32 tensor broadcastable against ``x``."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    if isinstance(v, Tensor):
        return v.to(device=x.device, dtype=torch.float32).reshape(shape)
    return torch.full(shape, float(v), dtype=torch.float32, device=x.device)


def flat_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).norm(p=2, dim=1).reshape((t.shape[0],) + (1,) * (t.dim() - 1))


def pgd_step_ref(x: Tensor, grad: Tensor, x_nat: Tensor, eps, alpha, *, norm: str = "linf",
                 lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """One projected gradient-ascent step (METHODS.md 1.1), plain eager torch.

    L-inf: ``clip(clip(x + alpha*sign(grad), x_nat-eps, x_nat+eps), lo, hi)``.
    L2: ``x + alpha*grad/(||grad||+1e-10)``, its offset from ``x_nat`` scaled by
    ``min(1, eps/||offset||)``, then clipped to ``[lo, hi]``. Float32 arithmetic,
    rounded once to ``x``'s dtype.
    """
    xf, gf, nf = x.float(), grad.float(), x_nat.float()
    e, a = per_sample_ref(eps, x), per_sample_ref(alpha, x)
    if norm == "linf":
        y = xf + a * torch.sign(gf)
        y = torch.minimum(torch.maximum(y, nf - e), nf + e)
    elif norm == "l2":
        y = xf + a * (gf / (flat_norm(gf) + L2_GRAD_EPS))
        d = y - nf
        dn = flat_norm(d)
        factor = torch.where(dn > 0, torch.clamp(e / dn, max=1.0), torch.ones_like(dn))
        y = nf + d * factor
    else:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return torch.clamp(y, lo, hi).to(x.dtype)


# ------------------------------------------------------------------------------- contract
def _contract(x, grad, x_nat, eps, alpha, norm, lo, hi, check):
    """Metadata checks (always) and value scans (``check``); returns the kernel-form scalars."""
    V.float_tensor("x", x, min_dim=1)
    V.float_tensor("grad", grad)
    V.float_tensor("x_nat", x_nat)
    V.same_shape("grad", grad, "x", x)
    V.same_shape("x_nat", x_nat, "x", x)
    V.same_dtype("x_nat", x_nat, "x", x)
    V.same_device("grad", grad, "x", x)
    V.same_device("x_nat", x_nat, "x", x)
    code = V.norm_code(norm)
    lo, hi = V.bounds(lo, hi)
    scan = V.scans(check)
    if scan:
        V.finite("x", x)
        V.finite("grad", grad)
        V.finite("x_nat", x_nat)
    B = x.shape[0]
    e = V.per_sample("eps", eps, B, x.device, lo=0.0, check=scan)
    a = V.per_sample("alpha", alpha, B, x.device, check=scan)
    return code, lo, hi, e, a


# -------------------------------------------------------------------------------- wrappers
def pgd_step(x: Tensor, grad: Tensor, x_nat: Tensor, eps, alpha, *, norm: str = "linf",
             lo: float = 0.0, hi: float = 1.0, backend: str | None = None, check: bool | None = None) -> Tensor:
    """One PGD update (METHODS.md 1.1), returned as a new tensor.

    Args:
        x: current iterate, ``(B, ...)`` float32/bfloat16/float16, any layout.
        grad: gradient of the loss w.r.t. ``x``, same shape (any float dtype).
        x_nat: the clean input the ball is centred on, same shape and dtype as ``x``.
        eps: ball radius, a float ``>= 0`` or a ``(B,)`` float tensor.
        alpha: step size, a float or a ``(B,)`` tensor (a negative value descends).
        norm: ``"linf"``: ``clip(clip(x + alpha*sign(grad), x_nat-eps, x_nat+eps), lo, hi)``;
            ``"l2"``: step ``alpha*grad/||grad||`` per sample, projection onto the L2
            ball of radius eps around ``x_nat``, then clip to ``[lo, hi]``.
        lo, hi: the valid input range.
        backend: ``"torch"``, ``"cpp"``, ``"cuda"`` or ``"triton"``; None: the default
            fixed at import (see :func:`fastmix.ops.use_backend`).
        check: ``True`` also scans values (NaN/inf in the tensors, a negative ``eps``
            tensor; host reads); ``None`` (default) does so only under ``FASTMIX_CHECK=1``.
            Metadata (types, shapes, dtypes, devices, Python numbers) is always checked;
            the attacks scan their inputs once per ``__call__``.
    Returns:
        the new iterate, dtype and layout of ``x``.
    """
    code, lo, hi, e, a = _contract(x, grad, x_nat, eps, alpha, norm, lo, hi, check)
    b = _backend.resolve(x.device, backend)
    if b == "torch":
        return pgd_step_ref(x, grad, x_nat, e, a, norm="linf" if code == 0 else "l2", lo=lo, hi=hi)
    fmt = L.memory_format(x)
    return L.kernel("pgd_step", b)(x.contiguous(memory_format=fmt),
                                   grad.to(x.dtype).contiguous(memory_format=fmt),
                                   x_nat.contiguous(memory_format=fmt), e, a, code, lo, hi)


def pgd_step_(x: Tensor, grad: Tensor, x_nat: Tensor, eps, alpha, *, norm: str = "linf",
              lo: float = 0.0, hi: float = 1.0, backend: str | None = None, check: bool | None = None) -> Tensor:
    """In-place :func:`pgd_step`: writes the new iterate into ``x`` and returns ``x``."""
    code, lo, hi, e, a = _contract(x, grad, x_nat, eps, alpha, norm, lo, hi, check)
    b = _backend.resolve(x.device, backend)
    fmt = L.memory_format(x)
    if b == "torch" or not x.is_contiguous(memory_format=fmt):
        if b == "torch":
            out = pgd_step_ref(x, grad, x_nat, e, a, norm="linf" if code == 0 else "l2", lo=lo, hi=hi)
        else:
            out = pgd_step(x, grad, x_nat, e, a, norm=norm, lo=lo, hi=hi, backend=b, check=False)
        return x.copy_(out)
    L.kernel("pgd_step_", b)(x, grad.to(x.dtype).contiguous(memory_format=fmt),
                             x_nat.contiguous(memory_format=fmt), e, a, code, lo, hi)
    return x


def pgd_stepper(x_nat: Tensor, eps, alpha, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
                backend: str | None = None, check: bool | None = None):
    """:func:`pgd_step_` with everything that does not change between the K steps of one
    attack done once: the metadata contract, the ``eps``/``alpha`` tensors, the backend and
    its kernel, the memory format. Returns ``step(x, grad) -> x``, which updates the
    iterate ``x`` (shape, dtype and layout of ``x_nat``) in place.

    For hand-written attack loops (fastmix's own attacks use it): a call costs the kernel
    and a few attribute reads, against about 10 us of argument handling per
    :func:`pgd_step_` call on the CPU. ``step`` still checks that ``x`` and ``grad`` have
    ``x_nat``'s shape and device (ValueError otherwise) and falls back to
    :func:`pgd_step_` for an ``x`` in another layout or dtype.
    """
    V.float_tensor("x_nat", x_nat, min_dim=1)
    code, lo, hi, e, a = _contract(x_nat, x_nat, x_nat, eps, alpha, norm, lo, hi, check)
    return stepper_unchecked(x_nat, e, a, code, lo, hi, _backend.resolve(x_nat.device, backend))


def stepper_unchecked(x_nat: Tensor, e: Tensor, a: Tensor, code: int, lo: float = 0.0, hi: float = 1.0,
                      b: str | None = None):
    """:func:`pgd_stepper` after its contract: ``e``, ``a`` float32 ``(B,)`` tensors on
    ``x_nat``'s device, ``code`` 0 (L-inf) or 2 (L2), ``b`` a resolved backend (None: the
    default). For the attacks' loop, whose inputs were checked once per call."""
    if b is None:
        b = _backend.resolve(x_nat.device)
    fmt = L.memory_format(x_nat)
    shape, dtype, device = x_nat.shape, x_nat.dtype, x_nat.device
    xn = x_nat.contiguous(memory_format=fmt)
    kern = None if b == "torch" else L.kernel("pgd_step_", b)
    name = "linf" if code == 0 else "l2"

    def step(x: Tensor, grad: Tensor) -> Tensor:
        if x.shape != shape or grad.shape != shape or x.device != device or grad.device != device:
            _contract(x, grad, x_nat, e, a, name, lo, hi, False)  # raises, naming the argument
        if kern is None or x.dtype != dtype or not x.is_contiguous(memory_format=fmt):
            return pgd_step_(x, grad, x_nat, e, a, norm=name, lo=lo, hi=hi, backend=b, check=False)
        if grad.dtype not in V.FLOAT_DTYPES:
            V.float_tensor("grad", grad)
        kern(x, grad.to(dtype).contiguous(memory_format=fmt), xn, e, a, code, lo, hi)
        return x

    return step


# ------------------------------------------------------------------------ fake + register
def _fake(x, grad, x_nat, eps, alpha, norm, lo, hi):
    return torch.empty_like(x)


def _fake_(x, grad, x_nat, eps, alpha, norm, lo, hi):
    return None


L.register("pgd_step", fake=_fake)
L.register("pgd_step_", fake=_fake_)
