#!/usr/bin/env python
"""The MNIST experiment of issue 5: clean and PGD-20 accuracy of standard training, AT and
every mixup-family method on the real MNIST test set, GIF's attackable ratios against
AT-mixup's and AT's, Mixup Inference under oblivious and adaptive (EOT) attacks, and the
throughput of batched MI against a one-image loop.

Data: the 10,000 t10k images in ``--data`` (read in place, never copied), split 8,000
train / 2,000 held out with seed 0 (``fastmix.data.load_mnist``). Every method is trained
by the one trainer (``fastmix.train.Trainer``) with the same model, schedule and attack
budget, and evaluated at its last epoch on all 2,000 held-out images.

    python scripts/mnist_table.py --data ../shared/data/mnist --out runs/mnist_table

Writes ``OUT/results.json``, ``OUT/tables.md`` and ``OUT/attackable.png``; prints the tables.
Budget: under 25 minutes on two shared CPU cores with the defaults: two methods train at
once (``--jobs 2``), each process with one intra-op thread (on a loaded 2-core machine a
second thread per process mostly adds contention).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastmix import attacks, checkpoint  # noqa: E402
from fastmix import data as fdata  # noqa: E402
from fastmix.methods.mixup_inference import MixupInference  # noqa: E402
from fastmix.train import TrainConfig, Trainer  # noqa: E402

# (row label, method name, method options)
RUNS = {
    "standard": ("standard", {}),
    "at": ("at", {}),
    "at-mixup": ("at-mixup", {}),
    "iat": ("iat", {}),
    "iat-manifold": ("iat-manifold", {}),
    "avmixup": ("avmixup", {}),
    "ait": ("ait", {}),
    "gif": ("gif", {"burn_in": 1}),
    "gif-fastat": ("gif", {"base": "fastat", "burn_in": 0}),
    "gif-trades": ("gif", {"base": "trades", "burn_in": 0}),
    "gif-gairat": ("gif", {"base": "gairat", "burn_in": 0}),
}
DEFAULT_RUNS = "standard,at,at-mixup,iat,iat-manifold,avmixup,ait,gif"


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"))
    p.add_argument("--out", default="runs/mnist_table")
    p.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, from {', '.join(RUNS)}")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--milestones", default="3", help="epochs after which lr drops x0.1")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--alpha", type=float, default=0.1, help="training PGD step")
    p.add_argument("--steps", type=int, default=3, help="training PGD steps")
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--jobs", type=int, default=2, help="methods trained at once (one process each)")
    p.add_argument("--mi-model", default="iat", help="the run whose model Mixup Inference wraps")
    p.add_argument("--mi-lam", type=float, default=0.6, help="MI-OL's lam (0.6 for IAT in the paper)")
    p.add_argument("--mi-n", type=int, default=30)
    p.add_argument("--mi-eval", type=int, default=1000, help="held-out images MI is evaluated on (the rest is the pool)")
    p.add_argument("--eot-images", type=int, default=500)
    p.add_argument("--eot-iter", type=int, default=10)
    p.add_argument("--tp-images", type=int, default=200)
    p.add_argument("--tp-loop-images", type=int, default=100)
    p.add_argument("--lam-sweep-only", default=None, metavar="LAMS",
                   help="only sweep MI-OL's lam (e.g. 0.5,0.6,0.7,0.8,0.9) on OUT's trained --mi-model under the "
                        "oblivious PGD attack (updates OUT/results.json)")
    p.add_argument("--throughput-only", action="store_true",
                   help="only re-measure MI throughput on OUT's trained --mi-model (updates OUT/results.json)")
    return p.parse_args()


def pgd20(model, x, y, eps, steps, batch=500, seed=0):
    """PGD-``steps`` (CE, random start, step eps/4, BN in eval mode) adversarial images."""
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        return torch.cat([attacks.pgd(model, x[s:s + batch], y[s:s + batch], eps=eps, alpha=eps / 4, steps=steps,
                                      random_start=True, bn_mode="eval") for s in range(0, x.shape[0], batch)])


@torch.no_grad()
def acc(model, x, y, batch=1000):
    was = model.training
    model.eval()
    c = sum(int((model(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum()) for s in range(0, x.shape[0], batch))
    model.train(was)
    return c / x.shape[0]


def train_one(label, args, splits):
    name, opts = RUNS[label]
    cfg = TrainConfig.for_dataset(
        "mnist", data_dir=args.data, method=name, method_opts=opts, epochs=args.epochs, lr=args.lr,
        milestones=[int(m) for m in args.milestones.split(",") if m], batch_size=args.batch, eps=args.eps,
        alpha=args.alpha, steps=args.steps, out=os.path.join(args.out, label), progress=False, seed=args.seed,
        # the trainer's own per-epoch evaluation is kept tiny; the table is evaluated below on all 2,000
        eval_samples=100, eval_steps=1, eval_every=args.epochs, model_opts={"width": args.width, "hidden": args.hidden})
    t0 = time.perf_counter()
    tr = Trainer(cfg, splits)
    tr.fit()
    return tr, time.perf_counter() - t0


def run_one(label: str, args) -> dict:
    """Train one row of the table and evaluate it on every held-out image (one process)."""
    torch.set_num_threads(args.threads)
    splits = fdata.load("mnist", args.data, seed=0)
    hx, hy = splits.test.images.float().div_(255.0), splits.test.labels
    tr, secs = train_one(label, args, splits)
    model = tr.module.eval()
    clean = acc(model, hx, hy)
    t0 = time.perf_counter()
    robust = acc(model, pgd20(model, hx, hy, args.eps, args.eval_steps), hy)
    ev = time.perf_counter() - t0
    hist = [{k: h.get(k) for k in ("epoch", "lr", "train_loss", "train_acc", "attackable_orig",
                                   "attackable_interp", "attackable_set", "seconds")} for h in tr.history]
    res = {"method": tr.cfg.method, "opts": tr.cfg.method_opts, "hparams": _plain(tr.method.hparams()),
           "clean": clean, "pgd": robust, "train_seconds": secs, "eval_seconds": ev, "history": hist,
           "checkpoint": os.path.join(tr.cfg.out, "last.pt")}
    print(f"{label:14s} clean {clean:.4f}  PGD-{args.eval_steps} {robust:.4f}  train {secs:.0f}s  eval {ev:.0f}s  "
          f"losses {[round(h['train_loss'], 3) for h in hist]}", flush=True)
    return res


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def load_model(path: str):
    """The checkpoint's model in eval mode on the CPU (:func:`fastmix.checkpoint.load_model`)."""
    return checkpoint.load_model(path, "cpu")[0]


# Longest first, so that parallel jobs finish together.
_COST = {"at-mixup": 8, "gif": 8, "gif-trades": 8, "gif-gairat": 8, "gif-fastat": 3, "iat": 6, "iat-manifold": 6,
         "avmixup": 5, "at": 5, "ait": 2, "standard": 1}


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_all = time.perf_counter()
    splits = fdata.load("mnist", args.data, seed=0)
    hx = splits.test.images.float().div_(255.0)
    hy = splits.test.labels
    print(f"data: {splits.describe()}", flush=True)
    results = {"args": vars(args), "data": splits.describe(), "runs": {}, "torch": torch.__version__}
    if args.throughput_only:
        with open(os.path.join(args.out, "results.json")) as f:
            results = json.load(f)
        model = load_model(results["runs"][args.mi_model]["checkpoint"])
        tp = throughput(model, hx[args.mi_eval:], hy[args.mi_eval:], hx[:args.mi_eval], args)
        results.setdefault("mi", {}).setdefault("throughput_runs", []).append(tp)
        results["mi"]["throughput"] = tp
        _dump(results, args.out)
        print(f"MI throughput: {tp}")
        return
    if args.lam_sweep_only:
        with open(os.path.join(args.out, "results.json")) as f:
            results = json.load(f)
        model = load_model(results["runs"][args.mi_model]["checkpoint"])
        xe, ye = hx[:args.mi_eval], hy[:args.mi_eval]
        x_obl = pgd20(model, xe, ye, args.eps, args.eval_steps, seed=1)
        rows = []
        for lam in [float(v) for v in args.lam_sweep_only.split(",")]:
            mi = MixupInference(model, hx[args.mi_eval:], hy[args.mi_eval:], mode="ol", lam=lam, n=args.mi_n)
            torch.manual_seed(3)
            rows.append({"lam": lam, "clean_mi": _mi_acc(mi, xe, ye), "obl_mi": _mi_acc(mi, x_obl, ye)})
            print(f"MI-OL lam {lam}: {rows[-1]}", flush=True)
        results.setdefault("mi", {})["lam_sweep"] = {"model": args.mi_model, "clean_plain": acc(model, xe, ye),
                                                     "obl_plain": acc(model, x_obl, ye), "rows": rows}
        _dump(results, args.out)
        print(json.dumps(results["mi"]["lam_sweep"]))
        return
    labels = [r for r in args.runs.split(",") if r]
    bad = [r for r in labels if r not in RUNS]
    if bad:
        raise SystemExit(f"unknown run(s) {bad}; choose from {', '.join(RUNS)}")
    done = {}
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        order = sorted(labels, key=lambda k: -_COST.get(k, 5))
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as ex:
            futs = {k: ex.submit(run_one, k, args) for k in order}
            for k in order:
                done[k] = futs[k].result()
    else:
        for k in labels:
            done[k] = run_one(k, args)
            results["runs"][k] = done[k]
            _dump(results, args.out)
    results["runs"] = {k: done[k] for k in labels}
    results["train_wall_seconds"] = time.perf_counter() - t_all
    _dump(results, args.out)

    if args.mi_model in labels:
        models = {k: load_model(results["runs"][k]["checkpoint"]) for k in (args.mi_model, "at") if k in labels}
        results["mi"] = mixup_inference(models, args, hx, hy)
        _dump(results, args.out)
    results["total_seconds"] = time.perf_counter() - t_all
    _dump(results, args.out)
    md = tables(results)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(md)
    figure(results, os.path.join(args.out, "attackable.png"))
    print(md)
    print(f"total {results['total_seconds']:.0f}s")


def mixup_inference(models, args, hx, hy):
    """MI-OL on the chosen model (and, as the paper's ablation, on AT with lam 0.8):
    oblivious PGD (crafted on the plain model), adaptive EOT-PGD, MI-Combined's detector,
    and batched-vs-loop throughput."""
    from sklearn.metrics import roc_auc_score
    n_eval = args.mi_eval
    xe, ye = hx[:n_eval], hy[:n_eval]
    pool_x, pool_y = hx[n_eval:], hy[n_eval:]  # MI's clean pool: the other held-out images
    out = {"eval_images": n_eval, "pool_images": int(pool_x.shape[0]), "n": args.mi_n, "rows": []}
    cases = [(args.mi_model, args.mi_lam)] + ([("at", 0.8)] if "at" in models and args.mi_model != "at" else [])
    for label, lam in cases:
        model = models[label]
        mi = MixupInference(model, pool_x, pool_y, mode="ol", lam=lam, n=args.mi_n)
        torch.manual_seed(1)
        x_obl = pgd20(model, xe, ye, args.eps, args.eval_steps, seed=1)
        ne = args.eot_images
        t0 = time.perf_counter()
        torch.manual_seed(2)
        x_eot = torch.cat([mi.eot_attack(xe[s:min(s + 250, ne)], ye[s:min(s + 250, ne)], eps=args.eps, alpha=args.eps / 4,
                                         steps=args.eval_steps, eot_iter=args.eot_iter, bn_mode="eval")
                           for s in range(0, ne, 250)])
        eot_s = time.perf_counter() - t0
        torch.manual_seed(3)
        row = {
            "model": label, "lam_ol": lam,
            "clean_plain": acc(model, xe, ye), "clean_mi": _mi_acc(mi, xe, ye),
            "obl_plain": acc(model, x_obl, ye), "obl_mi": _mi_acc(mi, x_obl, ye),
            "eot_images": ne, "eot_iter": args.eot_iter, "eot_seconds": eot_s,
            "eot_plain": acc(model, x_eot, ye[:ne]), "eot_mi": _mi_acc(mi, x_eot, ye[:ne]),
            "obl_plain_same_images": acc(model, x_obl[:ne], ye[:ne]), "obl_mi_same_images": _mi_acc(mi, x_obl[:ne], ye[:ne]),
        }
        # MI-Combined (PL lam 0.4 x5 detects with threshold 0.2; OL lam x15 predicts on flagged inputs)
        comb = MixupInference(model, pool_x, pool_y, mode="combined", lam=lam, n=15, lam_pl=0.4, n_pl=5, threshold=0.2)
        s_clean, f_clean, _ = comb.detect(xe)
        s_adv, f_adv, _ = comb.detect(x_obl)
        row.update(comb_clean=_mi_acc(comb, xe, ye), comb_obl=_mi_acc(comb, x_obl, ye),
                   comb_flag_clean=float(f_clean.float().mean()), comb_flag_obl=float(f_adv.float().mean()),
                   comb_auc=float(roc_auc_score([0] * n_eval + [1] * n_eval, torch.cat([s_clean, s_adv]).tolist())))
        out["rows"].append(row)
        print(f"MI {label}: {json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})}",
              flush=True)
    out["throughput"] = throughput(models[args.mi_model], pool_x, pool_y, xe, args)
    print(f"MI throughput: {out['throughput']}", flush=True)
    return out


def throughput(model, pool_x, pool_y, xe, args, repeats: int = 3) -> dict:
    """Batched MI-OL vs one image (and one draw) at a time, same N, same model and pool;
    the two are timed alternately ``repeats`` times and the medians reported."""
    import statistics
    mi = MixupInference(model, pool_x, pool_y, mode="ol", lam=args.mi_lam, n=args.mi_n)
    xb, xl = xe[:args.tp_images], xe[:args.tp_loop_images]
    mi(xb[:8])
    mi.predict_loop(xl[:2])  # warm-up
    tb, tl = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mi(xb)
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mi.predict_loop(xl)
        tl.append(time.perf_counter() - t0)
    tb, tl = statistics.median(tb), statistics.median(tl)
    return {"n": args.mi_n, "batched_images": xb.shape[0], "batched_seconds": tb,
            "batched_img_per_s": xb.shape[0] / tb, "loop_images": xl.shape[0], "loop_seconds": tl,
            "loop_img_per_s": xl.shape[0] / tl, "speedup": (xb.shape[0] / tb) / (xl.shape[0] / tl),
            "threads": torch.get_num_threads(), "repeats": repeats, "chunk": mi.chunk}


def _mi_acc(mi, x, y, batch=250):
    return sum(int((mi(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum()) for s in range(0, x.shape[0], batch)) / x.shape[0]


def _dump(results, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def tables(res) -> str:
    a = res["args"]
    lines = [f"Settings: SmallCNN(width {a['width']}, hidden {a['hidden']}), {a['epochs']} epochs, batch {a['batch']}, "
             f"SGD lr {a['lr']} (x0.1 after epoch {a['milestones']}), eps {a['eps']}, training PGD-{a['steps']} "
             f"(step {a['alpha']}), evaluation PGD-{a['eval_steps']} (step eps/4, random start) on all "
             f"{res['data']['test']} held-out images, last epoch, seed {a['seed']}.", "",
             f"| method | options | clean % | PGD-{a['eval_steps']} % | train s |", "|---|---|---|---|---|"]
    for label, r in res["runs"].items():
        opts = ", ".join(f"{k}={v}" for k, v in r["opts"].items()) or "-"
        lines.append(f"| {label} | {opts} | {_pct(r['clean'])} | {_pct(r['pgd'])} | {r['train_seconds']:.0f} |")
    lines += ["", "Attackable ratio per epoch (%): originals / interpolated. AT's is 1 - its adversarial "
              "training accuracy (the same quantity: the share of originals whose adversarial prediction is wrong).",
              ""]
    ratio_runs = [k for k in ("at", "at-mixup", "gif") if k in res["runs"]]
    if ratio_runs:
        E = max(len(res["runs"][k]["history"]) for k in ratio_runs)
        lines.append("| epoch | " + " | ".join(ratio_runs) + " |")
        lines.append("|---" * (len(ratio_runs) + 1) + "|")
        for e in range(E):
            cells = []
            for k in ratio_runs:
                h = res["runs"][k]["history"][e]
                if k == "at":
                    cells.append(_pct(1 - h["train_acc"]))
                else:
                    cells.append(f"{_pct(h['attackable_orig'])} / {_pct(h['attackable_interp'])}")
            lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    mi = res.get("mi")
    if mi:
        lines += ["", f"Mixup Inference (MI-OL, N = {mi['n']}; evaluated on {mi['eval_images']} held-out images, "
                  f"the pool is the other {mi['pool_images']}). Oblivious: PGD-20 crafted on the plain model. "
                  f"Adaptive: EOT-PGD-20 against MI-OL, gradients summed over the stated number of x_s draws per "
                  f"step, on the first {mi['rows'][0]['eot_images']} images.", "",
                  "| model | lam_OL | clean | clean + MI-OL | PGD-20 (obl.) | PGD-20 + MI-OL | "
                  "same images: obl. + MI-OL | EOT-PGD-20: plain | EOT-PGD-20 + MI-OL | MI-Combined clean / obl. | "
                  "detection AUC | flagged clean / obl. |", "|---" * 12 + "|"]
        for r in mi["rows"]:
            lines.append(f"| {r['model']} | {r['lam_ol']} | {_pct(r['clean_plain'])} | {_pct(r['clean_mi'])} | "
                         f"{_pct(r['obl_plain'])} | {_pct(r['obl_mi'])} | {_pct(r['obl_mi_same_images'])} | "
                         f"{_pct(r['eot_plain'])} | {_pct(r['eot_mi'])} (N_A={r['eot_iter']}) | "
                         f"{_pct(r['comb_clean'])} / {_pct(r['comb_obl'])} | {r['comb_auc']:.3f} | "
                         f"{_pct(r['comb_flag_clean'])} / {_pct(r['comb_flag_obl'])} |")
        tp = mi.get("throughput")
        if tp:
            lines += ["", f"MI-OL throughput (N = {tp['n']}, {tp['threads']} thread): batched "
                      f"{tp['batched_img_per_s']:.1f} img/s ({tp['batched_images']} images in "
                      f"{tp['batched_seconds']:.2f} s) vs one image and one draw at a time "
                      f"{tp['loop_img_per_s']:.1f} img/s ({tp['loop_images']} images in {tp['loop_seconds']:.2f} s): "
                      f"{tp['speedup']:.1f}x (median of {tp.get('repeats', 1)} alternating timings)."]
    return "\n".join(lines) + "\n"


def figure(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colors = {"at": "tab:red", "at-mixup": "tab:orange", "gif": "tab:blue"}
    for k, c in colors.items():
        if k not in res["runs"]:
            continue
        h = res["runs"][k]["history"]
        ep = [r["epoch"] for r in h]
        orig = [1 - r["train_acc"] if k == "at" else r["attackable_orig"] for r in h]
        ax.plot(ep, orig, "-o", color=c, label=f"{k}: original")
        if k != "at":
            ax.plot(ep, [r["attackable_interp"] for r in h], ":s", color=c, label=f"{k}: interpolated")
    ax.set_xlabel("epoch")
    ax.set_ylabel("attackable ratio")
    ax.set_title("MNIST: attackable ratio per epoch (cf. GIF Fig. 1)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
