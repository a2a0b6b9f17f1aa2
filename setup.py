"""Build script for fastmix.

``fastmix._C`` is built with ``torch.utils.cpp_extension`` (ninja): the C++ CPU kernels
always, the CUDA kernels in ``csrc/cuda/*.cu`` when the installed torch has CUDA and
nvcc is found.  ``FASTMIX_USE_CPP=0`` skips the extension entirely (fastmix then runs
on the torch reference and Triton).  ``FASTMIX_CUDA_ARCH`` (default ``9.0`` plus what
``TORCH_CUDA_ARCH_LIST`` says) picks the GPU architectures.

Install with ``pip install --no-build-isolation -e .`` so the build uses the torch
that is already installed instead of downloading another one.
"""
import glob
import os
import shutil

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


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

    cpu_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    extra_cxx = ["-O3", "-std=c++17", "-fopenmp"]
    if os.environ.get("FASTMIX_NATIVE", "0") == "1":
        extra_cxx.append("-march=native")
    with_cuda = (torch.version.cuda is not None and (CUDA_HOME is not None or shutil.which("nvcc"))
                 and os.environ.get("FASTMIX_USE_CUDA", "1") != "0")
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("FASTMIX_CUDA_ARCH", "9.0"))
        ext = CUDAExtension(
            "fastmix._C",
            cpu_sources + cuda_sources,
            define_macros=[("FASTMIX_WITH_CUDA", "1")],
            extra_compile_args={"cxx": extra_cxx,
                                "nvcc": ["-O3", "--use_fast_math", "-std=c++17", "--expt-relaxed-constexpr"]},
            extra_link_args=["-fopenmp"],
        )
        print("fastmix: building the CPU and CUDA kernels for", os.environ["TORCH_CUDA_ARCH_LIST"])
    else:
        ext = CppExtension("fastmix._C", cpu_sources, extra_compile_args={"cxx": extra_cxx},
                           extra_link_args=["-fopenmp"])
        print("fastmix: building the CPU kernels (torch has no CUDA or nvcc is missing)")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
