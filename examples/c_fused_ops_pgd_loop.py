"""(c) The fused ops inside your own PGD loop: ``random_start``, ``pgd_step``, ``mix`` and
``soft_cross_entropy`` with mixup targets.

A PGD attack against *mixup* labels, written by hand. The target of a mixed image
``lam*x_i + (1-lam)*x_j`` is ``lam*onehot(y_i) + (1-lam)*onehot(y_j)``;
``fastmix.ops.soft_cross_entropy(logits, y_i, y_j, w=lam)`` scores it from the O(B)
numbers, without building a B x C target, and ``pgd_step`` does the sign step and both
projections (eps-ball, [0, 1]) in one kernel::

    x_mix = ops.mix(x, x, lam, perm)                          # lam[i]*x[i] + (1-lam[i])*x[perm[i]]
    x_adv = ops.random_start(x_mix, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = ops.soft_cross_entropy(model(x_adv), y, y[perm], w=lam)
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = ops.pgd_step(x_adv.detach(), grad, x_mix, eps, alpha)

The script runs that loop and the same loop in plain torch from the same random start,
checks that both give the same adversarial images, and times them after a warm-up (one
run, so the times are indicative on a busy machine; fastmix uses its
C++/CUDA/Triton kernels when built, else its torch reference: ``python -m fastmix.info``).

    python examples/c_fused_ops_pgd_loop.py
"""
import time

import torch
import torch.nn.functional as F

from fastmix import ops
from mynet import MyNet, digits


def fused_pgd(model, x_mix, start, y_a, y_b, lam, eps, alpha, steps):
    x_adv = start.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = ops.soft_cross_entropy(model(x_adv), y_a, y_b, w=lam)
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = ops.pgd_step(x_adv.detach(), grad, x_mix, eps, alpha)
    return x_adv


def torch_pgd(model, x_mix, start, y_a, y_b, lam, eps, alpha, steps, num_classes=10):
    target = lam[:, None] * F.one_hot(y_a, num_classes) + (1 - lam[:, None]) * F.one_hot(y_b, num_classes)
    x_adv = start.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = -(target * F.log_softmax(model(x_adv), 1)).sum(1).mean()
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x_mix - eps), x_mix + eps).clamp(0, 1)
    return x_adv


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny 8x8 batches: one thread is fastest on a small CPU
    _, _, x, y = digits()
    model = MyNet().eval()
    B, eps, alpha, steps = x.shape[0], 0.2, 0.05, 10
    lam = torch.distributions.Beta(1.0, 1.0).sample((B,))
    perm = torch.randperm(B)
    x_mix = ops.mix(x, x, lam, perm)
    torch.testing.assert_close(x_mix, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm])
    start = ops.random_start(x_mix, eps)
    for p in model.parameters():  # an attack needs input gradients only
        p.requires_grad_(False)

    fused_pgd(model, x_mix, start, y, y[perm], lam, eps, alpha, 1)  # warm-up: the first op call picks a backend
    torch_pgd(model, x_mix, start, y, y[perm], lam, eps, alpha, 1)
    t0 = time.perf_counter()
    fused = fused_pgd(model, x_mix, start, y, y[perm], lam, eps, alpha, steps)
    t_fused = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = torch_pgd(model, x_mix, start, y, y[perm], lam, eps, alpha, steps)
    t_plain = time.perf_counter() - t0

    # The same iterates: a sign step is exact, so only a gradient that is ~0 can flip a sign.
    same = (fused - plain).abs().le(1e-5).float().mean().item()
    print(f"{B} mixed digits, PGD-{steps}: fused ops {t_fused:.3f} s, plain torch {t_plain:.3f} s; "
          f"{100 * same:.2f}% of pixels identical")
    assert same > 0.999, same
    assert (fused - x_mix).abs().max() <= eps + 1e-6 and fused.min() >= 0 and fused.max() <= 1
    with torch.no_grad():
        clean = ops.soft_cross_entropy(model(x_mix), y, y[perm], w=lam).item()
        adv = ops.soft_cross_entropy(model(fused), y, y[perm], w=lam).item()
    print(f"mixup-target loss: {clean:.3f} on the mixed images, {adv:.3f} after the attack")
    assert adv > clean
    print("OK")


if __name__ == "__main__":
    main()
