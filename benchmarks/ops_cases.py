"""The ops benchmark's cases and providers, shared by bench_ops.py (pytest-benchmark)
and run.py (the runner that writes JSON and a markdown table).

Providers per op: every fastmix backend present for the device (``fastmix-cpp``,
``fastmix-cuda``, ``fastmix-triton``), the eager torch composite a user would write
(``eager``, the baseline of every ratio), and ``torch.compile`` of the reference
(``compile``). Shapes come from the real work: CIFAR batches B x 3 x 32 x 32 and
logits B x C with C in 10, 100, 1000.
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
    out = [f"fastmix-{b}" for b in fops.available_backends(device) if b != "torch"]
    if device == "cpu":
        out = [p for p in out if p != "fastmix-triton"]  # the interpreter is not a CPU backend
    out.append("eager")
    if with_compile:
        out.append("compile")
    return out


def make_fn(op: str, provider: str, inp: dict):
    """A zero-argument callable doing one call (forward + backward for the losses)."""
    eps, alpha = 8 / 255, 2 / 255
    if op == "pgd_step":
        x, grad, xn = inp["x"], inp["grad"], inp["x_nat"]
        if provider == "eager":
            return lambda: eager_pgd_step(x, grad, xn, eps, alpha)
        if provider == "compile":
            f = _compiled("pgd_step")
            return lambda: f(x, grad, xn, eps, alpha)
        b = provider.split("-", 1)[1]
        buf = x.clone()
        # the attack loop's form: in place, unchecked, with eps/alpha prepared once
        return lambda: fops.pgd_step_(buf, grad, xn, eps, alpha, backend=b, check=False)
    if op == "mix":
        a, bb, lam, index = inp["a"], inp["b"], inp["lam"], inp["index"]
        if provider == "eager":
            return lambda: eager_mix(a, bb, lam, index)
        if provider == "compile":
            f = _compiled("mix")
            return lambda: f(a, bb, lam, index)
        b = provider.split("-", 1)[1]
        return lambda: fops.mix(a, bb, lam, index, backend=b, check=False)
    if op == "cw_margin":
        z0, y = inp["z"], inp["y"]
        z = z0.clone().requires_grad_(True)
        if provider == "eager":
            loss_fn = lambda: eager_cw(z, y)  # noqa: E731
        elif provider == "compile":
            f = _compiled("cw_margin")
            loss_fn = lambda: f(z, y)  # noqa: E731
        else:
            b = provider.split("-", 1)[1]
            loss_fn = lambda: fops.cw_margin(z, y, backend=b, check=False)  # noqa: E731
        return lambda: torch.autograd.grad(loss_fn(), z)
    # soft cross-entropy, forward + backward
    z = inp["z"].clone().requires_grad_(True)
    args = (inp["ya"], inp["yb"], inp["w"], inp["sa"], inp["sb"])
    if provider == "eager":
        loss_fn = lambda: eager_soft_ce(z, *args)  # noqa: E731
    elif provider == "compile":
        f = _compiled("soft_cross_entropy")
        loss_fn = lambda: f(z, *args)  # noqa: E731
    else:
        b = provider.split("-", 1)[1]
        loss_fn = lambda: fops.soft_cross_entropy(z, *args, backend=b, check=False)  # noqa: E731
    return lambda: torch.autograd.grad(loss_fn(), z)


OPS = {
    "pgd_step": IMAGE_BATCHES,
    "mix": IMAGE_BATCHES,
    "soft_cross_entropy": LOGIT_CLASSES,
    "cw_margin": LOGIT_CLASSES,
}
