"""The trainer: schedules, atomic checkpoints, exact resume, the CLI (train / eval), AMP and
the guarded compile path, and the headline behaviour (PGD-AT is robust where standard
training is not) on scikit-learn's digits."""
import json
import os

import pytest
import torch

from fastmix import cli
from fastmix.data import load as load_data
from fastmix.train import LRSchedule, TrainConfig, Trainer, checkpoint, load_checkpoint

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

TIMING = ("seconds", "images_per_s", "eval_seconds")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def small(out, **kw):
    """A few-second digits run: width-8 CNN, small held-out evaluation."""
    base = dict(model_opts={"width": 8, "hidden": 32}, epochs=2, eval_samples=96, eval_steps=3, probe_size=32,
                progress=False, out=str(out))
    base.update(kw)
    return TrainConfig.for_dataset("digits", **base)


def strip(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


# ----------------------------------------------------------------------------- schedules
def test_piecewise_schedule_drops_at_the_milestone_epochs():
    s = LRSchedule("piecewise", 0.1, epochs=4, steps_per_epoch=10, milestones=[2, 3])
    lrs = [s.lr(t) for t in range(40)]
    assert lrs[0] == lrs[19] == 0.1
    assert lrs[20] == pytest.approx(0.01) and lrs[29] == pytest.approx(0.01)
    assert lrs[30] == pytest.approx(0.001)
    assert LRSchedule("piecewise", 0.1, 60, 1).milestones == [30, 45]  # GIF's schedule by default


def test_onecycle_rises_to_the_peak_at_two_fifths_then_falls_to_zero():
    s = LRSchedule("onecycle", 0.2, epochs=10, steps_per_epoch=10)
    lrs = [s.lr(t) for t in range(100)]
    peak = max(range(100), key=lambda t: lrs[t])
    assert 38 <= peak <= 41 and lrs[peak] == pytest.approx(0.2, rel=0.03)
    assert lrs[0] < 0.01 and lrs[-1] < 0.01
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:-1], lrs[peak + 1:]))


def test_schedule_state_and_errors():
    s = LRSchedule("constant", 0.05, 2, 3)
    for _ in range(4):
        s.step()
    t = LRSchedule("constant", 0.05, 2, 3)
    t.load_state_dict(s.state_dict())
    assert t.t == 4 and t.lr() == 0.05
    with pytest.raises(ValueError, match="schedule"):
        LRSchedule("cosine", 0.1, 2, 3)
    with pytest.raises(ValueError, match="milestones"):
        LRSchedule("piecewise", 0.1, 5, 3, milestones=[9])


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="eps"):
        TrainConfig(eps=8)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="dataset"):
        TrainConfig.for_dataset("imagenet")
    assert TrainConfig.for_dataset("digits", model="preact18").model_opts == {}  # cnn options stay with the cnn


# --------------------------------------------------------------------------- checkpoints
def test_save_atomic_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path):
    path = str(tmp_path / "last.pt")
    checkpoint.save_atomic({"epoch": 1}, path)
    checkpoint.save_atomic({"epoch": 2}, path)
    assert torch.load(path)["epoch"] == 2

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.save_atomic({"epoch": 3, "x": Boom()}, path)
    assert torch.load(path)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind


def test_rng_state_round_trip():
    import random

    import numpy as np
    st = checkpoint.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(st)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_run_writes_metrics_last_and_best_with_everything_to_resume(tmp_path, digits):
    t = Trainer(small(tmp_path, method="at"), digits)
    t.fit()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("epoch", "lr", "train_loss", "clean_acc", "pgd_acc", "seconds", "images_per_s"):
            assert key in r
        assert 0 <= r["pgd_acc"] <= r["clean_acc"] <= 1 and r["images_per_s"] > 0
    ck = load_checkpoint(str(tmp_path / "last.pt"))
    for key in ("model", "optimizer", "scheduler", "scaler", "method", "rng", "loader", "history", "config"):
        assert key in ck
    assert ck["epoch"] == 2 and ck["method"]["name"] == "at"
    assert set(ck["rng"][0]) >= {"python", "numpy", "torch"}
    best = load_checkpoint(str(tmp_path / "best.pt"))
    assert best["epoch"] == max(rows, key=lambda r: r["pgd_acc"])["epoch"]
    assert json.load(open(tmp_path / "config.json"))["method"] == "at"


@pytest.mark.parametrize("method", ["at", "fastat"])
def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path, digits, method):
    kw = dict(method=method, epochs=3, deterministic=True)
    full = Trainer(small(tmp_path / "full", **kw), digits)
    full.fit()
    Trainer(small(tmp_path / "cut", stop_after=1, **kw), digits).fit()
    assert load_checkpoint(str(tmp_path / "cut" / "last.pt"))["epoch"] == 1
    resumed = Trainer(small(tmp_path / "cut", resume=True, **kw), digits)
    assert resumed.epoch == 1
    resumed.fit()
    assert strip(resumed.history) == strip(full.history)
    for k, v in full.module.state_dict().items():
        assert torch.equal(v, resumed.module.state_dict()[k]), k
    lines = [json.loads(x) for x in open(tmp_path / "cut" / "metrics.jsonl")]
    assert strip(lines) == strip(full.history)
    assert not torch.are_deterministic_algorithms_enabled()  # the trainer gave the switch back


# ----------------------------------------------------------------------------------- CLI
def test_cli_train_then_eval_prints_one_json_object(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--method", "trades", "--dataset", "digits", "--epochs", "1", "--eps", "0.2",
                   "--model-opt", "width=8", "--eval-samples", "64", "--eval-steps", "2", "--opt", "beta=3",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    assert {"metrics.jsonl", "last.pt", "best.pt"} <= set(os.listdir(out))
    capsys.readouterr()
    rc = cli.main(["eval", "--checkpoint", str(out / "last.pt"), "--attacks", "clean,fgsm,pgd5,cw5",
                   "--samples", "100", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"]  # fastmix.eval's report
    assert list(res) == ["clean", "fgsm", "pgd5", "cw5"]
    assert all(0 <= v <= 1 for v in res.values())
    assert res["pgd5"] <= res["clean"] and res["cw5"] <= res["clean"]
    ck = load_checkpoint(str(out / "last.pt"))
    assert ck["method"]["hparams"]["beta"] == 3 and ck["config"]["eps"] == 0.2


def test_cli_reports_bad_input_by_name(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1",
                     "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "cifar-10-batches-py" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--eps", "eight"])


def test_eps_accepts_fractions():
    assert cli._number("8/255") == pytest.approx(8 / 255)
    assert cli._value("false") is False and cli._value("6") == 6 and cli._value('{"beta": 6}') == {"beta": 6}


# ------------------------------------------------------------------------------- engine
def test_bf16_autocast_and_channels_last_train(tmp_path, digits):
    t = Trainer(small(tmp_path, method="at", epochs=1, amp="bf16", channels_last=True), digits)
    t.fit()
    assert t.history[0]["train_loss"] == t.history[0]["train_loss"]  # not NaN
    assert t.history[0]["clean_acc"] > 0.2


def test_compile_on_cpu_warns_and_runs_eager(tmp_path, digits):
    with pytest.warns(UserWarning, match="needs a GPU"):
        t = Trainer(small(tmp_path, method="standard", epochs=1, compile="graphs"), digits)
    assert t.attack_model is t.module
    t.fit()


def test_pgd_at_is_robust_where_standard_training_is_not(tmp_path, digits):
    res = {}
    for method in ("standard", "at"):
        cfg = small(tmp_path / method, method=method, epochs=6, eval_samples=200, eval_steps=10,
                    model_opts={"width": 8, "hidden": 64})
        res[method] = Trainer(cfg, digits).fit()[-1]
    print({m: (r["clean_acc"], r["pgd_acc"]) for m, r in res.items()})
    # Margins, not edges: the same seed gives other floats on another CPU (oneDNN and the
    # C++ kernels pick code paths by instruction set), and on this 2-core EPYC the values
    # were standard 0.985 clean / ~0.0 PGD, AT 0.85 clean / ~0.6 PGD after 6 epochs. So the
    # absolute thresholds sit well below what was seen (AT pays clean accuracy for
    # robustness at eps 0.2), and the claim itself is a comparison of two runs in one process.
    assert res["standard"]["clean_acc"] > 0.8 and res["at"]["clean_acc"] > 0.65
    assert res["at"]["pgd_acc"] > res["standard"]["pgd_acc"] + 0.3


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_matches_default_sgd(nesterov):
    """The trainer's fused SGD makes the same updates as torch's default per-parameter loop
    (an independent implementation of the same rule), with momentum and weight decay."""
    from fastmix.models import build
    from fastmix.train.trainer import make_sgd
    torch.manual_seed(0)
    nets = [build("cnn", 10, 1, 8, width=8) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    hp = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    fused, plain = make_sgd(nets[0].parameters(), **hp), torch.optim.SGD(nets[1].parameters(), **hp)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(20):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_trainer_uses_fused_sgd_and_keeps_it_after_resume(tmp_path, digits):
    Trainer(small(tmp_path, epochs=2, stop_after=1), digits).fit()
    st = load_checkpoint(str(tmp_path / "last.pt"))
    for g in st["optimizer"]["param_groups"]:  # the groups name their writer's implementation
        g["fused"] = None
    torch.save(st, tmp_path / "last.pt")
    t = Trainer(small(tmp_path, epochs=2, resume=True), digits)
    assert all(g["fused"] is True for g in t.optimizer.param_groups)


def test_fused_sgd_off_and_runs_from_before_the_option_keep_torchs_default_sgd(tmp_path, digits):
    t = Trainer(small(tmp_path / "plain", fused_sgd=False), digits)
    assert not t.optimizer.defaults["fused"]
    Trainer(small(tmp_path / "old", epochs=2, stop_after=1), digits).fit()
    st = load_checkpoint(str(tmp_path / "old" / "last.pt"))
    del st["config"]["fused_sgd"]  # a checkpoint written before the option existed
    torch.save(st, tmp_path / "old" / "last.pt")
    t = Trainer(small(tmp_path / "old", epochs=2, resume=True), digits)
    assert t.cfg.fused_sgd is False and not t.optimizer.defaults["fused"]
    assert all(not g["fused"] for g in t.optimizer.param_groups)


def test_make_sgd_falls_back_where_torch_refuses_fused(monkeypatch):
    from fastmix.train import trainer as tr
    real = torch.optim.SGD

    def refuse(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kw)
    monkeypatch.setattr(torch.optim, "SGD", refuse)
    opt = tr.make_sgd([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    assert isinstance(opt, real) and not opt.defaults["fused"]
