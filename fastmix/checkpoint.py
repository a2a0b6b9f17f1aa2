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
import pickle

import torch

from . import models as fmodels
from .models import user as fuser

__all__ = ["FORMAT", "read", "load_model", "resolve_device"]

FORMAT = "fastmix-checkpoint/1"


def read(path: str, map_location="cpu") -> dict:
    """Load a fastmix checkpoint; FileNotFoundError/ValueError name the path."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} is a directory (pass the file: {os.path.join(path, 'last.pt')} "
                                f"or {os.path.join(path, 'best.pt')})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found (train writes DIR/last.pt and DIR/best.pt)")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except (PermissionError, IsADirectoryError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, an empty file, a foreign pickle
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
        refused = isinstance(e, pickle.UnpicklingError) and head[:2] == b"PK"
        why = ("the file is empty" if size == 0 else
               "it holds objects other than tensors and plain values, which would run code to load" if refused else
               "a damaged or truncated zip archive" if head[:2] == b"PK" else
               "not a torch checkpoint: no zip archive")
        raise ValueError(f"{path} is not a readable checkpoint ({why}, {size} bytes): use a last.pt or best.pt "
                         f"written by fastmix train (nothing in the file was executed)") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (use a last.pt or best.pt written by fastmix train)")
    for key in ("model", "model_args", "config"):
        if key not in ck:
            raise ValueError(f"{path} is not a complete {FORMAT} checkpoint: it has no {key!r}")
    return ck


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (the GPU of this rank when there is one, else the CPU), ``"cuda"`` (this
    rank's GPU), or any torch device string."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {name!r} asked for a GPU but {why} (torch.cuda.is_available() is False); "
                             f"use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are only {torch.cuda.device_count()} GPU(s)")
    return dev


def load_model(path: str, device: str = "auto", *, model=None) -> tuple[torch.nn.Module, dict]:
    """The model a checkpoint holds, rebuilt from its ``model_args`` and weights, in eval
    mode on ``device``; returns ``(model, checkpoint)`` (the checkpoint's ``config`` names
    the dataset).

    ``model``: for a run of a model of your own: the ``nn.Module`` to load the weights into,
    or the import string ``"pkg.mod:build"`` to build it with (see
    :mod:`fastmix.models.user`). A checkpoint that names a user model needs it: loading
    never imports code named in a file.
    """
    dev = resolve_device(device)
    st = read(path)
    margs = dict(st["model_args"])
    name = margs.pop("name", None)
    try:
        facts = [margs.pop(k) for k in ("num_classes", "in_channels", "image_size")]
    except KeyError as e:
        raise ValueError(f"{path}: its model_args lack {e} (the checkpoint was edited or is corrupt)") from None
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
        try:
            model = fmodels.build(name, *facts, **margs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: its model_args do not describe a buildable model ({e})") from None
    try:
        model.load_state_dict(st["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0][:200]
        raise ValueError(f"{path}: the weights do not fit the model its model_args describe ({name}, "
                         f"{ {k: v for k, v in margs.items() if k not in ('mean', 'std')} }): {detail} (the "
                         f"checkpoint was edited or is corrupt, or belongs to another model)") from None
    return model.to(dev).eval(), st
