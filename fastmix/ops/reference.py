"""The torch references of every op (``*_ref``), gathered in one place for readers and
tests; each is defined in its op's module (``fastmix/ops/_<op>.py``)."""
from ._cw_margin import cw_margin_ref  # noqa: F401
from ._mix import mix_ref  # noqa: F401
from ._pgd_step import L2_GRAD_EPS, pgd_step_ref  # noqa: F401
from ._random_start import (L2_NOISE_EPS, draw_random_start_noise,  # noqa: F401
                            random_start_from_noise_ref, random_start_ref)
from ._soft_cross_entropy import soft_cross_entropy_ref, soft_target_ref  # noqa: F401
