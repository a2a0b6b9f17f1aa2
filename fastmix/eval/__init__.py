"""Evaluation (layer 4 of DESIGN.md): the attack suite, worst-case accuracy and the sanity
checks that catch overstated robustness.

>>> from fastmix.eval import evaluate, run_sanity, format_verdicts
>>> res = evaluate(model, x, y, "all", eps=8 / 255, batch_size=256, progress=True)
>>> print(res.table())                       # per attack, then the worst case
>>> print(format_verdicts(run_sanity(model, x, y, eps=8 / 255, surrogate=standard_model)))

``fastmix eval --checkpoint RUN/last.pt --attacks all --samples 500 --sanity`` is the command.

Modules: ``suite`` (evaluate, accuracy, checkpoints), ``sanity`` (the gradient-masking
checks), ``curves`` (accuracy vs eps, Mixup Inference on a checkpoint). Attack names are
parsed by :mod:`fastmix.attacks.specs` (re-exported here).
"""
from ..attacks.specs import ALL_ATTACKS, ATTACK_NAMES, EvalAttack, expand_attacks, has_torchattacks, parse_attack
from .sanity import (QuantizedInput, SanityRunner, SanityWarning, SaturatedLogits, Verdict, check_ce_vs_margin,
                     check_eps_curve, check_fgsm_vs_pgd, check_more_steps, check_noise_vs_pgd, check_transfer,
                     format_verdicts, run_sanity, sanity_checkpoint)
from .suite import SuiteResult, accuracy, evaluate, evaluate_checkpoint, load_heldout, select_subset
from .curves import default_eps_grid, eps_curves, evaluate_checkpoint_mi, mi_curves, mi_split

__all__ = ["parse_attack", "EvalAttack", "expand_attacks", "ALL_ATTACKS", "ATTACK_NAMES", "has_torchattacks",
           "evaluate", "evaluate_checkpoint", "accuracy", "SuiteResult", "select_subset", "load_heldout",
           "Verdict", "SanityWarning", "SanityRunner", "run_sanity", "format_verdicts", "check_eps_curve",
           "check_more_steps", "check_fgsm_vs_pgd", "check_noise_vs_pgd", "check_ce_vs_margin", "check_transfer",
           "QuantizedInput", "SaturatedLogits", "sanity_checkpoint", "eps_curves", "default_eps_grid", "mi_split", "evaluate_checkpoint_mi",
           "mi_curves"]
