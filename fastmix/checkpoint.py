"""Reading a fastmix checkpoint and rebuilding the model it holds (beside :mod:`fastmix.models`).

A checkpoint (written by :class:`fastmix.train.Trainer`, see :mod:`fastmix.train.checkpoint`
for the atomic writer and the RNG state) is a dict of tensors and plain values that loads
with ``torch.load(weights_only=True)``: no file executes code. ``model_args`` holds what
:func:`fastmix.models.build` needs, ``model`` the weights, ``config`` the run's
configuration (its dataset, its training eps).

>>> model, ck = load_model("runs/digits-at/last.pt", device="cpu")   # eval mode
"""
from __future__ import annotations

import os

import torch

from . import models as fmodels
from .models import user as fuser

__all__ = ["FORMAT", "read", "load_model", "resolve_device"]

FORMAT = "fastmix-checkpoint/1"


def read(path: str, map_location="cpu") -> dict:
    """Load a fastmix checkpoint; FileNotFoundError/ValueError name the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found (train writes DIR/last.pt and DIR/best.pt)")
    ck = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    return ck


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (the GPU of this rank when there is one, else the CPU), ``"cuda"`` (this
    rank's GPU), or any torch device string."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def load_model(path: str, device: str = "auto", *, model=None) -> tuple[torch.nn.Module, dict]:
    """The model a checkpoint holds, rebuilt from its ``model_args`` and weights, in eval
    mode on ``device``; returns ``(model, checkpoint)`` (the checkpoint's ``config`` names
    the dataset).

    ``model``: for a run of a model of your own: the ``nn.Module`` to load the weights into,
    or the import string ``"pkg.mod:build"`` to build it with (see
    :mod:`fastmix.models.user`). A checkpoint that names a user model needs it: loading
    never imports code named in a file.
    """
    st = read(path)
    margs = dict(st["model_args"])
    name = margs.pop("name")
    facts = [margs.pop(k) for k in ("num_classes", "in_channels", "image_size")]
    if isinstance(model, torch.nn.Module):
        pass
    elif model is not None or fuser.is_import_string(name) or (isinstance(name, str) and name.startswith("<")):
        if model is None:
            raise ValueError(f"{path} holds a model of your own ({name}); pass it to load it: model=<nn.Module> or "
                             f"model='package.module:build' (fastmix eval --model ...). A checkpoint never imports "
                             f"code by itself")
        if not fuser.is_import_string(model):
            raise ValueError(f"model must be an nn.Module or an import string 'package.module:build', got {model!r}")
        model = fuser.build(model, *facts, **margs)  # margs: mean, std and the recorded model options
    else:
        model = fmodels.build(name, *facts, **margs)
    model.load_state_dict(st["model"])
    return model.to(resolve_device(device)).eval(), st
