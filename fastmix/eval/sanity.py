"""Sanity checks of a robustness evaluation, after Carlini et al. 2019, "On Evaluating
Adversarial Robustness" (section 5, "basic sanity tests").

Each check measures a few accuracies with the evaluation suite and returns a
:class:`Verdict` (name, passed, figures, likely cause). A failed check means the reported
robust accuracy is probably an overestimate: the gradients the attack follows do not
describe the model (gradient masking), or the attack itself is broken.

==================  ===========================================================  ==================
check               passes when                                                  a failure suggests
==================  ===========================================================  ==================
``eps_curve``       PGD accuracy does not rise as eps grows, and is at most       masking / broken
                    ``max_large_acc`` at a large eps (0.5: any image can be       attack
                    turned into a flat grey one there)
``more_steps``      more PGD steps, then restarts, never raise accuracy           noisy / shattered
                                                                                  gradients
``fgsm_vs_pgd``     FGSM accuracy >= PGD accuracy                                 PGD stuck / broken
``noise_vs_pgd``    accuracy under random corners of the eps-ball >= PGD's        masking
``ce_vs_margin``    PGD on the CW margin loss is not ``max_gap`` below PGD on      masking of the CE
                    cross-entropy (same steps and step size)                      loss (soft labels,
                                                                                  saturated softmax)
``transfer``        PGD crafted on a separately trained standard model leaves     masking
                    accuracy >= white-box PGD's
==================  ===========================================================  ==================

"Never raise" is read with a tolerance ``tol`` (default ``max(0.01, 3 / n)``) for the
sampling noise of random starts on ``n`` images.

Two deliberately gradient-masked wrappers, :class:`QuantizedInput` and
:class:`SaturatedLogits`, are the controls that show the checks catch masking (the tests run
the checks on them and on sound models).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ..attacks.specs import parse_attack
from ..checkpoint import load_model
from .suite import evaluate, load_heldout

__all__ = ["Verdict", "SanityWarning", "SanityRunner", "check_eps_curve", "check_more_steps", "check_fgsm_vs_pgd",
           "check_noise_vs_pgd", "check_ce_vs_margin", "check_transfer", "run_sanity", "QuantizedInput", "SaturatedLogits",
           "format_verdicts"]


class SanityWarning(UserWarning):
    """Issued for each failed sanity check (the message names the likely cause)."""


@dataclass
class Verdict:
    """One check's outcome.

    Fields:
        name: the check (``eps_curve``, ``more_steps``, ``fgsm_vs_pgd``, ``noise_vs_pgd``, ``ce_vs_margin``,
            ``transfer``).
        passed: True, False, or None when the check was not run (``message`` says why).
        figures: the accuracies it compared, in [0, 1] (keys name the attack and eps).
        cause: the likely cause when it failed ("" otherwise).
        message: one line: what was compared and what was seen.
    """
    name: str
    passed: bool | None
    figures: dict = field(default_factory=dict)
    cause: str = ""
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        tag = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        s = f"[{tag}] {self.name}: {self.message}"
        return s + (f"\n       likely cause: {self.cause}" if self.passed is False else "")


# Causes named in the warnings.
MASKING = ("gradient masking: the input gradients do not describe the model (a non-differentiable or "
           "saturating layer, randomness, a flat loss), so gradient attacks understate the attack surface; "
           "evaluate with AutoAttack (its DLR loss and Square are immune to logit scaling and to zero "
           "gradients) and gradient-free or transfer attacks")
BROKEN = "a broken attack (a wrong sign, projection, step size or loss), or a too small step budget"


class SanityRunner:
    """Memoised accuracies of one model on one set of images, shared by the checks.

    Args: model, x (``(N, C, H, W)`` float in [0, 1] or uint8), y (``(N,)`` int64),
    batch_size, seed, progress: as for :func:`fastmix.eval.evaluate`.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256, seed: int = 0,
                 progress: bool = False):
        self.model, self.x, self.y = model, x, y
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self._memo: dict = {}

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def acc(self, name: str, eps: float, alpha: float | None = None) -> float:
        """Accuracy under the named attack (see :mod:`fastmix.attacks.specs`) at ``eps``."""
        key = (name, float(eps), alpha)
        if key not in self._memo:
            self._memo[key] = evaluate(self.model, self.x, self.y, [name], eps=eps, alpha=alpha,
                                       batch_size=self.batch_size, seed=self.seed,
                                       progress=self.progress).accuracy[name]
        return self._memo[key]

    def acc_of(self, name: str, attack) -> float:
        """Accuracy under a custom ``attack(model, x, y) -> x_adv``, memoised under ``name``."""
        if name not in self._memo:
            self._memo[name] = evaluate(self.model, self.x, self.y, {name: attack}, eps=0.0,
                                        batch_size=self.batch_size, seed=self.seed,
                                        progress=self.progress).accuracy[name]
        return self._memo[name]

    def tol(self, tol: float | None) -> float:
        return max(0.01, 3.0 / self.n) if tol is None else float(tol)


def _runner(model, x, y, runner, **kw) -> SanityRunner:
    if runner is not None:
        return runner
    if model is None or x is None or y is None:
        raise ValueError("pass model, x and y, or a SanityRunner as runner")
    return SanityRunner(model, x, y, **kw)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1] (pixel units), got {eps!r}")
    return float(eps)


def check_eps_curve(model=None, x=None, y=None, *, eps: float, eps_grid: Sequence[float] | None = None,
                    large_eps: float = 0.5, max_large_acc: float = 0.05, steps: int = 20, tol: float | None = None,
                    runner: SanityRunner | None = None) -> Verdict:
    """PGD-``steps`` accuracy over ``eps_grid`` (default ``0, eps/4, eps/2, eps, 2 eps, large_eps``)
    must not rise by more than ``tol`` from one radius to the next, and must be at most
    ``max_large_acc`` at ``large_eps`` (in [0, 1]; 0.5 lets the attack reach a flat grey image
    from any input, so a sound model is broken there). The step is ``eps_i / 4``."""
    eps = _check_eps(eps)
    if not 0 < large_eps <= 1:
        raise ValueError(f"large_eps must be in (0, 1], got {large_eps!r}")
    r = _runner(model, x, y, runner)
    grid = sorted(set(float(e) for e in (eps_grid if eps_grid is not None else
                                         (0.0, eps / 4, eps / 2, eps, min(2 * eps, 1.0), large_eps))))
    if any(not 0 <= e <= 1 for e in grid):
        raise ValueError(f"eps_grid must lie in [0, 1], got {grid}")
    if large_eps not in grid:
        grid.append(float(large_eps))
        grid.sort()
    name = f"pgd{steps}"
    accs = [r.acc(name, e) for e in grid]
    t = r.tol(tol)
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + t]
    large = accs[grid.index(large_eps)]
    figs = {f"{name}@{e:g}": a for e, a in zip(grid, accs)}
    curve = ", ".join(f"{e:g}: {_pct(a)}" for e, a in zip(grid, accs))
    if rises:
        return Verdict("eps_curve", False, figs, f"accuracy rises with eps, so the attack does not converge: "
                       f"{MASKING}; or {BROKEN}", f"PGD-{steps} accuracy rises between eps {rises[0][0]:g} and {rises[0][1]:g} "
                       f"(curve {curve})")
    if large > max_large_acc:
        return Verdict("eps_curve", False, figs, f"PGD cannot break the model even where any image can be replaced: "
                       f"{MASKING}; or {BROKEN}", f"PGD-{steps} accuracy at eps {large_eps:g} is {_pct(large)} > "
                       f"{_pct(max_large_acc)} (curve {curve})")
    return Verdict("eps_curve", True, figs, "", f"PGD-{steps} accuracy falls with eps and reaches {_pct(large)} at "
                   f"eps {large_eps:g} (curve {curve})")


def check_more_steps(model=None, x=None, y=None, *, eps: float, steps: Sequence[int] = (10, 50), restarts: int = 3,
                     tol: float | None = None, runner: SanityRunner | None = None) -> Verdict:
    """PGD accuracy must not rise (beyond ``tol``) from ``steps[0]`` to ``steps[1]`` steps, nor
    from one run of ``steps[1]`` to ``restarts`` runs (per sample, the worst run counts)."""
    eps = _check_eps(eps)
    if len(steps) != 2 or not all(isinstance(k, int) and k >= 1 for k in steps) or steps[0] >= steps[1]:
        raise ValueError(f"steps must be two increasing ints >= 1, got {steps!r}")
    if not isinstance(restarts, int) or restarts < 2:
        raise ValueError(f"restarts must be an int >= 2, got {restarts!r}")
    r = _runner(model, x, y, runner)
    names = [f"pgd{steps[0]}", f"pgd{steps[1]}", f"pgd{steps[1]}r{restarts}"]
    accs = [r.acc(n, eps) for n in names]
    t = r.tol(tol)
    figs = dict(zip(names, accs))
    seen = ", ".join(f"{n} {_pct(a)}" for n, a in zip(names, accs)) + f"; tolerance {_pct(t)}"
    bad = [(names[i], names[i + 1]) for i in range(2) if accs[i + 1] > accs[i] + t]
    if bad:
        return Verdict("more_steps", False, figs, f"a stronger attack did worse, so the loss surface is noisy or "
                       f"shattered: {MASKING}; or the step size is too large ({BROKEN})",
                       f"accuracy rises from {bad[0][0]} to {bad[0][1]} ({seen})")
    return Verdict("more_steps", True, figs, "", f"more steps and restarts do not raise accuracy ({seen})")


def check_fgsm_vs_pgd(model=None, x=None, y=None, *, eps: float, steps: int = 20, tol: float | None = None,
                      runner: SanityRunner | None = None) -> Verdict:
    """FGSM (one step) accuracy must be at least PGD-``steps``'s (minus ``tol``)."""
    eps = _check_eps(eps)
    r = _runner(model, x, y, runner)
    f, p = r.acc("fgsm", eps), r.acc(f"pgd{steps}", eps)
    figs = {"fgsm": f, f"pgd{steps}": p}
    if f + r.tol(tol) < p:
        return Verdict("fgsm_vs_pgd", False, figs, f"the iterative attack is stuck where one step succeeds: {MASKING}; "
                       f"or {BROKEN}", f"FGSM {_pct(f)} < PGD-{steps} {_pct(p)}")
    return Verdict("fgsm_vs_pgd", True, figs, "", f"FGSM {_pct(f)} >= PGD-{steps} {_pct(p)}")


def check_noise_vs_pgd(model=None, x=None, y=None, *, eps: float, steps: int = 20, tol: float | None = None,
                       runner: SanityRunner | None = None) -> Verdict:
    """Accuracy under random noise of the same L-inf size (random corners of the eps-ball)
    must be at least PGD-``steps``'s (minus ``tol``)."""
    eps = _check_eps(eps)
    r = _runner(model, x, y, runner)
    n, p = r.acc("noise", eps), r.acc(f"pgd{steps}", eps)
    figs = {"noise": n, f"pgd{steps}": p}
    if n + r.tol(tol) < p:
        return Verdict("noise_vs_pgd", False, figs, f"random noise beats the gradient attack: {MASKING}; or {BROKEN}",
                       f"random noise {_pct(n)} < PGD-{steps} {_pct(p)}")
    return Verdict("noise_vs_pgd", True, figs, "", f"random noise {_pct(n)} >= PGD-{steps} {_pct(p)}")


def check_ce_vs_margin(model=None, x=None, y=None, *, eps: float, steps: int = 20, max_gap: float = 0.05,
                       runner: SanityRunner | None = None) -> Verdict:
    """PGD-``steps`` on the CW margin loss must not leave accuracy more than ``max_gap`` (in
    [0, 1]) below PGD-``steps`` on cross-entropy, same step size. Carlini et al. advise trying
    more than one loss: a CE loss that is flat where the margin is not (soft or smoothed
    labels, a saturated softmax) makes CE-based PGD overstate robustness, which is what
    AutoAttack's DLR loss is designed to see through."""
    eps = _check_eps(eps)
    if not 0 <= max_gap <= 1:
        raise ValueError(f"max_gap must be in [0, 1], got {max_gap!r}")
    r = _runner(model, x, y, runner)
    p, c = r.acc(f"pgd{steps}", eps), r.acc(f"cw{steps}", eps)
    figs = {f"pgd{steps}": p, f"cw{steps}": c}
    if c + max_gap < p:
        return Verdict("ce_vs_margin", False, figs, "the cross-entropy loss is flat or saturated where the margin is "
                       "not (label smoothing, soft targets or a saturated softmax mask the CE gradient), so CE-based "
                       "PGD overstates robustness; report the margin-loss (CW, APGD-DLR/T) and AutoAttack figures",
                       f"CW-{steps} {_pct(c)} is more than {_pct(max_gap)} below PGD-{steps} {_pct(p)}")
    return Verdict("ce_vs_margin", True, figs, "", f"CW-{steps} {_pct(c)} is within {_pct(max_gap)} of (or above) "
                   f"PGD-{steps} {_pct(p)}")


def check_transfer(model=None, x=None, y=None, *, surrogate: nn.Module | None, eps: float, steps: int = 20,
                   tol: float | None = None, runner: SanityRunner | None = None) -> Verdict:
    """Black-box transfer: PGD-``steps`` crafted on ``surrogate`` (a separately trained model,
    usually standard-trained) must leave the model at least as accurate as white-box PGD-``steps``
    (minus ``tol``). ``surrogate=None`` skips the check (``passed=None``)."""
    eps = _check_eps(eps)
    if surrogate is None:
        return Verdict("transfer", None, {}, "", "not run: no surrogate model given (pass a standard-trained "
                       "checkpoint, e.g. fastmix eval --sanity --surrogate runs/<dataset>-standard/last.pt)")
    if not isinstance(surrogate, nn.Module):
        raise ValueError(f"surrogate must be a torch.nn.Module, got {type(surrogate).__name__}")
    r = _runner(model, x, y, runner)
    inner = parse_attack(f"pgd{steps}", eps)
    surrogate.eval()

    def transfer(_model, xb, yb):
        return inner(surrogate, xb, yb)

    name = f"transfer-pgd{steps}@{eps:g}"
    tr, wb = r.acc_of(name, transfer), r.acc(f"pgd{steps}", eps)
    figs = {"transfer": tr, f"pgd{steps}": wb}
    if tr + r.tol(tol) < wb:
        return Verdict("transfer", False, figs, f"a black-box attack beats the white-box one: {MASKING}",
                       f"transfer from the surrogate {_pct(tr)} < white-box PGD-{steps} {_pct(wb)}")
    return Verdict("transfer", True, figs, "", f"transfer from the surrogate {_pct(tr)} >= white-box PGD-{steps} "
                   f"{_pct(wb)}")


def run_sanity(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, surrogate: nn.Module | None = None,
               steps: int = 20, more_steps: Sequence[int] = (10, 50), restarts: int = 3, large_eps: float = 0.5,
               max_large_acc: float = 0.05, max_gap: float = 0.05, tol: float | None = None,
               batch_size: int = 256, seed: int = 0, progress: bool = False, warn: bool = True) -> list[Verdict]:
    """Run every check on ``model`` with images ``x`` (``(N, C, H, W)`` float in [0, 1] or uint8)
    and labels ``y`` (``(N,)`` int64) at radius ``eps``; shared accuracies are computed once.
    Each failed check issues a :class:`SanityWarning` naming the likely cause (``warn=True``).
    Returns the verdicts in the order of the module's table."""
    r = SanityRunner(model, x, y, batch_size=batch_size, seed=seed, progress=progress)
    out = [check_eps_curve(eps=eps, large_eps=large_eps, max_large_acc=max_large_acc, steps=steps, tol=tol, runner=r),
           check_more_steps(eps=eps, steps=more_steps, restarts=restarts, tol=tol, runner=r),
           check_fgsm_vs_pgd(eps=eps, steps=steps, tol=tol, runner=r),
           check_noise_vs_pgd(eps=eps, steps=steps, tol=tol, runner=r),
           check_ce_vs_margin(eps=eps, steps=steps, max_gap=max_gap, runner=r),
           check_transfer(surrogate=surrogate, eps=eps, steps=steps, tol=tol, runner=r)]
    if warn:
        for v in out:
            if v.passed is False:
                warnings.warn(f"sanity check {v.name} failed: {v.message}. Likely cause: {v.cause}", SanityWarning,
                              stacklevel=2)
    return out


def sanity_checkpoint(checkpoint: str, *, eps: float, surrogate: str | None = None, samples: int | None = None,
                      subset_seed: int = 0, data_dir: str | None = None, device: str = "auto",
                      batch_size: int = 256, seed: int = 0, progress: bool = False, large_eps: float = 0.5,
                      warn: bool = True, model=None) -> list[Verdict]:
    """:func:`run_sanity` on a checkpoint's held-out images (the fixed-seed subset of
    ``samples``, as :func:`fastmix.eval.evaluate_checkpoint` draws it), with ``surrogate``
    (a standard-trained checkpoint of the same dataset) for the transfer check. ``model``:
    for a run of a model of your own (:func:`fastmix.checkpoint.load_model`)."""
    model, x, y, _ = load_heldout(checkpoint, data_dir=data_dir, samples=samples, subset_seed=subset_seed,
                                  device=device, model=model)
    sur = load_model(surrogate, device)[0] if surrogate else None
    return run_sanity(model, x, y, eps=eps, surrogate=sur, batch_size=batch_size, seed=seed, progress=progress,
                      large_eps=large_eps, warn=warn)


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as lines of text, then a one-line summary."""
    failed = [v.name for v in verdicts if v.passed is False]
    tail = (f"{len(failed)} check(s) FAILED ({', '.join(failed)}): the robust accuracies above are probably "
            f"overestimates" if failed else "all sanity checks that ran passed")
    return "\n".join(str(v) for v in verdicts) + "\n" + tail


# ------------------------------------------------------------------- masked controls
class QuantizedInput(nn.Module):
    """A deliberately gradient-masked model (a control for the checks): ``model(round(x * levels)
    / levels)``. The rounding has no straight-through estimator, so the input gradient is
    exactly zero almost everywhere and every gradient attack stalls at its starting point,
    while the model is no more robust than ``model`` itself to perturbations larger than
    ``0.5 / levels``.

    Args: model (maps float ``(B, C, H, W)`` in [0, 1] to logits), levels (int >= 1, default 16:
    digits' 17 grey values pass through unchanged).
    """

    def __init__(self, model: nn.Module, levels: int = 16):
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be an int >= 1, got {levels!r}")
        self.model, self.levels = model, levels

    @property
    def num_classes(self):
        return getattr(self.model, "num_classes", None)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


class SaturatedLogits(nn.Module):
    """A deliberately gradient-masked model (a control for the checks): ``temperature *
    model(x)``. With a huge temperature the float32 softmax saturates, so the cross-entropy
    gradient of every confidently classified input underflows to exactly zero and CE-based
    attacks (FGSM, PGD) stall; the predictions, and the true robustness, are ``model``'s.
    Margin-based losses (CW, DLR) are unaffected by the scaling.

    Args: model, temperature (> 0, default 1e6).
    """

    def __init__(self, model: nn.Module, temperature: float = 1e6):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.model, self.temperature = model, float(temperature)

    @property
    def num_classes(self):
        return getattr(self.model, "num_classes", None)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.temperature
