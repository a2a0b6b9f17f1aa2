"""AT-mixup: adversarial training with vanilla mixup (GIF paper, Algorithm 5)."""
from __future__ import annotations

from .base import register
from .gif import GIF


@register
class ATMixup(GIF):
    """:class:`~fastmix.methods.gif.GIF`'s loop with *random* pairs from the whole training
    set and a random interpolation weight: ``lam ~ U(0, 1)`` (``lam_dist="uniform"``, the
    default) or ``Beta(0.3, 0.3)`` (``lam_dist="beta:0.3"``), per interpolated sample.

    Each step: ``m`` originals plus ``m'`` mixup samples (by default half the loader's batch
    each, Figure 1's "50% original data and 50% interpolated data"), pairs ``i != j``,
    ``lam x_i + (1 - lam) x_j`` with target ``SoftTarget(y_i, y_j, lam)``; all of them are
    attacked by the base method (AT by default) against their targets and the loss is
    the mean over ``m + m'``. No burn-in (Figure 1's setting). The attackable ratios of
    originals and of interpolated samples (Eq. 7) are logged like GIF's, so the two can
    be compared epoch by epoch.
    """

    name = "at-mixup"
    pool_kind = "all"
    default_lam = "uniform"
    default_burn_in = 0
