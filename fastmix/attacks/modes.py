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


def module_list(model: nn.Module) -> list:
    """``model`` and every submodule once, breadth first. A plain loop over ``_modules``:
    ``Module.modules()`` also builds a prefixed name per module."""
    mods, seen, i = [model], {id(model)}, 0
    while i < len(mods):
        for c in mods[i]._modules.values():
            if c is not None and id(c) not in seen:
                seen.add(id(c))
                mods.append(c)
        i += 1
    return mods


_PLAIN_TYPES: dict = {}  # per class; classes are few (one entry each, never evicted)


def plain_module_type(cls) -> bool:
    """Whether ``cls`` keeps ``nn.Module``'s ``train`` and ``__setattr__``, so that its
    ``training`` flag is a plain instance attribute that can be written directly."""
    ok = _PLAIN_TYPES.get(cls)
    if ok is None:
        ok = _PLAIN_TYPES[cls] = cls.train is _MODULE_TRAIN and cls.__setattr__ is _MODULE_SETATTR
    return ok


def set_training(mods: list, flags) -> None:
    """Write each module's ``training`` flag (a bool, or one per module) where it differs.
    Straight into the instance dict for plain modules (what ``Module.train`` ends up doing,
    without ``Module.__setattr__``'s dictionary lookups); through ``__setattr__`` for the rest."""
    if isinstance(flags, bool):
        flags = [flags] * len(mods)
    for m, f in zip(mods, flags):
        if m.training is not f:
            if plain_module_type(type(m)):
                m.__dict__["training"] = f
            else:
                m.training = f


class attack_mode:
    """Run an attack on ``model``: every parameter ``requires_grad=False`` (no weight
    gradient is ever computed), modules in ``bn_mode`` ("eval": BatchNorm uses running
    statistics, dropout off; "train": the whole model in training mode, as AVmixup and
    FastAT attack; "keep": untouched; or torchattacks' ``(model, batchnorm, dropout)``
    triple). Each module's ``training`` flag and each parameter's ``requires_grad`` are
    restored on exit, also when the body raises. Use as ``with attack_mode(model, mode):``.

    It is entered once per attack call, also inside a training step, so it costs a small
    fraction of ``model.eval(); model.train()``: one walk of the module tree
    (:func:`module_list`), flags written in place (through ``Module.train`` only where a
    module overrides it), and only the parameters it froze are unfrozen."""

    __slots__ = ("model", "mode", "modules", "training", "frozen")

    def __init__(self, model: nn.Module, bn_mode="eval"):
        self.model, self.mode = model, check_mode(bn_mode)

    def __enter__(self) -> nn.Module:
        model, mode = self.model, self.mode
        modules = module_list(model)
        training = [m.training for m in modules]
        frozen = [p for m in modules for p in m._parameters.values() if p is not None and p.requires_grad]
        plain = all(type(m).train is _MODULE_TRAIN for m in modules)
        self.modules, self.training, self.frozen = modules, training, frozen
        try:
            for p in frozen:
                p.requires_grad_(False)
            if plain and isinstance(mode, str) and mode != "keep":
                set_training(modules, mode == "train")
            else:
                _apply_mode(model, mode)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return model

    def __exit__(self, *exc) -> bool:
        set_training(self.modules, self.training)
        for p in self.frozen:  # a parameter shared by two modules is listed twice: set twice, same value
            p.requires_grad_(True)
        return False


_MODULE_TRAIN = nn.Module.train
NULL_CONTEXT = contextlib.nullcontext()  # reusable: a nullcontext holds no state
_MODULE_SETATTR = nn.Module.__setattr__


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
        return NULL_CONTEXT
    # no weight-cast cache: a captured graph must re-cast the (updated) weights each replay
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)
