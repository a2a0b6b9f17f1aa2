"""Backend selection, forced backends, and a lazy, CUDA-free import."""
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


def test_import_is_lazy():
    r = _run("""
        import sys, fastmix
        assert 'fastmix._C' not in sys.modules, 'extension loaded at import'
        assert 'triton' not in sys.modules, 'triton imported at import'
        import torch
        assert not torch.cuda.is_initialized()
        print('ok')
    """)
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
