#!/usr/bin/env python
"""The reproduction runs behind docs/REPRODUCTION.md, as the ``fastmix`` commands a user types.

    python scripts/reproduce.py train                         # every method on digits (CPU, minutes)
    python scripts/reproduce.py eval digits                   # the suite + sanity checks on each digits run
    python scripts/reproduce.py eval mnist --runs runs/mnist_table   # the same on issue 5's MNIST checkpoints
    python scripts/reproduce.py report                        # markdown tables from the JSON files
    python scripts/reproduce.py --dry-run train               # print the commands only

Every step is a ``python -m fastmix ...`` subprocess (printed before it runs), ``--jobs`` at
a time, each on ``--threads`` intra-op threads (1 by default: on a small shared CPU, extra
OpenMP threads mostly add contention). Results: ``OUT/<dataset>/<label>.json`` (the suite's
``--json`` report with the sanity verdicts) and ``OUT/tables.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# label -> (method, extra train args); the digits defaults (eps 0.2, PGD-10 step eps/4, width-16 CNN)
DIGITS = {
    "standard": ("standard", []), "at": ("at", []), "trades": ("trades", []), "gairat": ("gairat", []),
    "fastat": ("fastat", []), "at-mixup": ("at-mixup", []), "iat": ("iat", []), "avmixup": ("avmixup", []),
    "ait": ("ait", []), "gif": ("gif", []),
}
MNIST = ("standard", "at", "at-mixup", "iat", "iat-manifold", "avmixup", "ait", "gif")


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry-run", action="store_true")
    sub = p.add_subparsers(dest="phase", required=True)
    t = sub.add_parser("train")
    t.add_argument("--methods", default=",".join(DIGITS))
    t.add_argument("--epochs", type=int, default=10)
    e = sub.add_parser("eval")
    e.add_argument("dataset", choices=("digits", "mnist"))
    e.add_argument("--runs", default=None, help="directory of <label>/last.pt (default OUT/digits; mnist: "
                   "runs/mnist_table, written by scripts/mnist_table.py)")
    e.add_argument("--labels", default=None, help="comma-separated subset of the runs")
    e.add_argument("--attacks", default="clean,fgsm,pgd20,cw20,apgd-ce,apgd-t")
    e.add_argument("--autoattack", default="", help="labels that also get the full standard AutoAttack")
    e.add_argument("--samples", type=int, default=200)
    e.add_argument("--sanity-samples", type=int, default=None)
    e.add_argument("--data-dir", default=None)
    sub.add_parser("report")
    return p.parse_args()


def fastmix(*args) -> list[str]:
    return [sys.executable, "-m", "fastmix", *map(str, args)]


def run_all(cmds: list[list[str]], jobs: int, dry: bool) -> list[int]:
    for c in cmds:
        print("$ fastmix " + " ".join(c[3:]), flush=True)
    if dry:
        return [0] * len(cmds)

    def one(c):
        t0 = time.perf_counter()
        r = subprocess.run(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = "\n".join(r.stdout.strip().splitlines()[-3:])
        print(f"[{time.perf_counter() - t0:.0f}s rc={r.returncode}] {' '.join(c[3:6])}\n{tail}", flush=True)
        return r.returncode

    with ThreadPoolExecutor(max(1, jobs)) as ex:
        return list(ex.map(one, cmds))


def phase_train(a):
    cmds = []
    for lab in a.methods.split(","):
        method, extra = DIGITS[lab]
        cmds.append(["fastmix", "train", "--method", method, "--dataset", "digits", "--epochs", a.epochs,
                     "--eval-every", 2, "--threads", a.threads, "--no-progress",
                     "--out", os.path.join(a.out, "digits", lab), *extra])
    cmds = [fastmix(*c[1:]) for c in cmds]
    return run_all(cmds, a.jobs, a.dry_run)


def phase_eval(a):
    runs = a.runs or (os.path.join(a.out, "digits") if a.dataset == "digits" else "runs/mnist_table")
    labels = a.labels.split(",") if a.labels else (list(DIGITS) if a.dataset == "digits" else list(MNIST))
    full_aa = set(filter(None, a.autoattack.split(",")))
    surrogate = os.path.join(runs, "standard", "last.pt")
    cmds = []
    for lab in labels:
        ck = os.path.join(runs, lab, "last.pt")
        if not os.path.isfile(ck) and not a.dry_run:
            print(f"skip {lab}: {ck} not found", flush=True)
            continue
        attacks = a.attacks + (",autoattack" if lab in full_aa else "")
        c = ["eval", "--checkpoint", ck, "--attacks", attacks, "--samples", a.samples, "--threads", a.threads,
             "--no-progress", "--sanity", "--surrogate", surrogate,
             "--out", os.path.join(a.out, a.dataset, f"{lab}.json"), "--json"]
        if a.sanity_samples:
            c += ["--sanity-samples", a.sanity_samples]
        if a.data_dir:
            c += ["--data-dir", a.data_dir]
        cmds.append(fastmix(*c))
    return run_all(cmds, a.jobs, a.dry_run)


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def phase_report(a):
    cols = ["clean", "fgsm", "pgd20", "cw20", "apgd-ce", "apgd-t", "autoattack"]
    names = {"clean": "clean", "fgsm": "FGSM", "pgd20": "PGD-20", "cw20": "CW-20", "apgd-ce": "APGD-CE",
             "apgd-t": "APGD-T", "autoattack": "AutoAttack"}
    lines = []
    for ds in ("digits", "mnist"):
        d = os.path.join(a.out, ds)
        if not os.path.isdir(d):
            continue
        files = sorted(f for f in os.listdir(d) if f.endswith(".json"))
        order = list(DIGITS) if ds == "digits" else list(MNIST)
        files.sort(key=lambda f: order.index(f[:-5]) if f[:-5] in order else 99)
        if not files:
            continue
        first = json.load(open(os.path.join(d, files[0])))
        lines += [f"### {ds}: {first['n']} held-out images (fixed-seed subset, seed {first.get('subset_seed')}), "
                  f"eps {first['eps']:g}", "",
                  "| method | " + " | ".join(names[c] for c in cols) + " | worst case | PGD-20 minus worst | "
                  "sanity: Carlini checks | CE vs margin |", "|---" * (len(cols) + 5) + "|"]
        for f in files:
            r = json.load(open(os.path.join(d, f)))
            acc = r["accuracy"]
            san = [v for v in r.get("sanity", []) if v["name"] != "ce_vs_margin"]
            failed = [v["name"] for v in san if v["passed"] is False]
            ran = [v for v in san if v["passed"] is not None]
            verdict = f"pass {len(ran)}/{len(ran)}" if not failed else "FAIL: " + ", ".join(failed)
            # check_ce_vs_margin's rule (max_gap 0.05) on the suite's own PGD-20 and CW-20 columns
            gap = acc["pgd20"] - acc["cw20"]
            margin = "pass" if gap <= 0.05 else f"FAIL ({100 * gap:.1f} pts)"
            lines.append(f"| {f[:-5]} | " + " | ".join(_pct(acc.get(c)) for c in cols) +
                         f" | {_pct(r['worst_case'])} | {100 * (acc['pgd20'] - r['worst_case']):.1f} | {verdict} | "
                         f"{margin} |")
        lines.append("")
    md = "\n".join(lines)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tables.md"), "w") as fh:
        fh.write(md)
    print(md)
    return [0]


def main():
    a = parse()
    rcs = {"train": phase_train, "eval": phase_eval, "report": phase_report}[a.phase](a)
    return 1 if any(rcs) else 0


if __name__ == "__main__":
    sys.exit(main())
