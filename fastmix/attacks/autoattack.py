"""AutoAttack (Croce and Hein 2020) with torchattacks' call contract, and the bridge to
torchattacks for the two parts fastmix does not implement natively (FAB-T and Square).

APGD-CE, APGD-DLR and APGD-T run on :func:`fastmix.attacks.apgd`; FAB-T and Square are
torchattacks' own classes, run on the same (normalisation-wrapped) model with the same
mode flags, under :func:`~fastmix.attacks.modes.attack_mode` so no weight gradient is
computed and every mode is restored. torchattacks is an optional dependency: without it
a clear ImportError names the fix, or ``attacks=("apgd-ce", "apgd-t")`` runs the native
part only.
"""
from __future__ import annotations

import torch

from ..ops import _validate as validate
from .apgd import apgd
from .checks import check_int
from .classes import Attack, check_number, check_seed, torchattacks_norm
from .modes import attack_mode

__all__ = ["AutoAttack", "import_torchattacks"]


class AutoAttack(Attack):
    """AutoAttack (Croce and Hein 2020): attacks run in sequence, each on the samples the
    previous ones left robust.

    ``version="standard"``: APGD-CE, APGD-T (``n_classes - 1`` targets), FAB-T and Square
    (5000 queries); ``"rand"``: APGD-CE and APGD-DLR with ``eot_iter=20``. APGD-CE and
    APGD-T run natively; FAB-T and Square run through torchattacks when it is installed
    (otherwise a clear ImportError names the fix, or pass ``attacks=("apgd-ce", "apgd-t")``).

    Args: norm ('Linf' | 'L2'), eps (8/255), version, n_classes (10), seed (None: torch's
    RNG), verbose, steps (100, AutoAttack's; torchattacks' AutoAttack uses its APGD default
    of 10), attacks (a subset/order of "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square";
    a list, or one comma-separated string),
    n_queries (Square's budget, 5000).
    """

    _VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}

    def __init__(self, model, norm="Linf", eps=8 / 255, version="standard", n_classes=10, seed=None,
                 verbose=False, steps=100, attacks=None, n_queries=5000, **fast):
        super().__init__("AutoAttack", model, **fast)
        self.norm = norm
        self._fm_norm = torchattacks_norm(norm)
        self.eps = check_number("eps", eps)
        if version not in self._VERSIONS:
            raise ValueError(f"version must be one of {tuple(self._VERSIONS)}, got {version!r}")
        self.version = version
        self.n_classes = check_int("n_classes", n_classes, 2)
        self.seed = check_seed(seed)
        self.verbose = verbose
        self.steps = check_int("steps", steps, 1)
        self.n_queries = check_int("n_queries", n_queries, 1)
        if isinstance(attacks, str):  # "apgd-ce" or "apgd-ce,apgd-t": names, not characters
            attacks = [a.strip() for a in attacks.split(",") if a.strip()]
        names = tuple(attacks) if attacks is not None else self._VERSIONS[version]
        if not names:
            raise ValueError("attacks must name at least one attack, got an empty list")
        known = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
        for a in names:
            if a not in known:
                raise ValueError(f"attacks must be names from {known}, got {a!r}")
        self.attacks = names
        if any(a in ("fab-t", "square") for a in names):
            import_torchattacks()  # fail at construction, not half-way through an evaluation

    def _run_one(self, name, images, labels):
        fast = {k: v for k, v in self._fast.items() if k not in ("cuda_graph", "fold_bn")}
        eot = 20 if self.version == "rand" else 1
        net = self._net(images.device)
        common = dict(eps=self.eps, steps=self.steps, norm=self._fm_norm, seed=self.seed, bn_mode=self._mode(),
                      eot_iter=eot, check=False, **fast)
        if name == "apgd-ce":
            return apgd(net, images, labels, loss="ce", **common)
        if name == "apgd-dlr":
            return apgd(net, images, labels, loss="dlr", **common)
        if name == "apgd-t":
            return apgd(net, images, labels, loss="dlr", targeted=True,
                        n_target_classes=self.n_classes - 1, **common)
        ta = import_torchattacks()
        seed = 0 if self.seed is None else self.seed
        if name == "fab-t":
            atk = ta.FAB(net, norm=self.norm, eps=self.eps, steps=self.steps, n_restarts=1, seed=seed,
                         multi_targeted=True, n_classes=self.n_classes)
        else:
            atk = ta.Square(net, norm=self.norm, eps=self.eps, n_queries=self.n_queries, n_restarts=1,
                            seed=seed)
        atk.set_model_training_mode(*self._mode())
        with attack_mode(self.model, self._mode()):  # no weight gradients; modes restored
            return atk(images, labels)

    def forward(self, images, labels):
        with torch.no_grad():
            logits = self._eval_logits(images)
        validate.in_range("labels", labels, 0, logits.shape[1] - 1, f" (the model has C={logits.shape[1]} classes)")
        robust = logits.argmax(dim=1) == labels
        adv = images.clone()
        for name in self.attacks:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xa = self._run_one(name, images[idx], labels[idx])
            with torch.no_grad():
                fooled = self._eval_logits(xa).argmax(dim=1) != labels[idx]
            adv[idx[fooled]] = xa[fooled]
            robust[idx[fooled]] = False
            if self.verbose:
                print(f"{name}: robust accuracy {robust.float().mean().item():.2%}")
        return adv


def import_torchattacks():
    """The torchattacks module, or an ImportError that says how to get it."""
    try:
        import torchattacks
    except ImportError as e:
        raise ImportError("AutoAttack's FAB-T and Square run through torchattacks, which is not installed: "
                          "`pip install torchattacks` (or `pip install fastmix[attacks]`), or pass "
                          "attacks=('apgd-ce', 'apgd-t') for the native part only") from e
    return torchattacks
