"""Distributed helpers for training: re-exported from :mod:`fastmix.dist`, where both the
trainer and the evaluation suite reach them."""
from ..dist import DistInfo, all_gather_cat, all_gather_object, all_reduce_sum, barrier, init, shutdown  # noqa: F401

__all__ = ["DistInfo", "init", "shutdown", "all_reduce_sum", "all_gather_cat", "all_gather_object", "barrier"]
