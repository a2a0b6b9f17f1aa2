"""Attack specifications by name: ``parse_attack("pgd20", eps)`` -> ``attack(model, x, y) -> x_adv``.

The names the evaluation suite, the trainer's held-out check, Mixup Inference and the CLI
all accept; they live beside the attacks they name so that every layer above may use them.

Every attack is an L-inf attack of radius ``eps`` in [0, 1] pixel units, run with the model in
eval mode (BatchNorm on running statistics) and built on :mod:`fastmix.attacks`; none has a
loop of its own.

=================  ==============================================================================
name               attack
=================  ==============================================================================
``clean``          no attack (``parse_attack`` returns ``None``)
``fgsm``           one signed-gradient step of size eps, no random start (Goodfellow et al.)
``noise``          random corners of the eps-ball: ``x + eps * s``, ``s`` uniform in {-1, +1}
                   (the "random noise of the same size" baseline of Carlini et al. 2019)
``pgdK[rR]``       PGD-K on cross-entropy from a uniform random start, step ``alpha``
                   (default eps/4); ``rR``: R restarts, the per-sample worst kept (``pgd50r5``)
``cwK[rR]``        PGD-K on the CW margin loss ``max_{j!=y} z_j - z_y`` ("CW-20")
``apgd-ce``        APGD with cross-entropy (Croce and Hein 2020), ``apgd_steps`` iterations
``apgd-dlr``       APGD with the DLR loss
``apgd-t``         APGD-T: targeted DLR against each of the min(9, C-1) most likely other classes
``fab-t``          FAB-T (torchattacks), ``square``: Square with ``square_queries`` queries
``autoattack``     AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square in sequence,
                   each on the samples the previous ones left robust (``aa`` is an alias).
                   FAB-T and Square need torchattacks; without it the APGD part runs, with a
                   warning, and :attr:`EvalAttack.components` says what ran.
=================  ==============================================================================
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .apgd import apgd
from .autoattack import AutoAttack
from .functional import fgsm, pgd

__all__ = ["parse_attack", "EvalAttack", "ATTACK_NAMES", "expand_attacks", "ALL_ATTACKS", "has_torchattacks"]

_FIXED = ("clean", "fgsm", "noise", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack", "aa")
ATTACK_NAMES = "clean, fgsm, noise, pgdK[rR], cwK[rR], apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack"
#: what ``--attacks all`` means: the columns of METHODS.md section 5 plus AutoAttack's parts
ALL_ATTACKS = ("clean", "fgsm", "pgd20", "cw20", "apgd-ce", "apgd-t", "autoattack")
_SPEC = re.compile(r"^(?:(?P<fixed>" + "|".join(re.escape(n) for n in _FIXED) + r")|(?P<kind>pgd|cw)(?P<k>\d+)"
                   r"(?:r(?P<r>\d+))?)$")


def has_torchattacks() -> bool:
    """Whether torchattacks imports (AutoAttack's FAB-T and Square run through it)."""
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return False
    return True


def expand_attacks(text: str | list) -> list[str]:
    """``"clean,pgd20"`` or a list -> a list of names; ``"all"`` expands to :data:`ALL_ATTACKS`."""
    names = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s and s.strip()]
    out: list[str] = []
    for n in names:
        for m in (ALL_ATTACKS if n == "all" else (n,)):
            if m not in out:
                out.append(m)
    if not out:
        raise ValueError(f"attacks must name at least one attack ({ATTACK_NAMES}), got {text!r}")
    return out


def _num_classes(model: nn.Module, x: Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n >= 2:
        return n
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


@dataclass
class EvalAttack:
    """A parsed evaluation attack; call it as ``atk(model, x, y) -> x_adv``.

    ``x``: float ``(B, C, H, W)`` in [0, 1]; ``y``: int64 ``(B,)``; returns the adversarial
    images, same shape and dtype, within ``eps`` of ``x`` (L-inf) and in [0, 1].

    Fields: ``name`` (canonical, e.g. ``"pgd20"``), ``kind`` (``fgsm``, ``noise``, ``pgd``,
    ``cw``, ``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab-t``, ``square``, ``autoattack``),
    ``eps``, ``alpha`` (PGD/CW step), ``steps``, ``restarts``, ``apgd_steps``,
    ``square_queries``, ``components`` (AutoAttack: the parts it runs, in order).
    """
    name: str
    kind: str
    eps: float
    alpha: float | None = None
    steps: int = 1
    restarts: int = 1
    apgd_steps: int = 100
    square_queries: int = 5000
    components: tuple = field(default_factory=tuple)

    def key(self) -> tuple:
        """Identifies the attack's settings: two attacks with equal keys are the same attack
        (the suite reuses AutoAttack's parts when they were also run on their own)."""
        return (self.kind, self.eps, self.alpha, self.steps, self.restarts, self.apgd_steps, self.square_queries)

    def component(self, name: str) -> "EvalAttack":
        """AutoAttack's part ``name`` as an attack of its own (same eps and budgets)."""
        return EvalAttack(name, name, self.eps, apgd_steps=self.apgd_steps, square_queries=self.square_queries)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        k, eps = self.kind, self.eps
        if k == "noise":
            s = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype).mul_(2).sub_(1)
            return (x + eps * s).clamp_(0.0, 1.0)
        if k == "fgsm":
            return fgsm(model, x, y, eps=eps, bn_mode="eval", check=False)
        if k in ("pgd", "cw"):
            return pgd(model, x, y, eps=eps, alpha=self.alpha, steps=self.steps, restarts=self.restarts,
                               loss="ce" if k == "pgd" else "cw", random_start=True, bn_mode="eval", check=False)
        if k in ("apgd-ce", "apgd-dlr"):
            return apgd(model, x, y, eps=eps, steps=self.apgd_steps, loss=k[5:], bn_mode="eval", check=False)
        if k == "apgd-t":
            n_t = min(9, _num_classes(model, x) - 1)
            return apgd(model, x, y, eps=eps, steps=self.apgd_steps, loss="dlr", targeted=True,
                                n_target_classes=n_t, bn_mode="eval", check=False)
        # fab-t, square and the whole of autoattack: AutoAttack's sequence (one part or all)
        parts = (k,) if k in ("fab-t", "square") else self.components
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,)).item())  # from the (seeded) global RNG
        aa = AutoAttack(model, eps=eps, n_classes=_num_classes(model, x), seed=seed,
                                steps=self.apgd_steps, attacks=parts, n_queries=self.square_queries)
        return aa(x, y)


def parse_attack(spec: str, eps: float, alpha: float | None = None, *, apgd_steps: int = 100,
                 square_queries: int = 5000) -> EvalAttack | None:
    """Parse an attack name (see the module docstring) into an :class:`EvalAttack`, or ``None``
    for ``clean``.

    Args:
        spec: the name, case-insensitive (``"pgd20"``, ``"cw20"``, ``"pgd50r5"``, ``"apgd-t"``).
        eps: L-inf radius in [0, 1] (pixel units).
        alpha: PGD/CW step size > 0 (default ``eps / 4``: 2/255 at CIFAR's 8/255).
        apgd_steps: iterations of each APGD run and of FAB (AutoAttack's standard: 100).
        square_queries: Square's query budget (standard: 5000).
    Raises:
        ValueError naming the argument: an unknown name, K or R < 1, eps outside [0, 1],
        alpha <= 0, ``apgd_steps`` or ``square_queries`` < 1; ImportError for ``fab-t`` or
        ``square`` without torchattacks.
    """
    if not isinstance(spec, str):
        raise ValueError(f"attack must be a string such as 'pgd20', got {spec!r}")
    m = _SPEC.match(spec.strip().lower())
    if not m:
        raise ValueError(f"attack must be one of {ATTACK_NAMES} (e.g. pgd20, cw20, pgd50r5), got {spec!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
        raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0):
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    for name, v in (("apgd_steps", apgd_steps), ("square_queries", square_queries)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    eps = float(eps)
    common = dict(apgd_steps=apgd_steps, square_queries=square_queries)
    fixed = m.group("fixed")
    if fixed == "clean":
        return None
    if fixed is not None:
        kind = "autoattack" if fixed == "aa" else fixed
        if kind in ("fab-t", "square") and not has_torchattacks():
            raise ImportError(f"attack {kind!r} runs through torchattacks, which is not installed: "
                              f"`pip install torchattacks`")
        if kind == "fgsm":
            return EvalAttack("fgsm", "fgsm", eps, alpha=eps, **common)
        comps: tuple = ()
        if kind == "autoattack":
            comps = ("apgd-ce", "apgd-t", "fab-t", "square")
            if not has_torchattacks():
                comps = ("apgd-ce", "apgd-t")
                warnings.warn("autoattack: torchattacks is not installed, so FAB-T and Square are skipped and only "
                              "APGD-CE + APGD-T run (`pip install torchattacks` for the standard version)",
                              RuntimeWarning, stacklevel=2)
        return EvalAttack(kind, kind, eps, components=comps, **common)
    kind, k, r = m.group("kind"), int(m.group("k")), int(m.group("r") or 1)
    if k < 1:
        raise ValueError(f"attack {spec!r}: the number of steps K must be >= 1")
    if r < 1:
        raise ValueError(f"attack {spec!r}: the number of restarts R must be >= 1")
    name = f"{kind}{k}" + (f"r{r}" if r > 1 else "")
    return EvalAttack(name, kind, eps, alpha=eps / 4 if alpha is None else float(alpha), steps=k, restarts=r,
                      **common)
