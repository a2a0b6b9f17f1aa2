"""BatchNorm folding (fastmix.attacks.fold): the folded model computes the unfolded one
within float32 rounding, the model is untouched afterwards, and the attacks, the
evaluation and the trainer take it as an option."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastmix import attacks, models
from fastmix.attacks.fold import fold_bn, foldable_pairs


def _randomise_bn(model, seed=0):
    """Running statistics and affine parameters far from the identity, so a missing or wrong
    fold shows (a fresh BN in eval mode is almost the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


MODELS = [
    # name, options, (C, H), number of conv->BN pairs by the model's structure
    ("cnn", {"width": 8}, (1, 28), 3),                 # conv-BN-ReLU x3
    ("preact18", {"width": 8}, (3, 32), 8),            # conv1 -> bn2 in each of the 8 blocks
    ("resnet18", {"width": 8}, (3, 32), 20),           # stem + 2 per block + 3 shortcuts
    ("wrn-16-2", {}, (3, 32), 6),                      # pre-activation: conv1 -> bn2 per block
]


def _build(name, opts, shape, seed=0):
    torch.manual_seed(seed)
    return _randomise_bn(models.build(name, 10, shape[0], shape[1], **opts), seed).eval()


@pytest.mark.parametrize("name,opts,shape,pairs", MODELS, ids=[m[0] for m in MODELS])
def test_fold_equals_unfolded_and_restores(name, opts, shape, pairs):
    model = _build(name, opts, shape)
    x = torch.rand(5, shape[0], shape[1], shape[1], generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model(x)
    xg = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(model(xg).logsumexp(1).sum(), xg)
    with fold_bn(model) as folded:
        assert len(folded) == pairs == len(foldable_pairs(model))
        out = model(x)
        xg = x.clone().requires_grad_(True)
        (g_fold,) = torch.autograd.grad(model(xg).logsumexp(1).sum(), xg)
    # fp32 rounding only: the folded conv sums the same products, scaled before instead of after
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fold, g_ref, rtol=1e-4, atol=1e-6)
    # untouched afterwards: the same tensors, bit for bit, and the same outputs
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert torch.equal(model(x), ref)


def test_fold_reads_current_weights_and_train_mode_bn_is_exact():
    model = _build("cnn", {"width": 8}, (1, 8))
    x = torch.rand(4, 1, 8, 8)
    with fold_bn(model):
        first = model(x)
    with torch.no_grad():  # a training step between two attacks: the next fold sees it
        for p in model.parameters():
            p.mul_(1.1)
    ref = model(x)
    with fold_bn(model):
        second = model(x)
        model.train()  # a train-mode BN inside the block runs the original conv -> BN
        train_out = model(x)
        model.eval()
    torch.testing.assert_close(second, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)
    model.train()
    torch.manual_seed(0)
    assert torch.equal(train_out, model(x))
    with fold_bn(model) as folded:  # train-mode BatchNorms on entry are not folded at all
        assert folded == []
        assert all("forward" not in m.__dict__ for m in model.modules())


def test_fold_restores_on_exception_and_rejects_compiled():
    model = _build("cnn", {"width": 8}, (1, 8))
    with pytest.raises(RuntimeError, match="boom"):
        with fold_bn(model):
            raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ for m in model.modules())
    with fold_bn(model, enabled=False) as folded:
        assert folded == []

    class Wrapped(nn.Module):
        _orig_mod = model

    with pytest.raises(ValueError, match="torch.compile"):
        with fold_bn(Wrapped()):
            pass


def test_conv_output_used_twice_is_not_folded():
    class TwoUsers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            z = self.conv(x)
            return self.bn(z) + z  # folding would change the second use

    m = _randomise_bn(TwoUsers()).eval()
    assert foldable_pairs(m) == []


@pytest.mark.parametrize("name,opts,shape", [("cnn", {"width": 8}, (1, 28)), ("preact18", {"width": 8}, (3, 32))])
def test_pgd_with_fold_bn_matches_unfolded(name, opts, shape):
    """The adversarial images with and without folding: sign steps of equal gradients, so
    they agree except where a gradient component is within rounding of zero."""
    model = _build(name, opts, shape)
    x = torch.rand(8, shape[0], shape[1], shape[1], generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=5, random_start=False)
    a = attacks.pgd(model, x, y, **kw)
    b = attacks.pgd(model, x, y, fold_bn=True, **kw)
    same = (a - b).abs() <= 1e-6
    assert same.float().mean() > 0.99, f"only {same.float().mean():.4f} of the pixels agree"
    kwf = dict(eps=0.1, steps=1, random_start=False)
    fa = attacks.feature_attack(model, x, **kwf, fold_bn=True)
    fb = attacks.feature_attack(model, x, **kwf)
    assert ((fa - fb).abs() <= 1e-6).float().mean() > 0.99
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_trainer_fold_bn_option(tmp_path):
    from fastmix import data
    from fastmix.train import TrainConfig, Trainer
    with pytest.raises(ValueError, match="fold_bn"):
        TrainConfig(fold_bn=True, compile="model")
    with pytest.raises(ValueError, match="fold_bn"):
        TrainConfig(fold_bn="yes")
    # the default folds, except where the attacks run compiled code
    assert TrainConfig().folds_bn and not TrainConfig(compile="model").folds_bn
    assert not TrainConfig(fold_bn=False).folds_bn
    digits = data.load("digits")
    cfg = TrainConfig(method="at", epochs=1, batch_size=64, eps=0.2, steps=3, eval_samples=64, eval_steps=3,
                      progress=False, out=str(tmp_path), device="cpu", fold_bn=True,
                      model_opts={"width": 8})
    t = Trainer(cfg, digits)
    assert t.method.ctx.attack_options.get("fold_bn") is True
    x, y, idx = next(iter(t.loader))
    out = t.train_step(x, y, idx)
    assert torch.isfinite(out.loss)
    assert all("forward" not in m.__dict__ for m in t.module.modules())
    res = t.evaluate()
    assert 0.0 <= res["pgd_acc"] <= res["clean_acc"] <= 1.0
