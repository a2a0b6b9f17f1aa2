"""Moved: the Triton kernels are ``fastmix.ops.triton`` (issue 12.5). This alias re-exports
its ops for old imports and costs nothing beyond importing that package."""
from fastmix.ops.triton import *  # noqa: F401,F403
from fastmix.ops.triton import __all__  # noqa: F401
