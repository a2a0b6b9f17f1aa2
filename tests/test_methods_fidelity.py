"""Issue 13: each method as its paper and official code define it -- the checks that need a
whole training step rather than one formula.

- No host-to-device copy inside a training step of any method (item 4). A CPU-only
  machine has no host-to-device copy to count, so the step runs with the model, the data
  and every batch on PyTorch's ``meta`` device: every kernel runs on shapes only, and any
  tensor that reaches the step from host memory -- a CPU random draw moved with
  ``.to(device)``, ``torch.tensor(python_list, device=...)`` -- shows up as an operator
  taking a CPU tensor and producing a meta one (``aten._to_copy``), or a ``copy_`` from
  the CPU into a meta tensor. On a GPU those are exactly the pageable host-to-device
  copies that wait for the queued attack. The old code fails this test (AVmixup 1 copy,
  IAT 2, GIF 1, AT-mixup 2 per step).
- AVmixup's attack uses batch statistics without moving the running statistics (item 1).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

from fastmix import attacks, data as fdata, methods as M, models

C = 10
META = torch.device("meta")


class _FromHostData(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` and friends copy Python/NumPy data to the device
    below the dispatcher (invisible to a dispatch mode): catch them where they are called."""

    def __init__(self, copies):
        super().__init__()
        self.copies = copies

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor, torch.asarray):
            dev = kwargs.get("device")
            if dev is not None and torch.device(dev).type != "cpu":
                self.copies.append((func.__name__, "from host data"))
        return func(*args, **kwargs)


class HostToDeviceCopies(TorchDispatchMode):
    """Records every operator call that moves data from the CPU to another device: an op
    with a CPU tensor among its inputs and a non-CPU tensor among its outputs, an in-place
    ``copy_`` of a CPU tensor into a non-CPU one (0-dim CPU tensors count too: a
    ``.to(device)`` of one is a copy as well), and ``torch.tensor(data, device=...)``."""

    def __init__(self):
        super().__init__()
        self.copies = []
        self._fn = _FromHostData(self.copies)

    def __enter__(self):
        self._fn.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._fn.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        cpu_in = [tuple(t.shape) for t in ins if t.device.type == "cpu"]
        moved = cpu_in and any(t.device.type != "cpu" for t in outs)
        if func is torch.ops.aten.copy_.default:
            moved = args[0].device.type != "cpu" and isinstance(args[1], torch.Tensor) and args[1].device.type == "cpu"
        if moved:
            self.copies.append((str(func), cpu_in))
        return out


def test_the_counter_sees_the_copies_the_old_code_made():
    with HostToDeviceCopies() as c:
        torch.rand(4).to(META)                       # the old AVmixup alpha
        torch.cat([torch.randperm(3), torch.randperm(3)]).to(META)   # the old IAT permutation
        torch.tensor([1.0, 2.0], device=META)        # a tensor from Python data
        torch.empty(2, device=META).copy_(torch.ones(2))
    assert len(c.copies) == 4, c.copies
    with HostToDeviceCopies() as c:                  # draws and fills on the device are not copies
        torch.rand(4, device=META)
        torch.full((3,), 0.5, device=META)
        torch.arange(5, device=META) * 2
    assert c.copies == []


def _loader():
    d = fdata.load_digits()
    train = d.train.subset(torch.arange(96))
    return fdata.DeviceLoader(train, 16, shuffle=True, device=META, seed=0), len(train)


# Every registered method, in the state where its step does the most: GIF/AT-mixup after
# burn-in (interpolating, for each base), GAIRAT reweighting, IAT in both variants.
CASES = sorted((name, {}) for name in M.METHODS) + [
    ("gif", {"base": "trades"}), ("gif", {"base": "gairat", "base_opts": {"burn_in": 0}}),
    ("gif", {"base": "fastat"}), ("iat", {"variant": "mi-code"}), ("iat-manifold", {"variant": "mi-code"}),
    ("avmixup", {"attack_bn": "train"}),
]


@pytest.mark.parametrize("name,opts", CASES, ids=[n + "".join(f"-{v}" for v in o.values() if isinstance(v, str))
                                                  for n, o in CASES])
def test_no_host_to_device_copy_in_a_training_step(monkeypatch, name, opts):
    loader, n_train = _loader()
    torch.manual_seed(0)
    net = models.build("cnn", C, 1, 8, width=4, hidden=16).to(META)
    opts = dict(opts)
    if name in ("gif", "at-mixup"):
        opts.setdefault("burn_in", 0)
    if name == "gairat":
        opts.setdefault("burn_in", 0)
    m = M.build(name, eps=0.1, steps=2, **opts)
    m.bind(M.MethodContext(model=net, attack_model=net, module=net, num_classes=C, num_train=n_train, epochs=2,
                           device=META, fetch=loader.fetch))
    if isinstance(m, M.GIF):
        # The epoch's pool is one host read (nonzero) before the steps; meta tensors have no
        # values to read, so hand the method the pool that read would give (everything).
        monkeypatch.setattr(m, "attackable_pool", lambda: torch.arange(n_train, device=META))
    m.start_epoch(2)
    if isinstance(m, M.GIF):
        assert m.interpolating
    if isinstance(m, M.GAIRAT):
        assert m.reweighting
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(16, 1, 8, 8, device=META)
    y = torch.randint(0, C, (16,), device=META)
    idx = torch.randint(0, n_train, (16,), device=META)
    net.train()
    with HostToDeviceCopies() as c:   # the trainer's train_step: loss, backward, SGD step
        out = m.loss(x, y, idx)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    assert c.copies == [], f"{name}: {len(c.copies)} host-to-device copies per step: {c.copies}"


# ------------------------------------------------------------------ AVmixup's BatchNorm
def _bn_net(seed=0):
    torch.manual_seed(seed)
    net = models.build("cnn", C, 1, 8, width=4, hidden=16, batch_norm=True)
    net.train()
    for _ in range(2):  # running statistics away from their initial (0, 1)
        net(torch.rand(32, 1, 8, 8))
    return net


def _bn_buffers(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


class _BatchStatsOnly(torch.nn.Module):
    """A copy of a BatchNorm layer that normalises with the batch's statistics and never
    touches running buffers (functional batch norm without them): the official AVmixup
    attack's ``is_training=True`` without ``UPDATE_OPS``, written independently."""

    def __init__(self, bn):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, h):
        return F.batch_norm(h, None, None, self.weight, self.bias, training=True, eps=self.eps)


def _swap_bn(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, _BatchStatsOnly(child))
        else:
            _swap_bn(child)
    return module


def test_avmixup_attack_uses_batch_statistics_and_leaves_running_statistics_alone(monkeypatch):
    """Issue 13 item 1: the running statistics the training forward sees are the ones from
    before the attack (11 attack forwards at K = 10 would otherwise have moved them), and
    the attack's iterate equals PGD on a copy whose BatchNorm layers use batch statistics
    only (re-run from the same seed)."""
    net = _bn_net()
    before = _bn_buffers(net)
    seen = {}
    real_pgd = attacks.pgd

    def spy(model, x, y, **kw):
        out = real_pgd(model, x, y, **kw)
        seen["x_adv"], seen["after_attack"] = out.clone(), _bn_buffers(model)
        seen["training"] = [mod.training for mod in model.modules()]
        return out

    monkeypatch.setattr(attacks, "pgd", spy)
    m = M.build("avmixup", eps=0.2, steps=10)
    m.bind(M.MethodContext(model=net, attack_model=net, module=net, num_classes=C, num_train=64, epochs=2))
    x, y = torch.rand(24, 1, 8, 8), torch.randint(0, C, (24,))
    torch.manual_seed(5)
    m.loss(x, y, torch.arange(24))
    for k, v in before.items():
        assert torch.equal(seen["after_attack"][k], v), k
    means = [k for k in before if k.endswith("running_mean")]
    assert means
    after_step = _bn_buffers(net)  # the one training forward does update them
    assert all(not torch.equal(after_step[k], before[k]) for k in means)
    assert all(seen["training"]) and all(mod.track_running_stats for mod in net.modules()
                                         if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm))
    # independent reference: PGD on a batch-statistics-only copy, same seed
    ref = _swap_bn(copy.deepcopy(_bn_net()))
    torch.manual_seed(5)
    want = real_pgd(ref, x, y, eps=0.2, alpha=0.05, steps=10, bn_mode="keep", check=False)
    torch.testing.assert_close(seen["x_adv"], want, atol=1e-6, rtol=0)
    # plain train mode (the old behaviour) moves the running statistics during the attack
    net2 = _bn_net()
    m2 = M.build("avmixup", eps=0.2, steps=10, attack_bn="train")
    m2.bind(M.MethodContext(model=net2, attack_model=net2, module=net2, num_classes=C, num_train=64, epochs=2))
    m2.loss(x, y, torch.arange(24))
    assert all(not torch.equal(seen["after_attack"][k], before[k]) for k in means)


def test_frozen_running_stats_restores_tracking_on_error():
    net = _bn_net()
    with pytest.raises(RuntimeError, match="boom"):
        with M.base.frozen_running_stats(net):
            assert not any(mod.track_running_stats for mod in net.modules()
                           if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm))
            raise RuntimeError("boom")
    assert all(mod.track_running_stats for mod in net.modules()
               if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm))


# ------------------------------------------------ device draws are seeded and checkpointed
@pytest.mark.parametrize("method,opts", [("gif", {"burn_in": 1}), ("iat-manifold", {}), ("avmixup", {})])
def test_stop_and_resume_reproduces_the_run_with_device_draws(tmp_path, method, opts):
    """The random draws of a step now come from the device's generator (issue 13 item 4);
    the trainer seeds it and saves it in every checkpoint, so a run stopped after epoch 1
    and resumed is the uninterrupted run, step for step."""
    from fastmix.train import TrainConfig, Trainer
    d = fdata.load_digits()
    d.train = d.train.subset(torch.arange(256))

    def cfg(out, **kw):
        return TrainConfig.for_dataset("digits", method=method, method_opts=opts, epochs=3, steps=2,
                                       batch_size=32, model_opts={"width": 4, "hidden": 16}, eval_samples=32,
                                       eval_steps=2, probe_size=16, progress=False, deterministic=True,
                                       out=str(out), **kw)

    full = Trainer(cfg(tmp_path / "full"), d)
    full.fit()
    Trainer(cfg(tmp_path / "cut", stop_after=1), d).fit()
    resumed = Trainer(cfg(tmp_path / "cut", resume=True), d)
    resumed.fit()
    drop = {"seconds", "images_per_s", "eval_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in full.history]
    for k, v in full.module.state_dict().items():
        assert torch.equal(v, resumed.module.state_dict()[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: counts real host-to-device copies")
@pytest.mark.parametrize("name,opts", CASES, ids=[n + "".join(f"-{v}" for v in o.values() if isinstance(v, str))
                                                  for n, o in CASES])
def test_no_host_to_device_memcpy_in_a_cuda_training_step(monkeypatch, name, opts):
    """The same on a GPU, counted by the profiler: no ``Memcpy HtoD`` in one training step
    (after a warm-up step, so lazy initialisations are not counted)."""
    from torch.profiler import ProfilerActivity, profile
    dev = torch.device("cuda")
    d = fdata.load_digits()
    loader = fdata.DeviceLoader(d.train.subset(torch.arange(96)), 16, shuffle=True, device=dev, seed=0)
    torch.manual_seed(0)
    net = models.build("cnn", C, 1, 8, width=4, hidden=16).to(dev)
    opts = dict(opts)
    if name in ("gif", "at-mixup", "gairat"):
        opts.setdefault("burn_in", 0)
    m = M.build(name, eps=0.1, steps=2, **opts)
    m.bind(M.MethodContext(model=net, attack_model=net, module=net, num_classes=C, num_train=96, epochs=2,
                           device=dev, fetch=loader.fetch))
    m.start_epoch(2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y, idx = next(iter(loader))

    def step():
        out = m.loss(x, y, idx)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    htod = [e for e in prof.events() if "HtoD" in e.name]
    assert htod == [], f"{name}: {len(htod)} host-to-device copies per step"
