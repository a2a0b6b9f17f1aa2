"""Per-op profile of one training step: fastmix's ``Trainer.train_step`` against the
hand-written loop of the same maths (``naive_steps.py``), under ``torch.profiler``.

    python benchmarks/profile_train.py --method at --workload digits-cnn16 --steps 5
    python benchmarks/profile_train.py --all --steps 3 --out benchmarks/results/profile.md

fastmix runs fp32 eager with BatchNorm folding off (``fold_bn=False``), the same arithmetic as
the naive loop, so the table shows the step's own overhead. Prints, per method: the top
ops by self CPU time of each provider, then the ops whose
per-step call count or self time differ between the two (what fastmix pays and the
naive loop does not). Measurements only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench_train import WORKLOADS, make_trainer  # noqa: E402
from naive_steps import NAIVE  # noqa: E402


def _step_fns(workload, method, tmp, **opts):
    fns = {}
    for prov in ("fastmix", "naive"):
        t = make_trainer(workload, method, tmp, **({"fold_bn": False} if prov == "fastmix" else {}), **opts)
        x, y, idx = next(iter(t.loader))
        t.method.start_epoch(1)
        t.module.train()
        if prov == "fastmix":
            fns[prov] = (lambda t=t, x=x, y=y, idx=idx: t.train_step(x, y, idx))
        else:
            fns[prov] = (lambda t=t, x=x, y=y, idx=idx: NAIVE[method](t, x, y, idx))
    return fns


def profile_method(workload: str, method: str, steps: int, tmp: str, top: int = 15) -> str:
    fns = _step_fns(workload, method, tmp)
    tables, stats = {}, {}
    for prov, fn in fns.items():
        for _ in range(2):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                fn()
        ka = prof.key_averages()
        tables[prov] = ka.table(sort_by="self_cpu_time_total", row_limit=top)
        stats[prov] = {e.key: (e.count / steps, e.self_cpu_time_total / steps) for e in ka}
    lines = [f"## {method} on {workload} ({steps} profiled steps each, per-step figures)\n"]
    for prov in fns:
        tot = sum(v[1] for v in stats[prov].values())
        n = sum(v[0] for v in stats[prov].values())
        lines.append(f"- {prov}: {n:.0f} profiled calls/step, {tot / 1000:.2f} ms self CPU/step")
    lines.append("\nOps that differ (calls/step, self us/step: fastmix vs naive), largest time gap first:\n")
    lines.append("| op | fastmix calls | naive calls | fastmix us | naive us |\n|---|---:|---:|---:|---:|")
    keys = set(stats["fastmix"]) | set(stats["naive"])
    diff = []
    for k in keys:
        fc, ft = stats["fastmix"].get(k, (0, 0))
        nc, nt = stats["naive"].get(k, (0, 0))
        if fc != nc or abs(ft - nt) > 50:
            diff.append((ft - nt, k, fc, nc, ft, nt))
    for d, k, fc, nc, ft, nt in sorted(diff, reverse=True)[:top + 10]:
        lines.append(f"| `{k}` | {fc:.0f} | {nc:.0f} | {ft:.0f} | {nt:.0f} |")
    for prov in fns:
        lines.append(f"\n### {prov}: top {top} ops by self CPU time ({steps} steps)\n```\n{tables[prov]}\n```")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="at", choices=sorted(NAIVE))
    ap.add_argument("--workload", default="digits-cnn16", choices=list(WORKLOADS))
    ap.add_argument("--all", action="store_true", help="every method with a naive loop, every workload")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default=None, help="also write the report (markdown) here")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    jobs = [(w, m) for w in WORKLOADS for m in NAIVE] if a.all else [(a.workload, a.method)]
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, m in jobs:
            rep = profile_method(w, m, a.steps, tmp, a.top)
            print(rep, flush=True)
            parts.append(rep)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"# Per-op profile, fastmix train_step vs hand-written loop (torch {torch.__version__}, "
                    f"{torch.get_num_threads()} threads, CPU)\n\n" + "\n".join(parts))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
