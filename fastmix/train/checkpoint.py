"""Writing checkpoints atomically, and every random-number state a run needs to resume exactly.

Reading one (and rebuilding its model) is :mod:`fastmix.checkpoint`, beside the models, so
that evaluation can load a checkpoint without importing the trainer; :func:`load` and
:data:`FORMAT` are re-exported here.

A checkpoint is written to a temporary file in the target directory, flushed to disk and
moved into place with ``os.replace``, so a run killed mid-write leaves the previous
checkpoint intact. It holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import torch

from ..checkpoint import FORMAT, read as load  # noqa: F401  (re-exported)


def rng_state() -> dict:
    """Python, NumPy, torch CPU and (when initialised) CUDA generator states."""
    st = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                  "has_gauss": int(st[3]), "gauss": float(st[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(v):
    # random.setstate needs tuples; a round trip through some serialisers gives lists.
    return tuple(_tuplify(x) for x in v) if isinstance(v, (list, tuple)) else v


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(text: str, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
