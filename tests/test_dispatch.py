"""Backend selection: probed once at import, forced backends, scoped choice, the CUDA image
check, the Triton launch device, and a CUDA-free import."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastmix
import fastmix.ops as fops
from fastmix import _backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, **env):
    e = dict(os.environ)
    e.update(env)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=300)


def test_import_registers_ops_without_cuda_triton_or_dynamo():
    """``import fastmix`` loads the C++ ops (so torch.ops.fastmix.* is complete at once) but
    initialises no CUDA, and imports neither Triton (on a CPU build of torch without the
    interpreter) nor torch._dynamo."""
    r = _run("""
        import sys, fastmix, torch
        import fastmix._backend as B
        assert ('fastmix._C' in sys.modules) == B.available('cpp')
        assert 'triton' not in sys.modules, 'triton imported at import'
        assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported at import'
        assert not torch.cuda.is_initialized()
        print('ok')
    """, TRITON_INTERPRET="0")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_use_cpp_0_falls_back_with_one_warning():
    r = _run("""
        import warnings, torch, fastmix.ops as F
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            x = torch.rand(2, 3)
            F.pgd_step(x, x, x, 0.1, 0.1); F.pgd_step(x, x, x, 0.1, 0.1)
        msgs = [str(m.message) for m in w if 'fastmix' in str(m.message)]
        print(F.pick_backend('cpu'), len(msgs))
        try:
            F.pgd_step(x, x, x, 0.1, 0.1, backend='cpp')
        except RuntimeError as e:
            print('ERR', e)
    """, FASTMIX_USE_CPP="0")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0].split()
    assert first == ["torch", "0"] or first == ["torch", "1"]
    assert "ERR fastmix backend 'cpp' was requested but is unavailable: FASTMIX_USE_CPP=0" in r.stdout
    assert "To get it: build it with `pip install --no-build-isolation -e .`" in r.stdout


def test_env_forces_backend():
    r = _run("""
        import fastmix.ops as F
        print(F.pick_backend('cpu'))
    """, FASTMIX_BACKEND="torch")
    assert r.stdout.strip() == "torch", r.stderr
    r = _run("""
        import fastmix.ops as F
        try:
            F.pick_backend('cpu')
        except ValueError as e:
            print(e)
    """, FASTMIX_BACKEND="fortran")
    assert "FASTMIX_BACKEND must be one of" in r.stdout


def test_cuda_backend_refuses_cpu_tensors():
    if not _backend.available("cuda"):
        with pytest.raises(RuntimeError, match="backend 'cuda' was requested but is unavailable"):
            fops.pgd_step(torch.rand(2, 2), torch.rand(2, 2), torch.rand(2, 2), 0.1, 0.1, backend="cuda")
    else:
        with pytest.raises(ValueError, match="backend 'cuda' runs CUDA tensors"):
            fops.pgd_step(torch.rand(2, 2), torch.rand(2, 2), torch.rand(2, 2), 0.1, 0.1, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fops.pick_backend("cpu", "numba")


def test_default_backend_on_cpu_is_cpp_when_built():
    assert fops.pick_backend("cpu") == ("cpp" if _backend.available("cpp") else "torch")


def test_info_lists_every_backend():
    r = _run("import fastmix.info as i; i.main(['--json'])")
    assert r.returncode == 0, r.stderr
    import json
    info = json.loads(r.stdout)
    assert set(info["backends"]) == {"torch", "cpp", "cuda", "triton"}
    for b, s in info["backends"].items():
        assert s["reason"], b
    assert fastmix.backends()["torch"][0]


def test_environment_is_read_once(monkeypatch):
    before = fops.pick_backend("cpu")
    monkeypatch.setenv("FASTMIX_BACKEND", "torch")
    assert fops.pick_backend("cpu") == before  # read at import, not per call


def test_use_backend_scopes_the_default():
    before = fops.pick_backend("cpu")
    with fops.use_backend("torch"):
        assert fops.pick_backend("cpu") == "torch"
        x = torch.rand(3, 4)
        torch.testing.assert_close(fops.pgd_step(x, x, x, 0.1, 0.1), fops.pgd_step_ref(x, x, x, 0.1, 0.1))
    assert fops.pick_backend("cpu") == before
    if _backend.interpret_mode() and _backend.available("triton"):
        with fops.use_backend("triton"):
            assert fops.pick_backend("cpu") == "triton"
    with pytest.raises(ValueError, match="backend must be one of"):
        with fops.use_backend("numba"):
            pass


def test_set_default_backend_is_one_setting():
    try:
        fops.set_default_backend("torch", "cpu")
        assert fops.pick_backend("cpu") == "torch"
    finally:
        fops.set_default_backend(None)
    assert fops.pick_backend("cpu") == ("cpp" if _backend.available("cpp") else "torch")


def test_cuda_without_a_kernel_image_falls_back(monkeypatch):
    """17.4: a build with no image for this GPU is not picked; the reason names the arch.
    (Unit test of the dispatch: the device query and the op are stubbed.)"""
    monkeypatch.setitem(_backend._status, "cuda", (True, "ok"))
    monkeypatch.setitem(_backend._status, "triton", (True, "ok"))
    monkeypatch.setitem(_backend._default, "cuda", "cuda")
    monkeypatch.setattr(_backend, "_cuda_devices", {})
    monkeypatch.setattr(_backend, "_forced", None)
    arch = {0: 90, 1: 0}
    monkeypatch.setattr(torch.ops.fastmix, "cuda_kernel_arch", lambda i: arch[i], raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (8, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert _backend.resolve(torch.device("cuda", 0)) == "cuda"
    with pytest.warns(RuntimeWarning, match=r"no kernel image for sm_80"):
        assert _backend.resolve(torch.device("cuda", 1)) == "triton"
    assert _backend.resolve(torch.device("cuda", 1)) == "triton"  # cached, no second warning
    assert _backend._cuda_devices[1][0] is False


def test_triton_launchers_enter_the_tensors_device(monkeypatch):
    """17.2: every Triton launcher runs its kernels under a guard for the device of its
    tensors (Triton itself launches on the *current* device). Without a GPU the guard is
    observed through a stub; the guard's own choice is checked on a fake CUDA tensor."""
    if not (_backend.available("triton") and _backend.interpret_mode()):
        pytest.skip("needs the Triton interpreter")
    import contextlib

    import fastmix.ops.triton._common as C
    import fastmix.ops.triton.cw_margin as tcw
    import fastmix.ops.triton.mix as tmix
    import fastmix.ops.triton.pgd_step as tpgd
    import fastmix.ops.triton.soft_cross_entropy as tsce

    seen = []

    def spy(t):
        seen.append(t.device)
        return contextlib.nullcontext()

    for m in (tcw, tmix, tpgd, tsce):
        monkeypatch.setattr(m, "device_guard", spy)
    x = torch.rand(2, 3, 4, 4)
    z = torch.randn(2, 5, requires_grad=True)
    y = torch.tensor([1, 3])
    fops.pgd_step(x, x, x, 0.1, 0.1, backend="triton")
    fops.pgd_step(x, x, x, 0.1, 0.1, norm="l2", backend="triton")
    fops.random_start(x, 0.1, backend="triton")
    fops.mix(x, x, 0.5, torch.tensor([1, 0]), backend="triton")
    torch.autograd.grad(fops.soft_cross_entropy(z, y, backend="triton"), z)
    torch.autograd.grad(fops.cw_margin(z, y, kappa=9.0, backend="triton"), z)
    assert len(seen) == 8 and all(d == torch.device("cpu") for d in seen), seen

    entered = []

    class FakeDevice:
        def __init__(self, dev):
            self.dev = dev

        def __enter__(self):
            entered.append(self.dev)

        def __exit__(self, *a):
            return False

    class FakeCudaTensor:
        device = torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "device", FakeDevice)
    with C.device_guard(FakeCudaTensor()):
        pass
    assert entered == [torch.device("cuda", 1)]
    with C.device_guard(x):  # CPU tensors (interpreter): no CUDA call at all
        pass
    assert entered == [torch.device("cuda", 1)]
