"""The sanity checks (fastmix.eval.sanity): every check passes on sound digits models, and
the checks detect deliberately gradient-masked ones (a quantising input layer with no
straight-through gradient; a huge-temperature softmax). The masked controls are the proof
that the checks work: the masked models are exactly as breakable as the sound ones (a
transfer attack or a margin loss breaks them) yet PGD reports them robust."""
import json
import warnings

import pytest
import torch

from fastmix.data import load_digits
from fastmix.eval import (QuantizedInput, SanityRunner, SanityWarning, SaturatedLogits, check_ce_vs_margin,
                          check_eps_curve, check_fgsm_vs_pgd, check_more_steps, check_noise_vs_pgd, check_transfer,
                          evaluate, format_verdicts, run_sanity)
from fastmix.train import TrainConfig, train

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

EPS = 0.2
# a lighter budget than the defaults (10/50 steps, 3 restarts): enough on 8x8 digits
FAST = dict(steps=10, more_steps=(5, 20), restarts=2)


def _train(out, method, seed, epochs, **kw):
    cfg = TrainConfig.for_dataset("digits", method=method, epochs=epochs, seed=seed, out=str(out), progress=False,
                                  model_opts={"width": 8, "hidden": 32}, eval_samples=32, eval_steps=1,
                                  eval_every=epochs, **kw)
    return train(cfg, load_digits()).module.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    splits = load_digits()
    x, y = splits.test.images[:120].float().div(255), splits.test.labels[:120]
    return {"standard": _train(root / "std", "standard", 0, 4),
            "surrogate": _train(root / "sur", "standard", 1, 3),
            "at": _train(root / "at", "at", 0, 6, steps=3, eps=EPS),
            "x": x, "y": y}


def _verdicts(model, m):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        v = run_sanity(model, m["x"], m["y"], eps=EPS, surrogate=m["surrogate"], batch_size=120, **FAST)
    return {r.name: r for r in v}, [x for x in w if issubclass(x.category, SanityWarning)]


@pytest.mark.parametrize("name", ["standard", "at"])
def test_every_check_passes_on_a_sound_model(models, name):
    v, warned = _verdicts(models[name], models)
    assert all(r.passed for r in v.values()), format_verdicts(list(v.values()))
    assert not warned
    assert list(v) == ["eps_curve", "more_steps", "fgsm_vs_pgd", "noise_vs_pgd", "ce_vs_margin", "transfer"]
    assert v["eps_curve"].figures["pgd10@0.5"] <= 0.05


@pytest.mark.parametrize("wrap", [QuantizedInput, SaturatedLogits], ids=["quantized-input", "saturated-softmax"])
@pytest.mark.parametrize("name", ["standard", "at"])
def test_checks_detect_a_gradient_masked_model(models, name, wrap):
    masked = wrap(models[name])
    x, y = models["x"], models["y"]
    # the control is masked, not robust: same predictions as the sound model ...
    with torch.no_grad():
        assert torch.equal(masked(x).argmax(1), models[name](x).argmax(1))
    v, warned = _verdicts(masked, models)
    # ... yet PGD cannot break it even at eps 0.5, and transfer from a standard model beats white-box PGD
    assert v["eps_curve"].passed is False and v["transfer"].passed is False, format_verdicts(list(v.values()))
    assert v["transfer"].figures["transfer"] < v["transfer"].figures["pgd10"]
    for r in (v["eps_curve"], v["transfer"]):
        assert "gradient masking" in r.cause
    assert {w.message.args[0].split(":")[0] for w in warned} >= {"sanity check eps_curve failed",
                                                                 "sanity check transfer failed"}
    assert all("Likely cause" in str(w.message) for w in warned)
    # a saturated softmax masks the CE loss only: PGD on the CW margin still breaks the model
    assert v["ce_vs_margin"].passed is (wrap is QuantizedInput)


def test_margin_losses_see_through_the_saturated_softmax(models):
    """Why the suite reports AutoAttack beside PGD: DLR/CW losses ignore the logit scale."""
    sound, masked = models["standard"], SaturatedLogits(models["standard"])
    kw = dict(eps=EPS, apgd_steps=10, batch_size=120)
    a = evaluate(masked, models["x"], models["y"], ["pgd10", "cw10", "apgd-dlr"], **kw).accuracy
    b = evaluate(sound, models["x"], models["y"], ["pgd10"], **kw).accuracy
    assert a["pgd10"] > 0.8 > b["pgd10"] + 0.5 and a["cw10"] < 0.3 and a["apgd-dlr"] < 0.3


def test_single_checks_share_a_runner_and_validate(models):
    r = SanityRunner(models["standard"], models["x"][:40], models["y"][:40], batch_size=40)
    f = check_fgsm_vs_pgd(eps=EPS, steps=5, runner=r)
    n = check_noise_vs_pgd(eps=EPS, steps=5, runner=r)
    assert f.passed and n.passed and f.figures["pgd5"] == n.figures["pgd5"]
    assert len(r._memo) == 3  # fgsm, noise, pgd5 once
    skipped = check_transfer(models["standard"], models["x"], models["y"], surrogate=None, eps=EPS)
    assert skipped.passed is None and "surrogate" in skipped.message and "SKIP" in str(skipped)
    json.dumps(f.to_dict())
    with pytest.raises(ValueError, match="eps must be in"):
        check_eps_curve(runner=r, eps=0.0)
    with pytest.raises(ValueError, match="restarts"):
        check_more_steps(runner=r, eps=EPS, restarts=1)
    with pytest.raises(ValueError, match="steps"):
        check_more_steps(runner=r, eps=EPS, steps=(20, 5))
    with pytest.raises(ValueError, match="runner"):
        check_fgsm_vs_pgd(eps=EPS)
    with pytest.raises(ValueError, match="max_gap"):
        check_ce_vs_margin(runner=r, eps=EPS, max_gap=2)
    with pytest.raises(ValueError, match="levels"):
        QuantizedInput(models["standard"], levels=0)
    with pytest.raises(ValueError, match="temperature"):
        SaturatedLogits(models["standard"], temperature=0)
