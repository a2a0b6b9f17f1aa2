"""Triton backend of the fastmix ops: ``fastmix::<op>_triton``, one module per op family
(``pgd_step`` also holds ``random_start``, which shares its L2 launch plan).

Imported by :mod:`fastmix._backend` at ``import fastmix.ops`` where Triton can run (a GPU
build of torch, or ``TRITON_INTERPRET=1``); importing it defines every op below, and
``fastmix.ops`` then registers their fakes and autograd from the per-op modules, so
the ops are complete as soon as they exist. The kernels assume the kernel form of
docs/OPS.md. With ``TRITON_INTERPRET=1`` set before import the same kernels run on CPU
tensors through Triton's interpreter (registered as opaque custom ops, see
``_common``); otherwise they are ``triton_op`` s that ``torch.compile`` can trace.
"""
from ._common import INTERPRET
from .cw_margin import cw_margin_bwd_triton, cw_margin_fwd_triton
from .mix import mix_triton
from .pgd_step import pgd_step__triton, pgd_step_triton, random_start_triton
from .soft_cross_entropy import soft_ce_bwd_triton, soft_ce_fwd_triton

__all__ = [
    "INTERPRET",
    "cw_margin_bwd_triton",
    "cw_margin_fwd_triton",
    "mix_triton",
    "pgd_step__triton",
    "pgd_step_triton",
    "random_start_triton",
    "soft_ce_bwd_triton",
    "soft_ce_fwd_triton",
]
