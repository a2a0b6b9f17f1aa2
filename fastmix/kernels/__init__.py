"""Triton backend of the fastmix ops: ``fastmix::<op>_triton``.

Import only where ``triton`` is importable (``fastmix.ops`` does so lazily, on first
use); importing registers every op below. The kernels assume the kernel form of
docs/OPS.md and are registered without autograd: the Python front adds autograd on
top. With ``TRITON_INTERPRET=1`` set before import the same kernels run on CPU
tensors through Triton's interpreter (registered as opaque custom ops, see
``_common``); otherwise they are ``triton_op`` s that ``torch.compile`` can trace.
"""
from ._common import INTERPRET
from .cw import cw_margin_bwd_triton, cw_margin_fwd_triton
from .mix import mix_triton
from .pgd import pgd_step__triton, pgd_step_triton, random_start_triton
from .soft_ce import soft_ce_bwd_triton, soft_ce_fwd_triton

#: Names of the registered ops (``torch.ops.fastmix.<name>``).
OPS = (
    "pgd_step_triton",
    "pgd_step__triton",
    "random_start_triton",
    "mix_triton",
    "soft_ce_fwd_triton",
    "soft_ce_bwd_triton",
    "cw_margin_fwd_triton",
    "cw_margin_bwd_triton",
)

__all__ = [
    "INTERPRET",
    "OPS",
    "cw_margin_bwd_triton",
    "cw_margin_fwd_triton",
    "mix_triton",
    "pgd_step__triton",
    "pgd_step_triton",
    "random_start_triton",
    "soft_ce_bwd_triton",
    "soft_ce_fwd_triton",
]
