"""(b) AVmixup, IAT and GIF inside a hand-written training loop with a model of your own.

The loop is yours (optimizer, schedule, batches); fastmix supplies one call per batch::

    method = fastmix.methods.AVmixup(eps=0.2, steps=3)
    loss = method.step(model, x, y)          # attack + mixing + the method's loss
    loss.backward()

Every method follows that pattern (``fastmix.methods.build(name, ...)`` works too). The
stateful ones take two optional per-epoch calls: ``method.start_epoch(epoch)`` and
``method.end_epoch(epoch, probe)``. GIF uses them to carry its *attackable set* from epoch
to epoch, and it draws its interpolation pairs from the training set by index, so it
gets ``train_data`` once (``method.attach``) and each batch's indices (``idx``).

``MyNet`` has no fastmix base class; for manifold mixup you would name its layers
(``fastmix.methods.IAT(manifold=True, mix_layers=("block1", "block2"))``), and for AIT
its feature layer (``fastmix.methods.AIT(features="embed")``).

    python examples/b_training_loop_methods.py [--epochs 2]
"""
import argparse
import time

import torch

import fastmix
from mynet import MyNet, digits


def pgd_accuracy(model, x, y, eps=0.2):
    model.eval()
    x_adv = fastmix.attacks.pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    model.train()
    return clean, robust


def train(method, epochs, data, batch_size=64, seed=0):
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = MyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    method.attach(model, train_data=(xtr, ytr), epochs=epochs)  # only GIF needs train_data
    for epoch in range(1, epochs + 1):
        method.start_epoch(epoch)                                # optional (stateful methods)
        model.train()
        for idx in torch.randperm(len(xtr)).split(batch_size):
            loss = method.step(model, xtr[idx], ytr[idx], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        diag = method.end_epoch(epoch, probe=(xte[:128], yte[:128]))  # optional: GIF's attackable set
        clean, robust = pgd_accuracy(model, xte, yte)
        extra = "  ".join(f"{k} {v:.3f}" for k, v in diag.items() if isinstance(v, float))
        print(f"  {method.name:8s} epoch {epoch}: loss {loss.item():.3f}  clean {clean:.3f}  PGD-10 {robust:.3f}  "
              f"{extra}")
    return clean, robust


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)  # tiny 8x8 batches: one thread is fastest on a small CPU
    data = digits()
    methods = [fastmix.methods.AVmixup(eps=0.2, steps=3),
               fastmix.methods.IAT(eps=0.2, steps=3),
               fastmix.methods.GIF(eps=0.2, steps=3, burn_in=0)]  # base="at"; burn_in=0: interpolate from epoch 1
    for m in methods:
        t0 = time.perf_counter()
        clean, robust = train(m, a.epochs, data)
        print(f"{m.name}: clean {clean:.3f}, PGD-10 {robust:.3f} after {a.epochs} epochs "
              f"({time.perf_counter() - t0:.1f} s)")
        assert 0.0 <= robust <= clean and clean > 0.2, (m.name, clean, robust)  # it learned something
    print("OK")


if __name__ == "__main__":
    main()
