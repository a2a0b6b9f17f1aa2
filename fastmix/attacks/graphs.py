"""CUDA-graph capture of a whole K-step attack, and the cache of captured attacks.

A captured attack holds static input and output buffers; a replay copies the batch into
the inputs, replays the graph and returns clones of the outputs. The loop body has no host
synchronisation (no ``.item()``, no branch on a tensor value; the fused ops run with
``check=False`` after the first step), which is what makes the capture possible.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["GraphCache", "GRAPHS", "clear_graphs"]


class _Captured:
    """One attack captured in a CUDA graph with static input and output buffers."""

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


class GraphCache:
    """Captured attacks keyed by (model, settings, input shapes/strides); least recently
    used evicted beyond ``size`` (each entry holds its model and static buffers)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: OrderedDict = OrderedDict()

    def __call__(self, key, fn, tensors: list[Tensor], model: nn.Module, check: bool):
        key = (key, tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors),
               tuple(p.data_ptr() for p in model.parameters()), tuple(m.training for m in model.modules()))
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Captured(fn, tensors, model, check)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return entry(tensors)

    def clear(self) -> None:
        self.entries.clear()


GRAPHS = GraphCache()


def clear_graphs() -> None:
    """Drop every captured attack graph (frees their static buffers and model references)."""
    GRAPHS.clear()
