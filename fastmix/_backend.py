"""Which op backends are present, why not when they are missing, and which one a call uses.

Everything here is decided **once**, when :mod:`fastmix.ops` is imported (``probe()``):
the C++ extension ``fastmix._C`` is loaded (a shared library beside torch; it does not
initialise CUDA), Triton's kernels are registered where Triton can run them (a CUDA or
ROCm build of torch, or ``TRITON_INTERPRET=1`` on a CPU machine), the environment
(``FASTMIX_BACKEND``, ``FASTMIX_USE_CPP``, ``FASTMIX_USE_TRITON``, ``FASTMIX_CHECK``) is
read, and a default backend is fixed per device type. The per-call path,
:func:`resolve`, is a dictionary lookup: no lock, no environment read, no import, so it
traces under ``torch.compile(fullgraph=True)``.

CPU versus CUDA kernels of the C++ extension is the dispatcher's choice (the same
``fastmix::<op>`` has a CPU and a CUDA kernel, picked by the tensors' dispatch key);
the backend names ``cpp`` and ``cuda`` both mean "the C++ op" and differ only in the
device they accept. CUDA versus Triton on a GPU is a setting: :func:`set_default` (or
``FASTMIX_BACKEND``), and :func:`use` for a scope (tests, benchmarks).

A missing backend is reported once (a warning at import when the C++ kernels are
absent though not disabled) and raised only when asked for by name, with the command
that fixes it.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import warnings

BACKENDS = ("torch", "cpp", "cuda", "triton")

_HOW_TO = {
    "cpp": "build it with `pip install --no-build-isolation -e .` (needs a C++ compiler and ninja; "
           "FASTMIX_USE_CPP must not be 0)",
    "cuda": "install a CUDA build of torch, make nvcc visible (CUDA_HOME), then rebuild with "
            "`pip install --no-build-isolation -e .`",
    "triton": "`pip install triton` (Linux); on a machine without a GPU set TRITON_INTERPRET=1 "
              "before importing fastmix to run the Triton kernels in the interpreter",
}

#: (available, reason) per backend, filled once by probe().
_status: dict[str, tuple[bool, str]] = {"torch": (True, "ok (reference)")}
#: the default backend per device type ("cpu", "cuda"; anything else runs the reference).
_default: dict[str, str] = {}
#: the backend FASTMIX_BACKEND forced (None: not forced).
_forced: str | None = None
#: FASTMIX_CHECK=1: the default of every op's ``check`` argument.
CHECK_BY_DEFAULT = False
#: CUDA device index -> (kernel image present, reason); filled on the first CUDA call.
_cuda_devices: dict[int, tuple[bool, str]] = {}
_probed = False


def interpret_mode() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1, read once)."""
    return _interpret


def _read_interpret() -> bool:
    v = os.environ.get("TRITON_INTERPRET", "0").strip().lower()
    return v in ("1", "true", "on", "yes")


_interpret = _read_interpret()


# ------------------------------------------------------------------------------ probing
def _load_cpp() -> tuple[bool, str]:
    if os.environ.get("FASTMIX_USE_CPP", "1") == "0":
        return False, "FASTMIX_USE_CPP=0"
    try:
        importlib.import_module("fastmix._C")
    except ImportError as e:  # not built, or built against another torch
        return False, f"fastmix._C could not be imported ({e})"
    import torch
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastmix::pgd_step", "CPU"):
        return False, "fastmix._C imported but registered no CPU kernels"
    return True, "ok"


def _load_cuda() -> tuple[bool, str]:
    ok, why = _status["cpp"]
    if not ok:
        return False, f"the extension is missing: {why}"
    import torch
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastmix::pgd_step", "CUDA"):
        return False, "fastmix._C was built without CUDA kernels (no nvcc at build time?)"
    return True, "ok"


def _load_triton() -> tuple[bool, str]:
    import torch
    if os.environ.get("FASTMIX_USE_TRITON", "1") == "0":
        return False, "FASTMIX_USE_TRITON=0"
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if not _interpret and torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return False, ("torch is a CPU build and TRITON_INTERPRET is not 1 (Triton needs a GPU, "
                       "or the interpreter)")
    try:
        importlib.import_module("fastmix.ops.triton")
    except Exception as e:  # a triton/torch version mismatch shows up here
        return False, f"fastmix.ops.triton failed to import: {type(e).__name__}: {e}"
    return True, "ok" + (" (interpreter: TRITON_INTERPRET=1)" if _interpret else "")


def probe() -> None:
    """Load every backend that can load and fix the defaults; runs once (fastmix.ops import)."""
    global _probed, _forced, CHECK_BY_DEFAULT
    if _probed:
        return
    _probed = True
    _status["cpp"] = _load_cpp()
    _status["cuda"] = _load_cuda()
    _status["triton"] = _load_triton()
    CHECK_BY_DEFAULT = os.environ.get("FASTMIX_CHECK", "0").strip().lower() in ("1", "true", "on", "yes")
    b = os.environ.get("FASTMIX_BACKEND", "").strip().lower()
    if b and b not in BACKENDS:
        # Raised at the first op call, not at import: `import fastmix` never fails.
        _forced = "invalid:" + b
    else:
        _forced = b or None
    _default["cpu"] = "cpp" if _status["cpp"][0] else "torch"
    _default["cuda"] = ("cuda" if _status["cuda"][0] else "triton" if _status["triton"][0] else "torch")
    if not _status["cpp"][0] and os.environ.get("FASTMIX_USE_CPP", "1") != "0" and _forced is None:
        warnings.warn(f"fastmix: C++ kernels unavailable ({_status['cpp'][1]}); using the torch "
                      f"reference on CPU. `python -m fastmix.info` lists every backend.",
                      RuntimeWarning, stacklevel=3)


# ------------------------------------------------------------------------------ queries
def status(name: str) -> tuple[bool, str]:
    """(available, reason) for one backend."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    probe()
    return _status[name]


def available(name: str) -> bool:
    return status(name)[0]


def report() -> dict[str, tuple[bool, str]]:
    return {b: status(b) for b in BACKENDS}


def require(name: str) -> None:
    """Raise a RuntimeError saying how to get a backend that was asked for by name."""
    ok, why = status(name)
    if not ok:
        raise RuntimeError(f"fastmix backend {name!r} was requested but is unavailable: {why}. "
                           f"To get it: {_HOW_TO[name]}.")


def forced_backend() -> str | None:
    """The backend forced by FASTMIX_BACKEND (read once), or None."""
    probe()
    if _forced is not None and _forced.startswith("invalid:"):
        raise ValueError(f"FASTMIX_BACKEND must be one of {BACKENDS}, got {_forced[8:]!r}")
    return _forced


def backends_for(device_type: str) -> list[str]:
    """Every backend that can run tensors on ``device_type`` here (for tests and benchmarks)."""
    probe()
    out = ["torch"]
    if device_type == "cpu" and _status["cpp"][0]:
        out.append("cpp")
    if device_type == "cuda" and _status["cuda"][0]:
        out.append("cuda")
    if _status["triton"][0] and (device_type == "cuda" or (device_type == "cpu" and _interpret)):
        out.append("triton")
    return out


# ----------------------------------------------------------------------- the hot path
def _check_named(b: str, device_type: str) -> str:
    if b not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {b!r}")
    if b == "torch":
        return b
    ok, why = _status[b]
    if not ok:
        require(b)
    if b == "cpp" and device_type != "cpu":
        raise ValueError(f"backend 'cpp' runs CPU tensors; got a tensor on {device_type!r} (use 'cuda' or 'triton')")
    if b == "cuda" and device_type != "cuda":
        raise ValueError(f"backend 'cuda' runs CUDA tensors; got a tensor on {device_type!r}")
    if b == "triton" and device_type == "cpu" and not _interpret:
        raise ValueError("backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before import")
    return b


def resolve(device, backend: str | None = None) -> str:
    """The backend a call on ``device`` (a torch.device) uses: ``backend`` if given, else the
    scoped/forced/default choice. A lookup; the checks run only for a named backend."""
    if backend is not None:
        return _check_named(backend.lower() if isinstance(backend, str) else backend, device.type)
    if _forced is not None:
        return _check_named(forced_backend(), device.type)
    b = _default.get(device.type, "torch")
    if b == "cuda" and not _cuda_device_ok(device.index):
        b = "triton" if _status["triton"][0] else "torch"
    return b


def _cuda_device_ok(index) -> bool:
    i = -1 if index is None else index
    ok = _cuda_devices.get(i)
    if ok is None:
        ok = _probe_cuda_device(i)
    return ok[0]


def _probe_cuda_device(i: int) -> tuple[bool, str]:
    """Whether fastmix._C holds a kernel image this CUDA device can run (first CUDA call only)."""
    import torch
    idx = torch.cuda.current_device() if i < 0 else i
    arch = getattr(torch.ops.fastmix, "cuda_kernel_arch", None)
    if arch is None:  # an extension without the query: trust it
        res = (True, "ok")
    elif int(arch(idx)) > 0:
        res = (True, "ok")
    else:
        cap = torch.cuda.get_device_capability(idx)
        built = getattr(importlib.import_module("fastmix._C"), "cuda_arch_list", "?")
        res = (False, f"fastmix._C has no kernel image for sm_{cap[0]}{cap[1]} (built for {built})")
        warnings.warn(f"fastmix: {res[1]}; using {'triton' if _status['triton'][0] else 'torch'} on "
                      f"cuda:{idx}", RuntimeWarning, stacklevel=4)
    _cuda_devices[i] = res
    _cuda_devices[idx] = res
    return res


# What torch.compiler.assume_constant_result sets, without importing torch._dynamo here
# (as heavy as torch itself): Dynamo runs the probe eagerly and keeps its answer.
_probe_cuda_device._dynamo_marked_constant = True


# ---------------------------------------------------------------------------- settings
def set_default(backend: str | None, device_type: str = "cuda") -> None:
    """Make ``backend`` the default for ``device_type`` (None restores the probed default).
    The CUDA-versus-Triton choice on a GPU is made here, once, not per call."""
    probe()
    if backend is None:
        _default.pop(device_type, None)
        _default["cpu"] = "cpp" if _status["cpp"][0] else "torch"
        _default["cuda"] = ("cuda" if _status["cuda"][0] else "triton" if _status["triton"][0] else "torch")
        return
    _default[device_type] = _check_named(backend.lower(), device_type)


@contextlib.contextmanager
def use(backend: str, device_type: str | None = None):
    """Scope in which calls without ``backend=`` use ``backend`` (on every device type it runs,
    or only on ``device_type``). For tests and benchmarks; not thread-safe by design (it
    changes the process-wide default and restores it on exit)."""
    probe()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "torch":
        require(backend)
    saved = dict(_default)
    global _forced
    saved_forced = _forced
    try:
        kinds = [device_type] if device_type else ["cpu", "cuda"]
        for k in kinds:
            if backend == "torch" or (backend == "cpp" and k == "cpu") or (backend == "cuda" and k == "cuda") \
                    or (backend == "triton" and (k == "cuda" or interpret_mode())):
                _default[k] = _check_named(backend, k)
        _forced = None
        yield
    finally:
        _default.clear()
        _default.update(saved)
        _forced = saved_forced
