"""Per-dataset defaults, and the one rule for "the eps, or the dataset's default".

:data:`DATASET_DEFAULTS` holds each dataset's usual model, schedule and attack budget
(``TrainConfig.for_dataset`` fills them in); :func:`attack_eps` is the radius every layer
uses when the caller gives none: the training eps of the run, or the dataset's usual eps
for a run trained without an attack (standard training has eps 0).
"""
from __future__ import annotations

__all__ = ["DATASET_DEFAULTS", "attack_eps"]

# Per-dataset defaults. eps is in [0, 1] pixel units. The training attack's step is
# left to the method (alpha=None): eps/4 for PGD-based methods (2/255 at CIFAR's 8/255,
# 1/255 at SVHN's 4/255), 1.25*eps for FastAT's single FGSM-RS step.
# digits: 8x8 images with 17 grey levels; eps 0.2 (~3 grey levels) takes a standard-
#   trained CNN to ~2% PGD-20 accuracy while PGD-AT keeps ~70% (README); a width-16 CNN.
# mnist: the classic eps 0.3 (Madry et al. used 40 steps of 0.01; here 20 steps of eps/4).
# cifar10/100: eps 8/255, 10 steps, GIF's 60-epoch piecewise schedule (lr 0.1, /10 at 30, 45).
# svhn: GIF's eps 4/255 with the customary lr 0.01.
DATASET_DEFAULTS = {
    "digits": dict(model="cnn", model_opts={"width": 16}, epochs=30, batch_size=64, lr=0.05,
                   weight_decay=5e-4, eps=0.2, steps=10, eval_samples=360),
    "mnist": dict(model="cnn", epochs=20, batch_size=128, lr=0.05, weight_decay=5e-4, eps=0.3,
                  steps=20, eval_samples=1000),
    "cifar10": dict(model="resnet18", epochs=60, batch_size=128, lr=0.1, weight_decay=5e-4,
                    eps=8 / 255, steps=10, eval_samples=1000),
    "cifar100": dict(model="resnet18", epochs=60, batch_size=128, lr=0.1, weight_decay=5e-4,
                     eps=8 / 255, steps=10, eval_samples=1000),
    "svhn": dict(model="resnet18", epochs=60, batch_size=128, lr=0.01, weight_decay=5e-4,
                 eps=4 / 255, steps=10, eval_samples=1000),
}


def attack_eps(dataset: str, eps: float | None = None, train_eps: float | None = None) -> float:
    """The attack radius (pixel units): ``eps`` when given; else ``train_eps`` when it is
    > 0 (a run's training eps); else the dataset's usual eps (:data:`DATASET_DEFAULTS`).

    Raises ValueError for an unknown ``dataset`` when its default is needed, or an ``eps``
    outside [0, 1].
    """
    if eps is not None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
            raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps!r}")
        return float(eps)
    if train_eps is not None and train_eps > 0:
        return float(train_eps)
    if dataset not in DATASET_DEFAULTS:
        raise ValueError(f"dataset must be one of {', '.join(DATASET_DEFAULTS)}, got {dataset!r}")
    return float(DATASET_DEFAULTS[dataset]["eps"])
