"""fastmix's attacks (layer 2 of DESIGN.md), built on the fused ops of :mod:`fastmix.ops`.

Functional (tensors in, tensors out; no host syncs inside the K-step loop):

- :func:`pgd` (losses "ce" with hard or :class:`SoftTarget` labels, "cw", "kl" (TRADES),
  "dlr", any callable; L-inf/L2; restarts; GAIRAT's kappa with ``return_kappa=True``),
  :func:`fgsm`, :func:`fgsm_rs` (FastAT), :func:`feature_attack` (AIT),
  :func:`eot_pgd` (Mixup Inference's adaptive attack), :func:`apgd` (APGD-CE/DLR/T).

Classes with torchattacks' call contract (``atk(images, labels)``):
:class:`PGD`, :class:`PGDL2`, :class:`FGSM`, :class:`CW`, :class:`APGD`, :class:`APGDT`,
:class:`AutoAttack`.

Attacks by name (what ``fastmix eval --attacks`` accepts): :func:`parse_attack`
(``"pgd20"``, ``"cw20"``, ``"apgd-t"``, ``"autoattack"``, ...), :class:`EvalAttack`,
:func:`expand_attacks`.

Helpers: :class:`SoftTarget` (METHODS.md 1.2, defined in :mod:`fastmix.ops.target`),
:class:`AttackResult`, :func:`attack_mode` (the context manager that freezes parameters
and sets the BatchNorm mode, restoring both), :func:`fold_bn` (BatchNorm folded into the
preceding convolution for the duration of an eval-mode attack; every attack's ``fold_bn=``),
:func:`clear_graphs`.

Modules: ``functional`` (the attacks), ``apgd``, ``classes`` (torchattacks-style classes),
``autoattack`` (AutoAttack and the torchattacks bridge), ``specs`` (names), ``fold`` (BatchNorm
folding), ``loop`` (input
gradient, K-step loop), ``losses``, ``modes`` (model state, autocast), ``graphs`` (CUDA-graph
capture and cache), ``checks`` (argument validation).
"""
from ..ops.target import SoftTarget
from .apgd import apgd
from .autoattack import AutoAttack
from .classes import APGD, APGDT, CW, FGSM, PGD, PGDL2, Attack
from .fold import fold_bn
from .functional import eot_pgd, feature_attack, fgsm, fgsm_rs, pgd
from .graphs import clear_graphs
from .loop import AttackResult
from .losses import dlr, dlr_targeted
from .modes import attack_mode
from .specs import ALL_ATTACKS, ATTACK_NAMES, EvalAttack, expand_attacks, has_torchattacks, parse_attack

__all__ = [
    "pgd", "fgsm", "fgsm_rs", "feature_attack", "eot_pgd", "apgd", "fold_bn",
    "Attack", "PGD", "PGDL2", "FGSM", "CW", "APGD", "APGDT", "AutoAttack",
    "SoftTarget", "AttackResult", "attack_mode", "clear_graphs", "dlr", "dlr_targeted",
    "parse_attack", "EvalAttack", "expand_attacks", "ALL_ATTACKS", "ATTACK_NAMES", "has_torchattacks",
]
