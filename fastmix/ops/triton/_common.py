"""Shared plumbing of the Triton backend: op registration, launch device, launch sizing,
the memory-safety checks of the launchers.

Registration depends on whether Triton runs compiled or under its CPU interpreter
(``TRITON_INTERPRET=1``, read once at import, as Triton itself does):

* compiled: ``torch.library.triton_op`` plus ``wrap_triton`` launches, so that
  ``torch.compile`` sees the kernels themselves and can schedule them;
* interpreted: an opaque ``torch.library.custom_op`` launching the kernel directly.
  ``triton_op`` cannot be used there: its functional decomposition runs the kernel
  body during AOT tracing, and the interpreter would then dereference the (absent)
  storage of fake tensors.
"""
import contextlib
import functools
import os

import torch


def _interpreting() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    try:  # Triton also accepts "true"/"on"; ask it where it can say
        import triton
        return bool(triton.knobs.runtime.interpret)
    except (ImportError, AttributeError):
        return False


INTERPRET = _interpreting()

if INTERPRET:

    def wrap_triton(kernel):
        # Identity: the op is opaque to tracing, so there is nothing to capture.
        return kernel

    def register(name, mutates_args=()):
        return torch.library.custom_op(name, mutates_args=mutates_args)

else:
    # The name ``wrap_triton`` matters: torch finds the kernels of a triton_op by
    # looking for ``wrap_triton(<kernel>)`` calls in its source (for cache keys).
    from torch.library import wrap_triton  # noqa: F401

    def register(name, mutates_args=()):
        return torch.library.triton_op(name, mutates_args=mutates_args)


def pow2(n) -> int:
    """Smallest power of two >= n (>= 1)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a, b) -> int:
    return -(-int(a) // int(b))


def warps_for(block: int, per_thread: int = 8) -> int:
    """num_warps giving each thread about ``per_thread`` elements of a block."""
    return max(1, min(8, block // (32 * per_thread)))


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; 1 off the GPU (interpreter), which
    makes the launch heuristics pick their single-kernel variants."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_sms(index)


def device_guard(t: torch.Tensor):
    """Make ``t``'s GPU the current device for a launch (issue 17.2).

    Triton launches on ``driver.active.get_current_device()``, not on the device of its
    arguments: tensors on ``cuda:1`` while ``cuda:0`` is current would be read through
    the wrong context (an illegal memory access). Every launcher enters this guard."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


#: Kernels that read through an index or a label are compiled with ``debug=True`` so that
#: their ``tl.device_assert`` bounds checks stay in (Triton drops them otherwise). Their
#: loads are also masked by the same condition, so an index out of range can never read
#: out of bounds even where an assert is compiled out; the row's result is then NaN.
SAFE_JIT = dict(debug=True)


# ----------------------------------------------------------------------------------
# Checks of the launchers. The public wrappers (fastmix.ops.<op>) guarantee the kernel
# form; these catch a caller of torch.ops.fastmix.*_triton that bypassed them, because
# a wrong layout would read out of bounds. One error type for contract violations:
# ValueError, as the wrappers raise.

def check(cond: bool, op: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"fastmix::{op}_triton: {msg}")


def check_index_values(op: str, name: str, t: torch.Tensor, n: int) -> None:
    """Under the interpreter only: an index or label outside ``[0, n)`` raises here.

    ``tl.device_assert`` is a no-op in Triton's interpreter (its builder never enables
    debug), and an out-of-range pointer there is a raw numpy read of host memory; the
    value scan costs nothing next to the interpreter itself. On a GPU the kernels'
    device asserts (and masked loads) do this job without a host read."""
    if not INTERPRET or t.numel() == 0:
        return
    bad = (t < 0) | (t >= n)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise IndexError(f"fastmix::{op}_triton: {name}[{i}] = {int(t[i])} is out of range [0, {n})")


def _is_dense_batch_outer(t: torch.Tensor) -> bool:
    """Dense storage (no gaps, no overlap) with the batch dimension outermost, i.e.
    sample ``i`` is the storage block ``[i*D, (i+1)*D)``. Size-1 dimensions are
    ignored: their stride is arbitrary and never used."""
    dims = sorted(((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1), reverse=True)
    expected = 1
    for st, sz in reversed(dims):
        if st != expected:
            return False
        expected *= sz
    if t.dim() > 0 and t.shape[0] > 1:
        return t.stride(0) == t.numel() // t.shape[0]
    return True


def _same_sample_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape[1:] != b.shape[1:]:
        return False
    return all(sa == sb for sa, sb, sz in zip(a.stride()[1:], b.stride()[1:], a.shape[1:])
               if sz != 1)


def check_images(op: str, first: torch.Tensor, *others: torch.Tensor, same_batch=True,
                 same_dtype=True) -> None:
    check(first.dim() >= 1, op, f"expected a batched tensor, got shape {tuple(first.shape)}")
    check(first.dtype in (torch.float32, torch.bfloat16, torch.float16), op,
          f"unsupported dtype {first.dtype}")
    check(_is_dense_batch_outer(first), op,
          f"tensor of shape {tuple(first.shape)} and strides {first.stride()} is not dense "
          "with the batch dimension outermost")
    for t in others:
        check(t.device == first.device, op, f"device mismatch: {t.device} vs {first.device}")
        if same_dtype:
            check(t.dtype == first.dtype, op, f"dtype mismatch: {t.dtype} vs {first.dtype}")
        if same_batch:
            check(t.shape == first.shape, op,
                  f"shape mismatch: {tuple(t.shape)} vs {tuple(first.shape)}")
        check(_same_sample_layout(first, t) and _is_dense_batch_outer(t), op,
              f"layout mismatch: strides {t.stride()} vs {first.stride()}")


def check_vec(op: str, name: str, t: torch.Tensor, n: int, dtype: torch.dtype,
              device: torch.device) -> None:
    check(t.dtype == dtype, op, f"{name} must be {dtype}, got {t.dtype}")
    check(t.shape == (n,), op, f"{name} must have shape ({n},), got {tuple(t.shape)}")
    check(t.device == device, op, f"{name} is on {t.device}, expected {device}")
    check(t.is_contiguous(), op, f"{name} must be contiguous")


def check_logits(op: str, logits: torch.Tensor) -> None:
    check(logits.dim() == 2, op, f"logits must be 2-D (B, C), got shape {tuple(logits.shape)}")
    check(logits.shape[1] >= 2, op, f"logits need C >= 2 classes, got {logits.shape[1]}")
    check(logits.dtype in (torch.float32, torch.bfloat16, torch.float16), op,
          f"unsupported logits dtype {logits.dtype}")
    check(logits.is_contiguous(), op, "logits must be contiguous")


def row_tiles(B: int, C: int, max_block_c: int = 2048, tile: int = 1024):
    """(BLOCK_B, BLOCK_C, num_warps) for a row-wise kernel over a (B, C) matrix:
    whole rows in one chunk up to ``max_block_c`` classes, and several rows per
    program when C is small so that a program still moves ~``tile`` elements."""
    block_c = min(pow2(C), max_block_c)
    block_b = max(1, min(pow2(B), tile // block_c))
    return block_b, block_c, warps_for(block_b * block_c, per_thread=4)
