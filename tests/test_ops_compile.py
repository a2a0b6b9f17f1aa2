"""The ops under torch.compile(fullgraph=True), and complete right after ``import fastmix``.

(a) one PGD step: model forward, ``torch.autograd.grad`` w.r.t. the input (Dynamo traces
it with ``trace_autograd_ops``), ``pgd_step``; (b) a mixup training loss with ``mix`` and
``soft_cross_entropy`` and its backward. Both compile whole (no graph break, checked
with ``torch._dynamo.explain``) and give the eager result. Then, in a fresh process:
the raw ``torch.ops.fastmix.*`` ops backpropagate and pass ``torch.library.opcheck``
without any public call having run first.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
from conftest import device_backends

import fastmix.ops as fops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_BACKENDS = [b for d, b in device_backends() if d == "cpu"]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


@pytest.fixture
def trace_autograd():
    import torch._dynamo
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        yield
    torch._dynamo.reset()


def _pgd_step_fn(model, backend, loss):
    def step(x, x_nat, y):
        x = x.detach().requires_grad_(True)
        out = model(x)
        if loss == "soft_ce":
            lv = fops.soft_cross_entropy(out, y, backend=backend)
        else:
            lv = fops.cw_margin(out, y, kappa=1.0, backend=backend)
        (g,) = torch.autograd.grad(lv, x)
        return fops.pgd_step(x.detach(), g, x_nat, 8 / 255, 2 / 255, backend=backend)
    return step


@pytest.mark.parametrize("loss", ["soft_ce", "cw"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_pgd_step_compiles_whole(trace_autograd, backend, loss):
    model = _model()
    x_nat = torch.rand(6, 3, 8, 8)
    x = (x_nat + 0.01 * torch.randn_like(x_nat)).clamp(0, 1)
    y = torch.randint(0, 10, (6,))
    step = _pgd_step_fn(model, backend, loss)
    ex = torch._dynamo.explain(step)(x, x_nat, y)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x, x_nat, y)
    want = step(x, x_nat, y)
    assert torch.equal(got, want)  # L-inf sign steps: bitwise


def test_pgd_step_compiles_with_inductor(trace_autograd):
    """The default backend through Inductor (C++ codegen on the CPU), same bits as eager."""
    model = _model()
    x_nat = torch.rand(4, 3, 8, 8)
    y = torch.randint(0, 10, (4,))
    step = _pgd_step_fn(model, None, "soft_ce")
    got = torch.compile(step, fullgraph=True)(x_nat, x_nat, y)
    assert torch.equal(got, step(x_nat, x_nat, y))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mixup_training_loss_and_backward_compile_whole(backend):
    torch._dynamo.reset()
    model = _model()
    x = torch.rand(6, 3, 8, 8)
    ya = torch.randint(0, 10, (6,))
    perm = torch.randperm(6)
    lam = torch.rand(6)

    def loss_fn(x, ya, perm, lam):
        xm = fops.mix(x, x, lam, perm, backend=backend)
        return fops.soft_cross_entropy(model(xm), ya, ya[perm], lam, 0.9, 0.9, backend=backend)

    ex = torch._dynamo.explain(loss_fn)(x, ya, perm, lam)
    assert ex.graph_break_count == 0, ex.break_reasons
    eager = loss_fn(x, ya, perm, lam)
    g_eager = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got = compiled(x, ya, perm, lam)
    g_got = torch.autograd.grad(got, list(model.parameters()))
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_got, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


_AFTER_IMPORT = textwrap.dedent("""
    import os, sys, torch
    import fastmix
    import fastmix._backend as B
    out = []
    suffixes = [""] if B.available("cpp") else []
    if B.available("triton"):
        suffixes.append("_triton")
    assert suffixes, "no compiled backend"
    ns = torch.ops.fastmix
    for s in suffixes:
        # raw ops, nothing else called before: gradients flow
        z = torch.randn(5, 7, requires_grad=True); y = torch.randint(0, 7, (5,)); f = torch.rand(5)
        loss, lse = getattr(ns, "soft_ce_fwd" + s)(z, y, y.flip(0), f, f, f)
        (g,) = torch.autograd.grad(loss.sum(), z)
        ref = torch.softmax(z, 1) - fastmix.ops.soft_target_ref(y, y.flip(0), f, f, f, 7)
        assert torch.allclose(g, ref, atol=1e-5), s
        m, j = getattr(ns, "cw_margin_fwd" + s)(z, y, 100.0)  # kappa large: every row active
        (gc,) = torch.autograd.grad(m.sum(), z)
        assert gc.abs().sum() > 0, s
        a = torch.randn(5, 3, requires_grad=True); lam = torch.rand(5, requires_grad=True)
        o = getattr(ns, "mix" + s)(a, a, lam, torch.randperm(5))
        ga, gl = torch.autograd.grad(o.sum(), (a, lam))
        assert ga.shape == a.shape and gl.shape == lam.shape, s
        # opcheck: schema, fake, autograd registration, functionalization
        x = torch.rand(3, 2, 4, 4); e = torch.full((3,), 0.1)
        cases = {
            "pgd_step": (x, torch.randn_like(x), x, e, e, 0, 0.0, 1.0),
            "pgd_step_": (x.clone(), torch.randn_like(x), x, e, e, 2, 0.0, 1.0),
            "random_start": (x, torch.rand_like(x), e, torch.rand(3), 2, 0.0, 1.0),
            "mix": (torch.randn(3, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True),
                    torch.rand(3, requires_grad=True), torch.tensor([4, 0, 2])),
            "soft_ce_fwd": (torch.randn(3, 6, requires_grad=True), torch.tensor([0, 5, 2]), torch.tensor([1, 1, 3]),
                            torch.rand(3), torch.rand(3), torch.rand(3)),
            "soft_ce_bwd": (torch.rand(3), torch.randn(3, 6), torch.rand(3), torch.tensor([0, 5, 2]),
                            torch.tensor([1, 1, 3]), torch.rand(3), torch.rand(3), torch.rand(3)),
            "cw_margin_fwd": (torch.randn(3, 6, requires_grad=True), torch.tensor([0, 5, 2]), 0.5),
            "cw_margin_bwd": (torch.rand(3), torch.randn(3, 6), torch.tensor([0, 5, 2]), torch.tensor([1, 0, 0]),
                              torch.tensor([-1.0, 0.2, 1.0]), 0.5),
        }
        for name, args in cases.items():
            torch.library.opcheck(getattr(ns, name + s).default, args)
            out.append(name + s)
    print("OK", " ".join(out))
""")


def test_raw_ops_are_complete_right_after_import():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _AFTER_IMPORT], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    done = r.stdout.split("OK", 1)[1].split()
    expected = {n + s for n in ("pgd_step", "pgd_step_", "random_start", "mix", "soft_ce_fwd", "soft_ce_bwd",
                                "cw_margin_fwd", "cw_margin_bwd")
                for s in ([""] if "cpp" in CPU_BACKENDS else []) + (["_triton"] if "triton" in CPU_BACKENDS else [])}
    assert set(done) == expected
