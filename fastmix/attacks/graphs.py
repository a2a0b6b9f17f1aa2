"""CUDA-graph capture of a whole K-step attack, and the cache of captured attacks.

A captured attack holds static input and output buffers; a replay copies the batch into
the inputs, replays the graph and returns clones of the outputs. The loop body has no host
synchronisation (no ``.item()``, no branch on a tensor value; the fused ops run with
``check=False`` after the first step), which is what makes the capture possible.

The cache (:data:`GRAPHS`) is keyed by the attacked module itself, held weakly: when the
module is garbage-collected its graphs go with it, and nothing in the cache keeps a module
alive (a captured graph references device memory, not Python objects). Per module it keys
the attack's settings, the input shapes/strides/dtypes and the modules' training flags
(and BatchNorm's ``track_running_stats``, which changes what a captured forward does);
callables among the settings (a custom loss, an EOT transform) are matched by identity
through weak references, so a new callable that happens to reuse a dead one's ``id`` never
replays the dead one's graph. When the module's parameters or buffers move to new storage
(``.to()``, ``.cuda()``) its graphs would read freed memory: they are dropped, not kept.
At most ``size`` graphs per module are kept, least recently used evicted and freed.
:func:`clear_graphs` frees everything (or one module's graphs) on request.
"""
from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["GraphCache", "GRAPHS", "clear_graphs", "capturable"]


def capturable(x: Tensor) -> bool:
    """Whether an attack on ``x`` can run through a CUDA graph (``x`` on a GPU)."""
    return x.is_cuda


class _Captured:
    """One attack captured in a CUDA graph with static input and output buffers.

    Holds no reference to ``fn`` or ``model`` after capture."""

    def __init__(self, fn: Callable, tensors: list[Tensor], model: nn.Module, check: bool):
        self.inputs = [torch.empty_like(t).copy_(t) for t in tensors]
        saved = [b.detach().clone() for b in model.buffers()]
        side = torch.cuda.Stream(device=tensors[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: autograd, cuDNN plans, lazy inits
            for i in range(3):
                fn(*self.inputs, check=check and i == 0)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # the warm-up must not move BatchNorm running statistics
            for b, v in zip(model.buffers(), saved):
                b.copy_(v)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs, check=False)

    def __call__(self, tensors: list[Tensor]):
        for s, t in zip(self.inputs, tensors):
            s.copy_(t)
        self.graph.replay()
        return tuple(None if o is None else o.clone() for o in self.outputs)


def _ref(obj):
    # a bound method is a fresh object on each attribute access: follow its function and self
    return weakref.WeakMethod(obj) if hasattr(obj, "__self__") and hasattr(obj, "__func__") else weakref.ref(obj)


class _Entry:
    __slots__ = ("captured", "refs")

    def __init__(self, captured, callables: Sequence):
        self.captured = captured
        self.refs = tuple(_ref(c) for c in callables)

    def matches(self, callables: Sequence) -> bool:
        return all(r() is not None and r() == c for r, c in zip(self.refs, callables))


class _ModuleGraphs:
    __slots__ = ("storage", "entries")

    def __init__(self):
        self.storage = None
        self.entries: OrderedDict = OrderedDict()


def _storage(model: nn.Module) -> tuple:
    return tuple(t.data_ptr() for t in itertools.chain(model.parameters(), model.buffers()))


class GraphCache:
    """Captured attacks per attacked module (held weakly), then per (settings, input
    layout, training flags); at most ``size`` per module, least recently used evicted."""

    def __init__(self, size: int = 8):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        self.size = size
        self._modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, model: nn.Module, settings, fn: Callable, tensors: list[Tensor], check: bool,
                 callables: Sequence = ()):
        """Replay the attack captured for ``model`` and ``settings`` on ``tensors``, capturing
        it first (``fn(*tensors, check=...)``) when there is none. ``callables``: objects the
        attack depends on that ``settings`` name only by ``id`` (matched by identity)."""
        slot = self._modules.get(model)
        if slot is None:
            slot = self._modules[model] = _ModuleGraphs()
        storage = _storage(model)
        if slot.storage != storage:  # new weights' storage: every graph of the old one is stale
            slot.entries.clear()
            slot.storage = storage
        key = (settings, tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors),
               tuple((m.training, getattr(m, "track_running_stats", None)) for m in model.modules()))
        entry = slot.entries.get(key)
        if entry is not None and not entry.matches(callables):
            del slot.entries[key]  # the callable it was captured with is gone or replaced
            entry = None
        if entry is None:
            entry = _Entry(_Captured(fn, tensors, model, check), callables)
            slot.entries[key] = entry
            while len(slot.entries) > self.size:
                slot.entries.popitem(last=False)
        else:
            slot.entries.move_to_end(key)
        return entry.captured(tensors)

    def __len__(self) -> int:
        """The number of captured graphs held (over every live module)."""
        return sum(len(s.entries) for s in list(self._modules.values()))

    def count(self, model: nn.Module) -> int:
        """The number of captured graphs held for ``model``."""
        slot = self._modules.get(model)
        return 0 if slot is None else len(slot.entries)

    def clear(self, model: nn.Module | None = None) -> None:
        """Free every captured graph, or only ``model``'s."""
        if model is None:
            self._modules.clear()
        else:
            self._modules.pop(model, None)


GRAPHS = GraphCache()


def clear_graphs(model: nn.Module | None = None) -> None:
    """Free the captured attack graphs (their static buffers and memory pools): all of
    them, or only those of ``model``."""
    GRAPHS.clear(model)
