"""Model state during an attack: parameters frozen, the BatchNorm/dropout mode, autocast.

:func:`attack_mode` is the context manager every attack runs its model under: each
parameter ``requires_grad=False`` (so no weight gradient is ever computed or accumulated),
the modules in the requested mode, and both restored on exit, also when the body raises.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["BN_MODES", "check_mode", "attack_mode", "autocast_dtype", "autocast_context"]

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
    restored on exit, also when the body raises.

    It is entered once per attack call, also inside a training step, so it walks the
    module tree once: the flags are read and set in one pass (through ``Module.train``
    only where a module overrides it), and only the parameters it froze are unfrozen."""
    mode = check_mode(bn_mode)
    modules = list(model.modules())
    training = [m.training for m in modules]
    frozen, seen = [], set()
    for m in modules:
        for p in m._parameters.values():
            if p is not None and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                frozen.append(p)
    try:
        for p in frozen:
            p.requires_grad_(False)
        if isinstance(mode, str) and mode != "keep" and all(type(m).train is _MODULE_TRAIN for m in modules):
            flag = mode == "train"
            for m in modules:
                if m.training is not flag:  # Module.__setattr__ is slow: write only what changes
                    m.training = flag
        else:
            _apply_mode(model, mode)
        yield model
    finally:
        for m, t in zip(modules, training):
            if m.training is not t:
                m.training = t
        for p in frozen:
            p.requires_grad_(True)


_MODULE_TRAIN = nn.Module.train


def autocast_dtype(autocast) -> torch.dtype | None:
    """None, "bf16"/"bfloat16", "fp16"/"float16" or a torch dtype -> the autocast dtype."""
    table = {None: None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16,
             torch.bfloat16: torch.bfloat16, torch.float16: torch.float16}
    if autocast not in table:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    return table[autocast]


def autocast_context(device: torch.device, dtype):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a null context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    # no weight-cast cache: a captured graph must re-cast the (updated) weights each replay
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)
