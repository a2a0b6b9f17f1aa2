"""The compiler flags of ``fastmix._C``, defined once (issue 12: no second copy).

Used by ``setup.py`` (imported by path) and by ``scripts/check_cuda_compile.sh``
(``python csrc/build_flags.py nvcc`` prints the nvcc command-line flags, one per
line).  No torch import at module level, so ``setup.py`` can read it anywhere.

GPU architectures (``cuda_arch_list``), first match wins:

1. ``FASTMIX_CUDA_ARCH`` -- fastmix's own setting, so it wins over a global one;
2. ``TORCH_CUDA_ARCH_LIST`` -- the variable torch extensions usually honour;
3. ``9.0+PTX`` -- sm_90 machine code (H100/H200) plus compute_90 PTX, which the
   driver JIT-compiles on any newer GPU (Blackwell, ...).  Older GPUs (A100 = 8.0,
   L4 = 8.9) need their arch listed, e.g. ``FASTMIX_CUDA_ARCH="8.0;9.0+PTX"``.

The list is turned into explicit ``-gencode`` flags here (torch's
``cpp_extension`` then adds none of its own), the same ones for the build and for
the compile check.
"""
from __future__ import annotations

import os
import re
import sys

CXX_FLAGS = ["-O3", "-std=c++17", "-fopenmp"]

# nvcc: IEEE float semantics, spelled out.  No --use_fast_math (issue 11.6): it would
# flush subnormals to zero (a subnormal gradient's sign(g) would become 0, issue
# 17.5, where torch.sign, the C++ and Triton kernels give +-1) and approximate
# division and sqrt.  -ftz=false / -prec-div=true / -prec-sqrt=true are nvcc's
# defaults without fast math; they are listed so that a change of default or an
# NVCC_APPEND_FLAGS cannot alter them silently.  FMA contraction stays on (nvcc's
# default): where the parity rule of docs/OPS.md fixes the rounding, the kernels
# write __fadd_rn/__fmul_rn/__fdiv_rn/__fsqrt_rn, which are never contracted.
NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-ftz=false", "-prec-div=true",
              "-prec-sqrt=true"]

DEFAULT_CUDA_ARCH = "9.0+PTX"

_ARCH = re.compile(r"^(\d+)\.(\d+)([a-z]?)(\+PTX)?$")


def cuda_arch_list(environ=None) -> str:
    """The architecture list to build for (see the module docstring for the precedence)."""
    env = os.environ if environ is None else environ
    for var in ("FASTMIX_CUDA_ARCH", "TORCH_CUDA_ARCH_LIST"):
        v = env.get(var, "").strip()
        if v:
            parse_arch_list(v, var)  # fail early on a typo
            return v
    return DEFAULT_CUDA_ARCH


def parse_arch_list(arch_list: str, name: str = "FASTMIX_CUDA_ARCH") -> list[tuple[str, bool]]:
    """``"8.0;9.0+PTX"`` -> ``[("80", False), ("90", True)]`` (digits, with PTX).

    Entries are separated by ``;``, ``,`` or spaces and are ``X.Y``, optionally with an
    arch-specific suffix (``9.0a``) and ``+PTX``."""
    out = []
    for item in re.split(r"[;,\s]+", arch_list.strip()):
        if not item:
            continue
        m = _ARCH.match(item)
        if m is None:
            raise ValueError(f"{name}: {item!r} is not an architecture like '9.0' or '9.0+PTX' "
                             f"(got {arch_list!r})")
        out.append((m.group(1) + m.group(2) + m.group(3), m.group(4) is not None))
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def gencode_flags(arch_list: str) -> list[str]:
    """nvcc ``-gencode`` flags: SASS for every entry, PTX for those marked ``+PTX``."""
    flags = []
    for num, ptx in parse_arch_list(arch_list):
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def arch_token(arch_list: str) -> str:
    """The list as one shell- and ninja-safe token, ``sm_90,compute_90`` (what the
    .so reports as ``fastmix._C.cuda_arch_list``)."""
    parts = []
    for num, ptx in parse_arch_list(arch_list):
        parts.append(f"sm_{num}")
        if ptx:
            parts.append(f"compute_{num}")
    return ",".join(parts)


def nvcc_flags(arch_list: str) -> list[str]:
    """Everything setup.py gives nvcc itself (torch's cpp_extension adds its
    includes, defines and COMMON_NVCC_FLAGS on top)."""
    return NVCC_FLAGS + gencode_flags(arch_list)


def check_flags(arch_list: str) -> list[str]:
    """The full nvcc flags of scripts/check_cuda_compile.sh: nvcc_flags() plus what
    torch.utils.cpp_extension adds for an extension named fastmix._C (imports torch)."""
    import sysconfig

    import torch
    from torch.utils import cpp_extension

    inc = os.path.join(os.path.dirname(torch.__file__), "include")
    extra = []
    # A CPU torch wheel lacks the generated c10/cuda/impl/cuda_cmake_macros.h (it only
    # carries a Windows DLL-export switch): skip it when it is not installed.
    if not os.path.exists(os.path.join(inc, "c10", "cuda", "impl", "cuda_cmake_macros.h")):
        extra.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return (extra + nvcc_flags(arch_list) + list(cpp_extension.COMMON_NVCC_FLAGS)
            + ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
               f"-I{inc}", f"-I{os.path.join(inc, 'torch', 'csrc', 'api', 'include')}",
               f"-I{sysconfig.get_paths()['include']}",
               "-Xcompiler", "-fPIC", "-Xcompiler", "-Wno-c++20-extensions", "-diag-suppress=20012,3306"])


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "nvcc"
    arch = cuda_arch_list()
    if what == "nvcc":
        print("\n".join(check_flags(arch)))
    elif what == "arch":
        print(arch)
    else:
        raise SystemExit(f"usage: {sys.argv[0]} [nvcc|arch]")
