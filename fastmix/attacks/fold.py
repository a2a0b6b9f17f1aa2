"""BatchNorm folding for eval-mode attacks: ``conv -> BN`` pairs computed as one conv.

In eval mode a BatchNorm is a per-channel affine map with fixed numbers,
``bn(z) = (z - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``, so a convolution
followed only by it is the convolution with weight ``W * s`` and bias ``(b - mean) * s +
beta``. An attack that runs the model in eval mode (PGD-AT's, TRADES's, GAIRAT's and
AIT's attacks, every evaluation attack) runs K forwards and K input-backwards through
every such pair; folded, each pair costs one conv forward and one conv input-backward,
and the BN's two passes over the activations disappear.

:func:`fold_bn` is a context manager that folds, for the duration of the block, every
``Conv{1,2,3}d -> BatchNorm{1,2,3}d`` pair of a model whose convolution output feeds
nothing but that BatchNorm (found by tracing each submodule with ``torch.fx``; parts that
do not trace are looked into module by module), and leaves the model untouched: no
parameter, buffer or module is replaced, only the pair's ``forward`` is overridden on the
instance and removed again on exit (also when the block raises). Pairs whose BatchNorm is
in training mode on entry are left alone, and a folded pair whose BatchNorm is switched to
training mode inside the block runs the original ``conv -> BN`` (so a ``bn_mode="train"``
attack inside the block is still exact). The folded weights are
computed on entry from the current parameters and running statistics: the model must not
be trained inside the block. They live in buffers kept per convolution and rewritten in
place on every entry, so a CUDA graph captured inside the block stays valid on the next
entry.

Results equal the unfolded model within float32 rounding (the tests check logits and
input gradients against it).
"""
from __future__ import annotations

import contextlib
import weakref

import torch
from torch import Tensor, nn

__all__ = ["fold_bn", "foldable_pairs", "FoldedPair"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BNS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}

# model -> its (conv, bn) pairs, found once per model object
_PAIRS: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()
# conv -> (weight buffer, bias buffer) of its folded form, rewritten in place on each entry
_BUFFERS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _is_pair(conv, bn) -> bool:
    if type(conv) not in _CONVS.values() or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        return False
    dims = {v: k for k, v in _CONVS.items()}[type(conv)]
    return (isinstance(bn, _BNS[dims]) and bn.num_features == conv.out_channels
            and bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None)


def _trace_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) submodule names of ``module``'s own forward where the conv's output has
    the BN as its only user; [] when the forward does not trace."""
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception:  # data-dependent Python, unsupported calls: look into the children instead
        return []
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    out = []
    for n in gm.graph.nodes:
        if n.op != "call_module" or len(n.users) != 1:
            continue
        (user,) = n.users
        if (user.op == "call_module" and user.args and user.args[0] is n and len(user.args) == 1
                and not user.kwargs and calls[n.target] == 1 and calls[user.target] == 1):
            out.append((n.target, user.target))
    return out


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The ``(conv, bn)`` module pairs :func:`fold_bn` folds in ``model`` (cached per model
    object; a submodule already seen reuses its pairs, so a thin wrapper made per call,
    such as a normalisation layer around the model, costs no new trace)."""
    pairs = _PAIRS.get(model)
    if pairs is None:
        pairs = []
        _collect(model, pairs, set(), root=True)
        _PAIRS[model] = pairs
    return pairs


def _collect(module: nn.Module, pairs: list, seen: set, root: bool = False) -> None:
    cached = None if root else _PAIRS.get(module)
    if cached is not None:
        for conv, bn in cached:
            if id(conv) not in seen and id(bn) not in seen:
                seen.update((id(conv), id(bn)))
                pairs.append((conv, bn))
        return
    children = list(module.children())
    if not children:
        return
    for cname, bname in _trace_pairs(module):
        conv, bn = module.get_submodule(cname), module.get_submodule(bname)
        if _is_pair(conv, bn) and id(bn) not in seen and id(conv) not in seen:
            seen.update((id(bn), id(conv)))
            pairs.append((conv, bn))
    for child in children:
        _collect(child, pairs, seen)


class FoldedPair:
    """One folded ``conv -> BN`` pair while the context is open (its buffers and originals)."""

    def __init__(self, conv: nn.Module, bn: nn.Module):
        self.conv, self.bn = conv, bn
        self.weight, self.bias = self._buffers()
        self.refresh()

    def _buffers(self):
        w = self.conv.weight
        buf = _BUFFERS.get(self.conv)
        if buf is None or buf[0].shape != w.shape or buf[0].dtype != w.dtype or buf[0].device != w.device:
            buf = (torch.empty_like(w, memory_format=torch.preserve_format),
                   torch.empty(w.shape[0], dtype=w.dtype, device=w.device))
            _BUFFERS[self.conv] = buf
        return buf

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the folded weight and bias in place from the current parameters and statistics."""
        conv, bn = self.conv, self.bn
        var, mean = bn.running_var.float(), bn.running_mean.float()
        s = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            s = s * bn.weight.float()
        shift = -mean * s
        if conv.bias is not None:
            shift = shift + conv.bias.float() * s
        if bn.bias is not None:
            shift = shift + bn.bias.float()
        view = (-1,) + (1,) * (conv.weight.dim() - 1)
        self.weight.copy_(conv.weight.float() * s.view(view))
        self.bias.copy_(shift)

    def install(self) -> None:
        conv, bn, pair = self.conv, self.bn, self
        self._saved = (conv.__dict__.get("forward"), bn.__dict__.get("forward"))
        conv_forward, bn_forward = conv.forward, bn.forward

        def folded_conv(x: Tensor) -> Tensor:
            if bn.training:
                return conv_forward(x)
            return conv._conv_forward(x, pair.weight, pair.bias)

        def folded_bn(z: Tensor) -> Tensor:
            return bn_forward(z) if bn.training else z

        conv.forward, bn.forward = folded_conv, folded_bn

    def remove(self) -> None:
        for m, saved in zip((self.conv, self.bn), self._saved):
            m.__dict__.pop("forward", None)
            if saved is not None:
                m.forward = saved


def fold_bn(model: nn.Module, enabled: bool = True):
    """Fold every ``conv -> BatchNorm`` pair of ``model`` into the conv for the duration of
    the block (see the module docstring); yields the list of :class:`FoldedPair` (empty when
    ``enabled`` is False or the model has none). The model is as before on exit.

    Args:
        model: an eager ``nn.Module`` (not a ``torch.compile`` wrapper: compiled code would
            keep the unfolded forward).
        enabled: False makes this a no-op context (for ``fold_bn(model, option)``).
    """
    if not enabled:
        return contextlib.nullcontext([])
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if hasattr(model, "_orig_mod"):
        raise ValueError("fold_bn needs the eager model, not a torch.compile wrapper; fold model._orig_mod "
                         "and compile after folding, or leave fold_bn off with compile")
    # A BatchNorm in training mode now (a train-mode attack: FastAT, AVmixup) cannot fold;
    # skipping it keeps such attacks free of the refresh cost.
    pairs = [FoldedPair(c, b) for c, b in foldable_pairs(model) if not b.training]
    return _installed(pairs) if pairs else contextlib.nullcontext([])


@contextlib.contextmanager
def _installed(pairs: list):
    installed = []
    try:
        for p in pairs:
            p.install()
            installed.append(p)
        yield pairs
    finally:
        for p in reversed(installed):
            p.remove()
