"""Memory safety and host syncs of the default op path (issue 11.2).

* Every index or label out of range raises a Python exception, on every backend, with
  the value scans on or off: the kernels check what they dereference (C++ loop check
  raising IndexError,
  ``tl.device_assert`` plus masked gathers in Triton, a host check under the Triton
  interpreter where device asserts are no-ops; torch's own bounds checks for the
  reference). The calls run in a subprocess, so a regression shows as a crashed child
  (exit -11), not as a dead test session.
* The default call of every op (forward and, for the losses, backward) reads nothing
  back to the host: a TorchDispatchMode counts the ops that force a sync.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import device_backends
from torch.utils._python_dispatch import TorchDispatchMode

import fastmix.ops as fops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_BACKENDS = [b for d, b in device_backends() if d == "cpu"]

_BAD_CALLS = textwrap.dedent("""
    import sys, torch
    import fastmix.ops as F
    bk, check = sys.argv[1], {"None": None, "False": False, "True": True}[sys.argv[2]]
    a = torch.rand(4, 3, 5, 5)
    z = torch.randn(4, 10)
    cases = {
        "mix index 10**6": lambda: F.mix(a, a, 0.5, torch.tensor([0, 1, 2, 10**6]), backend=bk, check=check),
        "mix index -1": lambda: F.mix(a, a, 0.5, torch.tensor([0, -1, 2, 3]), backend=bk, check=check),
        "mix index 5 (a pool of 3)": lambda: F.mix(a, a[:3], 0.5, torch.tensor([0, 1, 2, 5]), backend=bk, check=check),
        "soft_ce ya 10**9": lambda: F.soft_cross_entropy(z, torch.tensor([0, 1, 10**9, 3]), backend=bk, check=check),
        "soft_ce yb -3": lambda: F.soft_cross_entropy(z, torch.tensor([0, 1, 2, 3]), torch.tensor([0, -3, 2, 3]),
                                                      w=0.5, backend=bk, check=check),
        "soft_ce ya 10": lambda: F.soft_cross_entropy(z, torch.tensor([10, 1, 2, 3]), reduction="none",
                                                      backend=bk, check=check),
        "cw y 10**9": lambda: F.cw_margin(z, torch.tensor([0, 10**9, 2, 3]), backend=bk, check=check),
        "cw y -1": lambda: F.cw_margin(z, torch.tensor([0, 1, -1, 3]), backend=bk, check=check),
    }
    for name, fn in cases.items():
        print("CASE", name, flush=True)
        try:
            out = fn()
        except Exception as e:
            print("RAISED", type(e).__name__, str(e).splitlines()[0][:200], flush=True)
        else:
            print("NO ERROR", out, flush=True)
""")


def _run_bad_calls(backend, check):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _BAD_CALLS, backend, str(check)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("check", [None, False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_index_and_label_raise(backend, check):
    r = _run_bad_calls(backend, check)
    assert r.returncode == 0, f"the child died (exit {r.returncode}):\n" + r.stdout + r.stderr
    lines = r.stdout.splitlines()
    results = {}
    for i, ln in enumerate(lines):
        if ln.startswith("CASE"):
            results[ln[5:]] = lines[i + 1]
    assert len(results) == 8, r.stdout
    for case, res in results.items():
        assert res.startswith("RAISED"), f"{backend} check={check} {case}: {res}"
        kind = res.split()[1]
        if check:  # the scan finds it first and names the argument
            assert kind == "ValueError" and "must lie in" in res, (case, res)
        else:
            assert kind in ("RuntimeError", "IndexError"), (case, res)
        if backend == "triton" and not check:
            arg = case.split()[1]
            assert f"{arg}[" in res and "out of range" in res, (case, res)


def test_bad_index_message_names_the_value_under_the_interpreter():
    if "triton" not in CPU_BACKENDS:
        pytest.skip("the Triton interpreter is not available here")
    r = _run_bad_calls("triton", False)
    assert "RAISED IndexError fastmix::mix_triton: index[3] = 1000000 is out of range [0, 4)" in r.stdout, r.stdout
    assert "RAISED IndexError fastmix::soft_ce_fwd_triton: ya[2] = 1000000000 is out of range [0, 10)" in r.stdout


# ---------------------------------------------------------------------------- host syncs
_SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
    torch.ops.aten.equal.default, torch.ops.aten.nonzero.default, torch.ops.aten.item.default,
    torch.ops.aten._assert_async.default, torch.ops.aten.allclose.default,
}


class CountSyncs(TorchDispatchMode):
    """Counts the dispatched ops that read a tensor's value back to the host."""

    def __init__(self):
        super().__init__()
        self.syncs = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func in _SYNC_OPS or func.name().startswith(("aten::_local_scalar_dense", "aten::item")):
            self.syncs.append(func.name())
        return func(*args, **(kwargs or {}))


def _default_calls(backend):
    x = torch.rand(8, 3, 6, 6)
    g = torch.randn_like(x)
    z = torch.randn(8, 10, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    lam = torch.rand(8, requires_grad=True)
    a = torch.randn(8, 3, 6, 6, requires_grad=True)
    idx = torch.randperm(8)
    eps = torch.full((8,), 0.1)
    return {
        "pgd_step linf": lambda: fops.pgd_step(x, g, x, 8 / 255, 2 / 255, backend=backend),
        "pgd_step l2 tensor eps": lambda: fops.pgd_step(x, g, x, eps, 0.05, norm="l2", backend=backend),
        "pgd_step_": lambda: fops.pgd_step_(x.clone(), g, x, eps, 0.05, backend=backend),
        "random_start": lambda: fops.random_start(x, 8 / 255, backend=backend),
        "random_start l2": lambda: fops.random_start(x, eps, norm="l2", backend=backend),
        "mix fwd+bwd": lambda: torch.autograd.grad(fops.mix(a, a, lam, idx, backend=backend).sum(), (a, lam)),
        "soft_ce hard fwd+bwd": lambda: torch.autograd.grad(fops.soft_cross_entropy(z, y, backend=backend), z),
        "soft_ce mixup fwd+bwd": lambda: torch.autograd.grad(
            fops.soft_cross_entropy(z, y, y[idx], lam.detach(), 0.9, 0.9, backend=backend), z),
        "cw fwd+bwd": lambda: torch.autograd.grad(fops.cw_margin(z, y, kappa=1.0, backend=backend), z),
    }


@pytest.mark.parametrize("backend", [None] + [b for b in CPU_BACKENDS if b != "triton"])
def test_default_path_has_no_host_sync(backend):
    """Zero value reads back to the host on the default path of every op. (The Triton
    interpreter is left out: it copies tensors to numpy by design; on a GPU its
    launchers read nothing back, their index check being interpreter-only.)"""
    for name, fn in _default_calls(backend).items():
        with CountSyncs() as c:
            fn()
        assert c.ops > 0, name  # the mode saw the call
        assert c.syncs == [], f"{name} on {backend or fops.pick_backend('cpu')}: {c.syncs}"


def test_the_sync_counter_sees_a_scan():
    """The counter is not blind: check=True scans read back, and are counted."""
    x = torch.rand(4, 3)
    with CountSyncs() as c:
        fops.pgd_step(x, x, x, 0.1, 0.1, check=True)
    assert len(c.syncs) >= 3, c.syncs
