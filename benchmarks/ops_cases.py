"""The ops benchmark's cases and providers, shared by bench_ops.py (pytest-benchmark)
and run.py (the runner that writes JSON and a markdown table).

Providers per op:

* ``default``: the public call exactly as a user writes it (no ``backend=``, default
  ``check``), i.e. what fastmix costs out of the box;
* ``fastmix-<b>``: the public call pinned to each backend present (``cpp``, ``cuda``,
  ``triton``), default ``check``;
* ``raw-<b>``: the registered op ``torch.ops.fastmix.<op>`` on arguments already in the
  kernel form (the floor the wrapper's checks and conversions sit on);
* ``eager``: the eager torch composite a user would write (the baseline of every ratio);
* ``compile``: ``torch.compile`` of the reference.

Losses are timed forward + backward (``torch.autograd.grad``). Shapes come from the real
work: CIFAR batches B x 3 x 32 x 32 and logits B x C with C in 10, 100, 1000.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fastmix.ops as fops

IMAGE_BATCHES = (128, 256, 512, 1024)
LOGIT_CLASSES = (10, 100, 1000)
LOGIT_BATCH = 512


# ---------------------------------------------------------------- eager composites
def eager_pgd_step(x, grad, x_nat, eps, alpha):
    """What attack libraries write: step, project the offset, clip (torchattacks' PGD)."""
    adv = x + alpha * grad.sign()
    delta = torch.clamp(adv - x_nat, min=-eps, max=eps)
    return torch.clamp(x_nat + delta, 0, 1)


def eager_mix(a, b, lam, index):
    l = lam.view(-1, *([1] * (a.dim() - 1)))
    return l * a + (1 - l) * b[index]


def eager_soft_ce(logits, ya, yb, w, sa, sb):
    """The usual eager soft-label CE: a dense B x C target and log_softmax."""
    t = fops.soft_target_ref(ya, yb, w, sa, sb, logits.shape[1]).to(logits.dtype)
    return -(t * F.log_softmax(logits, dim=1)).sum(1).mean()


def eager_cw(logits, y):
    onehot = F.one_hot(y, logits.shape[1]).bool()
    zy = logits[onehot]
    other = logits.masked_fill(onehot, float("-inf")).amax(1)
    return torch.clamp(other - zy, max=0.0).mean()


@functools.lru_cache(maxsize=None)
def _compiled(name):
    ref = {"pgd_step": lambda x, g, xn, e, a: fops.pgd_step_ref(x, g, xn, e, a),
           "mix": fops.mix_ref,
           "soft_cross_entropy": lambda z, ya, yb, w, sa, sb: fops.soft_cross_entropy_ref(z, ya, yb, w, sa, sb),
           "cw_margin": lambda z, y: fops.cw_margin_ref(z, y)}[name]
    return torch.compile(ref, dynamic=False)


# ---------------------------------------------------------------- case construction
def make_case(op: str, size: int, device: str, dtype=torch.float32):
    """(inputs dict, bytes moved by one call of the fused op) for one shape."""
    if op == "cross_entropy_hard":
        return make_hard_label_case(size, device, dtype)
    g = torch.Generator(device=device).manual_seed(0)
    if op in ("pgd_step", "mix"):
        B = size
        shape = (B, 3, 32, 32)
        x_nat = torch.rand(shape, generator=g, device=device).to(dtype)
        x = torch.rand(shape, generator=g, device=device).to(dtype)
        grad = torch.randn(shape, generator=g, device=device).to(dtype)
        n = x.numel() * x.element_size()
        if op == "pgd_step":
            return dict(x=x, grad=grad, x_nat=x_nat), 4 * n
        lam = torch.rand(B, generator=g, device=device)
        index = torch.randperm(B, generator=g, device=device)
        return dict(a=x, b=x_nat, lam=lam, index=index), 3 * n
    B, C = LOGIT_BATCH, size
    z = (torch.randn(B, C, generator=g, device=device) * 3).to(dtype)
    ya = torch.randint(0, C, (B,), generator=g, device=device)
    if op == "cw_margin":
        return dict(z=z, y=ya), 2 * z.numel() * z.element_size()
    yb = torch.randint(0, C, (B,), generator=g, device=device)
    w = torch.rand(B, generator=g, device=device)
    one = torch.ones(B, device=device)
    # forward reads logits, backward reads them again and writes the gradient
    return dict(z=z, ya=ya, yb=yb, w=w, sa=one, sb=one), 3 * z.numel() * z.element_size()


def providers(device: str, with_compile: bool = True) -> list[str]:
    compiled = [b for b in fops.available_backends(device) if b != "torch"]
    if device == "cpu":
        compiled = [b for b in compiled if b != "triton"]  # the interpreter is not a CPU backend
    out = ["default"] + [f"fastmix-{b}" for b in compiled] + [f"raw-{b}" for b in compiled]
    out.append("eager")
    if with_compile:
        out.append("compile")
    return out


def _raw(name, b):
    return getattr(torch.ops.fastmix, name + ("_triton" if b == "triton" else "")).default


def make_fn(op: str, provider: str, inp: dict):
    """A zero-argument callable doing one call (forward + backward for the losses)."""
    if op == "cross_entropy_hard":
        return make_hard_fn(provider, inp)
    eps, alpha = 8 / 255, 2 / 255
    kind, _, b = provider.partition("-")
    bk = b or None  # "default": no backend named
    if op == "pgd_step":
        x, grad, xn = inp["x"], inp["grad"], inp["x_nat"]
        if provider == "eager":
            return lambda: eager_pgd_step(x, grad, xn, eps, alpha)
        if provider == "compile":
            f = _compiled("pgd_step")
            return lambda: f(x, grad, xn, eps, alpha)
        if kind == "raw":
            e = torch.full((x.shape[0],), eps, device=x.device)
            a = torch.full((x.shape[0],), alpha, device=x.device)
            k = _raw("pgd_step", b)
            return lambda: k(x, grad, xn, e, a, 0, 0.0, 1.0)
        return lambda: fops.pgd_step(x, grad, xn, eps, alpha, backend=bk)
    if op == "mix":
        a, bb, lam, index = inp["a"], inp["b"], inp["lam"], inp["index"]
        if provider == "eager":
            return lambda: eager_mix(a, bb, lam, index)
        if provider == "compile":
            f = _compiled("mix")
            return lambda: f(a, bb, lam, index)
        if kind == "raw":
            k = _raw("mix", b)
            return lambda: k(a, bb, lam, index)
        return lambda: fops.mix(a, bb, lam, index, backend=bk)
    if op == "cw_margin":
        z0, y = inp["z"], inp["y"]
        z = z0.clone().requires_grad_(True)
        if provider == "eager":
            loss_fn = lambda: eager_cw(z, y)  # noqa: E731
        elif provider == "compile":
            f = _compiled("cw_margin")
            loss_fn = lambda: f(z, y)  # noqa: E731
        elif kind == "raw":
            k = _raw("cw_margin_fwd", b)
            loss_fn = lambda: k(z, y, 0.0)[0].mean()  # noqa: E731
        else:
            loss_fn = lambda: fops.cw_margin(z, y, backend=bk)  # noqa: E731
        return lambda: torch.autograd.grad(loss_fn(), z)
    # soft cross-entropy, forward + backward
    z = inp["z"].clone().requires_grad_(True)
    args = (inp["ya"], inp["yb"], inp["w"], inp["sa"], inp["sb"])
    if provider == "eager":
        loss_fn = lambda: eager_soft_ce(z, *args)  # noqa: E731
    elif provider == "compile":
        f = _compiled("soft_cross_entropy")
        loss_fn = lambda: f(z, *args)  # noqa: E731
    elif kind == "raw":
        k = _raw("soft_ce_fwd", b)
        loss_fn = lambda: k(z, *args)[0].mean()  # noqa: E731
    else:
        loss_fn = lambda: fops.soft_cross_entropy(z, *args, backend=bk)  # noqa: E731
    return lambda: torch.autograd.grad(loss_fn(), z)


def make_hard_label_case(size: int, device: str, dtype=torch.float32):
    """Hard-label cross-entropy, B x C logits: the CE every attack step computes."""
    g = torch.Generator(device=device).manual_seed(1)
    z = (torch.randn(LOGIT_BATCH, size, generator=g, device=device) * 3).to(dtype)
    y = torch.randint(0, size, (LOGIT_BATCH,), generator=g, device=device)
    return dict(z=z, y=y), 3 * z.numel() * z.element_size()


def make_hard_fn(provider: str, inp: dict):
    z = inp["z"].clone().requires_grad_(True)
    y = inp["y"]
    kind, _, b = provider.partition("-")
    if provider in ("eager", "compile"):
        f = (lambda t, y: F.cross_entropy(t, y)) if provider == "eager" else _compiled_hard()
        return lambda: torch.autograd.grad(f(z, y), z)
    if kind == "raw":
        k = _raw("soft_ce_fwd", b)
        one = torch.ones(y.shape[0], device=z.device)
        return lambda: torch.autograd.grad(k(z, y, y, one, one, one)[0].mean(), z)
    return lambda: torch.autograd.grad(fops.soft_cross_entropy(z, y, backend=b or None), z)


@functools.lru_cache(maxsize=None)
def _compiled_hard():
    return torch.compile(lambda z, y: fops.soft_cross_entropy_ref(z, y), dynamic=False)


OPS = {
    "pgd_step": IMAGE_BATCHES,
    "mix": IMAGE_BATCHES,
    "soft_cross_entropy": LOGIT_CLASSES,
    "cross_entropy_hard": LOGIT_CLASSES,
    "cw_margin": LOGIT_CLASSES,
}
