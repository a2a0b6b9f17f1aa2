"""fastmix's attacks (layer 2 of DESIGN.md), built on the fused ops of :mod:`fastmix.ops`.

Functional (tensors in, tensors out; no host syncs inside the K-step loop):

- :func:`pgd` (losses "ce" with hard or :class:`SoftTarget` labels, "cw", "kl" (TRADES),
  "dlr", any callable; L-inf/L2; restarts; GAIRAT's kappa with ``return_kappa=True``),
  :func:`fgsm`, :func:`fgsm_rs` (FastAT), :func:`feature_attack` (AIT),
  :func:`eot_pgd` (Mixup Inference's adaptive attack), :func:`apgd` (APGD-CE/DLR/T).

Classes with torchattacks' call contract (``atk(images, labels)``):
:class:`PGD`, :class:`PGDL2`, :class:`FGSM`, :class:`CW`, :class:`APGD`, :class:`APGDT`,
:class:`AutoAttack`.

Helpers: :class:`SoftTarget` (METHODS.md 1.2), :class:`AttackResult`,
:func:`attack_mode` (the context manager that freezes parameters and sets the BatchNorm
mode, restoring both), :func:`clear_graphs`.
"""
from ._engine import AttackResult, SoftTarget, attack_mode, clear_graphs, dlr, dlr_targeted
from .apgd import apgd
from .classes import APGD, APGDT, CW, FGSM, PGD, PGDL2, Attack, AutoAttack
from .functional import eot_pgd, feature_attack, fgsm, fgsm_rs, pgd

__all__ = [
    "pgd", "fgsm", "fgsm_rs", "feature_attack", "eot_pgd", "apgd",
    "Attack", "PGD", "PGDL2", "FGSM", "CW", "APGD", "APGDT", "AutoAttack",
    "SoftTarget", "AttackResult", "attack_mode", "clear_graphs", "dlr", "dlr_targeted",
]
