"""A model of your own, named by an import string (``fastmix train --model pkg.mod:build``).

``"pkg.mod:attr"`` names a callable (a function or an ``nn.Module`` class) in an importable
module (``sys.path``, and the current directory, as ``python -m`` would see it). It is
called with the dataset's facts it declares by name (``num_classes``, ``in_channels``,
``image_size``, ``mean``, ``std``: declare ``mean``/``std`` to normalise inside the model,
since fastmix feeds images in [0, 1]) plus the model options (``--model-opt width=16``), and
must return an ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, K)`` logits.

A checkpoint records the import string, but loading one never imports it by itself: code
runs only when the caller names it again (:func:`fastmix.checkpoint.load_model`'s
``model=``, ``fastmix eval --model``).
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys

from torch import nn

FACTS = ("num_classes", "in_channels", "image_size", "mean", "std")


def is_import_string(name) -> bool:
    """Whether ``name`` looks like ``"module.path:attribute"`` (not a built-in model name)."""
    return isinstance(name, str) and ":" in name


def resolve(spec: str, option: str = "model"):
    """The callable an import string names; ValueError naming ``option`` and the part that failed."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr or any(not p.isidentifier() for p in mod_name.split(".") + attr.split(".")):
        raise ValueError(f"{option} must be a built-in model name or an import string 'package.module:callable', "
                         f"got {spec!r}")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != mod_name.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise ValueError(f"{option}={spec!r}: cannot import {mod_name!r}: {e}") from e
        sys.path.append(cwd)  # a console script does not see the current directory; python -m does
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e2:
            raise ValueError(f"{option}={spec!r}: cannot import {mod_name!r} from sys.path or the current "
                             f"directory: {e2}") from e2
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{option}={spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{option}={spec!r} names a {type(obj).__name__}, not a callable that builds a model")
    return obj


def build(spec: str, num_classes: int, in_channels: int, image_size: int, *, mean=None, std=None,
          **options) -> nn.Module:
    """Build the model an import string names (see the module docstring).

    Args:
        spec: ``"package.module:callable"``.
        num_classes, in_channels, image_size, mean, std: the dataset's facts, passed to the
            callable for each of these it declares as a parameter.
        options: the model options, passed as keywords (they win over a fact of the same name).
    Returns:
        the ``nn.Module`` the callable returned. ValueError (naming ``model`` or
        ``model_opts``) when the callable cannot take an option or returns no module.
    """
    fn = resolve(spec)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    facts = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std)
    kwargs = {k: v for k, v in facts.items() if k in params}
    bad = sorted(k for k in options if k not in params and not var_kw)
    if bad:
        names = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        raise ValueError(f"model_opts {bad} are not parameters of {spec} (it takes {names})")
    kwargs.update(options)
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


__all__ = ["FACTS", "build", "is_import_string", "resolve"]
