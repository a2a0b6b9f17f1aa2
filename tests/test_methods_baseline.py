"""The baseline methods (standard, Madry AT, TRADES, GAIRAT, FastAT) against their formulas,
their BatchNorm modes during the attack, state round trips and the registry."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastmix import attacks, methods
from fastmix.methods import MethodContext
from fastmix.models import build as build_model

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

EPS = 0.2


def _setup(name, seed=0, epochs=4, **kw):
    torch.manual_seed(seed)
    model = build_model("cnn", 10, 1, 8, width=8, hidden=32)
    m = methods.build(name, eps=EPS, steps=3, **kw)
    m.bind(MethodContext(model=model, attack_model=model, module=model, num_classes=10, num_train=64, epochs=epochs))
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    model.train()
    return m, model, x, y


class _Snapshot:
    """Model buffers (BN running statistics move on every training forward) and the RNG, so a
    reference computation can start from exactly where the method's call started."""

    def __init__(self, model, seed):
        self.model, self.seed = model, seed
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(seed)

    def restore(self):
        self.model.load_state_dict(self.state)
        torch.manual_seed(self.seed)


def _bn_modes_during(model, fn):
    """The training flag of the first BatchNorm at every forward while ``fn`` runs."""
    bn = next(mod for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    modes = []
    h = bn.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))
    try:
        fn()
    finally:
        h.remove()
    return modes


def test_standard_is_cross_entropy_on_the_clean_batch():
    m, model, x, y = _setup("standard")
    out = m.loss(x, y, torch.arange(16))
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y), rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (16, 10)


def test_at_is_cross_entropy_on_the_pgd_example_with_bn_in_eval_during_the_attack():
    m, model, x, y = _setup("at")
    snap = _Snapshot(model, 1)
    modes = _bn_modes_during(model, lambda: m.loss(x, y, torch.arange(16)))
    assert modes == [False] * 3 + [True]  # K attack forwards in eval mode, then the training forward
    snap.restore()
    out = m.loss(x, y, torch.arange(16))
    snap.restore()
    x_adv = attacks.pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=3, bn_mode="eval")
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x_adv), y), rtol=1e-5, atol=1e-5)
    assert out.loss > F.cross_entropy(model(x), y)  # the attack raised the loss
    assert model.training


def test_trades_is_natural_ce_plus_beta_kl_both_sides_differentiated():
    m, model, x, y = _setup("trades", beta=6.0)
    snap = _Snapshot(model, 2)
    modes = _bn_modes_during(model, lambda: m.loss(x, y, torch.arange(16)))
    assert modes[-2:] == [True, True] and not any(modes[:-2])  # attack in eval, two training forwards
    snap.restore()
    out = m.loss(x, y, torch.arange(16))
    snap.restore()
    x_adv = attacks.pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=3, loss="kl", bn_mode="eval")
    ln, la = model(x), model(x_adv)
    ref = F.cross_entropy(ln, y) + 6.0 * F.kl_div(F.log_softmax(la, 1), F.softmax(ln, 1), reduction="batchmean")
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)
    # gradient flows through the natural logits of the KL too (TRADES's official code)
    kl = methods.kl_rows(ln, la.detach()).mean()
    kl.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_gairat_weights_follow_the_formula():
    k = torch.tensor([0, 5, 10])
    w = methods.gairat_weights(k, 10, -1.0)
    expect = (1 + torch.tanh(torch.tensor([-1.0 + 5, -1.0, -1.0 - 5]))) / 2
    torch.testing.assert_close(w, expect)
    assert w[0] > w[1] > w[2]  # samples that stay correct longer weigh less


def test_gairat_is_plain_at_during_burn_in_then_reweights_by_kappa():
    m, model, x, y = _setup("gairat", burn_in=1)
    m.start_epoch(1)
    snap = _Snapshot(model, 3)
    burn = m.loss(x, y, torch.arange(16))
    snap.restore()
    at = methods.build("at", eps=EPS, steps=3)
    at.bind(m.ctx)
    torch.testing.assert_close(burn.loss, at.loss(x, y, torch.arange(16)).loss)
    m.start_epoch(2)
    snap.restore()
    out = m.loss(x, y, torch.arange(16))
    snap.restore()
    res = attacks.pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=3, bn_mode="eval", return_kappa=True)
    ce = F.cross_entropy(model(res.x_adv), y, reduction="none")
    w = methods.gairat_weights(res.kappa, 3, -1.0)
    torch.testing.assert_close(out.loss, (w / w.sum() * ce).sum(), rtol=1e-5, atol=1e-5)
    assert "gairat_w_var" in out.stats and "gairat_kappa" in out.stats


def test_gairat_default_schedule_starts_at_the_official_begin_epoch():
    # Issue 13 item 9. The official loop reweights when (epoch + 1) >= begin_epoch with a
    # 0-based epoch and begin_epoch = 60 of 120: re-implemented here over 1-based epochs.
    def official(epoch1, epochs):
        return (epoch1 - 1) + 1 >= epochs // 2
    for epochs in (10, 120, 7, 2):
        m, *_ = _setup("gairat", epochs=epochs)
        for e in range(1, epochs + 1):
            m.start_epoch(e)
            assert m.reweighting == official(e, epochs), (epochs, e)
    m, *_ = _setup("gairat", epochs=120)
    m.start_epoch(59)
    assert not m.reweighting
    m.start_epoch(60)
    assert m.reweighting


def test_fastat_attacks_with_fgsm_rs_at_1_25_eps_in_train_mode():
    m, model, x, y = _setup("fastat")
    assert m.alpha == pytest.approx(1.25 * EPS) and m.attack_bn == "train"
    snap = _Snapshot(model, 4)
    modes = _bn_modes_during(model, lambda: m.loss(x, y, torch.arange(16)))
    assert modes == [True, True]  # one FGSM forward and the training forward, both in train mode
    snap.restore()
    out = m.loss(x, y, torch.arange(16))
    snap.restore()
    x_adv = attacks.fgsm_rs(model, x, y, eps=EPS, alpha=1.25 * EPS, bn_mode="train")
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x_adv), y), rtol=1e-4, atol=1e-4)


def test_fastat_warns_when_probe_pgd_accuracy_collapses():
    m, model, x, y = _setup("fastat")
    model.eval()
    with torch.no_grad():
        y_pred = model(x).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = m.end_epoch(1, (x, y_pred))  # first epoch: only a reference point
    assert d["fastat_co"] is False and 0 <= d["fastat_probe_pgd_acc"] <= 1
    m.load_state_dict({"best_probe": 1.0, "co_epoch": 0})  # pretend an earlier epoch was fully robust
    with pytest.warns(RuntimeWarning, match="catastrophic overfitting"):
        d = m.end_epoch(2, (x, y))
    assert d["fastat_co"] is True and m.state_dict()["co_epoch"] == 2
    assert model.training is False  # the detector restores the mode it found


@pytest.mark.parametrize("name", ["standard", "at", "trades", "gairat", "fastat"])
def test_every_method_trains_a_step_and_round_trips_its_options(name):
    m, model, x, y = _setup(name)
    m.start_epoch(3)
    out = m.loss(x, y, torch.arange(16))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    again = methods.build(name, **m.hparams())
    assert again.hparams() == m.hparams()
    m2 = methods.build(name, **m.hparams())
    m2.load_state_dict(m.state_dict())
    assert m2.state_dict() == m.state_dict()


def test_attack_bn_override_and_option_errors():
    m = methods.build("at", eps=0.1, attack_bn="train")
    assert m.attack_bn == "train"
    with pytest.raises(ValueError, match="attack_bn"):
        methods.build("at", attack_bn="frozen")
    with pytest.raises(ValueError, match="eps"):
        methods.build("at", eps=2.0)
    with pytest.raises(ValueError, match="steps"):
        methods.build("at", steps=0)
    with pytest.raises(ValueError, match="no option.*'betta'.*valid options"):
        methods.build("trades", betta=6)
    with pytest.raises(ValueError, match="method must be one of"):
        methods.build("madry")


def test_registry_is_an_extension_point():
    @methods.register
    class Twice(methods.Method):
        name = "_test_twice"

        def __init__(self, *, factor: float = 2.0, **kw):
            super().__init__(**kw)
            self.factor = factor

        def loss(self, x, y, idx):
            logits = self.ctx.model(x)
            return methods.StepOutput(self.factor * self.ce(logits, y), logits)

    try:
        m = methods.build("_test_twice", factor=3.0, eps=0.1)
        assert isinstance(m, Twice) and m.hparams()["factor"] == 3.0
        with pytest.raises(ValueError, match="already registered"):
            methods.register(type("Other", (methods.Method,), {"name": "_test_twice"}))
    finally:
        methods.METHODS.pop("_test_twice")


@pytest.mark.parametrize("name", ["standard", "at", "trades", "gairat", "fastat"])
def test_a_hard_soft_target_gives_the_hard_label_loss(name):
    # GIF hands its base method SoftTargets; one that encodes the hard label must change nothing.
    m, model, x, y = _setup(name, burn_in=0) if name == "gairat" else _setup(name)
    m.start_epoch(1)
    snap = _Snapshot(model, 5)
    hard = m.loss(x, y, torch.arange(16)).loss
    snap.restore()
    soft = m.loss(x, attacks.SoftTarget(y, y, 1.0, 1.0, 1.0), torch.arange(16)).loss
    torch.testing.assert_close(soft, hard, rtol=1e-5, atol=1e-5)
