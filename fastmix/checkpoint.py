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


def load_model(path: str, device: str = "auto") -> tuple[fmodels.MixableNet, dict]:
    """The model a checkpoint holds, rebuilt from its ``model_args`` and weights, in eval
    mode on ``device``; returns ``(model, checkpoint)`` (the checkpoint's ``config`` names
    the dataset)."""
    st = read(path)
    margs = dict(st["model_args"])
    model = fmodels.build(margs.pop("name"), margs.pop("num_classes"), margs.pop("in_channels"),
                          margs.pop("image_size"), **margs)
    model.load_state_dict(st["model"])
    return model.to(resolve_device(device)).eval(), st
