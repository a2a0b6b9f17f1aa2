"""Bring your own model and your own loop (issue 16): every method on a plain ``nn.Module``
with BatchNorm and no fastmix base class, layers named by module (``features=``,
``mix_layers=``) through forward hooks, and the loop-level ``method.step(model, x, y)``."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)
from _user_model import UserNet

from fastmix import methods as M
from fastmix import models, ops
from fastmix.data import load as load_data
from fastmix.models import hooks

C = 10
ALL = ["standard", "at", "trades", "gairat", "fastat", "at-mixup", "iat", "iat-manifold", "avmixup", "ait", "gif"]
# What each method needs on a user's model (the option names are the contract).
USER_OPTS = {"ait": {"features": "pool"}, "iat-manifold": {"mix_layers": ("layer1", "layer2")}}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, 8, 8, generator=g), torch.randint(0, C, (B,), generator=g), torch.arange(B)


def _dense_ce(logits, t):
    return -(t * F.log_softmax(logits.float(), 1)).sum(1)


def _mixfn(lam, perm):
    def fn(h):
        lam_ = lam.view(-1, *[1] * (h.dim() - 1))
        return lam_ * h + (1 - lam_) * h[perm]
    return fn


# ------------------------------------------------------------------------------ the hooks
def test_mix_after_a_named_module_equals_mixing_by_hand():
    net = UserNet().eval()
    x, _, _ = _batch(6)
    lam, perm = torch.rand(6), torch.randperm(6)
    with torch.no_grad():
        with hooks.mix_after(net, "layer1", _mixfn(lam, perm)):
            got = net(x)
        h = net.layer1(torch.relu(net.bn1(net.conv1(x))))
        want = net.fc(net.pool(net.layer2(_mixfn(lam, perm)(h))))
        plain = net(x)  # the hook is gone after the block
    torch.testing.assert_close(got, want)
    assert not torch.allclose(plain, got)
    torch.testing.assert_close(plain, net.fc(net.pool(net.layer2(h))))


@pytest.mark.parametrize("name,point", [("stages.0", 1), ("stages.1", 2)])
def test_named_mix_points_on_a_fastmix_model_equal_its_built_in_points(name, point):
    net = models.build("cnn", C, 1, 8, width=4, hidden=16).eval()
    x, _, _ = _batch(6)
    fn = _mixfn(torch.rand(6), torch.randperm(6))
    with torch.no_grad():
        got = hooks.mixed_forward(net, net, x, name, fn)
        want = net(x, mix_layer=point, mix_fn=fn)
        got0 = hooks.mixed_forward(net, net, x, "input", fn)
        want0 = net(x, mix_layer=0, mix_fn=fn)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got0, want0)


def test_feature_model_on_a_named_module_equals_built_in_features():
    net = models.build("cnn", C, 1, 8, width=4, hidden=16).eval()
    x, _, _ = _batch(5)
    fm = hooks.FeatureModel(net, "pool")
    with torch.no_grad():
        torch.testing.assert_close(fm.features(x), net.features(x))
        torch.testing.assert_close(fm(x), net(x))
    user = UserNet().eval()
    with torch.no_grad():  # a 4-D output is flattened to (B, F)
        f = hooks.FeatureModel(user, "layer2").features(x)
        want = user.layer2(user.layer1(torch.relu(user.bn1(user.conv1(x))))).flatten(1)
    torch.testing.assert_close(f, want)


class _SharedRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.act = nn.Linear(64, 16), nn.Linear(16, C), nn.ReLU()

    def forward(self, x):
        return self.act(self.b(self.act(self.a(x.flatten(1)))))


def test_hook_errors_name_the_option_and_the_module():
    x, _, _ = _batch(4)
    with pytest.raises(ValueError, match=r"features='nope'.*no module 'nope'.*conv1"):
        hooks.FeatureModel(UserNet(), "nope")
    net = _SharedRelu()
    with pytest.raises(ValueError, match=r"mix_layers='act'.*ran 2 times"):
        with hooks.mix_after(net, "act", lambda h: h):
            net(x)
    net.unused = nn.Linear(2, 2)  # registered but never called in forward
    with pytest.raises(ValueError, match=r"features='unused'.*did not run"):
        hooks.FeatureModel(net, "unused").features(x)
    with pytest.raises(ValueError, match=r"mix_layers='a'.*returns tuple"):
        net.a.register_forward_hook(lambda mod, args, out: (out, out))
        with hooks.mix_after(net, "a", lambda h: h):
            net(x)


def test_parse_mix_layers():
    assert hooks.parse_mix_layers(None) is None
    assert hooks.parse_mix_layers((0, 1, 2)) == (0, 1, 2)
    assert hooks.parse_mix_layers("0,2") == (0, 2)
    assert hooks.parse_mix_layers("layer1,layer2") == ("input", "layer1", "layer2")
    assert hooks.parse_mix_layers(["layer1", 0]) == ("input", "layer1")
    for bad in [(3,), (), "layer1,2", 1.5, [None]]:
        with pytest.raises(ValueError, match="mix_layers"):
            hooks.parse_mix_layers(bad)


# ---------------------------------------------------------------- the methods on UserNet
def _iat_with_fixed_attack_and_recorded_mix(monkeypatch):
    """A batch of 6, a fixed 'adversarial' batch that IAT's attack returns, and the list that
    records every (lam, index) IAT passes to ops.mix."""
    import fastmix.methods.iat as iat_mod
    x, y, _ = _batch(6)
    x_adv = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    monkeypatch.setattr(M.Method, "attack", lambda self, x, y, **kw: x_adv)
    calls = []
    real_mix = iat_mod.ops.mix
    monkeypatch.setattr(iat_mod.ops, "mix", lambda a, b, lam, index, **kw: (calls.append((lam, index)),
                                                                              real_mix(a, b, lam, index, **kw))[1])
    return x, y, x_adv, calls

def test_iat_input_mixup_on_a_plain_module(monkeypatch):
    """IAT mixes the input itself and calls ``model(x)`` (UserNet.forward takes no mixing
    arguments: the old call raised TypeError); the loss is (L_clean + L_adv) / 2 of the
    mixup CE, computed here densely from the captured lambda and permutation."""
    x, y, x_adv, calls = _iat_with_fixed_attack_and_recorded_mix(monkeypatch)
    net = UserNet()
    loss = M.build("iat", eps=0.1, variant="mi-code").step(net, x, y)  # one mix over [x; x_adv]
    (lam, perm), = calls
    xx, yy = torch.cat([x, x_adv]), torch.cat([y, y])
    logits = net(_mixfn(lam, perm)(xx))
    t = lam[:, None] * F.one_hot(yy, C).float() + (1 - lam)[:, None] * F.one_hot(yy[perm], C).float()
    per = _dense_ce(logits, t)
    torch.testing.assert_close(loss, 0.5 * (per[:6].mean() + per[6:].mean()), atol=1e-5, rtol=1e-5)


def test_iat_manifold_mixes_after_the_named_module(monkeypatch):
    x, y, x_adv, calls = _iat_with_fixed_attack_and_recorded_mix(monkeypatch)
    net = UserNet()
    m = M.build("iat-manifold", eps=0.1, mix_layers="layer2", variant="mi-code")
    m.attach(net)
    assert m._points == ("input", "layer2")
    m.draw_layer = lambda: "layer2"
    loss = m.step(net, x, y)
    (lam, perm), = calls
    xx = torch.cat([x, x_adv])
    yy = torch.cat([y, y])
    h = net.layer2(net.layer1(torch.relu(net.bn1(net.conv1(xx)))))
    logits = net.fc(net.pool(_mixfn(lam, perm)(h)))
    t = lam[:, None] * F.one_hot(yy, C).float() + (1 - lam)[:, None] * F.one_hot(yy[perm], C).float()
    torch.testing.assert_close(loss, _dense_ce(logits, t).mean(), atol=1e-5, rtol=1e-5)


def test_ait_with_a_named_feature_layer_equals_built_in_features():
    net = models.build("cnn", C, 1, 8, width=4, hidden=16)
    x, y, idx = _batch(8)
    losses = []
    for features in (None, "pool"):
        m = M.build("ait", eps=0.1, features=features)
        torch.manual_seed(7)
        losses.append(m.step(copy.deepcopy(net), x, y))  # a copy: the step moves BatchNorm statistics
    torch.testing.assert_close(losses[0], losses[1])


def test_methods_name_the_option_a_user_model_lacks():
    net = UserNet()
    x, y, idx = _batch(4)
    with pytest.raises(ValueError, match=r"features='<module name>'.*--opt features=NAME"):
        M.build("ait", eps=0.1).step(net, x, y)
    with pytest.raises(ValueError, match=r"mix_layers=\('<module name>', \.\.\.\)"):
        M.build("iat-manifold", eps=0.1).step(net, x, y)
    with pytest.raises(ValueError, match=r"mix_layers=\(1, 2\).*name its modules"):
        M.build("iat-manifold", eps=0.1, mix_layers=(1, 2)).step(net, x, y)
    for name in ("gif", "at-mixup"):
        with pytest.raises(ValueError, match=r"train_data=\(images, labels\)"):
            M.build(name, eps=0.1).step(net, x, y, idx)
        m = M.build(name, eps=0.1).attach(net, train_data=(x, y))
        with pytest.raises(ValueError, match=r"pass idx"):
            m.step(net, x, y)
    with pytest.raises(ValueError, match=r"y must be int64 \(4,\)"):
        M.build("at", eps=0.1).step(net, x, y.float())
    with pytest.raises(ValueError, match=r"x must be a float \(B, C, H, W\)"):
        M.build("at", eps=0.1).step(net, x[0], y)
    with pytest.raises(ValueError, match=r"train_data labels must be int64"):
        M.build("gif", eps=0.1).attach(net, train_data=(x, y[:2]))
    with pytest.raises(ValueError, match=r"epochs must be None or an int >= 1"):
        M.build("at", eps=0.1).attach(net, epochs=0)


@pytest.mark.parametrize("name", ["at", "trades", "gairat", "avmixup", "iat", "gif"])
def test_step_equals_loss_under_a_context_built_by_hand(name):
    """``method.step`` builds the context a trainer would: the same loss, the same state."""
    net = UserNet()
    x, y, idx = _batch(8)
    X, Y = torch.rand(16, 1, 8, 8), torch.randint(0, C, (16,))
    data = (X, Y)
    opts = {"gif": {"burn_in": 0}}.get(name, {})
    ref_net = copy.deepcopy(net)  # before the step, which moves BatchNorm statistics
    m = M.build(name, eps=0.1, steps=2, **opts).attach(net, train_data=data, epochs=4)
    torch.manual_seed(11)
    got = m.step(net, x, y, idx)
    assert m.last.loss is got and m.epoch == 1
    ref = M.build(name, eps=0.1, steps=2, **opts)
    ref.bind(M.MethodContext(model=ref_net, attack_model=ref_net, module=ref_net, num_classes=C, num_train=16,
                             epochs=4, fetch=lambda i: (X[i], Y[i])))
    ref.start_epoch(1)
    torch.manual_seed(11)
    want = ref.loss(x, y, idx).loss
    torch.testing.assert_close(got, want)
    if name == "gif":
        torch.testing.assert_close(m.end_epoch(1)["attackable_set"], ref.end_epoch(1)["attackable_set"])


def _subset_batches(splits, n=96, B=32):
    X = splits.train.images[:n].float().div_(255.0)
    Y = splits.train.labels[:n]
    return X, Y, [torch.arange(s, s + B) for s in range(0, n, B)]


@pytest.mark.parametrize("name", ALL)
def test_every_method_trains_a_user_model_through_the_loop_api(name, digits):
    """One short epoch (96 digits, 3 steps) of a hand-written loop with every method and its
    epoch hooks: a finite loss, a gradient in every parameter, weights that move, BatchNorm
    running statistics that move, and the method's diagnostics."""
    torch.manual_seed(0)
    net = UserNet()
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    X, Y, batches = _subset_batches(digits)
    m = M.build(name, eps=0.2, steps=2, **USER_OPTS.get(name, {}))
    m.attach(net, train_data=(X, Y), epochs=1)
    m.start_epoch(1)
    for idx in batches:
        loss = m.step(net, X[idx], Y[idx], idx)
        assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        opt.step()
    diag = m.end_epoch(1, (X[:32], Y[:32]))
    assert isinstance(diag, dict)
    after = net.state_dict()
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    if name in ("gif", "at-mixup"):
        assert 0 <= diag["attackable_set"] <= 1
    if name == "fastat":
        assert "fastat_probe_pgd_acc" in diag
    st = m.state_dict()
    m.load_state_dict(st)


def test_mixup_inference_on_a_user_model(digits):
    net = UserNet().eval()
    X, Y, _ = _subset_batches(digits, n=200)
    x = X[:12]
    mi = M.MixupInference(net, X, Y, mode="ol", lam=1.0, n=3)  # lam = 1: every draw is x itself
    with torch.no_grad():
        torch.testing.assert_close(mi(x), F.softmax(net(x), 1), atol=1e-6, rtol=1e-5)
    p = M.MixupInference(net, X, Y, mode="pl", n=4)(x)
    torch.testing.assert_close(p.sum(1), torch.ones(12))


# ------------------------------------------------------------- the trainer and the CLI
def _tiny_splits(splits, n_train=128, n_test=64):
    from fastmix.data.datasets import Splits
    return Splits(splits.name, splits.train.subset(torch.arange(n_train)), splits.test.subset(torch.arange(n_test)),
                  splits.num_classes, splits.crop, splits.flip, splits.mean, splits.std, splits.meta)


def _tiny_cfg(out, method, **kw):
    from fastmix.train import TrainConfig
    base = dict(method=method, method_opts=dict(USER_OPTS.get(method, {})), epochs=1, batch_size=32, steps=2,
                eval_samples=64, eval_steps=2, probe_size=32, progress=False, out=str(out), device="cpu")
    base.update(kw)
    return TrainConfig.for_dataset("digits", **base)


@pytest.mark.parametrize("name", ALL)
def test_every_method_trains_a_user_model_through_the_trainer(name, digits, tmp_path):
    """``fastmix.train.train(cfg, model=UserNet())``: one epoch (128 digits, 4 steps) of every
    method, trained in place, with its metrics, checkpoint and the recorded model name."""
    from fastmix.checkpoint import load_model
    from fastmix.train import train
    torch.manual_seed(0)
    net = UserNet()
    before = copy.deepcopy(net.state_dict())
    t = train(_tiny_cfg(tmp_path, name), _tiny_splits(digits), model=net)
    assert t.module is net and t.cfg.model == "<_user_model.UserNet>"
    row = t.history[-1]
    assert math.isfinite(row["train_loss"]) and 0 <= row["clean_acc"] <= 1 and 0 <= row["pgd_acc"] <= 1
    assert not torch.equal(net.state_dict()["fc.weight"], before["fc.weight"])
    with pytest.raises(ValueError, match=r"holds a model of your own \(<_user_model.UserNet>\); pass it"):
        load_model(str(tmp_path / "last.pt"), "cpu")
    again, _ = load_model(str(tmp_path / "last.pt"), "cpu", model=UserNet())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


def test_mixup_inference_on_a_user_model_trained_by_the_trainer(digits, tmp_path):
    from fastmix.methods.mixup_inference import evaluate as mi_evaluate
    from fastmix.train import train
    net = UserNet()
    sp = _tiny_splits(digits, n_test=96)
    train(_tiny_cfg(tmp_path, "iat"), sp, model=net)
    x = sp.test.images.float().div(255.0)
    y = sp.test.labels
    res = mi_evaluate(net.eval(), x[:32], y[:32], x[32:], y[32:], attacks=("clean", "pgd3"), eps=0.2, mode="pl",
                      n=3)
    assert set(res) == {"clean", "clean+mi", "pgd3", "pgd3+mi"}
    assert all(0 <= v <= 1 for v in res.values()) and res["pgd3"] <= res["clean"]


def test_resuming_a_user_model_run_needs_the_model_again(digits, tmp_path):
    from fastmix.train import Trainer
    sp = _tiny_splits(digits)
    Trainer(_tiny_cfg(tmp_path, "at", epochs=2, stop_after=1), sp, model=UserNet()).fit()
    with pytest.raises(ValueError, match=r"model object given to train\(cfg, model=\.\.\.\)"):
        Trainer(_tiny_cfg(tmp_path, "at", epochs=2, resume=True), sp)
    t = Trainer(_tiny_cfg(tmp_path, "at", epochs=2, resume=True), sp, model=UserNet())
    assert t.epoch == 1 and len(t.fit()) == 2


def test_cli_trains_and_evaluates_a_model_named_by_an_import_string(tmp_path, capsys):
    import json
    from fastmix import cli
    out = tmp_path / "run"
    rc = cli.main(["train", "--method", "ait", "--dataset", "digits", "--epochs", "1", "--steps", "2",
                   "--model", "_user_model:build", "--model-opt", "width=4", "--opt", "features=pool",
                   "--eval-samples", "64", "--eval-steps", "2", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["config"]["model"] == "_user_model:build" and ck["model_args"]["width"] == 4
    assert ck["method"]["hparams"]["features"] == "pool"
    assert ck["model"]["conv1.weight"].shape[0] == 4  # width=4 reached build()
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out / "last.pt"), "--attacks", "clean,pgd3", "--samples", "32"]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(out / "last.pt"), "--model", "_user_model:build",
                     "--attacks", "clean,pgd3", "--samples", "32", "--json", "--sanity", "--sanity-samples", "16"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    res = report["accuracy"]
    assert list(res) == ["clean", "pgd3"] and res["pgd3"] <= res["clean"]
    assert len(report["sanity"]) == 6  # the checks ran on the user model too
    for bad, msg in [("_user_model:nope", "has no attribute 'nope'"), ("no_such_pkg_xyz:build", "cannot import"),
                     ("_user_model", "one of")]:
        assert cli.main(["train", "--model", bad, "--epochs", "1", "--out", str(tmp_path / "b"),
                         "--no-progress"]) == 2
        assert msg in capsys.readouterr().err
    assert cli.main(["train", "--model", "_user_model:build", "--model-opt", "depth=3", "--epochs", "1",
                     "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "model_opts ['depth'] are not parameters of _user_model:build" in capsys.readouterr().err


def test_named_layers_work_on_a_compiled_model():
    """A graph compiled before a hook is added does not run the hook (mix_after would then
    raise "did not run"); the forwards that need one therefore bypass the compile wrapper.
    backend="eager": dynamo's tracing and guards without code generation (fast on a CPU)."""
    torch._dynamo.reset()
    net = UserNet()
    comp = torch.compile(net, backend="eager")
    x, y, _ = _batch(8)
    comp(x)  # traced without hooks, at the shapes the steps below use (B and IAT's 2B rows)
    comp(torch.cat([x, x]))
    with pytest.raises(ValueError, match="did not run"):
        with hooks.mix_after(net, "layer2", lambda h: h * 0):
            comp(x)
    for name, opts in (("iat-manifold", {"mix_layers": "layer2"}), ("ait", {"features": "pool"})):
        losses = []
        for model in (comp, net):
            m = M.build(name, eps=0.1, steps=1, **opts)
            m.attach(model)
            if name == "iat-manifold":
                m.draw_layer = lambda: "layer2"
            snapshot = copy.deepcopy(net.state_dict())
            torch.manual_seed(3)
            losses.append(m.step(model, x, y).detach())
            net.load_state_dict(snapshot)  # the step moved BatchNorm statistics
        torch.testing.assert_close(losses[0], losses[1], msg=name)
    torch._dynamo.reset()
