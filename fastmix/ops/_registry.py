"""Fake kernels and autograd for the compiled ``fastmix::`` ops, and backend lookup.

The schemas live in C++ (``csrc/fastmix.cpp``) and the Triton ops register
themselves in ``fastmix/kernels``; this module adds, once per backend, what every
backend shares: fake (meta) implementations for ``torch.compile``/``opcheck`` and the
autograd formulas (the backward of each differentiable op calls the same backend's
backward kernel).
"""
from __future__ import annotations

import threading

import torch

from .. import _backend

_lock = threading.RLock()
_done: set[str] = set()

# suffix of the op names per backend ("cpp" and "cuda" share the C++ ops)
_SUFFIX = {"cpp": "", "cuda": "", "triton": "_triton"}


def op(name: str, backend: str):
    """The OpOverloadPacket ``fastmix::<name>`` of a compiled backend (registering on first use)."""
    ensure(backend)
    return getattr(torch.ops.fastmix, name + _SUFFIX[backend])


def ensure(backend: str) -> None:
    if backend in _done:
        return
    with _lock:
        if backend in _done:
            return
        _backend.require(backend)
        suffix = _SUFFIX[backend]
        key = "cpp" if backend in ("cpp", "cuda") else backend
        if key not in _done:
            if key == "cpp":
                _register_fakes(suffix)
            _register_autograd(suffix)
            _done.add(key)
        _done.add(backend)


def _register_fakes(s: str) -> None:
    # The Triton ops register their own fakes next to their kernels.
    lib = "fastmix::"

    @torch.library.register_fake(lib + "pgd_step" + s)
    def _(x, grad, x_nat, eps, alpha, norm, lo, hi):
        return torch.empty_like(x)

    @torch.library.register_fake(lib + "pgd_step_" + s)
    def _(x, grad, x_nat, eps, alpha, norm, lo, hi):
        return None

    @torch.library.register_fake(lib + "random_start" + s)
    def _(x_nat, noise, eps, radius, norm, lo, hi):
        return torch.empty_like(x_nat)

    @torch.library.register_fake(lib + "mix" + s)
    def _(a, b, lam, index):
        return torch.empty_like(a)

    @torch.library.register_fake(lib + "soft_ce_fwd" + s)
    def _(logits, ya, yb, w, sa, sb):
        B = logits.shape[0]
        return (logits.new_empty((B,), dtype=torch.float32), logits.new_empty((B,), dtype=torch.float32))

    @torch.library.register_fake(lib + "soft_ce_bwd" + s)
    def _(grad_loss, logits, lse, ya, yb, w, sa, sb):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    @torch.library.register_fake(lib + "cw_margin_fwd" + s)
    def _(logits, y, kappa):
        B = logits.shape[0]
        return (logits.new_empty((B,), dtype=torch.float32), logits.new_empty((B,), dtype=torch.int64))

    @torch.library.register_fake(lib + "cw_margin_bwd" + s)
    def _(grad, logits, y, jstar, margin, kappa):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _register_autograd(s: str) -> None:
    ns = torch.ops.fastmix

    # ---- mix: out = lam*a + (1-lam)*b[index] ---------------------------------------
    def mix_setup(ctx, inputs, output):
        a, b, lam, index = inputs
        ctx.b_rows = b.shape[0]
        ctx.save_for_backward(lam, index, a if ctx.needs_input_grad[2] else None,
                              b if ctx.needs_input_grad[2] else None)

    def mix_backward(ctx, g):
        lam, index, a, b = ctx.saved_tensors
        shape = (-1,) + (1,) * (g.dim() - 1)
        l = lam.reshape(shape)
        ga = gb = gl = None
        if ctx.needs_input_grad[0]:
            ga = (g.float() * l).to(g.dtype)
        if ctx.needs_input_grad[1]:
            contrib = (g.float() * (1.0 - l)).to(g.dtype)
            gb = g.new_zeros((ctx.b_rows,) + tuple(g.shape[1:])).index_add_(0, index, contrib)
        if ctx.needs_input_grad[2]:
            diff = a.float() - b.index_select(0, index).float()
            gl = (diff * g.float()).reshape(g.shape[0], -1).sum(1)
        return ga, gb, gl, None

    torch.library.register_autograd("fastmix::mix" + s, mix_backward, setup_context=mix_setup)

    # ---- soft cross-entropy: grad = g * (softmax - t) (+ g_lse * softmax) -------------
    bwd = getattr(ns, "soft_ce_bwd" + s)

    def sce_setup(ctx, inputs, output):
        logits, ya, yb, w, sa, sb = inputs
        loss, lse = output
        ctx.save_for_backward(logits, lse, ya, yb, w, sa, sb)

    def sce_backward(ctx, g_loss, g_lse):
        logits, lse, ya, yb, w, sa, sb = ctx.saved_tensors
        if g_loss is None:
            g_loss = torch.zeros_like(lse)
        grad = bwd(g_loss.float().contiguous(), logits, lse, ya, yb, w, sa, sb)
        if g_lse is not None:  # d lse / d z = softmax(z)
            grad = grad + (g_lse.float()[:, None] * torch.exp(logits.float() - lse[:, None])).to(grad.dtype)
        # Targets (w, sa, sb) are treated as constants: no method differentiates through them.
        return grad, None, None, None, None, None

    torch.library.register_autograd("fastmix::soft_ce_fwd" + s, sce_backward, setup_context=sce_setup)

    # ---- CW margin ---------------------------------------------------------------------
    cwb = getattr(ns, "cw_margin_bwd" + s)

    def cw_setup(ctx, inputs, output):
        logits, y, kappa = inputs
        margin, jstar = output
        ctx.kappa = kappa
        ctx.save_for_backward(logits, y, jstar, margin)

    def cw_backward(ctx, g_margin, g_jstar):
        logits, y, jstar, margin = ctx.saved_tensors
        return cwb(g_margin.float().contiguous(), logits, y, jstar, margin, ctx.kappa), None, None

    torch.library.register_autograd("fastmix::cw_margin_fwd" + s, cw_backward, setup_context=cw_setup)
