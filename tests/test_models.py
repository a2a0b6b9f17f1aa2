"""fastmix.models: shapes, parameter counts, mixing points, normalisation inside the model."""
import pytest
import torch

from fastmix import models as M

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

# The ResNets pool globally, so 16x16 inputs exercise them at a quarter of the cost.
SMALL = [("cnn", 1, 8), ("cnn", 1, 28), ("cnn", 3, 32), ("preact18", 3, 16), ("resnet18", 3, 16), ("wrn-16-2", 3, 16)]


@pytest.mark.parametrize("name,c,s", SMALL)
def test_forward_features_and_head(name, c, s):
    m = M.build(name, 7, c, s).eval()
    x = torch.rand(3, c, s, s)
    logits = m(x)
    feats = m.features(x)
    assert logits.shape == (3, 7) and logits.dtype == torch.float32
    assert feats.shape == (3, m.num_features)
    torch.testing.assert_close(m.head(feats), logits)
    assert m.num_classes == 7


@pytest.mark.parametrize("name,params", [("preact18", 11_172_170), ("resnet18", 11_173_962),
                                         ("wrn-28-10", 36_479_194), ("wrn-34-10", 46_160_474)])
def test_parameter_counts_match_the_published_architectures(name, params):
    # PreActResNet-18 (with the final BN of Wong et al.), ResNet-18 ~11.2M, WRN-28-10 36.5M, WRN-34-10 46.2M (CIFAR-10 heads).
    assert M.num_parameters(M.build(name, 10, 3, 32)) == params


def test_wrn_depth_rules():
    assert M.blocks_per_group(28) == 4 and M.blocks_per_group(34) == 5
    assert M.blocks_per_group(32) == 5  # Madry's counting (6n + 2)
    wrn32, wrn34 = M.build("wrn-32-10", 10), M.build("wrn-34-10", 10)
    assert [tuple(p.shape) for p in wrn32.parameters()] == [tuple(p.shape) for p in wrn34.parameters()]
    with pytest.raises(ValueError, match="depth"):
        M.build("wrn-30-2", 10)


@pytest.mark.parametrize("name,c,s", [("cnn", 1, 28), ("preact18", 3, 16), ("wrn-16-2", 3, 16)])
def test_mix_points_see_the_documented_tensors(name, c, s):
    m = M.build(name, 10, c, s).eval()
    x = torch.rand(4, c, s, s)
    seen = {}
    for layer in M.MIX_LAYERS:
        def fn(h, layer=layer):
            seen[layer] = h.shape
            return h
        out = m(x, mix_layer=layer, mix_fn=fn)
        torch.testing.assert_close(out, m(x))  # the identity mix changes nothing
    assert seen[0] == x.shape  # the input, before normalisation, in [0, 1]
    assert seen[1][0] == 4 and seen[2][0] == 4
    assert seen[1] != seen[2]  # block 2 changes width or resolution
    # A mix at block 1 that swaps two samples swaps their logits.
    perm = torch.tensor([1, 0, 2, 3])
    swapped = m(x, mix_layer=1, mix_fn=lambda h: h[perm])
    torch.testing.assert_close(swapped, m(x)[perm])


def test_manifold_mix_is_differentiable_through_fused_mix():
    from fastmix import ops
    m = M.build("cnn", 10, 1, 8)
    x = torch.rand(6, 1, 8, 8)
    lam = torch.full((6,), 0.3, requires_grad=True)
    perm = torch.randperm(6)
    out = m(x, mix_layer=2, mix_fn=lambda h: ops.mix(h, h, lam, perm))
    out.sum().backward()
    assert lam.grad is not None and torch.isfinite(lam.grad).all()
    assert all(p.grad is not None for p in m.parameters())


def test_normalisation_lives_inside_the_model():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    a = M.build("wrn-16-2", 10, 3, 16, mean=mean, std=std).eval()
    b = M.build("wrn-16-2", 10, 3, 16).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k not in ("mean", "std")}, strict=False)
    x = torch.rand(2, 3, 16, 16)
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(a(x), b(xn), rtol=1e-4, atol=1e-4)
    assert "mean" in a.state_dict() and "std" in a.state_dict()  # saved with the weights


def test_channels_last_gives_the_same_logits():
    m = M.build("preact18", 10, 3, 16).eval()
    x = torch.rand(2, 3, 16, 16)
    ref = m(x)
    m = m.to(memory_format=torch.channels_last)
    torch.testing.assert_close(m(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-4)


def test_cnn_without_batchnorm_has_no_bn():
    m = M.build("cnn", 10, 1, 8, batch_norm=False)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert m(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="vgg", num_classes=10), "model must be one of"),
    (dict(name="cnn", num_classes=1), "num_classes"),
    (dict(name="cnn", num_classes=10, in_channels=2), "in_channels"),
    (dict(name="cnn", num_classes=10, in_channels=1, image_size=10), "image_size"),
    (dict(name="cnn", num_classes=10, in_channels=3, mean=[0.5], std=[0.2]), "mean and std"),
])
def test_build_errors_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.build(**kwargs)


def test_forward_errors_name_the_argument():
    m = M.build("cnn", 10, 1, 8)
    with pytest.raises(ValueError, match="mix_layer"):
        m(torch.rand(2, 1, 8, 8), mix_layer=3, mix_fn=lambda h: h)
    with pytest.raises(ValueError, match="mix_fn"):
        m(torch.rand(2, 1, 8, 8), mix_layer=1)
    with pytest.raises(ValueError, match="x must be"):
        m(torch.rand(2, 3, 8, 8))
