"""``python -m fastmix.info``: versions and the status of every backend, with reasons."""
from __future__ import annotations

import json
import platform
import sys


def collect() -> dict:
    import torch

    from . import __version__, _backend
    info = {
        "fastmix": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "triton_interpret": _backend.interpret_mode(),
    }
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    for opt in ("numpy", "torchattacks", "sklearn", "matplotlib", "torchvision"):
        try:
            mod = __import__(opt)
            info[opt] = getattr(mod, "__version__", "?")
        except Exception as e:  # torchvision may fail to import against a CPU torch
            info[opt] = f"unavailable ({type(e).__name__})"
    info["backends"] = {b: {"available": ok, "reason": why} for b, (ok, why) in _backend.report().items()}
    # what a call that names no backend uses (decided once, at import of fastmix.ops)
    try:
        info["forced_backend"] = _backend.forced_backend()
        info["default_backend"] = {"cpu": _backend.resolve(torch.device("cpu"))}
    except (ValueError, RuntimeError) as e:  # a bad or missing FASTMIX_BACKEND: say so, do not fail
        info["forced_backend"] = f"unusable ({e})"
        info["default_backend"] = {"cpu": _backend._default.get("cpu", "torch")}
    info["default_backend"]["cuda"] = _backend._default.get("cuda", "torch")  # without touching a GPU
    info["value_scans_by_default"] = _backend.CHECK_BY_DEFAULT  # FASTMIX_CHECK
    return info


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    info = collect()
    if "--json" in argv:
        print(json.dumps(info, indent=2))
        return 0
    for k, v in info.items():
        if k != "backends":
            print(f"{k:>16}: {v}")
    print("        backends:")
    for b, s in info["backends"].items():
        mark = "yes" if s["available"] else "no "
        print(f"    {b:>8}  {mark}  {s['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
