"""Which compiled backends are present, and why not when they are missing.

Nothing here runs at ``import fastmix``: the C++ extension and Triton are loaded on
first use (or by ``python -m fastmix.info``), CUDA is never initialised by a check,
and a missing backend is reported once with its reason, not raised, unless the user
forces that backend with ``FASTMIX_BACKEND`` or ``backend=``.
"""
from __future__ import annotations

import importlib
import os
import threading
import warnings

BACKENDS = ("torch", "cpp", "cuda", "triton")

_lock = threading.RLock()
_state: dict[str, tuple[bool, str]] = {}
_warned = False

_HOW_TO = {
    "cpp": "build it with `pip install --no-build-isolation -e .` (needs a C++ compiler and ninja; "
           "FASTMIX_USE_CPP must not be 0)",
    "cuda": "install a CUDA build of torch, make nvcc visible (CUDA_HOME), then rebuild with "
            "`pip install --no-build-isolation -e .`",
    "triton": "`pip install triton` (Linux); on a machine without a GPU set TRITON_INTERPRET=1 "
              "to run the Triton kernels in the interpreter",
}


def _load_cpp() -> tuple[bool, str]:
    if os.environ.get("FASTMIX_USE_CPP", "1") == "0":
        return False, "FASTMIX_USE_CPP=0"
    try:
        importlib.import_module("fastmix._C")
    except ImportError as e:  # not built, or built against another torch
        return False, f"fastmix._C could not be imported ({e})"
    import torch
    if not hasattr(torch.ops.fastmix, "pgd_step"):
        return False, "fastmix._C imported but registered no ops"
    return True, "ok"


def _load_cuda() -> tuple[bool, str]:
    ok, why = status("cpp")
    if not ok:
        return False, f"the extension is missing: {why}"
    import torch
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastmix::pgd_step", "CUDA"):
        return False, "fastmix._C was built without CUDA kernels (no nvcc at build time?)"
    return True, "ok"


def _load_triton() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return False, f"triton is not installed ({e})"
    try:
        importlib.import_module("fastmix.kernels")
    except Exception as e:  # a triton/torch version mismatch shows up here
        return False, f"fastmix.kernels failed to import: {type(e).__name__}: {e}"
    return True, "ok" + (" (interpreter: TRITON_INTERPRET=1)" if interpret_mode() else "")


_LOADERS = {"cpp": _load_cpp, "cuda": _load_cuda, "triton": _load_triton}


def interpret_mode() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def status(name: str) -> tuple[bool, str]:
    """(available, reason) for one backend; loads it on the first call."""
    if name == "torch":
        return True, "ok (reference)"
    if name not in _LOADERS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    with _lock:
        if name not in _state:
            _state[name] = (False, "loading")  # guards recursion cuda -> cpp
            _state[name] = _LOADERS[name]()
    return _state[name]


def available(name: str) -> bool:
    return status(name)[0]


def require(name: str) -> None:
    """Raise a RuntimeError saying how to get a backend that was asked for explicitly."""
    ok, why = status(name)
    if not ok:
        raise RuntimeError(f"fastmix backend {name!r} was requested but is unavailable: {why}. "
                           f"To get it: {_HOW_TO[name]}.")


def warn_fallback_once() -> None:
    """Say once, on first use, which compiled backends are missing and why."""
    global _warned
    if _warned:
        return
    _warned = True
    ok, why = status("cpp")
    if not ok and os.environ.get("FASTMIX_USE_CPP", "1") != "0":
        warnings.warn(f"fastmix: C++ kernels unavailable ({why}); using the torch reference on CPU. "
                      f"`python -m fastmix.info` lists every backend.", RuntimeWarning, stacklevel=3)


def forced_backend() -> str | None:
    """The backend forced by FASTMIX_BACKEND, or None."""
    b = os.environ.get("FASTMIX_BACKEND", "").strip().lower()
    if not b:
        return None
    if b not in BACKENDS:
        raise ValueError(f"FASTMIX_BACKEND must be one of {BACKENDS}, got {b!r}")
    return b


def pick(device_type: str, backend: str | None = None) -> str:
    """The backend for a tensor on ``device_type``: an explicit choice, else FASTMIX_BACKEND,
    else the fastest present one (cuda > triton > torch on GPU; cpp > torch on CPU)."""
    b = backend if backend is not None else forced_backend()
    if b is not None:
        b = b.lower()
        if b not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {b!r}")
        if b != "torch":
            require(b)
        if b == "cpp" and device_type != "cpu":
            raise ValueError(f"backend 'cpp' runs CPU tensors; got a tensor on {device_type!r} (use 'cuda' or 'triton')")
        if b == "cuda" and device_type != "cuda":
            raise ValueError(f"backend 'cuda' runs CUDA tensors; got a tensor on {device_type!r}")
        if b == "triton" and device_type == "cpu" and not interpret_mode():
            raise ValueError("backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before import")
        return b
    if device_type == "cuda":
        if available("cuda"):
            return "cuda"
        if available("triton"):
            return "triton"
        warn_fallback_once()
        return "torch"
    if device_type == "cpu":
        if available("cpp"):
            return "cpp"
        warn_fallback_once()
    return "torch"


def backends_for(device_type: str) -> list[str]:
    """Every backend that can run tensors on ``device_type`` here (for tests and benchmarks)."""
    out = ["torch"]
    if device_type == "cpu" and available("cpp"):
        out.append("cpp")
    if device_type == "cuda" and available("cuda"):
        out.append("cuda")
    if available("triton") and (device_type == "cuda" or interpret_mode()):
        out.append("triton")
    return out


def report() -> dict[str, tuple[bool, str]]:
    return {b: status(b) for b in BACKENDS}
