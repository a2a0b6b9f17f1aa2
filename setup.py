"""Build script for fastmix.

``fastmix._C`` is built with ``torch.utils.cpp_extension`` (ninja): the C++ CPU kernels
always, the CUDA kernels in ``csrc/cuda/*.cu`` when the installed torch has CUDA and
nvcc is found.  ``FASTMIX_USE_CPP=0`` skips the extension entirely (fastmix then runs
on the torch reference and Triton); ``FASTMIX_USE_CUDA=0`` builds the CPU kernels only.

GPU architectures: ``FASTMIX_CUDA_ARCH`` if set, else ``TORCH_CUDA_ARCH_LIST`` if set,
else ``9.0+PTX`` (sm_90 machine code plus compute_90 PTX that newer GPUs JIT-compile;
list older GPUs explicitly, e.g. ``FASTMIX_CUDA_ARCH="8.0;9.0+PTX"``).  fastmix's own
variable wins because ``TORCH_CUDA_ARCH_LIST`` is often set globally for other builds.
The compiler flags, and this rule, live in ``csrc/build_flags.py``, shared with
``scripts/check_cuda_compile.sh``.

Install with ``pip install --no-build-isolation -e .`` so the build uses the torch
that is already installed instead of downloading another one.
"""
import glob
import importlib.util
import os
import shutil

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _build_flags():
    spec = importlib.util.spec_from_file_location("fastmix_build_flags", os.path.join(HERE, "csrc", "build_flags.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _extensions():
    if os.environ.get("FASTMIX_USE_CPP", "1") == "0":
        print("fastmix: FASTMIX_USE_CPP=0, skipping the C++/CUDA extension")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME
    except ImportError:
        print("fastmix: torch is not importable at build time, skipping the C++/CUDA extension "
              "(install torch first, then `pip install --no-build-isolation -e .`)")
        return [], {}

    flags = _build_flags()
    cpu_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    extra_cxx = list(flags.CXX_FLAGS)
    if os.environ.get("FASTMIX_NATIVE", "0") == "1":
        extra_cxx.append("-march=native")
    with_cuda = (torch.version.cuda is not None and (CUDA_HOME is not None or shutil.which("nvcc"))
                 and os.environ.get("FASTMIX_USE_CUDA", "1") != "0")
    if with_cuda:
        arch = flags.cuda_arch_list()
        ext = CUDAExtension(
            "fastmix._C",
            cpu_sources + cuda_sources,
            # what the .so reports as fastmix._C.cuda_arch_list (a comma list, no spaces)
            define_macros=[("FASTMIX_CUDA_ARCH_LIST", flags.arch_token(arch))],
            # explicit -gencode flags: torch's cpp_extension then adds no arch flags of its own
            extra_compile_args={"cxx": extra_cxx, "nvcc": flags.nvcc_flags(arch)},
            extra_link_args=["-fopenmp"],
        )
        print(f"fastmix: building the CPU and CUDA kernels for {arch} ({flags.arch_token(arch)})")
    else:
        ext = CppExtension("fastmix._C", cpu_sources, extra_compile_args={"cxx": extra_cxx},
                           extra_link_args=["-fopenmp"])
        print("fastmix: building the CPU kernels (torch has no CUDA or nvcc is missing)")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
