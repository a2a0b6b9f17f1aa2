"""The evaluation suite (fastmix.eval): attack names, per-attack and worst-case accuracy,
AutoAttack's reuse of its parts, seeding, subsets, the trainer's count-only form, and
``fastmix eval`` (JSON, --sanity) on a small digits checkpoint."""
import json
import os

import pytest
import torch

from fastmix import cli
from fastmix.data import load_digits
from fastmix.eval import (ALL_ATTACKS, EvalAttack, accuracy, evaluate, expand_attacks, has_torchattacks, parse_attack,
                          select_subset)
from fastmix.train import TrainConfig, train

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

EPS = 0.2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A standard-trained width-8 digits CNN (a few seconds) and its held-out images."""
    out = tmp_path_factory.mktemp("eval") / "std"
    splits = load_digits()
    cfg = TrainConfig.for_dataset("digits", method="standard", epochs=4, model_opts={"width": 8, "hidden": 32},
                                  eval_samples=32, eval_steps=1, eval_every=4, progress=False, out=str(out))
    t = train(cfg, splits)
    x = splits.test.images[:96].float().div(255)
    y = splits.test.labels[:96]
    return t.module.eval(), x, y, str(out / "last.pt")


# ------------------------------------------------------------------------------ names
def test_parse_attack_names_and_settings():
    assert parse_attack("clean", EPS) is None
    p = parse_attack("PGD50r5", EPS)
    assert (p.name, p.kind, p.steps, p.restarts, p.alpha) == ("pgd50r5", "pgd", 50, 5, EPS / 4)
    c = parse_attack("cw20", EPS, alpha=0.01)
    assert (c.kind, c.steps, c.restarts, c.alpha) == ("cw", 20, 1, 0.01)
    assert parse_attack("fgsm", EPS).alpha == EPS
    assert parse_attack("apgd-t", EPS, apgd_steps=7).apgd_steps == 7
    aa = parse_attack("aa", EPS)
    assert aa.kind == "autoattack"
    assert aa.components == (("apgd-ce", "apgd-t", "fab-t", "square") if has_torchattacks() else ("apgd-ce", "apgd-t"))
    assert expand_attacks("clean, all,pgd5") == list(ALL_ATTACKS) + ["pgd5"]
    assert aa.component("apgd-ce").key() == parse_attack("apgd-ce", EPS).key()


@pytest.mark.parametrize("spec,kw,match", [
    ("pgd", {}, "attack must be one of"), ("pgd0", {}, "steps K"), ("pgd5r0", {}, "restarts R"),
    ("fgsm", {"eps": 1.5}, "eps must be in"), ("pgd5", {"alpha": 0.0}, "alpha must be"),
    ("apgd-ce", {"apgd_steps": 0}, "apgd_steps"), ("square", {"square_queries": 0}, "square_queries"),
    ("mim10", {}, "attack must be one of"),
])
def test_parse_attack_errors_name_the_argument(spec, kw, match):
    eps = kw.pop("eps", EPS)
    with pytest.raises(ValueError, match=match):
        parse_attack(spec, eps, **kw)


def test_attacks_stay_in_the_ball(run):
    model, x, y, _ = run
    for name in ("fgsm", "noise", "pgd3", "cw3r2", "apgd-ce"):
        atk = parse_attack(name, EPS, apgd_steps=3)
        xa = atk(model, x[:16], y[:16])
        assert isinstance(atk, EvalAttack) and xa.shape == x[:16].shape
        assert float((xa - x[:16]).abs().max()) <= EPS + 1e-6 and 0 <= float(xa.min()) and float(xa.max()) <= 1


# ------------------------------------------------------------------------------ suite
def test_worst_case_is_the_and_of_every_attack(run):
    model, x, y, _ = run
    res = evaluate(model, x, y, ["clean", "fgsm", "noise", "pgd5", "cw5"], eps=EPS, batch_size=40)
    assert list(res.accuracy) == ["clean", "fgsm", "noise", "pgd5", "cw5"] and res.n == 96
    both = torch.stack(list(res.correct.values())).all(0)
    assert res.worst_case == pytest.approx(float(both.float().mean()))
    assert res.worst_case <= min(res.accuracy.values())
    assert res.accuracy["clean"] > 0.8 and res.accuracy["pgd5"] < 0.5  # a standard model breaks
    assert all(v.shape == (96,) and v.dtype == torch.bool for v in res.correct.values())
    d = res.to_dict()
    json.dumps(d)
    assert d["worst_case"] == res.worst_case and set(d["seconds"]) == set(res.accuracy)
    assert "worst case" in res.table()


def test_results_do_not_depend_on_order_batches_or_dtype(run):
    model, x, y, _ = run
    a = evaluate(model, x, y, ["pgd5", "clean", "noise"], eps=EPS, batch_size=96, seed=3)
    b = evaluate(model, x, y, ["noise", "pgd5"], eps=EPS, batch_size=96, seed=3)
    u8 = evaluate(model, (x * 255).round().to(torch.uint8), y, ["pgd5"], eps=EPS, batch_size=96, seed=3)
    assert torch.equal(a.correct["pgd5"], b.correct["pgd5"]) and torch.equal(a.correct["noise"], b.correct["noise"])
    assert torch.equal(a.correct["pgd5"], u8.correct["pgd5"])
    state = torch.random.get_rng_state()
    evaluate(model, x, y, ["pgd2"], eps=EPS)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's stream is untouched


def test_autoattack_reuses_its_parts_and_is_at_most_each(run):
    model, x, y, _ = run
    kw = dict(eps=0.1, apgd_steps=4, square_queries=10, batch_size=48)
    res = evaluate(model, x[:48], y[:48], ["clean", "apgd-ce", "apgd-t", "autoattack"], **kw)
    c = res.correct
    assert not (c["autoattack"] & ~(c["clean"] & c["apgd-ce"] & c["apgd-t"])).any()
    assert res.worst_case == res.accuracy["autoattack"]
    assert res.meta["autoattack_components"][:2] == ["apgd-ce", "apgd-t"]


def test_accuracy_over_a_loader_matches_the_suite(run):
    model, x, y, _ = run
    loader = [(x[s:s + 32], y[s:s + 32], None) for s in range(0, 96, 32)]
    named = {"clean": None, "pgd3": parse_attack("pgd3", EPS)}
    counts = accuracy(model, loader, named, seed=5)
    res = evaluate(model, x, y, named, eps=EPS, batch_size=32, seed=5)
    assert counts == pytest.approx(res.accuracy)


def test_subset_is_fixed_by_its_seed():
    a, b = select_subset(360, 50, 0), select_subset(360, 50, 0)
    assert torch.equal(a, b) and a.shape == (50,) and bool((a[1:] > a[:-1]).all())
    assert not torch.equal(a, select_subset(360, 50, 1))
    assert select_subset(360, None) is None and select_subset(360, 500) is None
    with pytest.raises(ValueError, match="samples"):
        select_subset(360, 0)


def test_evaluate_rejects_bad_input_by_name(run):
    model, x, y, _ = run
    with pytest.raises(ValueError, match="x must lie in"):
        evaluate(model, x * 2, y, ["clean"], eps=EPS)
    with pytest.raises(ValueError, match="y must be an int64"):
        evaluate(model, x, y.int(), ["clean"], eps=EPS)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, x, y, ["clean"], eps=EPS, batch_size=0)
    with pytest.raises(ValueError, match="attacks"):
        evaluate(model, x, y, [], eps=EPS)
    with pytest.raises(ValueError, match=r"attacks\['mine'\]"):
        evaluate(model, x, y, {"mine": 3}, eps=EPS)


# -------------------------------------------------------------------------------- CLI
def test_cli_eval_json_worst_case_and_sanity(run, capsys, tmp_path):
    _, _, _, ckpt = run
    out = tmp_path / "res.json"
    rc = cli.main(["eval", "--checkpoint", ckpt, "--attacks", "clean,fgsm,pgd3,apgd-ce", "--apgd-steps", "3",
                   "--samples", "40", "--json", "--out", str(out), "--sanity", "--sanity-samples", "24",
                   "--surrogate", ckpt])
    assert rc == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert list(res["accuracy"]) == ["clean", "fgsm", "pgd3", "apgd-ce"] and res["n"] == 40
    assert res["worst_case"] <= min(res["accuracy"].values()) and res["subset_seed"] == 0
    assert [v["name"] for v in res["sanity"]] == ["eps_curve", "more_steps", "fgsm_vs_pgd", "noise_vs_pgd",
                                                  "ce_vs_margin", "transfer"]
    assert json.loads(out.read_text())["accuracy"] == res["accuracy"]
    # exact fractions of the 40 images (k / 40 in Python), never float32 values such as 0.7599999904632568
    for v in list(res["accuracy"].values()) + [res["worst_case"]]:
        assert v == round(v * 40) / 40
    # the same subset on a second call, and a text table without --json
    assert cli.main(["eval", "--checkpoint", ckpt, "--attacks", "clean,pgd3", "--samples", "40",
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "worst case" in text and "fixed-seed subset" in text
    assert cli.main(["eval", "--checkpoint", ckpt, "--attacks", "pgd0"]) == 2
    assert "pgd0" in capsys.readouterr().err
    assert os.path.isfile(ckpt)


def test_cli_plot_eps_and_mi_from_a_checkpoint(run, tmp_path, capsys):
    _, _, _, ckpt = run
    data = tmp_path / "eps.json"
    assert cli.main(["plot", "eps", ckpt, ckpt, "--labels", "a,b", "--eps-grid", "0,0.1,1/5", "--attack", "pgd3",
                     "--samples", "24", "--no-progress", "--save-json", str(data), "--out",
                     str(tmp_path / "eps.png")]) == 0
    curves = json.loads(data.read_text())["curves"]
    assert list(curves) == ["a", "b"] and curves["a"] == curves["b"]  # same images, same seeds
    acc = list(curves["a"].values())
    assert len(acc) == 3 and acc[0] >= acc[-1]
    mi = tmp_path / "mi.json"
    assert cli.main(["plot", "mi", ckpt, "--lams", "0.5,0.8", "--n", "2", "--samples", "16", "--pool", "100",
                     "--attacks", "clean,pgd2", "--save-json", str(mi), "--out", str(tmp_path / "mi.png")]) == 0
    c = json.loads(mi.read_text())["curves"]
    assert set(c) == {"clean (no MI)", "clean + MI-OL", "pgd2 (no MI)", "pgd2 + MI-OL"}
    assert all(len(c[k]) == 2 for k in ("clean + MI-OL", "pgd2 + MI-OL"))
    assert (tmp_path / "eps.png").stat().st_size > 5000 and (tmp_path / "mi.png").stat().st_size > 5000
