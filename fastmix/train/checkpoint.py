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

import io
import os
import random
import uuid

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


_write_hook = None


def set_write_hook(fn):
    """Fault injection for tests: ``fn(stage, path)`` is called after each stage of
    :func:`commit_epoch` (``"best-staged"``, ``"last-written"``, ``"best-written"``), so a
    test can stop the process between two writes. ``None`` removes it; returns the old hook."""
    global _write_hook
    old, _write_hook = _write_hook, fn
    return old


def _stage(stage: str, path: str) -> None:
    if _write_hook is not None:
        _write_hook(stage, path)


def _write_bytes_atomic(data, path: str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync and
    ``os.replace``. The file is created with mode 0666 minus the user's umask (like every
    other tool; ``tempfile.mkstemp`` would make it 0600). A failed write (a full disk is an
    ``OSError`` with errno ENOSPC) removes the temporary file and leaves ``path`` as it was."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".tmp-{os.path.basename(path)}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``.

    The checkpoint is serialised in memory first, so a full disk surfaces as a plain
    ``OSError`` (ENOSPC) from the write, not as an error inside torch's zip writer."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    _write_bytes_atomic(buf.getbuffer(), path)


def write_text_atomic(text: str, path: str) -> None:
    _write_bytes_atomic(text.encode(), path)


PENDING_BEST = "best.pt.pending"


def commit_epoch(state: dict, out: str, is_best: bool) -> None:
    """Write an epoch's checkpoint(s) so that a kill at any point leaves a run directory
    whose ``best.pt`` is the best epoch recorded in ``last.pt``'s history, or can be made
    so by :func:`recover`: a new best goes to ``best.pt.pending`` first, then ``last.pt`` is
    replaced (the commit point), then the pending best is moved onto ``best.pt``."""
    pending, last, best = (os.path.join(out, n) for n in (PENDING_BEST, "last.pt", "best.pt"))
    if is_best:
        save_atomic(state, pending)
        _stage("best-staged", pending)
    save_atomic(state, last)
    _stage("last-written", last)
    if is_best:
        os.replace(pending, best)
        _stage("best-written", best)


def recover(out: str, last_state: dict) -> str | None:
    """Finish or undo an interrupted :func:`commit_epoch` in ``out`` (called on resume).

    A ``best.pt.pending`` whose epoch is the best epoch ``last.pt`` records was committed
    (``last.pt`` was written after it): it becomes ``best.pt``. Any other pending file
    belongs to an epoch that never committed and is removed. Returns ``"rolled-forward"``,
    ``"rolled-back"`` or None."""
    pending = os.path.join(out, PENDING_BEST)
    if not os.path.exists(pending):
        return None
    best_epoch = int(last_state.get("best", {}).get("epoch", -1))
    try:
        pend_epoch = int(torch.load(pending, map_location="cpu", weights_only=True).get("epoch", -2))
    except Exception:  # noqa: BLE001 - a torn pending file is simply dropped
        pend_epoch = -2
    if pend_epoch == best_epoch and pend_epoch == int(last_state.get("epoch", -3)):
        os.replace(pending, os.path.join(out, "best.pt"))
        return "rolled-forward"
    os.unlink(pending)
    return "rolled-back"
