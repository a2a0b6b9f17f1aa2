"""The build of fastmix._C: one definition of the flags, the GPU-architecture rule, and the
compile-time numerics check of the CUDA kernels (issues 11.6, 12, 17.4, 17.5, 17.7).

The PTX rules are checked here on small kernels compiled with the project's own nvcc
flags (and, to show the check can fail, with --use_fast_math); scripts/check_cuda_compile.sh
applies the same rules to the real kernels in CI (set FASTMIX_PTX_DIR to a directory it
filled with PTX_DIR=... to re-check them here).
"""
import glob
import importlib.util
import os
import shutil
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_fm_{name}", os.path.join(ROOT, "csrc", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bf = _load("build_flags")
rules = _load("ptx_rules")


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    cand = os.path.join(home, "bin", "nvcc")
    return cand if os.path.exists(cand) else None


# ------------------------------------------------------------------ architecture rule
def test_arch_precedence():
    assert bf.cuda_arch_list({}) == "9.0+PTX"
    assert bf.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "8.0"}) == "8.0"
    # fastmix's own variable wins over the global torch one (issue 17.4: it used to be ignored)
    assert bf.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "8.0", "FASTMIX_CUDA_ARCH": "9.0+PTX"}) == "9.0+PTX"
    assert bf.cuda_arch_list({"FASTMIX_CUDA_ARCH": "  ", "TORCH_CUDA_ARCH_LIST": "8.6"}) == "8.6"
    with pytest.raises(ValueError, match=r"FASTMIX_CUDA_ARCH: 'sm_90' is not an architecture"):
        bf.cuda_arch_list({"FASTMIX_CUDA_ARCH": "sm_90"})


def test_gencode_sass_plus_ptx():
    assert bf.gencode_flags("9.0+PTX") == ["-gencode=arch=compute_90,code=sm_90",
                                           "-gencode=arch=compute_90,code=compute_90"]
    assert bf.gencode_flags("8.0;9.0a") == ["-gencode=arch=compute_80,code=sm_80",
                                            "-gencode=arch=compute_90a,code=sm_90a"]
    assert bf.arch_token("8.0 9.0+PTX") == "sm_80,sm_90,compute_90"


def test_one_definition_of_the_flags():
    """setup.py and the compile check both read csrc/build_flags.py; nobody spells nvcc
    flags of their own, and fast math is nowhere."""
    flags = bf.nvcc_flags("9.0+PTX")
    assert "--use_fast_math" not in flags and "-use_fast_math" not in flags
    assert {"-ftz=false", "-prec-div=true", "-prec-sqrt=true"} <= set(flags)
    setup_py = open(os.path.join(ROOT, "setup.py")).read()
    script = open(os.path.join(ROOT, "scripts", "check_cuda_compile.sh")).read()
    assert "build_flags" in setup_py and "build_flags.py nvcc" in script
    for text in (setup_py, script):
        assert "fast_math" not in text.replace("No --use_fast_math", "")
        assert "-O3" not in text and "FASTMIX_WITH_CUDA" not in text


def test_extension_reports_its_archs():
    C = pytest.importorskip("fastmix._C", reason="fastmix._C is not built")
    assert isinstance(C.cuda_arch_list, str)
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("fastmix::pgd_step", "CUDA")
    assert bool(C.cuda_arch_list) == has_cuda, "an arch list exactly when CUDA kernels are compiled in"
    assert hasattr(torch.ops.fastmix, "cuda_kernel_arch") == has_cuda
    if has_cuda and torch.cuda.is_available():
        arch = torch.ops.fastmix.cuda_kernel_arch(torch.cuda.current_device())
        major, minor = torch.cuda.get_device_capability()
        assert arch == 0 or arch <= 10 * major + minor


# ------------------------------------------------------------------------- PTX rules
_PTX = """
.visible .entry _ZN7fastmix4cuda15pgd_linf_kernelIfLi4EjEEvPKT_(
{
\tsetp.gt.f32 \t%p1, %f1, 0f00000000;
\tadd.rn.f32 \t%f2, %f1, %f3;
\tret;
}
.visible .entry _ZN7fastmix4cuda13pgd_l2_kernelIfLi4ELi4EEEvPKT_(
{
\tsqrt.rn.f32 \t%f1, %f2;
\tdiv.rn.f32 \t%f3, %f4, %f1;
\tfma.rn.f32 \t%f5, %f3, %f3, %f5;
}
.visible .entry _ZN7fastmix4cuda18soft_ce_fwd_kernelIfLi4ELi32EEEvPKT_(
{
\tex2.approx.ftz.f32 \t%f1, %f2;
}
"""


def test_ptx_rules_accept_the_intended_code():
    assert rules.violations(_PTX) == []
    assert set(map(rules.short_name, rules.kernels(_PTX))) == {"pgd_linf_kernel", "pgd_l2_kernel",
                                                               "soft_ce_fwd_kernel"}


@pytest.mark.parametrize("bad,what", [
    ("setp.gt.ftz.f32 \t%p1, %f1, 0f00000000;", "flush-to-zero"),  # issue 17.5
    ("fma.rn.f32 \t%f2, %f1, %f3, %f2;", "contracted"),
])
def test_ptx_rules_reject_in_linf(bad, what):
    text = _PTX.replace("setp.gt.f32 \t%p1, %f1, 0f00000000;", bad)
    v = rules.violations(text)
    assert len(v) == 1 and "pgd_linf_kernel" in v[0] and (what in v[0] or "fma" in v[0]), v


def test_ptx_rules_reject_approximate_l2_and_exp():
    v = rules.violations(_PTX.replace("sqrt.rn.f32", "sqrt.approx.f32"))
    assert any("sqrt.approx.f32" in x for x in v) and any("no sqrt.rn.f32" in x for x in v), v
    # the expf core is allowed in soft_ce kernels only, and __expf's ex2.approx.f32 nowhere
    assert rules.violations(_PTX.replace("soft_ce_fwd", "cw_margin_fwd"))
    assert rules.violations(_PTX.replace("ex2.approx.ftz.f32", "ex2.approx.f32"))


def test_ptx_rules_reject_stack_frames():
    """A printf in a device assert gives every kernel that has it a stack frame."""
    text = _PTX.replace("\tsqrt.rn.f32", "\t.local .align 16 .b8 \t__local_depot1[48];\n\tsqrt.rn.f32")
    v = rules.violations(text)
    assert len(v) == 1 and "pgd_l2_kernel" in v[0] and "stack frame" in v[0], v


_TINY_CU = r"""
namespace fastmix { namespace cuda {
__global__ void pgd_linf_kernel(const float* g, const float* x, float* o, float a) {
  const int i = threadIdx.x;
  const float s = static_cast<float>((g[i] > 0.0f) - (g[i] < 0.0f));
  o[i] = __fadd_rn(x[i], __fmul_rn(a, s));
}
__global__ void pgd_l2_kernel(const float* g, float* o, float n) {
  const int i = threadIdx.x;
  o[i] = __fdiv_rn(g[i], __fsqrt_rn(n)) + g[i] * g[i];
}
__global__ void soft_ce_fwd_kernel(const float* z, float* o) { o[threadIdx.x] = expf(z[threadIdx.x]); }
}}
"""


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (CUDA toolkit absent)")
def test_project_flags_compile_without_ftz_or_approx(tmp_path):
    """Compiled with the project's nvcc flags the code has no .ftz and no approx except
    expf's core; with --use_fast_math (the old build) the same code fails the rules."""
    src = tmp_path / "tiny.cu"
    src.write_text(_TINY_CU)

    def ptx(flags, name):
        out = tmp_path / name
        subprocess.run([_nvcc()] + flags + ["-arch=compute_90", "-ptx", str(src), "-o", str(out)], check=True,
                       capture_output=True, timeout=300)
        return out.read_text()

    good = ptx(list(bf.NVCC_FLAGS), "good.ptx")
    assert rules.violations(good) == [], rules.violations(good)
    assert "setp.gt.f32" in good
    old = ptx(["-O3", "--use_fast_math", "-std=c++17"], "fast.ptx")  # the previous setup.py flags
    v = rules.violations(old)
    assert any("setp.gt.ftz.f32" in x for x in v), v
    # and the explicit -ftz=false of the project flags survives a fast-math flag added later
    assert not any(".ftz" in x for x in rules.violations(ptx(list(bf.NVCC_FLAGS) + ["--use_fast_math"], "f2.ptx")))


@pytest.mark.skipif(not os.environ.get("FASTMIX_PTX_DIR"), reason="set FASTMIX_PTX_DIR to the PTX_DIR of a "
                    "scripts/check_cuda_compile.sh run (the script applies these rules itself in CI)")
def test_real_kernels_ptx():
    files = sorted(glob.glob(os.path.join(os.environ["FASTMIX_PTX_DIR"], "*.ptx")))
    assert files
    bad = [b for f in files for b in rules.violations(open(f).read(), f)]
    assert bad == []
    names = {rules.short_name(k) for f in files for k in rules.kernels(open(f).read())}
    assert {"pgd_linf_kernel", "pgd_l2_kernel", "pgd_l2_apply_kernel", "mix_kernel", "soft_ce_bwd_kernel"} <= names
