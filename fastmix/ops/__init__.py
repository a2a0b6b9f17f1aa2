"""fastmix's fused primitives (layer 1 of DESIGN.md).

Public ops (each also has a torch reference ``<op>_ref``), one module per op
(``fastmix/ops/_<op>.py``: wrapper, metadata contract, reference, fake, autograd):

- :func:`pgd_step` / :func:`pgd_step_` -- the PGD sign-step-project update (L-inf, L2);
  :func:`pgd_stepper` -- the same in place, its arguments checked once for a K-step loop
- :func:`random_start` -- a uniform point of the eps-ball
- :func:`mix` -- batched gather-mixing ``lam*a + (1-lam)*b[index]``
- :func:`soft_cross_entropy` -- CE against the compact two-part soft target (METHODS.md 1.2)
- :func:`cw_margin` -- the Carlini-Wagner margin loss

Importing this package loads every backend that can load (``fastmix._C``; the Triton
ops where Triton can run) and registers each op's fake and autograd on all of them, so
``torch.ops.fastmix.*`` is complete from ``import fastmix`` on. A call checks metadata
only (``ValueError`` naming the argument and value), never reads data back to the host
unless asked (``check=True`` or ``FASTMIX_CHECK=1``: NaN and range scans), and runs the
backend fixed at import: ``backend=`` if given, else ``FASTMIX_BACKEND``, else the
fastest present (C++ > torch on CPU; CUDA > Triton > torch on GPU; change it with
:func:`set_default_backend`, scope it with :func:`use_backend`). An index or label out
of range is an error raised by the kernel itself on every backend.
"""
from __future__ import annotations

import torch

from .. import _backend
from . import _library  # noqa: F401  (probes and loads the backends once)
from ._cw_margin import cw_margin, cw_margin_ref
from ._mix import mix, mix_ref
from ._pgd_step import L2_GRAD_EPS, pgd_step, pgd_step_, pgd_step_ref, pgd_stepper
from ._random_start import (L2_NOISE_EPS, draw_random_start_noise, random_start,
                            random_start_from_noise_ref, random_start_ref)
from ._soft_cross_entropy import soft_cross_entropy, soft_cross_entropy_ref, soft_target_ref
from .target import SoftTarget, label_of  # noqa: F401,E402  (the compact target, beside the ops)

__all__ = [
    "pgd_step", "pgd_step_", "pgd_stepper", "random_start", "mix", "soft_cross_entropy", "cw_margin",
    "pgd_step_ref", "random_start_ref", "mix_ref", "soft_cross_entropy_ref", "cw_margin_ref",
    "soft_target_ref", "draw_random_start_noise", "random_start_from_noise_ref",
    "available_backends", "pick_backend", "set_default_backend", "use_backend",
    "L2_GRAD_EPS", "L2_NOISE_EPS",
]


def available_backends(device="cpu") -> list[str]:
    """Backends that can run tensors on ``device`` in this process."""
    return _backend.backends_for(torch.device(device).type)


def pick_backend(device="cpu", backend: str | None = None) -> str:
    """The backend a call on ``device`` would use."""
    return _backend.resolve(torch.device(device), backend)


def set_default_backend(backend: str | None, device_type: str = "cuda") -> None:
    """Fix the backend calls on ``device_type`` use when they name none (e.g. ``"triton"``
    instead of ``"cuda"`` on a GPU); None restores the probed default. Made once, not per call."""
    _backend.set_default(backend, device_type)


def use_backend(backend: str, device_type: str | None = None):
    """Context manager: calls without ``backend=`` use ``backend`` inside the block (tests,
    benchmarks). Process-wide, not thread-local."""
    return _backend.use(backend, device_type)
