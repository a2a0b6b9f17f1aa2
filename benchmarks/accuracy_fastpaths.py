"""The accuracy effect of the training fast paths: each method trained on digits twice
from the same seed, fp32 eager and with a fast path, then clean and PGD-20 accuracy on
the held-out set (the trainer's own evaluation, run in fp32 eager for both).

    python benchmarks/accuracy_fastpaths.py --epochs 10 --out benchmarks/results/x.json
    python benchmarks/accuracy_fastpaths.py --base plain-sgd --fast fp32 --epochs 5 --out ...  # fused SGD

Measurements only. The two runs of a method share the seed, data order and initial
weights; they differ by the fast path's arithmetic (bf16 rounding, folded BatchNorm),
so the difference is the fast path's effect on this run, not a confidence interval.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from fastmix import data  # noqa: E402
from fastmix.attacks.specs import parse_attack  # noqa: E402
from fastmix.eval.suite import accuracy  # noqa: E402
from fastmix.train import TrainConfig, Trainer  # noqa: E402

METHODS = ("standard", "at", "trades", "gairat", "fastat", "avmixup", "iat", "ait", "at-mixup")
FAST = {"bf16-cl-fold": {"amp": "bf16", "channels_last": True, "fold_bn": True},
        "bf16-cl": {"amp": "bf16", "channels_last": True, "fold_bn": False}, "fold": {"fold_bn": True},
        "fp32": {"fold_bn": False},
        # torch's default SGD loop instead of the fused kernel (fastmix's default), unfolded
        "plain-sgd": {"fold_bn": False, "fused_sgd": False}}


def run(method: str, opts: dict, epochs: int, splits, tmp: str) -> dict:
    cfg = TrainConfig.for_dataset("digits", method=method, epochs=epochs, progress=False, out=tmp, device="cpu",
                                  eval_every=epochs, seed=0, **opts)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = Trainer(cfg, splits)
        tr.fit()
    train_s = sum(h["seconds"] for h in tr.history)
    # the same held-out PGD-20 for both runs: fp32 eager, unfolded, fixed seed
    model = tr.module.to(memory_format=torch.contiguous_format).eval()
    loader = data.DeviceLoader(tr.heldout, 256, shuffle=False, device="cpu")
    res = accuracy(model, loader, {"clean": None, "pgd20": parse_attack("pgd20", 0.2, None)}, seed=12345)
    return {"clean": res["clean"], "pgd20": res["pgd20"], "train_seconds": train_s,
            "wall_seconds": time.perf_counter() - t0, "heldout": len(tr.heldout)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--fast", default="bf16-cl-fold", choices=list(FAST))
    ap.add_argument("--base", default="fp32", choices=list(FAST), help="what the fast path is compared with")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    splits = data.load("digits")
    rows = []
    for m in a.methods.split(","):
        if a.base == a.fast:
            raise SystemExit("--base and --fast must differ")
        row = {"method": m, "epochs": a.epochs, "fast_path": a.fast, "base": a.base}
        for name in (a.base, a.fast):
            with tempfile.TemporaryDirectory() as tmp:
                row[name] = run(m, FAST[name], a.epochs, splits, tmp)
        b = a.base
        row["pgd20_change"] = row[a.fast]["pgd20"] - row[b]["pgd20"]
        row["clean_change"] = row[a.fast]["clean"] - row[b]["clean"]
        row["train_speedup"] = row[b]["train_seconds"] / row[a.fast]["train_seconds"]
        rows.append(row)
        print(f"{m:9s} pgd20 {b} {row[b]['pgd20']:.4f} {a.fast} {row[a.fast]['pgd20']:.4f} "
              f"({row['pgd20_change']:+.4f}); clean {row[b]['clean']:.4f} -> {row[a.fast]['clean']:.4f}; "
              f"train time x{row['train_speedup']:.2f}", flush=True)
        with open(a.out, "w") as f:
            json.dump({"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "torch": torch.__version__, "threads": a.threads, "load_average": os.getloadavg(),
                       "dataset": "digits", "eval": "PGD-20 eps 0.2 alpha 0.05, fp32 eager, seed 12345",
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
