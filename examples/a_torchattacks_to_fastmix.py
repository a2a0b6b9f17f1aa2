"""(a) Replacing torchattacks by fastmix in an existing evaluation script: a two-line change.

An evaluation script written for torchattacks::

    import torchattacks                                              # line 1
    atk = torchattacks.PGD(model, eps=0.2, alpha=0.05, steps=20)     # line 2
    x_adv = atk(images, labels)

becomes, with fastmix (same constructor, same call, same [0, 1] images)::

    import fastmix                                                   # line 1
    atk = fastmix.PGD(model, eps=0.2, alpha=0.05, steps=20)          # line 2
    x_adv = atk(images, labels)

Below, :func:`robust_accuracy` is that script; it runs once with each library on a small
model trained here on scikit-learn's digits, and prints both accuracies and wall times
(torchattacks is optional: without it only fastmix runs). The random starts differ, so
the two accuracies agree up to a few samples, not exactly.

    python examples/a_torchattacks_to_fastmix.py
"""
import time

import torch
import torch.nn.functional as F

from mynet import MyNet, digits


def robust_accuracy(lib, model, images, labels, batch_size=128):
    """The unchanged evaluation loop: only ``lib`` (torchattacks or fastmix) differs."""
    atk = lib.PGD(model, eps=0.2, alpha=0.05, steps=20)
    correct = 0
    for s in range(0, len(images), batch_size):
        x, y = images[s:s + batch_size], labels[s:s + batch_size]
        x_adv = atk(x, y)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
    return correct / len(images)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny 8x8 batches: one thread is fastest on a small CPU
    xtr, ytr, xte, yte = digits()
    model = MyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):  # a quick standard training, so there is something to attack
        for idx in torch.randperm(len(xtr)).split(64):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        clean = (model(xte).argmax(1) == yte).float().mean().item()
    print(f"clean accuracy {clean:.3f} on {len(xte)} held-out digits")

    import fastmix
    libs = [("fastmix", fastmix)]
    try:
        import torchattacks
        libs.insert(0, ("torchattacks", torchattacks))
    except ImportError:
        print("torchattacks is not installed: running the fastmix version only")
    accs = {}
    for name, lib in libs:
        t0 = time.perf_counter()
        accs[name] = robust_accuracy(lib, model, xte, yte)
        print(f"{name:>12s}: PGD-20 accuracy {accs[name]:.3f}  ({time.perf_counter() - t0:.2f} s)")
    assert accs["fastmix"] <= clean
    if "torchattacks" in accs:  # the same attack: the two agree up to random-start noise
        assert abs(accs["fastmix"] - accs["torchattacks"]) < 0.05, accs
    print("OK")


if __name__ == "__main__":
    main()
