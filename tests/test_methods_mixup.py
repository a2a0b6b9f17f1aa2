"""Invariants of the mixup-family training methods (AT-mixup, IAT, AVmixup, AIT, GIF) and a
short run of each on scikit-learn's digits in which the training loss falls."""
import math

import pytest
import torch
import torch.nn.functional as F
from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

from fastmix import methods as M
from fastmix import models
from fastmix.methods import ait as ait_mod
from fastmix.methods import avmixup as av_mod

C = 10


def _phi(y, s, C=C):
    oh = F.one_hot(y, C).float()
    s = torch.as_tensor(s, dtype=torch.float32)
    s = s.expand(y.shape[0]) if s.dim() == 0 else s
    return s[:, None] * oh + ((1 - s) / (C - 1))[:, None] * (1 - oh)


def _dense_ce(logits, t):
    return -(t * F.log_softmax(logits.float(), 1)).sum(1)


class Recorder(torch.nn.Module):
    """Wraps a model and keeps the inputs of its calls (to check what a method trains on)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    @property
    def num_classes(self):
        return self.net.num_classes

    def features(self, x, *a, **k):
        return self.net.features(x, *a, **k)

    def forward(self, x, mix_layer=None, mix_fn=None):
        self.inputs.append(x.detach().clone())
        return self.net(x, mix_layer=mix_layer, mix_fn=mix_fn)


def _ctx(model, num_train=64, fetch=None, **kw):
    return M.MethodContext(model=model, attack_model=model, module=model, num_classes=C, num_train=num_train,
                           epochs=4, fetch=fetch, **kw)


def _net(bn=True):
    return models.build("cnn", C, 1, 8, width=4, hidden=16, batch_norm=bn)


def _batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, 8, 8, generator=g), torch.randint(0, C, (B,), generator=g), torch.arange(B)


# ------------------------------------------------------------------------------------ AIT
def test_ait_partner_is_reversed_batch_and_target_formula():
    assert ait_mod.ait_partner(5).tolist() == [4, 3, 2, 1, 0]
    y = torch.tensor([0, 3, 3, 7, 1, 9])
    eps_y = 0.5
    t = ait_mod.ait_target(y, eps_y)
    yp = y.flip(0)
    want = (1 - eps_y) * F.one_hot(y, C).float() + eps_y * (1 - F.one_hot(yp, C).float()) / (C - 1)
    torch.testing.assert_close(t.dense(C), want)
    torch.testing.assert_close(t.dense(C).sum(1), torch.ones(6))


@pytest.mark.parametrize("L", [1, 2, 3])
def test_ait_label_after_l_updates_follows_algorithm_1(L):
    """Issue 13 item 8: Algorithm 1 updates the label L times,
    y~ <- y~ - eps_y (y~ - y_bar'), y_bar' = (1 - onehot(y')) / (C - 1), from y~ = onehot(y);
    iterated here on dense vectors."""
    y = torch.tensor([0, 3, 3, 7, 1, 9])
    eps_y = 0.4
    yt = F.one_hot(y, C).float()
    ybar = (1 - F.one_hot(y.flip(0), C).float()) / (C - 1)
    for _ in range(L):
        yt = yt - eps_y * (yt - ybar)
    torch.testing.assert_close(ait_mod.ait_target(y, eps_y, L).dense(C), yt)
    m = M.build("ait", eps=0.1, eps_y=eps_y, interp_steps=L)
    net = Recorder(_net())
    m.bind(_ctx(net))
    x, _, idx = _batch(B=6)
    out = m.loss(x, y, idx)
    with torch.no_grad():
        want = _dense_ce(net.net(net.inputs[-1]), yt).mean()
    torch.testing.assert_close(out.loss.detach(), want, atol=1e-5, rtol=1e-5)


def test_ait_method_attacks_towards_reversed_batch_and_trains_on_its_target(monkeypatch):
    seen = {}
    import fastmix.attacks as A
    real = A.feature_attack

    def spy(model, x, partner=None, **kw):
        seen["x"], seen["partner"], seen["kw"] = x, partner, kw
        return real(model, x, partner, **kw)

    monkeypatch.setattr(A, "feature_attack", spy)
    net = Recorder(_net())
    m = M.build("ait", eps=0.1, eps_y=0.3)
    m.bind(_ctx(net))
    x, y, idx = _batch()
    out = m.loss(x, y, idx)
    torch.testing.assert_close(seen["partner"], x.flip(0))
    assert seen["kw"]["alpha"] == pytest.approx(0.1) and seen["kw"]["steps"] == 1
    assert seen["kw"]["bn_mode"] == "eval"
    x_adv = net.inputs[-1]
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    t = (1 - 0.3) * F.one_hot(y, C).float() + 0.3 * (1 - F.one_hot(y.flip(0), C).float()) / (C - 1)
    with torch.no_grad():
        want = _dense_ce(net.net(x_adv), t).mean()
    torch.testing.assert_close(out.loss.detach(), want, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------- AVmixup
def test_avmixup_vertex_inputs_and_target():
    x, y, _ = _batch()
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    gamma = 2.0
    x_av = av_mod.adversarial_vertex(x, x_adv, gamma)
    # issue 13 item 2: the official code clips the vertex to the image range, then mixes
    torch.testing.assert_close(x_av, (x + gamma * (x_adv - x)).clamp(0, 1))
    alpha = torch.rand(x.shape[0])
    x_hat = av_mod.avmixup_inputs(x, x_av, alpha)
    a = alpha.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_hat, a * x + (1 - a) * (x + gamma * (x_adv - x)).clamp(0, 1))
    # mixing the unclipped vertex, then clipping (the old order), is another image
    assert (x_hat - (a * x + (1 - a) * (x + gamma * (x_adv - x))).clamp(0, 1)).abs().max() > 0.01
    t = av_mod.avmixup_target(y, alpha, 1.0, 0.1)
    want = alpha[:, None] * _phi(y, 1.0) + (1 - alpha)[:, None] * _phi(y, 0.1)
    torch.testing.assert_close(t.dense(C), want)


def test_avmixup_method_trains_on_vertex_mixture(monkeypatch):
    x, y, idx = _batch()
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    net = Recorder(_net())
    m = M.build("avmixup", eps=0.1, gamma=2.0, lambda1=1.0, lambda2=0.1)
    assert m.attack_bn == "batch"
    monkeypatch.setattr(M.Method, "attack", lambda self, x, y, **kw: x_adv)
    m.bind(_ctx(net))
    torch.manual_seed(3)
    out = m.loss(x, y, idx)
    torch.manual_seed(3)
    alpha = torch.rand(x.shape[0])
    a = alpha.view(-1, 1, 1, 1)
    x_hat = a * x + (1 - a) * (x + 2.0 * (x_adv - x)).clamp(0, 1)
    torch.testing.assert_close(net.inputs[-1], x_hat)
    t = alpha[:, None] * _phi(y, 1.0) + (1 - alpha)[:, None] * _phi(y, 0.1)
    with torch.no_grad():
        want = _dense_ce(net.net(x_hat), t).mean()
    torch.testing.assert_close(out.loss.detach(), want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ IAT
@pytest.mark.parametrize("name", ["iat", "iat-manifold"])
def test_iat_mi_code_variant_is_one_shared_forward_of_both_mixed_halves(monkeypatch, name):
    import fastmix.methods.iat as iat_mod
    x, y, idx = _batch(B=6)
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    monkeypatch.setattr(M.Method, "attack", lambda self, x, y, **kw: x_adv)
    calls = []
    real_mix = iat_mod.ops.mix

    def spy(a, b, lam, index, **kw):
        calls.append((lam.clone(), index.clone()))
        return real_mix(a, b, lam, index, **kw)

    monkeypatch.setattr(iat_mod.ops, "mix", spy)
    net = _net(bn=False)  # no BatchNorm: one forward of [x; x_adv] == two separate forwards
    m = M.build(name, eps=0.1, variant="mi-code")
    m.bind(_ctx(net))
    layers = []
    real_draw = m.draw_layer
    m.draw_layer = lambda: (layers.append(real_draw()), layers[-1])[1]
    out = m.loss(x, y, idx)
    (lam, perm), = calls
    B = x.shape[0]
    assert sorted(perm[:B].tolist()) == list(range(B)) and sorted(perm[B:].tolist()) == list(range(B, 2 * B))
    assert ((lam >= 0) & (lam <= 1)).all()
    layer = layers[0]
    assert layer == 0 if name == "iat" else layer in (0, 1, 2)

    def half_loss(xh, lam_h, perm_h):
        fn = lambda h: lam_h.view(-1, *[1] * (h.dim() - 1)) * h + (1 - lam_h.view(-1, *[1] * (h.dim() - 1))) * h[perm_h]
        logits = net(xh, mix_layer=layer, mix_fn=fn)
        t = lam_h[:, None] * F.one_hot(y, C).float() + (1 - lam_h)[:, None] * F.one_hot(y[perm_h], C).float()
        return _dense_ce(logits, t).mean()

    with torch.no_grad():
        l_c = half_loss(x, lam[:B], perm[:B])
        l_a = half_loss(x_adv, lam[B:], perm[B:] - B)
    torch.testing.assert_close(out.loss.detach(), 0.5 * (l_c + l_a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.stats["iat_loss_clean"], l_c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["iat", "iat-manifold"])
def test_iat_paper_variant_makes_two_loss_calls_each_with_its_own_forward(monkeypatch, name):
    """Issue 13 item 7: Algorithm 1's L_c = Loss(f, Mix, x, y) before the attack, then
    L_a = Loss(f, Mix, x_adv, y): two training-mode forwards (BatchNorm sees each batch's
    own statistics), each with its own permutation, one lambda for the batch and (manifold
    mixup) its own layer. Re-implemented with dense one-hot targets on a BatchNorm net."""
    import fastmix.methods.iat as iat_mod
    x, y, idx = _batch(B=6)
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    order = []
    monkeypatch.setattr(M.Method, "attack", lambda self, x, y, **kw: (order.append("attack"), x_adv)[1])
    calls = []
    real_mix = iat_mod.ops.mix

    def spy(a, b, lam, index, **kw):
        order.append("mix")
        calls.append((lam.clone(), index.clone()))
        return real_mix(a, b, lam, index, **kw)

    monkeypatch.setattr(iat_mod.ops, "mix", spy)
    torch.manual_seed(0)
    net = _net(bn=True)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    m = M.build(name, eps=0.1)
    assert m.variant == "paper" and m.steps == 7
    m.bind(_ctx(net))
    layers = []
    real_draw = m.draw_layer
    m.draw_layer = lambda: (layers.append(real_draw()), layers[-1])[1]
    net.train()
    out = m.loss(x, y, idx)
    assert order == ["mix", "attack", "mix"] and len(layers) == 2
    B = x.shape[0]
    net.load_state_dict(state)
    net.train()

    def loss_call(xh, lam_h, perm_h, layer):
        assert torch.all(lam_h == lam_h[0]) and sorted(perm_h.tolist()) == list(range(B))
        lm = lam_h[0]
        logits = net(xh, mix_layer=layer, mix_fn=lambda h: lm * h + (1 - lm) * h[perm_h])
        t = lm * F.one_hot(y, C).float() + (1 - lm) * F.one_hot(y[perm_h], C).float()
        return _dense_ce(logits, t).mean()

    with torch.no_grad():
        (lam_c, perm_c), (lam_a, perm_a) = calls
        l_c = loss_call(x, lam_c, perm_c, layers[0])
        l_a = loss_call(x_adv, lam_a, perm_a, layers[1])
    torch.testing.assert_close(out.loss.detach(), 0.5 * (l_c + l_a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.stats["iat_loss_adv"], l_a, atol=1e-5, rtol=1e-5)


def test_iat_defaults_follow_the_paper():
    assert M.build("iat").lam_dist == "beta:1.0" and not M.build("iat").manifold
    assert M.build("iat-manifold").lam_dist == "beta:2.0" and M.build("iat-manifold").manifold
    assert M.build("iat").steps == 7 and M.build("iat-manifold").steps == 7  # section 4.1: PGD-7
    assert M.build("iat", steps=10).steps == 10 and M.build("at").steps == 10
    assert M.build("iat").variant == "paper"
    from fastmix.train import TrainConfig  # the trainer keeps the paper's PGD-7 unless --steps is given
    assert TrainConfig.for_dataset("digits", method="iat").steps == 7
    assert TrainConfig.for_dataset("cifar10", method="iat-manifold").steps == 7
    assert TrainConfig.for_dataset("digits", method="iat", steps=10).steps == 10
    assert TrainConfig.for_dataset("digits", method="at").steps == 10
    with pytest.raises(ValueError, match="mix_layers"):
        M.build("iat", mix_layers=(3,))
    with pytest.raises(ValueError, match="variant"):
        M.build("iat", variant="shared")


# ------------------------------------------------------------------------------------ GIF
class _Data:
    """A tiny training set with a fetch that records the indices it was asked for."""

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.y = torch.randint(0, C, (n,), generator=g)
        self.asked = []

    def fetch(self, i):
        self.asked.append(i.clone())
        return self.x[i], self.y[i]


class _StubInner(M.Method):
    """A base method whose attack predictions ``adv_pred`` are chosen by the test
    (``pred_fn(x, y)``) while its training logits always say the true label (so a verdict
    read from them would find nothing attackable)."""
    name = "_stub"

    def __init__(self, pred_fn, **kw):
        super().__init__(**kw)
        self.pred_fn, self.batches = pred_fn, []

    def loss(self, x, y, idx):
        self.batches.append((x, y, idx))
        ya = y.ya if isinstance(y, tuple) else y
        self.adv_pred = self.pred_fn(x, y)
        logits = F.one_hot(ya, C).float() * 5
        return M.StepOutput(logits.sum() * 0, logits)


def _gif(data, name="gif", stub=None, **kw):
    m = M.build(name, eps=0.1, steps=2, **kw)
    m.bind(_ctx(_net(), num_train=data.x.shape[0], fetch=data.fetch))
    if stub is not None:
        m.inner = _StubInner(stub)
        m.inner.bind(m.ctx)
    return m


def test_gif_draws_pairs_only_from_attackable_set_with_half_weight():
    data = _Data()
    m = _gif(data, burn_in=0)
    allowed = torch.tensor([3, 10, 11, 40, 63])
    m.attackable = torch.zeros(64, dtype=torch.bool)
    m.attackable[allowed] = True
    m.start_epoch(1)
    x_bar, t, yi, yj = m.interpolate(200)
    asked = data.asked[-1]
    assert set(asked.tolist()) <= set(allowed.tolist())
    i, j = asked[:200], asked[200:]
    assert torch.all(i != j)  # issue 13 item 6: a pair of a sample with itself is no interpolation
    assert len(set(zip(i.tolist(), j.tolist()))) == 20  # every ordered pair i != j of the 5 occurs
    torch.testing.assert_close(x_bar, 0.5 * data.x[i] + 0.5 * data.x[j])
    assert torch.equal(t.ya, data.y[i]) and torch.equal(t.yb, data.y[j])
    assert torch.all(t.w == 0.5)


def test_at_mixup_draws_from_whole_set_with_random_lambda():
    data = _Data()
    m = _gif(data, name="at-mixup")
    m.attackable = torch.zeros(64, dtype=torch.bool)  # ignored by AT-mixup
    m.start_epoch(1)
    x_bar, t, _, _ = m.interpolate(400)
    asked = data.asked[-1]
    assert len(set(asked.tolist())) > 40 and torch.all(asked[:400] != asked[400:])
    assert t.w.std() > 0.2 and ((t.w >= 0) & (t.w <= 1)).all()
    assert M.build("at-mixup", lam_dist="beta:0.3").lam_dist == "beta:0.3"


def test_gif_attackable_rules_eq4_and_eq7_read_the_attacks_prediction():
    """Issue 13 item 5: the verdicts are argmax f(x~) of the attack model on the base's
    x_adv; the stub's training logits (always the true label) must not be used."""
    data = _Data()
    B = 8  # m = m' = 4 by default
    x, y, idx = data.x[:B], data.y[:B], torch.arange(B)

    # Originals: rows 0, 1 predicted wrongly. Interpolated (i, j): row 0 -> y_i, row 1 -> y_j,
    # rows 2, 3 -> a third class. Only rows 2, 3 count as attackable (Eq. 7).
    def pred_fn(xa, target):
        ya, yb = target.ya, target.yb
        pred = ya.clone()
        pred[0] = (ya[0] + 1) % C
        pred[1] = (ya[1] + 1) % C
        pred[4 + 1] = yb[4 + 1]
        for r in (4 + 2, 4 + 3):
            pred[r] = next(c for c in range(C) if c != ya[r] and c != yb[r])
        return pred

    m = _gif(data, burn_in=0, stub=pred_fn)
    m.start_epoch(1)
    out = m.loss(x, y, idx)
    xa, target, _ = m.inner.batches[-1]
    assert xa.shape[0] == 4 + 4 and torch.all(target.w[:4] == 1) and torch.all(target.w[4:] == 0.5)
    assert out.logits.shape[0] == 4 and torch.equal(out.target, y[:4])
    diag = m.end_epoch(1)
    assert diag["attackable_orig"] == pytest.approx(2 / 4)
    assert diag["attackable_interp"] == pytest.approx(2 / 4)
    # rows 0, 1 attackable; 2, 3 guarded; 4..7 were not attacked (B - m) and keep A_0 = True
    assert m.attackable[:B].tolist() == [True, True, False, False, True, True, True, True]
    assert m.attackable[B:].all() and diag["attackable_unseen"] == pytest.approx((64 - 4) / 64)


def test_gif_batch_composition_is_m_plus_m_interp_after_burn_in():
    data = _Data()
    stub = lambda xa, t: (t.ya if isinstance(t, tuple) else t)
    m = _gif(data, burn_in=1, stub=stub)
    m.start_epoch(1)  # burn-in: the whole loader batch of originals
    m.loss(data.x[:16], data.y[:16], torch.arange(16))
    assert m.inner.batches[-1][0].shape[0] == 16 and not data.asked
    m.end_epoch(1)
    m.start_epoch(2)  # the paper's 64 + 64 of a 128 batch: half and half by default
    m.loss(data.x[:16], data.y[:16], torch.arange(16))
    xa, target, idx = m.inner.batches[-1]
    assert xa.shape[0] == 16 and torch.equal(idx[:8], torch.arange(8)) and torch.all(idx[8:] == -1)
    assert m.batch_split(128) == (64, 64) and m.batch_split(7) == (4, 4)
    m2 = _gif(data, burn_in=0, stub=stub, m=5, m_interp=11)
    m2.start_epoch(1)
    m2.loss(data.x[:16], data.y[:16], torch.arange(16))
    assert m2.inner.batches[-1][0].shape[0] == 5 + 11 and m2.batch_split(3) == (3, 11)
    with pytest.raises(ValueError, match="m_interp"):
        M.build("gif", m_interp=0)


def test_gif_burn_in_trains_on_originals_only_but_tracks_the_set():
    data = _Data()
    m = _gif(data, burn_in=1, stub=lambda xa, t: ((t.ya if isinstance(t, tuple) else t) + 1) % C)
    m.start_epoch(1)
    m.loss(data.x[:5], data.y[:5], torch.arange(5))
    assert m.inner.batches[-1][0].shape[0] == 5 and not data.asked
    m.attackable[5:] = False  # (pretend the previous epoch found only the first five)
    diag = m.end_epoch(1)
    assert diag["attackable_interp"] is None and diag["attackable_orig"] == 1.0
    assert m.attackable.sum() == 5
    m.start_epoch(2)
    m.loss(data.x[:6], data.y[:6], torch.arange(6))
    assert set(data.asked[-1].tolist()) <= set(range(5))


def test_gif_mask_is_or_reduced_across_ranks():
    data = _Data()
    other = torch.zeros(128, dtype=torch.int32)
    other[[50, 51]] = 1        # what "rank 1" found attackable
    other[64 + 50:] = 1        # and the samples it attacked (50..63)

    def fake_all_reduce(t):
        return t + other if t.dtype == torch.int32 else t * 2

    m = M.build("gif", eps=0.1, burn_in=0)
    m.bind(_ctx(_net(), num_train=64, fetch=data.fetch, all_reduce_sum=fake_all_reduce, world_size=2))
    m.inner = _StubInner(lambda xa, t: ((t.ya if isinstance(t, tuple) else t) + 1) % C)
    m.inner.bind(m.ctx)
    m.attackable = torch.zeros(64, dtype=torch.bool)
    m.attackable[[20, 60]] = True  # A_{t-1}: 20 is seen by no rank (kept), 60 by rank 1 (guarded now)
    m.start_epoch(1)
    m.loss(data.x[:4], data.y[:4], torch.tensor([0, 1, 2, 3]))  # m = 2: rows 0, 1
    m.end_epoch(1)
    assert m.attackable.nonzero().squeeze(1).tolist() == [0, 1, 20, 50, 51]


def test_gif_verdict_is_the_attacks_final_prediction_in_eval_mode():
    """Issue 13 item 5 against an independent re-run: AT-GIF's A_t after one step equals
    argmax f(PGD(x)) of the BatchNorm net in eval mode, with the attack's own random start
    (re-run from the same seed); the train-mode forward of the same x_adv disagrees on
    some rows, so reading the training logits would fail this test."""
    from fastmix import attacks
    data = _Data(n=64)
    torch.manual_seed(0)
    net = _net(bn=True)
    x, y, idx = data.x[:32], data.y[:32], torch.arange(32)
    for _ in range(3):  # move the running statistics away from their initial values
        net.train()
        net(torch.rand(32, 1, 8, 8) * 0.3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    m = M.build("gif", eps=0.3, steps=3, burn_in=5)
    m.bind(_ctx(net, num_train=64, fetch=data.fetch))
    net.train()
    m.start_epoch(1)
    torch.manual_seed(7)
    m.loss(x, y, idx)
    found = m._current[:32].clone()
    net.load_state_dict(state)
    torch.manual_seed(7)
    x_adv = attacks.pgd(net, x, y, eps=0.3, alpha=0.075, steps=3, bn_mode="eval", check=False)
    net.eval()
    with torch.no_grad():
        want = net(x_adv).argmax(1) != y
        net.train()
        train_mode = net(x_adv).argmax(1) != y
    assert torch.equal(found, want)
    assert not torch.equal(train_mode, want)


def test_gif_restores_attackable_set_from_checkpoint(tmp_path):
    from fastmix.train import TrainConfig, Trainer, load_checkpoint
    splits = _small_digits()
    cfg = TrainConfig.for_dataset("digits", method="gif", method_opts={"burn_in": 0}, epochs=2, steps=1,
                                  batch_size=32, out=str(tmp_path / "run"), progress=False, eval_samples=32,
                                  eval_steps=1, model_opts={"width": 4, "hidden": 16})
    t1 = Trainer(cfg, splits)
    t1.fit()
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    saved = ck["method"]["state"]["attackable"]
    assert saved.dtype == torch.bool and saved.shape == (len(splits.train),)
    assert torch.equal(saved, t1.method.attackable.cpu())
    assert 0 < int(saved.sum()) < len(splits.train)
    rows = t1.history
    assert all(r["attackable_orig"] is not None and r["attackable_interp"] is not None for r in rows)
    # A fresh trainer resuming from the checkpoint holds the same set.
    t2 = Trainer(TrainConfig(**{**cfg.to_dict(), "resume": True, "epochs": 2}), splits)
    assert torch.equal(t2.method.attackable.cpu(), saved)
    with pytest.raises(ValueError, match="attackable"):
        t2.method.load_state_dict({"attackable": torch.zeros(3, dtype=torch.bool)})


def test_gif_wraps_each_base_with_its_bn_mode():
    assert M.build("gif", base="fastat").attack_bn == "train"
    assert M.build("gif", base="trades").attack_bn == "eval"
    g = M.build("gif", base="fastat", eps=0.1)
    assert g.alpha == pytest.approx(0.125)  # FastAT's 1.25 eps, reported by the wrapper
    assert M.build(**{"name": "gif", **g.hparams()}).inner.alpha == pytest.approx(0.125)
    with pytest.raises(ValueError, match="base"):
        M.build("gif", base="standard")


# --------------------------------------------------------------- short runs: the loss falls
_SPLITS = {}


def _small_digits():
    if "d" not in _SPLITS:
        from fastmix.data import load_digits
        d = load_digits()
        d.train = d.train.subset(torch.arange(512))
        d.test = d.test.subset(torch.arange(64))
        _SPLITS["d"] = d
    return _SPLITS["d"]


@pytest.mark.parametrize("name,opts", [
    ("at-mixup", {}), ("iat", {}), ("iat-manifold", {}), ("avmixup", {}), ("ait", {}),
    ("gif", {"burn_in": 0}), ("gif", {"base": "trades", "burn_in": 0}),
    ("gif", {"base": "gairat", "burn_in": 0, "base_opts": {"burn_in": 99}}),
    ("gif", {"base": "fastat", "burn_in": 0}),
])
def test_short_run_on_digits_loss_falls(tmp_path, name, opts):
    from fastmix.train import TrainConfig, train
    cfg = TrainConfig.for_dataset("digits", method=name, method_opts=opts, epochs=4, steps=2, batch_size=64,
                                  lr=0.05, out=str(tmp_path / "r"), progress=False, eval_samples=64, eval_steps=2,
                                  model_opts={"width": 8, "hidden": 32})
    h = train(cfg, _small_digits()).history
    losses = [r["train_loss"] for r in h]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses


def test_gif_train_acc_counts_the_m_originals_it_trained_on(tmp_path):
    """After burn-in a GIF step trains on m = B/2 originals; train_acc is over those rows
    (it was divided by the whole loader batch, halving it)."""
    from fastmix.train import TrainConfig, Trainer
    cfg = TrainConfig.for_dataset("digits", method="gif", method_opts={"burn_in": 0}, epochs=1, steps=1,
                                  batch_size=32, out=str(tmp_path / "r"), progress=False, eval_samples=32,
                                  eval_steps=1, model_opts={"width": 4, "hidden": 16})
    t = Trainer(cfg, _small_digits())
    seen = []
    real = t.method.loss

    def spy(x, y, idx):
        out = real(x, y, idx)
        seen.append(int((out.logits.argmax(1) == out.target).sum()) / out.target.shape[0])
        assert out.target.shape[0] == 16
        return out

    t.method.loss = spy
    t.fit()
    assert t.history[-1]["train_acc"] == pytest.approx(sum(seen) / len(seen))
