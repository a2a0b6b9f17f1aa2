"""Parity of fastmix's attacks with torchattacks on a small CNN trained for a few seconds
on real MNIST images (the shared t10k file), so that robust accuracy is far from 0 and 1.

- PGD without random start: the same adversarial images as torchattacks.PGD in fp32, up
  to the rounding of the projection (fastmix clips to [x-eps, x+eps], torchattacks clips
  the offset and adds it back: the two differ by at most one ulp) and the sign flips such
  a rounding causes where a gradient component is numerically zero.
- PGD with random starts: robust accuracy within 0.5 points, over 1,000 images with
  the same seed (fastmix's uniform start draws the same numbers as torchattacks', so this
  isolates the algorithm from the sampling noise) and, marked slow, with independent seeds
  over all 4,000 held-out images (the sampling noise alone is about 0.2-0.3 points there).
- APGD-CE and APGD-T: robust accuracy within 1 point of torchattacks' APGD / APGDT.
"""
import gzip
import os

import numpy as np
import pytest
import torch
from torch import nn

import fastmix.attacks as A
from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

torchattacks = pytest.importorskip("torchattacks")

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
EPS = 0.07  # on this quickly trained CNN: PGD-10 robust accuracy about 43%, clean 95.6%


def _read_idx(name, offset):
    path = os.path.join(MNIST, name)
    if not os.path.exists(path):
        pytest.skip(f"MNIST test set not found at {path}")
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


class TinyCNN(nn.Module):
    """conv(1->8) pool conv(8->16)-BN pool, Linear(784->64) = features, Linear(64->10)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def mnist_model():
    """(model in eval mode, the 4,000 held-out images (B, 1, 28, 28) in [0, 1], labels)."""
    x = torch.from_numpy(_read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    y = torch.from_numpy(_read_idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):  # ~2 s: train on the first 6,000 images
        i = torch.randint(0, 6000, (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, x[6000:], y[6000:]


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100


def test_fgsm_images_identical(mnist_model):
    model, x, y = mnist_model
    x, y = x[:500], y[:500]
    ta = torchattacks.FGSM(model, eps=EPS)(x, y)
    fm = A.FGSM(model, eps=EPS)(x, y)
    assert torch.equal(ta, fm)


def test_pgd_step_matches_torchattacks_to_one_ulp(mnist_model):
    """From the same iterate and gradient, one fastmix step equals torchattacks' update
    up to the rounding of the projection."""
    import fastmix.ops as ops
    model, x, y = mnist_model
    x, y = x[:256], y[:256]
    alpha = EPS / 4
    xk = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=3, random_start=False)(x, y)
    xg = xk.clone().requires_grad_(True)
    g, = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), xg)
    ta = torch.clamp(x + torch.clamp(xk + alpha * g.sign() - x, -EPS, EPS), 0, 1)
    fm = ops.pgd_step(xk, g, x, EPS, alpha)
    assert (ta - fm).abs().max().item() <= 1.2e-7


def test_pgd_no_random_start_same_images(mnist_model):
    model, x, y = mnist_model
    x, y = x[:1000], y[:1000]
    ta = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    fm = A.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    differ = ((ta - fm).abs() > 1e-6).float().mean().item()
    print(f"\nPGD-10 (no random start) on 1000 MNIST images: share of pixels differing {differ:.2e}, "
          f"max |diff| {(ta - fm).abs().max().item():.3g}; robust acc torchattacks {_acc(model, ta, y):.2f}%, "
          f"fastmix {_acc(model, fm, y):.2f}%")
    assert differ < 1e-3
    same_pred = (model(ta).argmax(1) == model(fm).argmax(1)).float().mean().item()
    assert same_pred >= 0.998
    assert abs(_acc(model, ta, y) - _acc(model, fm, y)) <= 0.2


def _pgd_random_start(model, x, y, seed_ta, seed_fm):
    torch.manual_seed(seed_ta)
    r_ta = _acc(model, torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10)(x, y), y)
    torch.manual_seed(seed_fm)
    r_fm = _acc(model, A.PGD(model, eps=EPS, alpha=EPS / 4, steps=10)(x, y), y)
    print(f"\nPGD-10 random start, {len(y)} MNIST images, seeds {seed_ta}/{seed_fm}: robust acc torchattacks "
          f"{r_ta:.2f}%, fastmix {r_fm:.2f}%, difference {r_fm - r_ta:+.2f} points (clean {_acc(model, x, y):.2f}%)")
    assert 5 < r_fm < 95  # nontrivial
    assert abs(r_fm - r_ta) <= 0.5


def test_pgd_random_start_robust_accuracy_same_seed(mnist_model):
    model, x, y = mnist_model
    _pgd_random_start(model, x[:1000], y[:1000], 1, 1)


@pytest.mark.slow
def test_pgd_random_start_robust_accuracy_independent_seeds(mnist_model):
    model, x, y = mnist_model
    _pgd_random_start(model, x, y, 1, 2)


def test_apgd_ce_matches_torchattacks(mnist_model):
    model, x, y = mnist_model
    x, y = x[:1000], y[:1000]
    r_ta = _acc(model, torchattacks.APGD(model, eps=EPS, steps=10, seed=0)(x, y), y)
    r_fm = _acc(model, A.APGD(model, eps=EPS, steps=10, seed=0)(x, y), y)
    print(f"\nAPGD-CE-10, 1000 MNIST images: robust acc torchattacks {r_ta:.2f}%, fastmix {r_fm:.2f}%, "
          f"difference {r_fm - r_ta:+.2f} points")
    assert abs(r_fm - r_ta) <= 1.0


def test_apgdt_matches_torchattacks(mnist_model):
    model, x, y = mnist_model
    x, y = x[:1000], y[:1000]
    # three target classes (n_classes=4 gives torchattacks n_target_classes=3) keeps CI short
    r_ta = _acc(model, torchattacks.APGDT(model, eps=EPS, steps=10, seed=0, n_classes=4)(x, y), y)
    r_fm = _acc(model, A.APGDT(model, eps=EPS, steps=10, seed=0, n_classes=4)(x, y), y)
    print(f"\nAPGD-T-10 (3 targets), 1000 MNIST images: robust acc torchattacks {r_ta:.2f}%, "
          f"fastmix {r_fm:.2f}%, difference {r_fm - r_ta:+.2f} points")
    assert abs(r_fm - r_ta) <= 1.0


@pytest.mark.slow
def test_apgdt_nine_targets_matches_torchattacks(mnist_model):
    model, x, y = mnist_model
    x, y = x[:1000], y[:1000]
    r_ta = _acc(model, torchattacks.APGDT(model, eps=EPS, steps=10, seed=0, n_classes=10)(x, y), y)
    r_fm = _acc(model, A.APGDT(model, eps=EPS, steps=10, seed=0, n_classes=10)(x, y), y)
    print(f"\nAPGD-T-10 (9 targets), 1000 MNIST images: robust acc torchattacks {r_ta:.2f}%, "
          f"fastmix {r_fm:.2f}%, difference {r_fm - r_ta:+.2f} points")
    assert abs(r_fm - r_ta) <= 1.0
