"""fastmix: fused kernels, fast attacks and training loops for mixup-style adversarial training.

``import fastmix`` is safe on any machine: it loads the compiled extension
(``fastmix._C``, and Triton's ops where Triton can run) so that every
``torch.ops.fastmix.*`` op is complete at once, but never initialises CUDA, and a
missing backend falls back to the torch reference with one warning.
``python -m fastmix.info`` prints every backend's status.

Layers (DESIGN.md; the map is docs/LAYERS.md, enforced by ``scripts/lint_imports.sh``):
``fastmix.ops`` (fused primitives, ``SoftTarget``) < ``fastmix.attacks`` < ``fastmix.methods``
< ``fastmix.eval`` < ``fastmix.train`` < ``fastmix.cli``; beside them ``fastmix.data``,
``fastmix.models``, ``fastmix.checkpoint`` (load a model from a checkpoint) and
``fastmix.dist``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from . import ops  # noqa: E402  (loads fastmix._C; no CUDA initialisation)

# Attack classes and friends are exported lazily so that `import fastmix` stays light.
_LAZY = {
    "PGD": "fastmix.attacks", "FGSM": "fastmix.attacks", "CW": "fastmix.attacks",
    "APGD": "fastmix.attacks", "APGDT": "fastmix.attacks", "AutoAttack": "fastmix.attacks",
    "MixupInference": "fastmix.methods.mixup_inference",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("attacks", "models", "data", "methods", "train", "eval", "kernels", "info", "checkpoint", "dist"):
        return importlib.import_module(f"fastmix.{name}")
    raise AttributeError(f"module 'fastmix' has no attribute {name!r}")


def backends() -> dict:
    """{backend: (available, reason)} for torch, cpp, cuda and triton."""
    from . import _backend
    return _backend.report()
