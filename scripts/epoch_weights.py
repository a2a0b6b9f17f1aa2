"""Train each method one epoch on digits from seed 0 and save the final weights, to check
that a change leaves the arithmetic of training bit for bit the same.

    python scripts/epoch_weights.py --root . --out new.pt [--no-fused-sgd]
    python scripts/epoch_weights.py --root ../old-checkout --out old.pt
    python scripts/epoch_weights.py --compare old.pt new.pt

``--root`` is the checkout whose ``fastmix`` is imported (its extension built), so two
commits can be compared from one script. One thread (CPU results depend on the count).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

METHODS = "standard,at,trades,gairat,fastat,avmixup,iat,ait,at-mixup"


def train(root: str, out: str, methods: str, fused_sgd: bool | None) -> None:
    sys.path.insert(0, os.path.abspath(root))
    import torch
    from fastmix.data import load
    from fastmix.train import TrainConfig, Trainer
    torch.set_num_threads(1)
    splits, res = load("digits"), {}
    extra = {} if fused_sgd is None else {"fused_sgd": fused_sgd}
    for m in methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig.for_dataset("digits", method=m, epochs=1, eval_samples=96, eval_steps=3,
                                          probe_size=32, progress=False, out=tmp, seed=0, threads=1, **extra)
            t = Trainer(cfg, splits)
            t.fit()
            res[m] = {k: v.clone() for k, v in t.module.state_dict().items()}
    torch.save(res, out)
    print(f"wrote {out}: {', '.join(res)}")


def compare(a_path: str, b_path: str) -> int:
    import torch
    a, b = torch.load(a_path), torch.load(b_path)
    for m in a:
        if m not in b:
            print(f"{m:9s} missing from {b_path}")
            continue
        diff = max((a[m][k].double() - b[m][k].double()).abs().max().item() for k in a[m])
        same = all(torch.equal(a[m][k], b[m][k]) for k in a[m])
        print(f"{m:9s} {'bit-identical' if same else f'largest difference {diff:.3g}'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--out")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--no-fused-sgd", action="store_true", help="train with fused_sgd=False (needs a checkout with it)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    a = ap.parse_args(argv)
    if a.compare:
        return compare(*a.compare)
    if not a.out:
        ap.error("--out is required unless --compare is given")
    train(a.root, a.out, a.methods, False if a.no_fused_sgd else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
