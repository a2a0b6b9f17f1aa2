"""Mixup Inference: the sampling rules of MI-PL and MI-OL, the batched computation against
the one-image loop, chunking, MI-Combined's detector and the EOT transform."""
import pytest
import torch
import torch.nn.functional as F
from _single_thread import _single_thread  # noqa: F401  (autouse fixture)
from torch import nn

import fastmix
from fastmix.methods.mixup_inference import MixupInference

K = 5


class Linear(nn.Module):
    """A linear classifier on 1x4x4 images (mixup's ideal: globally linear logits)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(16, K)
        self.num_classes = K

    def forward(self, x):
        return self.fc(x.flatten(1))


def _pool(per_class=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(per_class)
    perm = torch.randperm(y.numel(), generator=g)
    return torch.rand(y.numel(), 1, 4, 4, generator=g)[perm], y[perm]


def test_lazy_export():
    assert fastmix.MixupInference is MixupInference


def test_pl_samples_the_predicted_class_and_ol_the_others():
    px, py = _pool(per_class=4)
    mi = MixupInference(Linear(), px, py, mode="ol")
    pred = torch.tensor([0, 1, 2, 3, 4, 2])
    j_pl = mi.sample_pool(mi.sample_classes(pred, 50, "pl"))
    assert torch.equal(mi.pool_y[j_pl], pred[:, None].expand(6, 50))
    torch.manual_seed(0)
    j_ol = mi.sample_pool(mi.sample_classes(pred, 4000, "ol"))
    lab = mi.pool_y[j_ol]
    assert not (lab == pred[:, None]).any()
    # uniform over the K-1 other classes and over the images within a class
    for b in range(6):
        freq = torch.bincount(lab[b], minlength=K).float() / 4000
        others = [c for c in range(K) if c != pred[b]]
        assert torch.allclose(freq[others], torch.full((K - 1,), 1 / (K - 1)), atol=0.04)
    rows = torch.bincount(j_ol.flatten(), minlength=px.shape[0]).float()
    same_class = mi.pool_y == 0
    assert rows[same_class].std() / rows[same_class].mean() < 0.1


def test_batched_equals_hand_computation_and_chunking_changes_nothing():
    px, py = _pool(per_class=1)  # one image per class: MI-PL is deterministic
    model = Linear()
    x = torch.rand(7, 1, 4, 4)
    mi = MixupInference(model, px, py, mode="pl", lam=0.3, n=4, chunk=3)
    out = mi(x)
    pred = model(x).argmax(1)
    xs = mi.pool[mi.start[pred]]
    want = F.softmax(model(0.3 * x + 0.7 * xs), 1)
    torch.testing.assert_close(out, want.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, mi.predict_loop(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.sum(1), torch.ones(7))
    # MI-OL: same draws (same seed) whatever the chunk size
    a = MixupInference(model, px, py, mode="ol", n=9, chunk=4)
    b = MixupInference(model, px, py, mode="ol", n=9, chunk=1000)
    torch.manual_seed(5)
    pa = a(x)
    torch.manual_seed(5)
    pb = b(x)
    torch.testing.assert_close(pa, pb)


def test_ol_converges_to_mean_over_other_classes():
    px, py = _pool(per_class=1)
    model = Linear()
    x = torch.rand(4, 1, 4, 4)
    mi = MixupInference(model, px, py, mode="ol", lam=0.5, n=3000)
    torch.manual_seed(0)
    out = mi(x)
    pred = model(x).argmax(1)
    with torch.no_grad():
        exact = torch.stack([
            torch.stack([F.softmax(model(0.5 * x[b:b + 1] + 0.5 * px[py == c]), 1)[0]
                         for c in range(K) if c != pred[b]]).mean(0) for b in range(4)])
    torch.testing.assert_close(out, exact, atol=0.02, rtol=0)


def test_combined_uses_ol_only_on_flagged_inputs():
    px, py = _pool(per_class=2)
    model = Linear()
    x = torch.rand(16, 1, 4, 4)
    for thr, expect in ((0.0, "some"), (1.0, "none")):
        mi = MixupInference(model, px, py, mode="combined", threshold=thr, n=6, n_pl=3)
        torch.manual_seed(1)
        out = mi(x)
        torch.manual_seed(1)
        score, flagged, plain = mi.detect(x)
        if expect == "none":
            assert not flagged.any()
            torch.testing.assert_close(out, plain)
        else:
            assert flagged.any()
            torch.testing.assert_close(out[~flagged], plain[~flagged])
            assert not torch.allclose(out[flagged], plain[flagged])


def test_eot_transform_layout_and_attack():
    px, py = _pool(per_class=3)
    model = Linear()
    mi = MixupInference(model, px, py, mode="ol", lam=0.6)
    x = torch.rand(3, 1, 4, 4)
    fn = mi.transform(3)
    stacked = x.repeat(4, 1, 1, 1).requires_grad_(True)  # row r*B + i is sample i
    out = fn(stacked)
    xs = (out.detach() - 0.6 * stacked.detach()) / 0.4
    # each row's partner is a pool image whose class differs from the prediction of its sample
    pred = model(x).argmax(1).repeat(4)
    match = (xs[:, None] - px[None]).flatten(2).abs().amax(2) < 1e-5
    labels = py[match.float().argmax(1)]
    assert match.any(1).all() and not (labels == pred).any()
    out.sum().backward()
    torch.testing.assert_close(stacked.grad, torch.full_like(stacked, 0.6))
    y = model(x).argmax(1)
    x_adv = mi.eot_attack(x, y, eps=0.1, alpha=0.05, steps=3, eot_iter=4)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.1 + 1e-6


class _BNNet(nn.Module):
    """A small conv net with BatchNorm for the mode and attack tests."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, K)
        self.num_classes = K

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _ref_pgd(model, u, y, eps, alpha, steps):
    """Plain L-inf PGD from ``u`` (no random start), written out: ascend CE, sign step,
    project onto the eps-ball around ``u`` and the image range."""
    x = u.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        x = torch.min(torch.max(x.detach() + alpha * g.sign(), u - eps), u + eps).clamp(0, 1)
    return x


@pytest.mark.parametrize("mode", ["ol", "pl"])
def test_adaptive_attack_is_the_mean_of_n_a_independent_pgd_perturbations(mode):
    """Issue 13 item 3 (MI paper section 4.4, appendix B.2, official OL_adaptive script):
    draw the N_A mixing samples once (as MI draws them, from the clean prediction), run
    N_A separate PGD attacks from lam x + (1 - lam) x_s,k, add the mean perturbation.
    Re-implemented attack by attack from the same seed."""
    px, py = _pool(per_class=4)
    model = _BNNet().eval()
    mi = MixupInference(model, px, py, mode=mode, lam=0.6)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 4])
    na, eps, alpha, steps = 4, 0.1, 0.03, 3
    torch.manual_seed(11)
    got = mi.adaptive_attack(x, y, eps=eps, alpha=alpha, steps=steps, n_adaptive=na, random_start=False)
    torch.manual_seed(11)
    with torch.no_grad():
        pred = model(x).argmax(1)
    j = mi.sample_pool(mi.sample_classes(pred, na, mode))            # (B, N_A), drawn once
    deltas = []
    for k in range(na):                                              # N_A independent attacks
        u = 0.6 * x + 0.4 * mi.pool[j[:, k]]
        deltas.append(_ref_pgd(model, u, y, eps, alpha, steps) - u)
    want = (x + torch.stack(deltas).mean(0)).clamp(0, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (got - x).abs().max() <= eps + 1e-6 and (got - x).abs().max() > eps / 4
    # it is not EOT-PGD: the same seed through eot_attack gives another image
    torch.manual_seed(11)
    eot = mi.eot_attack(x, y, eps=eps, alpha=alpha, steps=steps, eot_iter=na, random_start=False)
    assert not torch.allclose(eot, got)


def test_mi_restores_every_modules_mode():
    """Issue 13 item 10: a BatchNorm layer frozen (eval) inside a training model stays
    frozen after MI's prediction, detection, attacks and evaluate()."""
    from fastmix.methods.mixup_inference import evaluate
    px, py = _pool(per_class=4)
    model = _BNNet()
    model.train()
    model.bn.eval()
    modes = [m.training for m in model.modules()]
    x = torch.rand(3, 1, 4, 4)
    for mode in ("ol", "pl", "combined"):
        mi = MixupInference(model, px, py, mode=mode, n=3)
        mi(x)
        mi.detect(x)
        mi.predict_loop(x)
        mi.adaptive_attack(x, torch.tensor([0, 1, 2]), eps=0.1, alpha=0.05, steps=1, n_adaptive=2)
        assert [m.training for m in model.modules()] == modes, mode
    evaluate(model, x, torch.tensor([0, 1, 2]), px, py, attacks=("clean", "pgd1"), eps=0.1, n=2, eot_iter=1)
    assert [m.training for m in model.modules()] == modes
    assert model.training and not model.bn.training


def test_argument_errors():
    px, py = _pool()
    with pytest.raises(ValueError, match="mode"):
        MixupInference(Linear(), px, py, mode="xx")
    with pytest.raises(ValueError, match="lam"):
        MixupInference(Linear(), px, py, lam=1.5)
    with pytest.raises(ValueError, match="class"):
        MixupInference(Linear(), px[py != 2], py[py != 2])
    with pytest.raises(ValueError, match="x must have shape"):
        MixupInference(Linear(), px, py)(torch.rand(2, 1, 5, 5))


def test_cli_eval_mi(tmp_path, capsys):
    import json

    from fastmix import cli
    from fastmix.data import load_digits
    from fastmix.train import TrainConfig, train
    splits = load_digits()
    splits.train = splits.train.subset(torch.arange(256))
    cfg = TrainConfig.for_dataset("digits", method="iat", epochs=1, steps=1, out=str(tmp_path / "r"), progress=False,
                                  eval_samples=32, eval_steps=1, model_opts={"width": 4, "hidden": 16})
    train(cfg, splits)
    rc = cli.main(["eval", "--checkpoint", str(tmp_path / "r" / "last.pt"), "--attacks", "clean,pgd2",
                   "--mi", "ol", "--mi-n", "4", "--mi-eot", "2", "--samples", "40", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) == {"clean", "clean+mi", "pgd2", "pgd2+mi", "eot-pgd2+mi", "adaptive-pgd2+mi"}
    assert all(0 <= v <= 1 for v in res.values())
