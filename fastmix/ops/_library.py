"""The op registry of fastmix.ops: which compiled variants of each op exist, and the one
place where an op module registers its fake and its autograd for all of them.

Each op ``fastmix::<name>`` has up to two compiled variants: the C++ op (schema in
``csrc/fastmix.cpp``; CPU and CUDA kernels chosen by the dispatcher from the tensors'
device) and the Triton op ``fastmix::<name>_triton`` (``fastmix/ops/triton``). Both
are loaded by :func:`fastmix._backend.probe` when this module is imported; each op
module (``fastmix/ops/<op>.py``) then calls :func:`register` once, so
``torch.ops.fastmix.<name>`` is complete (gradient, fake, opcheck) from
``import fastmix`` on, whatever is called first.
"""
from __future__ import annotations

import torch

from .. import _backend

_backend.probe()

#: the C++ ops are registered (fastmix._C loaded)
NATIVE = _backend.available("cpp")
#: the Triton ops are registered (fastmix.ops.triton imported)
TRITON = _backend.available("triton")

_ops: dict[tuple[str, str], object] = {}
#: ops whose C++ variant came with its own C++ Autograd kernel (seen before registering ours)
_cpp_autograd: set[str] = set()


def _variants(name: str) -> list[tuple[str, str]]:
    out = []
    if NATIVE and torch._C._dispatch_has_kernel_for_dispatch_key(f"fastmix::{name}", "CPU"):
        out.append(("native", f"fastmix::{name}"))
    if TRITON:
        out.append(("triton", f"fastmix::{name}_triton"))
    return out


def has_cpp_autograd(qualname: str) -> bool:
    """True when the C++ extension registered an Autograd kernel for ``qualname`` itself
    (then Python must not register one; csrc/ does this for its differentiable ops)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Autograd")


def register(name: str, *, fake, backward=None, make_backward=None, setup_context=None) -> None:
    """Register ``fake`` and (if given) the autograd formula of op ``name`` on every variant
    present; the C++ variant keeps its own C++ autograd kernel where it has one.

    ``make_backward(backend)`` builds the backward of one variant (``"cpp"`` or
    ``"triton"``) when it calls that variant's own backward kernel; ``backward`` is one
    formula shared by all."""
    for kind, qual in _variants(name):
        packet = getattr(torch.ops.fastmix, qual.split("::")[1])
        _ops[(name, kind)] = packet.default
        torch.library.register_fake(qual, fake)
        if kind == "native" and has_cpp_autograd(qual):
            _cpp_autograd.add(name)
            continue
        bwd = make_backward("cpp" if kind == "native" else "triton") if make_backward else backward
        if bwd is not None:
            torch.library.register_autograd(qual, bwd, setup_context=setup_context)


def eager_first_output(name: str, backend: str, setup_context, make_backward):
    """The public path's eager autograd for an op whose first output is the loss: None when
    the C++ op has its own C++ Autograd kernel (then the op is called directly), else a
    plain ``autograd.Function`` around the op built from the *same* ``setup_context`` and
    backward formula that :func:`register` registered. It exists because the
    dispatcher-level Python autograd of ``register_autograd`` costs more per call than an
    ``autograd.Function`` (measured in benchmarks/run.py: at C = 10 that overhead, not the
    kernel, is most of the cost); under ``torch.compile`` the registered op is used."""
    kind = "triton" if backend == "triton" else "native"
    if (name, kind) not in _ops or (kind == "native" and name in _cpp_autograd):
        return None
    op = _ops[(name, kind)]
    bwd = make_backward("triton" if kind == "triton" else "cpp")

    class _Eager(torch.autograd.Function):
        # the reduction is folded in: one autograd node per call instead of two
        @staticmethod
        def forward(ctx, reduction, *args):
            with torch._C._AutoDispatchBelowAutograd():  # the registered Python autograd: not again
                out = op(*args)
            setup_context(ctx, args, out)
            ctx.reduction = reduction
            return reduce(out[0], reduction)

        @staticmethod
        def backward(ctx, g):
            if ctx.reduction != "none":
                B = ctx.saved_tensors[0].shape[0]
                g = g.expand(B) / B if ctx.reduction == "mean" else g.expand(B)
            return (None,) + tuple(bwd(ctx, g, None))

    _Eager.__name__ = _Eager.__qualname__ = f"{name}_{kind}_eager"
    return _Eager.apply


def call_first_output(name: str, backend: str, eager: dict, reduction: str, *args):
    """Run op ``name`` on ``backend`` and return its first output reduced by ``reduction``,
    through the eager autograd.Function of :func:`eager_first_output` when there is one
    and we are not being traced by torch.compile."""
    fn = eager.get("triton" if backend == "triton" else "native")
    if fn is not None and not torch.compiler.is_compiling():
        return fn(reduction, *args)
    return reduce(kernel(name, backend)(*args)[0], reduction)


def kernel(name: str, backend: str):
    """The OpOverload of op ``name`` for a compiled ``backend`` ("cpp", "cuda" or "triton");
    resolve() has already checked that the backend is present."""
    return _ops[(name, "triton" if backend == "triton" else "native")]


def memory_format(x):
    """channels_last for a 4-D tensor stored that way (and not also contiguous), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def reduce(v, reduction: str):
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    return v
