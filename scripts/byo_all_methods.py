"""Every method trained for one epoch on digits with a model of your own (examples/mynet.py's
``MyNet``: a plain nn.Module with BatchNorm, no fastmix base class), two ways:

- ``trainer``: ``fastmix.train.train(cfg, model=MyNet(...))``;
- ``loop``: a hand-written loop calling ``method.step(model, x, y, idx)`` with the same
  optimiser, batch size and attack;

then Mixup Inference (MI-OL) on the IAT model of each. Prints a markdown table of the
held-out clean and PGD-20 accuracy (360 digits, eps 0.2). One epoch is a smoke run, not a
result: the numbers show every path trains, not how well a method does.

    python scripts/byo_all_methods.py [--steps 5] [--epochs 1]
"""
import argparse
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import fastmix.data  # noqa: E402
import fastmix.eval  # noqa: E402
from fastmix import methods as M  # noqa: E402
from fastmix.methods.mixup_inference import evaluate as mi_evaluate  # noqa: E402
from fastmix.train import TrainConfig, train  # noqa: E402
from mynet import MyNet  # noqa: E402

ALL = ["standard", "at", "trades", "gairat", "fastat", "at-mixup", "iat", "iat-manifold", "avmixup", "ait", "gif"]
OPTS = {"ait": {"features": "embed"}, "iat-manifold": {"mix_layers": ["block1", "block2"]}}
EPS, BATCH, LR = 0.2, 64, 0.05


def build(splits):
    return MyNet(splits.num_classes, splits.in_channels, splits.image_size, 16, splits.mean, splits.std)


def by_trainer(name, splits, steps, epochs, out):
    torch.manual_seed(0)
    model = build(splits)
    cfg = TrainConfig.for_dataset("digits", method=name, method_opts=dict(OPTS.get(name, {})), epochs=epochs,
                                  batch_size=BATCH, lr=LR, eps=EPS, steps=steps, schedule="constant",
                                  eval_samples=360, eval_steps=20, progress=False, out=out, device="cpu")
    t = train(cfg, splits, model=model)
    row = t.history[-1]
    return model, row["train_loss"], row["clean_acc"], row["pgd_acc"]


def by_loop(name, splits, steps, epochs, xte, yte):
    torch.manual_seed(0)
    model = build(splits)
    xtr = splits.train.images.float().div(255.0)
    ytr = splits.train.labels
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    m = M.build(name, eps=EPS, steps=steps, **OPTS.get(name, {})).attach(model, train_data=(xtr, ytr), epochs=epochs)
    g = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        m.start_epoch(epoch)
        model.train()
        total, n = 0.0, 0
        order = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(order) - BATCH + 1, BATCH):
            idx = order[s:s + BATCH]
            loss = m.step(model, xtr[idx], ytr[idx], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        m.end_epoch(epoch, (xte[:256], yte[:256]))
    res = fastmix.eval.evaluate(model, xte, yte, ["clean", "pgd20"], eps=EPS)
    return model, total / n, res.accuracy["clean"], res.accuracy["pgd20"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="training attack steps")
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(1)
    splits = fastmix.data.load("digits")
    xte, yte = splits.test.images.float().div(255.0), splits.test.labels
    print(f"| method | path | train loss | clean | PGD-20 | seconds |\n|---|---|---|---|---|---|")
    iat = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ALL:
            for path in ("trainer", "loop"):
                t0 = time.perf_counter()
                if path == "trainer":
                    model, loss, clean, pgd = by_trainer(name, splits, a.steps, a.epochs, os.path.join(tmp, name))
                else:
                    model, loss, clean, pgd = by_loop(name, splits, a.steps, a.epochs, xte, yte)
                print(f"| {name} | {path} | {loss:.3f} | {clean:.3f} | {pgd:.3f} | {time.perf_counter() - t0:.1f} |",
                      flush=True)
                if name == "iat":
                    iat[path] = model
    half = len(xte) // 2  # MI's pool: the second half of the held-out set
    for path, model in iat.items():
        t0 = time.perf_counter()
        r = mi_evaluate(model.eval(), xte[:half], yte[:half], xte[half:], yte[half:], attacks=("clean", "pgd20"),
                        eps=EPS, mode="ol")
        print(f"| MI-OL on iat | {path} | - | {r['clean+mi']:.3f} (plain {r['clean']:.3f}) | "
              f"{r['pgd20+mi']:.3f} (plain {r['pgd20']:.3f}) | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
