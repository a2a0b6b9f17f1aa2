"""A uniform random start in the eps-ball: ``fastmix::random_start``.

The random draws come from torch (:func:`draw_random_start_noise`), shared by every
backend, so the same generator state gives the same start whatever the backend; the
kernels do the deterministic rest. No gradient. Kernels: ``csrc/cpu/attack_cpu.cpp``,
``csrc/cuda/attack_cuda.cu``, ``fastmix/ops/triton/pgd_step.py``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend
from . import _library as L
from . import _validate as V
from ._pgd_step import flat_norm, per_sample_ref

L2_NOISE_EPS = 1e-12


# ------------------------------------------------------------------------------ reference
def draw_random_start_noise(x_nat: Tensor, norm: str, generator=None):
    """The random draws ``random_start`` uses: ``(noise, radius)``; float32 ``U[0,1)`` noise
    and ``None`` for L-inf, ``N(0, I)`` noise and a ``(B,)`` radius ``U^(1/D)`` for L2."""
    shape, dev = x_nat.shape, x_nat.device
    if norm == "linf":
        noise = torch.rand(shape, generator=generator, device=dev, dtype=torch.float32)
        return noise, None
    noise = torch.randn(shape, generator=generator, device=dev, dtype=torch.float32)
    d = max(1, x_nat[0].numel()) if x_nat.shape[0] > 0 else 1
    u = torch.rand((shape[0],), generator=generator, device=dev, dtype=torch.float32)
    return noise, u.pow(1.0 / d)  # radius of a uniform draw in the D-dim ball


def random_start_from_noise_ref(x_nat: Tensor, noise: Tensor, eps, radius, *, norm: str = "linf",
                                lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """The deterministic part of ``random_start`` given its random draws.

    L-inf: ``noise ~ U[0,1)`` and ``clip(x_nat + eps*(2*noise-1), lo, hi)``.
    L2: ``noise ~ N(0, I)``, ``radius ~ U[0,1)**(1/D)`` per sample and
    ``clip(x_nat + eps*radius*noise/max(||noise||, 1e-12), lo, hi)``.
    """
    nf, zf = x_nat.float(), noise.float()
    e = per_sample_ref(eps, x_nat)
    if norm == "linf":
        y = nf + e * (2.0 * zf - 1.0)
    elif norm == "l2":
        r = per_sample_ref(radius, x_nat)
        y = nf + (e * r) * (zf / torch.clamp(flat_norm(zf), min=L2_NOISE_EPS))
    else:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return torch.clamp(y, lo, hi).to(x_nat.dtype)


def random_start_ref(x_nat: Tensor, eps, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """Uniform random point of the eps-ball around ``x_nat`` (clipped to the image range)."""
    noise, radius = draw_random_start_noise(x_nat, norm, generator)
    return random_start_from_noise_ref(x_nat, noise, eps, radius, norm=norm, lo=lo, hi=hi)


# ------------------------------------------------------------------------------- wrapper
def random_start(x_nat: Tensor, eps, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
                 generator: torch.Generator | None = None, backend: str | None = None,
                 check: bool | None = None) -> Tensor:
    """A uniform random point of the eps-ball around ``x_nat``, clipped to ``[lo, hi]``.

    L-inf: ``x_nat + U(-eps, eps)`` per element.  L2: a uniform point of the D-dimensional
    ball (Gaussian direction, radius ``eps * U^(1/D)``).  The random draws come from torch
    (``generator`` if given), so every backend gives the same start for the same seed.
    ``x_nat`` is ``(B, ...)`` float32/bfloat16/float16; ``eps`` a float ``>= 0`` or a ``(B,)``
    tensor. ``check=True`` (or ``FASTMIX_CHECK=1``) also scans ``x_nat`` and an ``eps``
    tensor for bad values; metadata is always checked.
    """
    V.float_tensor("x_nat", x_nat, min_dim=1)
    code = V.norm_code(norm)
    lo, hi = V.bounds(lo, hi)
    scan = V.scans(check)
    if scan:
        V.finite("x_nat", x_nat)
    e = V.per_sample("eps", eps, x_nat.shape[0], x_nat.device, lo=0.0, check=scan)
    return random_start_unchecked(x_nat, e, code, lo, hi, _backend.resolve(x_nat.device, backend), generator)


def random_start_unchecked(x_nat: Tensor, e: Tensor, code: int, lo: float = 0.0, hi: float = 1.0,
                           b: str | None = None, generator=None) -> Tensor:
    """:func:`random_start` after its contract: ``e`` a float32 ``(B,)`` tensor on
    ``x_nat``'s device, ``code`` 0 (L-inf) or 2 (L2), ``b`` a resolved backend (None: the
    default). For the attacks' loop, whose inputs were checked once per call."""
    if b is None:
        b = _backend.resolve(x_nat.device)
    name = "linf" if code == 0 else "l2"
    noise, radius = draw_random_start_noise(x_nat, name, generator)
    if b == "torch":
        return random_start_from_noise_ref(x_nat, noise, e, radius, norm=name, lo=lo, hi=hi)
    fmt = L.memory_format(x_nat)
    if radius is None:
        radius = noise.new_empty((0,))
    return L.kernel("random_start", b)(x_nat.contiguous(memory_format=fmt),
                                       noise.contiguous(memory_format=fmt), e, radius, code, lo, hi)


def _fake(x_nat, noise, eps, radius, norm, lo, hi):
    return torch.empty_like(x_nat)


L.register("random_start", fake=_fake)
