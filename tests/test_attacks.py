"""Unit tests of fastmix.attacks on tiny random models (fast; parity with torchattacks on
a trained model is in test_attacks_parity.py)."""
import contextlib

import pytest
import torch
from torch import nn

import fastmix.attacks as A
from _single_thread import _single_thread  # noqa: F401  (autouse fixture)
from fastmix.attacks import SoftTarget

B, C = 12, 10


class Net(nn.Module):
    """A tiny CNN with BatchNorm and Dropout (so eval and train modes differ)."""

    def __init__(self, in_ch=1, side=8, classes=C):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(6 * side * side, 16), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(16, classes)

    def features(self, x):
        return self.fc(self.conv(x))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def net():
    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():  # non-trivial running statistics
        m(torch.rand(32, 1, 8, 8))
    return m.eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 1, 8, 8, generator=g), torch.randint(0, C, (B,), generator=g)


def linf(a, b):
    return (a - b).flatten(1).abs().amax(1)


def predict(model, x):
    with torch.no_grad():
        return model.eval()(x).argmax(1)


# ---------------------------------------------------------------------------- constraints
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_pgd_stays_in_ball_and_range(net, data, norm, loss):
    x, y = data
    eps = 0.1 if norm == "linf" else 0.5
    xa = A.pgd(net, x, y, eps=eps, alpha=eps / 4, steps=5, norm=norm, loss=loss)
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert xa.min() >= 0 and xa.max() <= 1
    d = linf(xa, x) if norm == "linf" else (xa - x).flatten(1).norm(dim=1)
    assert (d <= eps * (1 + 1e-5) + 1e-6).all()
    assert (d > 0).any()


def test_per_sample_eps(net, data):
    x, y = data
    eps = torch.linspace(0, 0.2, B)
    xa = A.pgd(net, x, y, eps=eps, alpha=0.05, steps=3)
    assert (linf(xa, x) <= eps + 1e-6).all()
    assert torch.equal(xa[0], x[0])  # eps = 0


def test_pgd_increases_loss(net, data):
    x, y = data
    xa = A.pgd(net, x, y, eps=0.2, alpha=0.05, steps=5, random_start=False)
    ce = lambda z: nn.functional.cross_entropy(net(z), y, reduction="none")  # noqa: E731
    with torch.no_grad():
        assert ce(xa).mean() > ce(x).mean()


def test_fgsm_and_fgsm_rs(net, data):
    x, y = data
    xa = A.fgsm(net, x, y, eps=0.1)
    xg = x.clone().requires_grad_(True)
    with A.attack_mode(net):
        g, = torch.autograd.grad(nn.functional.cross_entropy(net(xg), y, reduction="sum"), xg)
    assert torch.equal(xa, (x + 0.1 * g.sign()).clamp(0, 1))
    xr = A.fgsm_rs(net, x, y, eps=0.1)
    assert (linf(xr, x) <= 0.1 + 1e-6).all() and not torch.equal(xr, xa)


# ------------------------------------------------------------------ model state restored
def _snapshot(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _mixed_state(model):
    model.train()
    model.conv[1].eval()  # a BN in eval inside a training model
    model.head.weight.requires_grad_(False)


@pytest.mark.parametrize("bn_mode", ["eval", "train", "keep", (True, False, False)])
def test_mode_and_requires_grad_restored(net, data, bn_mode):
    x, y = data
    _mixed_state(net)
    before = _snapshot(net)
    seen = {}

    def hook(mod, inp):
        seen["bn_training"] = net.conv[1].training
        seen["dropout_training"] = net.fc[3].training
        seen["any_requires_grad"] = any(p.requires_grad for p in net.parameters())

    h = net.register_forward_pre_hook(hook)
    A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=2, bn_mode=bn_mode)
    h.remove()
    assert _snapshot(net) == before
    assert seen["any_requires_grad"] is False
    expect_bn = {"eval": False, "train": True, "keep": False, (True, False, False): False}[bn_mode]
    expect_do = {"eval": False, "train": True, "keep": True, (True, False, False): False}[bn_mode]
    assert seen["bn_training"] == expect_bn and seen["dropout_training"] == expect_do


class _Overrides(torch.nn.Module):
    """A module whose train() and __setattr__ are its own: attack_mode must go through them."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.calls = []

    def train(self, mode=True):
        self.calls.append(mode)
        return super().train(mode)

    def __setattr__(self, name, value):
        if name == "training" and "calls" in self.__dict__:
            self.calls.append(("set", value))
        super().__setattr__(name, value)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_attack_mode_with_shared_and_custom_modules(bn_mode):
    """A submodule shared by two parents, a parameter shared by two layers, and a module
    with its own train()/__setattr__: every flag is set for the attack and restored after."""
    from fastmix.attacks import attack_mode
    shared, custom = torch.nn.BatchNorm1d(4), _Overrides()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), shared, torch.nn.Sequential(shared, custom),
                                torch.nn.Dropout(0.5))
    model[0].weight = custom.lin.weight  # tied weights
    model.train()
    model[3].eval()
    custom.lin.bias.requires_grad_(False)
    before = _snapshot(model)
    flag = bn_mode == "train"
    with attack_mode(model, bn_mode):
        assert all(m.training is flag for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        assert custom.calls  # its own train() ran
    assert _snapshot(model) == before
    assert custom.lin.weight.requires_grad and not custom.lin.bias.requires_grad


def test_state_restored_on_exception(net, data):
    x, y = data
    _mixed_state(net)
    before = _snapshot(net)

    def bad_loss(logits, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=2, loss=bad_loss)
    assert _snapshot(net) == before
    with pytest.raises(RuntimeError, match="boom"):
        with A.attack_mode(net, "train"):
            raise RuntimeError("boom")
    assert _snapshot(net) == before


def test_class_training_mode_and_restore(net, data):
    x, y = data
    _mixed_state(net)
    before = _snapshot(net)
    atk = A.PGD(net, eps=0.1, alpha=0.02, steps=2)
    atk.set_model_training_mode(model_training=True, batchnorm_training=False, dropout_training=True)
    seen = {}
    h = net.register_forward_pre_hook(lambda m, i: seen.update(bn=net.conv[1].training, do=net.fc[3].training,
                                                               model=net.training))
    atk(x, y)
    h.remove()
    assert seen == {"bn": False, "do": True, "model": True}
    assert _snapshot(net) == before


def test_no_weight_grad(net, data):
    x, y = data
    for p in net.parameters():
        p.grad = None
    A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3)
    A.apgd(net, x, y, eps=0.1, steps=4)
    A.feature_attack(net, x, eps=0.1)
    A.PGD(net)(x, y)
    assert all(p.grad is None for p in net.parameters())


def test_works_under_no_grad(net, data):
    x, y = data
    with torch.no_grad():
        xa = A.pgd(net, x, y, eps=0.1, alpha=0.05, steps=2, random_start=False)
    assert not torch.equal(xa, x)


# ----------------------------------------------------------------------- no host syncs
@contextlib.contextmanager
def _forbid_host_reads():
    """Make every Tensor -> Python read raise (what a host sync would be on a GPU)."""
    names = ["item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"]
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def boom(self, *a, **k):
        raise AssertionError("host read inside the attack")

    try:
        for n in names:
            setattr(torch.Tensor, n, boom)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def test_attack_loops_have_no_host_syncs(net, data):
    x, y = data
    with pytest.raises(AssertionError, match="host read"), _forbid_host_reads():
        A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=1, check=True)  # the guard works
    st = SoftTarget(y, y.flip(0), torch.rand(B), 0.9, 1.0)
    with _forbid_host_reads():
        A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, check=False, return_kappa=True)
        A.pgd(net, x, st, eps=0.1, alpha=0.02, steps=2, check=False)
        A.pgd(net, x, y, eps=0.5, alpha=0.1, steps=2, norm="l2", loss="cw", check=False)
        A.pgd(net, x, None, eps=0.1, alpha=0.02, steps=2, loss="kl", check=False)
        A.feature_attack(net, x, eps=0.1, check=False)
        A.eot_pgd(net, x, y, transform=lambda z: z + 0.01 * torch.randn_like(z), eot_iter=2, eps=0.1,
                  alpha=0.02, steps=2, check=False)
        A.apgd(net, x, y, eps=0.1, steps=6, check=False, compact=False)
        A.apgd(net, x, y, eps=0.1, steps=6, targeted=True, n_target_classes=2, check=False, compact=False)


# -------------------------------------------------------------------------------- kappa
def test_kappa_matches_naive_per_sample_loop(data):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, C)).eval()
    x, y = data
    K, eps, alpha = 6, 0.3, 0.08
    res = A.pgd(net, x, y, eps=eps, alpha=alpha, steps=K, random_start=False, return_kappa=True)
    # naive reference: plain torch PGD, checking each sample one at a time before each step
    kappa = [0] * B
    xk = x.clone()
    for _ in range(K):
        for i in range(B):
            if net(xk[i:i + 1]).argmax().item() == y[i].item():
                kappa[i] += 1
        xg = xk.clone().requires_grad_(True)
        g, = torch.autograd.grad(nn.functional.cross_entropy(net(xg), y, reduction="sum"), xg)
        xk = torch.min(torch.max(xk + alpha * g.sign(), x - eps), x + eps).clamp(0, 1).detach()
    assert res.kappa.dtype == torch.int64
    assert res.kappa.tolist() == kappa
    assert 0 < sum(kappa) < B * K  # some samples flip part-way
    assert torch.allclose(res.x_adv, xk, atol=1e-6)


def test_kappa_with_restarts_and_soft_target(net, data):
    x, y = data
    res = A.pgd(net, x, SoftTarget(y), eps=0.1, alpha=0.02, steps=4, restarts=2, return_kappa=True)
    assert res.kappa.shape == (B,) and res.kappa.min() >= 0 and res.kappa.max() <= 4


# -------------------------------------------------------------------------- soft targets
def test_soft_target_hard_equals_hard_label(net, data):
    x, y = data
    a = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False)
    b = A.pgd(net, x, SoftTarget(y), eps=0.1, alpha=0.02, steps=3, random_start=False)
    c = A.pgd(net, x, SoftTarget(y, y, 1.0, 1.0, 1.0), eps=0.1, alpha=0.02, steps=3, random_start=False)
    assert torch.equal(b, c)
    assert (a - b).abs().max() <= 1e-6 or ((a - b).abs() > 1e-6).float().mean() < 0.01


def test_soft_target_matches_dense_reference(net, data):
    x, y = data
    st = SoftTarget(y, torch.roll(y, 1), torch.rand(B), torch.full((B,), 0.9), 0.2)
    dense = st.dense(C)
    assert torch.allclose(dense.sum(1), torch.ones(B))

    def dense_ce(logits, _):
        return -(dense * torch.log_softmax(logits.float(), 1)).sum(1)

    a = A.pgd(net, x, st, eps=0.1, alpha=0.02, steps=3, random_start=False)
    b = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False, loss=dense_ce)
    assert ((a - b).abs() > 1e-6).float().mean() < 0.01


# ------------------------------------------------------------------------ other losses
def test_kl_trades_attack(net, data):
    x, _ = data
    xa = A.pgd(net, x, None, eps=0.1, alpha=0.02, steps=5, loss="kl")
    assert (linf(xa, x) <= 0.1 + 1e-6).all()
    with torch.no_grad():
        p = torch.log_softmax(net(x), 1)
        kl = lambda z: (p.exp() * (p - torch.log_softmax(net(z), 1))).sum(1)  # noqa: E731
        assert kl(xa).mean() > 10 * kl((x + 0.001 * torch.randn_like(x)).clamp(0, 1)).mean()


def test_kl_without_random_start_is_deterministic(net, data):
    # issue 17 item 1: loss="kl" used to take TRADES's normal start even with
    # random_start=False, so two eager calls (and a graph replay vs eager) drew different noise.
    x, _ = data
    kw = dict(eps=0.1, alpha=0.02, steps=3, loss="kl")
    torch.manual_seed(1)
    a = A.pgd(net, x, None, random_start=False, **kw)
    torch.manual_seed(2)
    b = A.pgd(net, x, None, random_start=False, **kw)
    assert torch.equal(a, b) and (linf(a, x) <= 0.1 + 1e-6).all()
    torch.manual_seed(1)
    c = A.pgd(net, x, None, random_start=True, **kw)
    torch.manual_seed(2)
    d = A.pgd(net, x, None, random_start=True, **kw)
    assert not torch.equal(c, d) and not torch.equal(c, x)  # the random start still draws


def test_cw_untargeted_and_targeted(net, data):
    x, y = data
    margin = lambda z, t: (net(z).scatter(1, t[:, None], -1e9).amax(1) - net(z).gather(1, t[:, None])[:, 0])  # noqa
    xa = A.CW(net, eps=0.3, alpha=0.05, steps=10)(x, y)
    with torch.no_grad():
        assert margin(xa, y).mean() > margin(x, y).mean()
    t = (y + 1) % C
    xt = A.pgd(net, x, t, eps=0.3, alpha=0.05, steps=10, loss="cw", targeted=True, confidence=1.0)
    with torch.no_grad():
        assert margin(xt, t).mean() < margin(x, t).mean()


def test_restarts_never_worse_than_first_run(net, data):
    x, y = data
    torch.manual_seed(5)
    one = A.pgd(net, x, y, eps=0.05, alpha=0.01, steps=3)
    torch.manual_seed(5)
    three = A.pgd(net, x, y, eps=0.05, alpha=0.01, steps=3, restarts=3)
    fooled1, fooled3 = predict(net, one) != y, predict(net, three) != y
    assert (fooled3 | ~fooled1).all()
    assert (linf(three, x) <= 0.05 + 1e-6).all()


# ----------------------------------------------------------------- feature attack / EOT
def test_feature_attack_moves_towards_partner(net, data):
    x, _ = data
    xa = A.feature_attack(net, x, eps=0.2, steps=3, alpha=0.05)
    assert (linf(xa, x) <= 0.2 + 1e-6).all()
    with torch.no_grad():
        f = lambda z: net.features(z)  # noqa: E731
        d = lambda z: 1 - torch.cosine_similarity(f(z), f(x.flip(0)), dim=1)  # noqa: E731
        assert d(xa).mean() < d(x).mean()
    xl = A.feature_attack(net, x, x.roll(1, 0), eps=0.2, distance="l2")
    assert (linf(xl, x) <= 0.2 + 1e-6).all()
    with pytest.raises(ValueError, match="features"):
        A.feature_attack(nn.Flatten(), x, eps=0.1)


def test_eot_identity_equals_pgd(net, data):
    x, y = data
    a = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False)
    for eot_batch in (None, 1, 2):
        b = A.eot_pgd(net, x, y, transform=lambda z: z, eot_iter=3, eot_batch=eot_batch, eps=0.1, alpha=0.02,
                      steps=3, random_start=False)
        assert ((a - b).abs() > 1e-6).float().mean() < 0.01


def test_eot_transform_sees_all_draws(net, data):
    x, y = data
    rows = []

    def mixup_with_pool(z):
        rows.append(z.shape[0])
        pool = torch.rand(5, 1, 8, 8)
        lam = 0.6
        return lam * z + (1 - lam) * pool[torch.randint(0, 5, (z.shape[0],))]

    xa = A.eot_pgd(net, x, y, transform=mixup_with_pool, eot_iter=4, eps=0.1, alpha=0.03, steps=2)
    assert rows == [4 * B, 4 * B]
    assert (linf(xa, x) <= 0.1 + 1e-6).all()


# ------------------------------------------------------------------------------- APGD
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted,loss", [(False, "ce"), (False, "dlr"), (True, "dlr"), (True, "ce")])
@pytest.mark.parametrize("compact", [True, False])
def test_apgd_constraints_and_strength(net, data, norm, targeted, loss, compact):
    x, y = data
    eps = 0.1 if norm == "linf" else 0.5
    xa = A.apgd(net, x, y, eps=eps, steps=8, norm=norm, loss=loss, targeted=targeted, n_target_classes=3,
                compact=compact, seed=0)
    d = linf(xa, x) if norm == "linf" else (xa - x).flatten(1).norm(dim=1)
    assert (d <= eps * (1 + 1e-5) + 1e-6).all() and xa.min() >= 0 and xa.max() <= 1
    clean_ok, adv_ok = predict(net, x) == y, predict(net, xa) == y
    assert (adv_ok <= clean_ok).all()  # never turns a wrong prediction right
    assert torch.equal(xa[~clean_ok], x[~clean_ok])


def test_apgd_compact_equals_full(net, data):
    x, y = data
    a = A.apgd(net, x, y, eps=0.1, steps=8, seed=0, compact=True)
    b = A.apgd(net, x, y, eps=0.1, steps=8, seed=0, compact=False)
    assert torch.equal(predict(net, a) == y, predict(net, b) == y)


def test_autoattack_native_subset(net, data):
    x, y = data
    atk = A.AutoAttack(net, eps=0.1, attacks=("apgd-ce", "apgd-t"), steps=5, seed=0, n_classes=C)
    xa = atk(x, y)
    assert (linf(xa, x) <= 0.1 + 1e-6).all()
    ce = A.APGD(net, eps=0.1, steps=5, seed=0)(x, y)
    assert (predict(net, xa) == y).sum() <= (predict(net, ce) == y).sum()


def test_autoattack_torchattacks_parts(net, data):
    pytest.importorskip("torchattacks")
    x, y = data
    atk = A.AutoAttack(net, eps=0.05, attacks=("fab-t", "square"), steps=3, n_queries=20, seed=0, n_classes=C)
    xa = atk(x, y)
    assert (linf(xa, x) <= 0.05 + 1e-5).all()


# ---------------------------------------------------------------- torchattacks contract
def test_targeted_modes(net, data):
    x, y = data
    atk = A.PGD(net, eps=0.3, alpha=0.05, steps=10)
    atk.set_mode_targeted_random(quiet=True)
    assert atk.get_mode() == "targeted(random)" and atk.targeted
    t = atk.get_target_label(x, y)
    assert (t != y).all() and t.min() >= 0 and t.max() < C

    atk.set_mode_targeted_least_likely(kth_min=2, quiet=True)
    t = atk.get_target_label(x, y)
    with torch.no_grad():
        z = net(x)
    for i in range(B):  # naive reference: 2nd smallest logit among the other classes
        others = [c for c in range(C) if c != y[i]]
        order = sorted(others, key=lambda c: z[i, c].item())
        assert t[i].item() == order[1]

    atk.set_mode_targeted_by_label(quiet=True)
    target = (y + 3) % C
    xa = atk(x, target)
    hit = (predict(net, xa) == target).float().mean()
    assert hit > 0.5

    atk.set_mode_targeted_by_function(lambda im, lab: (lab + 1) % C, quiet=True)
    assert torch.equal(atk.get_target_label(x, y), (y + 1) % C)
    atk.set_mode_default()
    assert atk.get_mode() == "default" and not atk.targeted
    with pytest.raises(ValueError, match="Targeted mode is not supported"):
        A.APGD(net).set_mode_targeted_random()


def test_normalization_contract(data):
    x, y = data
    mean, std = [0.3], [0.2]
    torch.manual_seed(0)
    inner = Net().eval()

    class Wrapped(nn.Module):  # the same model taking [0, 1] images
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner((z - mean[0]) / std[0])

    atk = A.PGD(inner, eps=0.1, alpha=0.02, steps=3, random_start=False)
    atk.set_normalization_used(mean, std)
    xn = (x - mean[0]) / std[0]
    out = atk(xn, y)  # takes and returns normalised images (torchattacks 3.5)
    ref = A.PGD(Wrapped(), eps=0.1, alpha=0.02, steps=3, random_start=False)(x, y)
    assert torch.allclose(out * std[0] + mean[0], ref, atol=1e-5)
    with pytest.raises(ValueError, match="images"):
        atk(x * 10, y)


def test_device_and_repr(net, data):
    x, y = data
    atk = A.FGSM(net, eps=0.1)
    assert atk.device == torch.device("cpu")
    assert atk(x, y).device == x.device
    assert "FGSM(" in repr(atk) and "eps=0.1" in repr(atk)
    assert A.PGDL2(net)(x, y).shape == x.shape


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw,match", [
    (dict(eps=-0.1), r"eps.*-0\.1"),
    (dict(alpha=-1.0), r"alpha.*-1"),
    (dict(steps=0), r"steps.*0"),
    (dict(steps=2.5), r"steps.*2\.5"),
    (dict(restarts=0), r"restarts.*0"),
    (dict(norm="l1"), r"norm.*l1"),
    (dict(loss="mse"), r"loss.*mse"),
    (dict(bn_mode="frozen"), r"bn_mode.*frozen"),
    (dict(autocast="int8"), r"autocast.*int8"),
])
def test_functional_argument_errors(net, data, kw, match):
    x, y = data
    args = dict(eps=0.1, alpha=0.02, steps=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        A.pgd(net, x, y, **args)


def test_input_errors(net, data):
    x, y = data
    bad = x.clone()
    bad[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"x must lie in \[0\.0, 1\.0\].*got 1\.5"):
        A.pgd(net, bad, y, eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(ValueError, match="x contains a non-finite"):
        A.pgd(net, x.masked_fill(x > 0.9, float("nan")), y, eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(ValueError, match=r"y must have shape \(12,\)"):
        A.pgd(net, x, y[:5], eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(ValueError, match="y must be an int64"):
        A.pgd(net, x, y.float(), eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(ValueError, match=r"y must lie in .*C=10"):
        A.pgd(net, x, y + C, eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(ValueError, match="y must lie in"):
        A.apgd(net, x, y - C, eps=0.1, steps=1)
    with pytest.raises(ValueError, match="x must be float32"):
        A.pgd(net, (x * 255).to(torch.uint8), y, eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(ValueError, match="SoftTarget y needs loss='ce'"):
        A.pgd(net, x, SoftTarget(y), eps=0.1, alpha=0.02, steps=1, loss="cw")
    with pytest.raises(ValueError, match="n_target_classes must be at most"):
        A.apgd(net, x, y, eps=0.1, steps=1, targeted=True, n_target_classes=C)


def test_class_argument_errors(net, data):
    x, y = data
    with pytest.raises(ValueError, match=r"eps.*-1"):
        A.PGD(net, eps=-1)
    with pytest.raises(ValueError, match=r"steps.*0"):
        A.PGD(net, steps=0)
    with pytest.raises(ValueError, match=r"kappa.*-2"):
        A.CW(net, kappa=-2)
    with pytest.raises(ValueError, match="norm must be 'Linf' or 'L2'"):
        A.APGD(net, norm="L1")
    with pytest.raises(ValueError, match="version"):
        A.AutoAttack(net, version="plus2")
    atk = A.PGD(net)
    bad = x.clone()
    bad[1, 0, 2, 3] = -0.5
    with pytest.raises(ValueError, match=r"images must lie in \[0\.0, 1\.0\].*got -0\.5"):
        atk(bad, y)
    with pytest.raises(ValueError, match=r"labels must have shape \(12,\)"):
        atk(x, y[:3])
    with pytest.raises(ValueError, match="images must have at least 2 dimensions"):
        atk(torch.rand(5), y)
    for a in (atk, A.APGD(net), A.APGDT(net), A.AutoAttack(net, attacks=("apgd-ce",))):
        with pytest.raises(ValueError, match=r"(y|labels) must lie in \[0, 9\]"):
            a(x, y + C)


# ----------------------------------------------------------------- precision and layout
def test_bf16_autocast_and_channels_last(data):
    torch.manual_seed(0)
    net = Net(in_ch=3).eval()
    x = torch.rand(B, 3, 8, 8)
    y = data[1]
    a = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, autocast="bf16")
    b = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, channels_last=True)
    c = A.PGD(net, eps=0.1, alpha=0.02, steps=3, autocast="bf16", channels_last=True)(x, y)
    for xa in (a, b, c):
        assert xa.dtype == torch.float32 and (linf(xa, x) <= 0.1 + 1e-6).all()
    assert b.is_contiguous(memory_format=torch.channels_last)
    r32 = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False)
    r16 = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, random_start=False, autocast="bf16")
    assert ((r32 - r16).abs() > 1e-6).float().mean() < 0.2  # bf16 gradients: mostly the same signs


@pytest.mark.parametrize("name,shape", [("cnn", (1, 28, 28)), ("preact18", (3, 32, 32))])
def test_fastmix_models(name, shape):
    models = pytest.importorskip("fastmix.models")
    torch.manual_seed(0)
    net = models.build(name, 10, shape[0], shape[1])
    before = _snapshot(net)  # built in training mode
    x, y = torch.rand(3, *shape), torch.tensor([1, 2, 3])
    xa = A.PGD(net, eps=8 / 255, alpha=2 / 255, steps=2)(x, y)
    xf = A.feature_attack(net, x, eps=8 / 255)
    res = A.pgd(net, x, y, eps=8 / 255, alpha=2 / 255, steps=2, bn_mode="train", return_kappa=True,
                channels_last=True, autocast="bf16")
    for z in (xa, xf, res.x_adv):
        assert (linf(z, x) <= 8 / 255 + 1e-6).all()
    assert _snapshot(net) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_matches_eager(data):
    torch.manual_seed(0)
    net = Net().cuda().eval()
    x, y = (t.cuda() for t in data)
    A.clear_graphs()
    for loss in ("ce", "cw", "kl"):
        kw = dict(eps=0.1, alpha=0.02, steps=4, random_start=False, loss=loss)
        yy = None if loss == "kl" else y
        eager = A.pgd(net, x, yy, **kw)
        g1 = A.pgd(net, x, yy, cuda_graph=True, **kw)  # capture
        g2 = A.pgd(net, x, yy, cuda_graph=True, **kw)  # replay
        torch.testing.assert_close(g1, eager)
        torch.testing.assert_close(g2, eager)
    res = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=4, cuda_graph=True, return_kappa=True)
    assert res.kappa.shape == (B,)
    xr = A.pgd(net, x, y, eps=0.1, alpha=0.02, steps=4, cuda_graph=True)
    assert (linf(xr, x) <= 0.1 + 1e-6).all()
    A.clear_graphs()
