"""Torch reference implementations of every fastmix op (the ``*_ref`` functions).

These are the ground truth the compiled backends are tested against: plain eager
PyTorch, written for clarity, computing in float32 and rounding once to the input
dtype, exactly as the kernels do.  They take *already validated and normalised*
arguments in the public form (per-sample ``eps``/``alpha`` tensors are accepted as
floats or shape-``(B,)`` tensors).  See ``docs/OPS.md`` for the formulas and
``../shared/METHODS.md`` section 1 for where they come from.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Numerical guards shared by every backend (the kernels use the same constants).
L2_GRAD_EPS = 1e-10  # torchattacks' PGDL2 adds 1e-10 to the gradient norm
L2_NOISE_EPS = 1e-12


def _per_sample(v, x: Tensor) -> Tensor:
    """A float or a (B,) tensor as a float32 tensor broadcastable against ``x``."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    if isinstance(v, Tensor):
        return v.to(device=x.device, dtype=torch.float32).reshape(shape)
    return torch.full(shape, float(v), dtype=torch.float32, device=x.device)


def _flat_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).norm(p=2, dim=1).reshape((t.shape[0],) + (1,) * (t.dim() - 1))


def pgd_step_ref(x: Tensor, grad: Tensor, x_nat: Tensor, eps, alpha, *, norm: str = "linf",
                 lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """One projected gradient-ascent step (METHODS.md 1.1).

    L-inf: ``clip(clip(x + alpha*sign(grad), x_nat-eps, x_nat+eps), lo, hi)``.
    L2: ``x + alpha*grad/(||grad||+1e-10)``, its offset from ``x_nat`` scaled by
    ``min(1, eps/||offset||)``, then clipped to ``[lo, hi]``.
    """
    xf, gf, nf = x.float(), grad.float(), x_nat.float()
    e, a = _per_sample(eps, x), _per_sample(alpha, x)
    if norm == "linf":
        y = xf + a * torch.sign(gf)
        y = torch.minimum(torch.maximum(y, nf - e), nf + e)
    elif norm == "l2":
        y = xf + a * (gf / (_flat_norm(gf) + L2_GRAD_EPS))
        d = y - nf
        dn = _flat_norm(d)
        factor = torch.where(dn > 0, torch.clamp(e / dn, max=1.0), torch.ones_like(dn))
        y = nf + d * factor
    else:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return torch.clamp(y, lo, hi).to(x.dtype)


def random_start_from_noise_ref(x_nat: Tensor, noise: Tensor, eps, radius, *, norm: str = "linf",
                                lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """The deterministic part of ``random_start`` given its random draws.

    L-inf: ``noise ~ U[0,1)`` and ``clip(x_nat + eps*(2*noise-1), lo, hi)``.
    L2: ``noise ~ N(0, I)``, ``radius ~ U[0,1)**(1/D)`` per sample and
    ``clip(x_nat + eps*radius*noise/max(||noise||, 1e-12), lo, hi)``.
    """
    nf, zf = x_nat.float(), noise.float()
    e = _per_sample(eps, x_nat)
    if norm == "linf":
        y = nf + e * (2.0 * zf - 1.0)
    elif norm == "l2":
        r = _per_sample(radius, x_nat)
        y = nf + (e * r) * (zf / torch.clamp(_flat_norm(zf), min=L2_NOISE_EPS))
    else:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return torch.clamp(y, lo, hi).to(x_nat.dtype)


def random_start_ref(x_nat: Tensor, eps, *, norm: str = "linf", lo: float = 0.0, hi: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """Uniform random point of the eps-ball around ``x_nat`` (clipped to the image range)."""
    noise, radius = draw_random_start_noise(x_nat, norm, generator)
    return random_start_from_noise_ref(x_nat, noise, eps, radius, norm=norm, lo=lo, hi=hi)


def draw_random_start_noise(x_nat: Tensor, norm: str, generator=None):
    """The random draws ``random_start`` uses, shared by every backend so that the
    same generator state gives the same start whatever the backend."""
    shape, dev = x_nat.shape, x_nat.device
    if norm == "linf":
        noise = torch.rand(shape, generator=generator, device=dev, dtype=torch.float32)
        return noise, None
    noise = torch.randn(shape, generator=generator, device=dev, dtype=torch.float32)
    d = max(1, x_nat[0].numel()) if x_nat.shape[0] > 0 else 1
    u = torch.rand((shape[0],), generator=generator, device=dev, dtype=torch.float32)
    return noise, u.pow(1.0 / d)  # radius of a uniform draw in the D-dim ball


def mix_ref(a: Tensor, b: Tensor, lam: Tensor, index: Tensor) -> Tensor:
    """Batched gather-mixing (METHODS.md 1.3): ``lam[i]*a[i] + (1-lam[i])*b[index[i]]``."""
    l = _per_sample(lam, a)
    out = l * a.float() + (1.0 - l) * b.index_select(0, index).float()
    return out.to(a.dtype)


def _soft_target_dot(z: Tensor, ya: Tensor, yb: Tensor, w: Tensor, sa: Tensor, sb: Tensor):
    """(sum_c t_c z_c, t as a dense matrix) for the compact target of METHODS.md 1.2."""
    C = z.shape[1]
    oa = torch.nn.functional.one_hot(ya, C).float()
    ob = torch.nn.functional.one_hot(yb, C).float()
    phi_a = sa[:, None] * oa + ((1.0 - sa) / (C - 1))[:, None] * (1.0 - oa)
    phi_b = sb[:, None] * ob + ((1.0 - sb) / (C - 1))[:, None] * (1.0 - ob)
    t = w[:, None] * phi_a + (1.0 - w)[:, None] * phi_b
    return t


def soft_target_ref(ya: Tensor, yb: Tensor, w: Tensor, sa: Tensor, sb: Tensor, num_classes: int) -> Tensor:
    """The dense B x C target ``w*phi(ya,sa) + (1-w)*phi(yb,sb)`` (for tests and debugging)."""
    return _soft_target_dot(torch.empty(ya.shape[0], num_classes, device=ya.device), ya, yb,
                            w.float(), sa.float(), sb.float())


def soft_cross_entropy_ref(logits: Tensor, ya: Tensor, yb: Tensor | None = None, w: Tensor | None = None,
                           sa: Tensor | None = None, sb: Tensor | None = None,
                           reduction: str = "mean") -> Tensor:
    """Cross-entropy against the compact soft target, through a dense B x C target.

    Loss per row ``lse(z) - sum_c t_c z_c`` in float32, reduced by ``reduction``.
    """
    B = logits.shape[0]
    dev = logits.device
    yb = ya if yb is None else yb
    ones = torch.ones(B, device=dev)
    w = ones if w is None else _as_f32(w, B, dev)
    sa = ones if sa is None else _as_f32(sa, B, dev)
    sb = ones if sb is None else _as_f32(sb, B, dev)
    z = logits.float()
    t = _soft_target_dot(z, ya, yb, w, sa, sb)
    loss = torch.logsumexp(z, dim=1) - (t * z).sum(dim=1)
    return _reduce(loss, reduction)


def cw_margin_ref(logits: Tensor, y: Tensor, *, kappa: float = 0.0, reduction: str = "mean") -> Tensor:
    """The Carlini-Wagner margin loss the attacker *ascends*.

    ``min(max_{j != y} z_j - z_y, kappa)``, i.e. the negated C&W objective
    ``max(z_y - max_{j != y} z_j, -kappa)``: the clamp stops pushing a sample once it is
    misclassified by a margin of ``kappa``.  Per row in float32, then reduced.
    """
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    raw = other - zy
    m = torch.where(raw < kappa, raw, torch.full_like(raw, kappa))
    return _reduce(m, reduction)


def _as_f32(v, B, dev):
    if isinstance(v, Tensor):
        return v.to(device=dev, dtype=torch.float32).reshape(B)
    return torch.full((B,), float(v), device=dev, dtype=torch.float32)


def _reduce(v: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    if reduction == "none":
        return v
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
