"""The ``fastmix`` command: ``train``, ``eval``, ``plot``, ``demo``, ``bench``, ``info``.

    fastmix train --method at --dataset digits --epochs 15 --eps 0.1 --out runs/digits-at
    fastmix eval --checkpoint runs/digits-at/last.pt --attacks clean,fgsm,pgd20,cw20 --json
    fastmix eval --checkpoint runs/digits-at/last.pt --attacks all --samples 200 --sanity \
        --surrogate runs/digits-standard/last.pt  # + APGD-CE/T, AutoAttack, worst case, checks
    fastmix plot eps runs/digits-at/last.pt runs/digits-standard/last.pt --out eps.png
    fastmix demo                      # standard vs PGD-AT on digits, ~2 minutes on 2 CPU cores
    torchrun --nproc_per_node 2 -m fastmix train ...   # DDP (gloo on CPU, nccl on GPU)

Radii and step sizes are in [0, 1] pixel units and accept fractions (``--eps 8/255``).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports the trainer lazily (a fast --help); named here for the docs
    from .train.config import TrainConfig


# ----------------------------------------------------------------------------- parsing
def _number(text: str) -> float:
    """``0.1``, ``8/255`` -> float (argparse type)."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from None


def _value(text: str):
    """An option value: JSON (numbers, true/false/null, lists, dicts), a fraction, or a string."""
    low = text.lower()
    if low in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(low)
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return _number(text)
    except argparse.ArgumentTypeError:
        return text


def _options(pairs, flag: str) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p or not p.split("=", 1)[0].strip():
            raise ValueError(f"{flag} expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = _value(v)
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 30,45, got {text!r}") from None


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .data import NAMES as DATASETS
    from .methods import METHODS
    from .models import NAMES as MODELS
    from .train.config import AMP_MODES, COMPILE_MODES
    from .train.schedule import KINDS

    g = p.add_argument_group("what to train")
    g.add_argument("--method", default="at", choices=sorted(METHODS), help="training method (default: at)")
    g.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="a method option, repeatable (e.g. --opt beta=6 for trades, --opt burn_in=5 for gairat)")
    g.add_argument("--base", choices=("at", "trades", "gairat", "fastat"),
                   help="gif / at-mixup: the adversarial-training method they wrap (default at)")
    g.add_argument("--dataset", default="digits", choices=DATASETS, help="dataset (default: digits, no download)")
    g.add_argument("--data-dir", default=None, help="directory with the dataset's files "
                   "(default $FASTMIX_DATA or ./data; e.g. ../shared/data/mnist)")
    g.add_argument("--download", action="store_true", help="download missing files through torchvision")
    g.add_argument("--model", default=None, help=f"one of {', '.join(MODELS)} or wrn-D-W (default: per dataset), "
                   f"or a model of your own as an import string PKG.MOD:BUILD (a callable returning an nn.Module; "
                   f"given the dataset's num_classes/in_channels/image_size/mean/std it declares)")
    g.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="a model option (e.g. width=16), passed to the built-in model or to BUILD")
    g = p.add_argument_group("optimisation (defaults per dataset, see fastmix.train.DATASET_DEFAULTS)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size (over all processes)")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--no-fused-sgd", action="store_true",
                   help="step torch's default SGD loop instead of its fused kernel (bit-for-bit torch's results)")
    g.add_argument("--schedule", choices=KINDS, default="piecewise")
    g.add_argument("--milestones", type=_ints, help="piecewise: epochs after which lr *= gamma (default E/2,3E/4)")
    g.add_argument("--gamma", type=float, default=0.1)
    g = p.add_argument_group("attacks (pixel units)")
    g.add_argument("--eps", type=_number, help="L-inf radius (digits 0.1, mnist 0.3, cifar 8/255, svhn 4/255)")
    g.add_argument("--alpha", type=_number, help="training attack step (default per dataset, else eps/4)")
    g.add_argument("--steps", type=int, help="training attack steps K")
    g.add_argument("--eval-steps", type=int, default=20, help="PGD steps of the per-epoch held-out evaluation")
    g.add_argument("--eval-alpha", type=_number, help="its step (default eps/4)")
    g.add_argument("--eval-samples", type=int, help="held-out images evaluated per epoch")
    g.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and the last)")
    g = p.add_argument_group("engine")
    g.add_argument("--amp", choices=AMP_MODES, default="none")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", choices=COMPILE_MODES, default="none",
                   help="'model': torch.compile the model; 'graphs': capture each attack's K steps in a CUDA "
                        "graph and compile the training forward. GPU only")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda")
    g.add_argument("--threads", type=int, help="CPU intra-op threads (torch.set_num_threads; default: torch's)")
    g.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<method>)")
    g.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt: flags not given "
                   "take the stored values; a result-changing flag that differs from them is an error")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (without this, or "
                   "--resume, an OUT holding a run is an error)")
    g.add_argument("--stop-after", type=int, help="stop after this epoch (a clean stand-in for a kill)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")


def _record_given(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make each option of ``parser`` note its dest in ``namespace._given`` when it appears
    on the command line, so a command can tell a flag given from a default (``--resume``
    takes every flag not given from the stored run)."""
    for act in parser._actions:
        if isinstance(act, argparse._HelpAction):
            continue
        base = type(act)

        def call(self, parser_, namespace, values, option_string=None, _base=base):
            _base.__call__(self, parser_, namespace, values, option_string)
            given = set(getattr(namespace, "_given", set()))
            given.add(self.dest)
            namespace._given = given
        act.__class__ = type(f"_Given{base.__name__}", (base,), {"__call__": call})
    return parser


def _given(a) -> set:
    return set(getattr(a, "_given", set()))


# TrainConfig field -> the argparse dests that set it
_FIELD_DESTS = {"method_opts": ("opt", "base"), "model_opts": ("model_opt",), "progress": ("no_progress",)}


def config_from_args(a) -> "TrainConfig":
    """The run configuration of ``fastmix train``'s arguments. With ``--resume`` on an OUT
    holding ``last.pt``, every flag not given on the command line takes the stored run's
    value (the trainer then rejects given flags that differ from it, naming them)."""
    from .checkpoint import read
    from .train.config import TrainConfig
    cfg = _config_from_flags(a)
    last = os.path.join(cfg.out, "last.pt")
    if not (cfg.resume and os.path.isfile(last)):
        return cfg
    stored = read(last)["config"]
    given = _given(a)
    mine = cfg.to_dict()
    merged = dict(stored)
    for k, v in mine.items():
        if k in TrainConfig.RESUME_FREE or k not in stored or given & set(_FIELD_DESTS.get(k, (k,))):
            merged[k] = v
    return TrainConfig.from_dict(merged)


def _config_from_flags(a) -> "TrainConfig":
    from .train.config import TrainConfig
    opts = _options(a.opt, "--opt")
    if getattr(a, "base", None):
        if a.method not in ("gif", "at-mixup"):
            raise ValueError(f"--base applies to --method gif or at-mixup, not {a.method!r}")
        opts["base"] = a.base
    return TrainConfig.for_dataset(
        a.dataset, method=a.method, method_opts=opts, data_dir=a.data_dir,
        download=a.download, model=a.model, model_opts=_options(a.model_opt, "--model-opt"), epochs=a.epochs,
        batch_size=a.batch_size, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay, nesterov=a.nesterov,
        fused_sgd=not a.no_fused_sgd, schedule=a.schedule, milestones=a.milestones, gamma=a.gamma, eps=a.eps,
        alpha=a.alpha, steps=a.steps,
        eval_steps=a.eval_steps, eval_alpha=a.eval_alpha, eval_samples=a.eval_samples, eval_every=a.eval_every,
        amp=a.amp, channels_last=a.channels_last, compile=a.compile, seed=a.seed, deterministic=a.deterministic,
        out=a.out or os.path.join("runs", f"{a.dataset}-{a.method}"), resume=a.resume, stop_after=a.stop_after,
        device=a.device, progress=not a.no_progress, threads=a.threads, overwrite=a.overwrite)


# ------------------------------------------------------------------------------ commands
def _threads(n) -> None:
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        import torch
        torch.set_num_threads(n)


def _check_out_file(flag: str, path: str | None, example: str = "results.json") -> None:
    """An output file path must be writable as a file: checked before any work is done."""
    if not path:
        return
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{flag} {path!r} is a directory; give a file path "
                                f"(e.g. {os.path.join(path, example)})")
    d = os.path.dirname(os.path.abspath(path))
    while d and not os.path.exists(d):
        d = os.path.dirname(d)
    if d and not os.path.isdir(d):
        raise NotADirectoryError(errno.ENOTDIR, f"{flag} {path!r}: {d!r} is a file, not a directory")


def cmd_train(a) -> int:
    from .train import train
    cfg = config_from_args(a)
    a._out = cfg.out  # for the interrupt message
    t = train(cfg)
    if t.info.is_main and t.history:
        last = t.history[-1]
        print(json.dumps({"out": cfg.out, "epochs": last["epoch"], "clean_acc": last["clean_acc"],
                          "pgd_acc": last["pgd_acc"], "best": t.best}))
    return 0


def cmd_eval(a) -> int:
    """``fastmix eval``: the evaluation suite (fastmix.eval) on a checkpoint's held-out split,
    per attack and worst case, optionally with the sanity checks (``--sanity``)."""
    from .eval import evaluate_checkpoint, expand_attacks
    attacks = expand_attacks(a.attacks)
    _check_eval_flags(a)
    _check_out_file("--out", a.out)
    _threads(a.threads)
    if a.mi:
        return cmd_eval_mi(a, attacks)
    progress = not a.no_progress and not a.json
    res = evaluate_checkpoint(a.checkpoint, attacks, eps=a.eps, alpha=a.alpha, samples=a.samples,
                              subset_seed=a.subset_seed, batch_size=a.batch_size, data_dir=a.data_dir,
                              device=a.device, seed=a.seed, progress=progress, apgd_steps=a.apgd_steps,
                              square_queries=a.square_queries, model=a.model)
    out = res.to_dict()
    if not a.json:
        where = f"{res.n} held-out images" + (f" (fixed-seed subset, seed {a.subset_seed})"
                                               if res.meta.get("subset_seed") is not None else "")
        print(f"{a.checkpoint}: {res.meta['dataset']}, {where}, L-inf eps {res.eps:g}")
        print(res.table(), flush=True)
    if a.sanity:
        out["sanity"] = [v.to_dict() for v in _sanity(a, res.eps, progress)]
    if a.out:
        d = os.path.dirname(a.out)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    if a.json:
        print(json.dumps(out))
    return 0


def _check_eval_flags(a) -> None:
    """Flags that would otherwise be ignored without a word are errors."""
    given = _given(a)
    mi_only = [f for f in ("mi_lam", "mi_n", "mi_pool", "mi_threshold", "mi_eot") if f in given]
    sanity_only = [f for f in ("surrogate", "sanity_samples", "large_eps") if f in given]
    flag = lambda d: "--" + d.replace("_", "-")  # noqa: E731
    if a.mi and a.sanity:
        raise ValueError("--sanity does not run with --mi (the checks score the plain model): run "
                         "`fastmix eval --sanity` and `fastmix eval --mi` separately")
    if mi_only and not a.mi:
        raise ValueError(f"{', '.join(map(flag, mi_only))}: used only with --mi pl|ol|combined (add --mi, or drop "
                         f"them)")
    if sanity_only and not a.sanity:
        raise ValueError(f"{', '.join(map(flag, sanity_only))}: used only with --sanity (add --sanity, or drop them)")
    for d in ("mi_n", "mi_pool", "samples", "sanity_samples", "batch_size", "apgd_steps", "square_queries"):
        v = getattr(a, d, None)
        if v is not None and v < 1:
            raise ValueError(f"{flag(d)} must be >= 1, got {v}")
    if a.mi_eot < 0:
        raise ValueError(f"--mi-eot must be >= 0 (0: no adaptive attack; N: EOT over N draws), got {a.mi_eot}")


def _sanity(a, eps: float, progress: bool) -> list:
    """``fastmix eval --sanity``: :func:`fastmix.eval.sanity_checkpoint` on the same images;
    each failure is printed to stderr as a warning naming the likely cause."""
    from .eval import format_verdicts, sanity_checkpoint
    verdicts = sanity_checkpoint(a.checkpoint, model=a.model, eps=eps, surrogate=a.surrogate,
                                 samples=a.sanity_samples or a.samples, subset_seed=a.subset_seed,
                                 data_dir=a.data_dir, device=a.device,
                                 batch_size=a.batch_size, seed=a.seed, progress=progress, large_eps=a.large_eps,
                                 warn=False)  # printed below, once per check
    for v in verdicts:
        if v.passed is False:
            print(f"WARNING: sanity check {v.name} failed: {v.message}\n  likely cause: {v.cause}",
                  file=sys.stderr)
    if not a.json:
        print("\nsanity checks (Carlini et al. 2019):")
        print(format_verdicts(verdicts), flush=True)
    return verdicts


def cmd_eval_mi(a, attacks: list[str]) -> int:
    """``fastmix eval --mi MODE``: plain vs Mixup-Inference accuracy under oblivious attacks
    (and, with ``--mi-eot N_A``, the paper's adaptive attack and EOT-PGD); :func:`fastmix.eval.evaluate_checkpoint_mi`."""
    from .eval import evaluate_checkpoint_mi
    out = evaluate_checkpoint_mi(a.checkpoint, attacks, mode=a.mi, eps=a.eps, alpha=a.alpha, lam=a.mi_lam,
                                 n=a.mi_n, threshold=a.mi_threshold, eot_iter=a.mi_eot, samples=a.samples,
                                 pool=a.mi_pool, batch_size=a.batch_size, data_dir=a.data_dir, device=a.device,
                                 seed=a.seed)
    res = out["accuracy"]
    if a.json:
        print(json.dumps(res))
    else:
        print(f"Mixup Inference ({a.mi}) on {out['samples']} held-out images, pool of {out['pool']}, "
              f"eps {out['eps']:g}")
        for k, v in res.items():
            print(f"{k:>16s}  {100 * v:6.2f}%")
    return 0


def _labels(a, paths: list, default) -> list:
    if not a.labels:
        return [default(p) for p in paths]
    labels = [v.strip() for v in a.labels.split(",")]
    if len(labels) != len(paths):
        raise ValueError(f"--labels must give one label per input ({len(paths)}), got {len(labels)}")
    return labels


def _run_name(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.basename(os.path.dirname(path) if os.path.isfile(path) else path)


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--from-json file not found: {path!r}")
    with open(path) as f:
        return json.load(f)


def _write_json(path: str | None, data: dict) -> None:
    if path:
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


def cmd_plot(a) -> int:
    """``fastmix plot {eps,train,attackable,mi}``: measure (or read) the data, write a PNG."""
    from . import plot
    kind = a.plot
    _check_out_file("--out", a.out, f"{kind}.png")
    _check_out_file("--save-json", getattr(a, "save_json", None), f"{kind}.json")
    if kind in ("train", "attackable"):
        labels = _labels(a, a.runs, _run_name)
        runs = {lab: plot.read_metrics(r) for lab, r in zip(labels, a.runs)}
        if kind == "train":
            keys = [k.strip() for k in a.keys.split(",") if k.strip()]
            path = plot.plot_training(runs, a.out, keys=keys, title=a.title)
        else:
            path = plot.plot_attackable(runs, a.out, title=a.title)
        print(path)
        return 0
    _threads(a.threads)
    if kind == "eps":
        data = _read_json(a.from_json) if a.from_json else _eps_curves(a)
        path = plot.plot_eps_curves(data["curves"], a.out, attack=data.get("attack", a.attack),
                                    train_eps=data.get("train_eps"), title=a.title)
    else:
        data = _read_json(a.from_json) if a.from_json else _mi_curves(a)
        path = plot.plot_mi_lambda(data["curves"], a.out, title=a.title)
    if not a.from_json:
        _write_json(a.save_json, data)
    print(path)
    return 0


def _log(line: str) -> None:
    print(line, flush=True)


def _eps_curves(a) -> dict:
    from .eval import eps_curves
    if not a.checkpoints:
        raise ValueError("checkpoints: give at least one checkpoint (or --from-json)")
    labels = _labels(a, a.checkpoints, _run_name)
    grid = [_number(v) for v in a.eps_grid.split(",") if v.strip()] if a.eps_grid else None
    return eps_curves(dict(zip(labels, a.checkpoints)), attack=a.attack, eps_grid=grid, samples=a.samples,
                      subset_seed=a.subset_seed, batch_size=a.batch_size, data_dir=a.data_dir, device=a.device,
                      seed=a.seed, progress=not a.no_progress, log=_log)


def _mi_curves(a) -> dict:
    from .eval import mi_curves
    if not a.checkpoint:
        raise ValueError("checkpoint: give a checkpoint (or --from-json)")
    return mi_curves(a.checkpoint, lams=[_number(v) for v in a.lams.split(",") if v.strip()], attacks=a.attacks,
                     mode=a.mode, n=a.n, eps=a.eps, samples=a.samples, pool=a.pool, batch_size=a.batch_size,
                     data_dir=a.data_dir, device=a.device, seed=a.seed, log=_log)


def cmd_demo(a) -> int:
    """Standard training vs PGD-AT on digits, then clean/FGSM/PGD-20/CW-20 accuracy of both
    (:func:`fastmix.train.demo.run_demo`)."""
    from .train.demo import demo_table, run_demo
    _threads(a.threads)
    res = run_demo(a.methods.split(","), epochs=a.epochs, out=a.out, seed=a.seed, progress=not a.quiet, log=_log,
                   overwrite=a.overwrite)
    print(f"\ndigits held-out set (360 images), L-inf eps = {res['eps']} (pixel units), last epoch:\n")
    print(demo_table(res))
    print(f"\nwall time {res['wall_s']:.1f} s; runs in {a.out}/<method>/ (metrics.jsonl, last.pt, best.pt)")
    if a.json:
        print(json.dumps({"wall_s": res["wall_s"], "eps": res["eps"], "results": res["results"]}))
    return 0


def cmd_bench(a, rest) -> int:
    """``fastmix bench [ARGS]``: the op benchmarks; ``fastmix bench train [ARGS]``: training
    steps and loaders (:mod:`fastmix.bench`, run in this process)."""
    from . import bench
    return bench.main(rest)


def cmd_info(a) -> int:
    from . import info
    return info.main([]) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastmix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model with one method; writes OUT/metrics.jsonl, last.pt, best.pt")
    _add_train_args(t)
    _record_given(t)
    e = sub.add_parser("eval", help="accuracy of a checkpoint under attacks, per attack and worst case, on its "
                                    "held-out split; --sanity adds the gradient-masking checks")
    e.add_argument("--checkpoint", required=True, help="a last.pt or best.pt written by fastmix train")
    e.add_argument("--model", default=None, metavar="PKG.MOD:BUILD",
                   help="for a run of a model of your own: the import string that builds it (a checkpoint never "
                        "imports code by itself)")
    e.add_argument("--attacks", default="clean,fgsm,pgd20,cw20",
                   help="comma-separated: clean, fgsm, noise, pgdK[rR] (R restarts), cwK[rR], apgd-ce, apgd-dlr, "
                        "apgd-t, fab-t, square, autoattack (standard: APGD-CE, APGD-T, FAB-T, Square); 'all' = "
                        "clean,fgsm,pgd20,cw20,apgd-ce,apgd-t,autoattack")
    e.add_argument("--eps", type=_number, help="radius (default: the training eps)")
    e.add_argument("--alpha", type=_number, help="PGD/CW step (default eps/4)")
    e.add_argument("--samples", type=int, help="evaluate a fixed-seed random subset of N held-out images "
                   "(default all); with --mi: the first N")
    e.add_argument("--subset-seed", type=int, default=0, help="the seed that draws the subset (default 0)")
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--apgd-steps", type=int, default=100, help="APGD/FAB iterations (AutoAttack's standard 100)")
    e.add_argument("--square-queries", type=int, default=5000, help="Square's query budget (standard 5000)")
    e.add_argument("--data-dir", default=None, help="where the dataset is now (default: as trained)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, help="CPU intra-op threads (torch.set_num_threads)")
    e.add_argument("--json", action="store_true", help="print one JSON object: eps, n, accuracy {attack: acc}, "
                   "worst_case, seconds, settings (and sanity verdicts)")
    e.add_argument("--out", default=None, help="also write that JSON object to this file")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--sanity", action="store_true", help="also run the sanity checks of Carlini et al. 2019 "
                   "(eps curve, more steps/restarts, FGSM vs PGD, noise vs PGD, transfer); failures print warnings")
    e.add_argument("--surrogate", default=None, help="--sanity: a standard-trained checkpoint on the same dataset "
                   "for the transfer check (without it that check is skipped)")
    e.add_argument("--sanity-samples", type=int, help="--sanity: subset size for the checks (default --samples)")
    e.add_argument("--large-eps", type=_number, default=0.5, help="--sanity: the radius where accuracy must be near 0")
    e.add_argument("--mi", choices=("pl", "ol", "combined"),
                   help="also score Mixup Inference (MI-PL, MI-OL or MI-Combined) on each attack's images")
    e.add_argument("--mi-lam", type=_number, help="MI's lam for x (default 0.5; the paper uses 0.6 for IAT)")
    e.add_argument("--mi-n", type=int, help="draws per image (default PL 10, OL 30, combined 15)")
    e.add_argument("--mi-pool", type=int, help="the last N held-out images form MI's pool (default half)")
    e.add_argument("--mi-threshold", type=float, default=0.2, help="MI-Combined's detection threshold")
    e.add_argument("--mi-eot", type=int, default=0, metavar="N_A",
                   help="also run each PGD/CW attack adaptively against MI: the paper's attack (adaptive-*: N_A "
                        "fixed mixing samples, mean perturbation) and EOT-PGD (eot-*: N_A fresh draws per step)")
    _record_given(e)
    d = sub.add_parser("demo", help="standard vs PGD-AT on digits, clean-versus-robust table (~2 min on 2 cores)")
    d.add_argument("--epochs", type=int, default=None, help="default: the digits default (30)")
    d.add_argument("--methods", default="standard,at", help="comma-separated methods to compare")
    d.add_argument("--out", default=os.path.join("runs", "demo"))
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier demo in OUT")
    d.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: the 8x8 CNN gains nothing from more, and on a busy machine "
                        "spinning OpenMP threads slow it several-fold)")
    d.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    d.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    pl = sub.add_parser("plot", help="figures (PNG): robust accuracy vs eps, training curves, GIF's attackable "
                                     "ratios, Mixup Inference accuracy vs lambda")
    pk = pl.add_subparsers(dest="plot", required=True)
    q = pk.add_parser("eps", help="robust accuracy against eps for one or more checkpoints")
    q.add_argument("checkpoints", nargs="*", help="last.pt / best.pt files (label: the run directory's name)")
    q.add_argument("--labels", help="comma-separated labels, one per checkpoint")
    q.add_argument("--eps-grid", default=None, help="comma-separated radii, fractions allowed "
                   "(default: 0 to 2x the first checkpoint's training eps in 8 steps)")
    q.add_argument("--attack", default="pgd20", help="the attack (a fastmix eval name; default pgd20)")
    q.add_argument("--samples", type=int, default=500, help="fixed-seed subset of held-out images (default 500)")
    q.add_argument("--subset-seed", type=int, default=0)
    q.add_argument("--from-json", help="redraw from a JSON file written by --save-json instead of evaluating")
    q.add_argument("--save-json", help="also write the measured curves to this JSON file")
    q = pk.add_parser("train", help="training curves from metrics.jsonl")
    q.add_argument("runs", nargs="+", help="run directories or metrics.jsonl files")
    q.add_argument("--labels", help="comma-separated labels")
    q.add_argument("--keys", default=",".join(("train_loss", "train_acc", "clean_acc", "pgd_acc")),
                   help="metrics.jsonl fields to draw")
    q = pk.add_parser("attackable", help="GIF's attackable ratios per epoch (AT: 1 - adversarial train accuracy)")
    q.add_argument("runs", nargs="+", help="run directories or metrics.jsonl files (gif, at-mixup, at)")
    q.add_argument("--labels", help="comma-separated labels")
    q = pk.add_parser("mi", help="Mixup Inference (MI-OL or MI-PL) accuracy against lambda for a checkpoint")
    q.add_argument("checkpoint", nargs="?", help="a mixup-trained checkpoint (e.g. iat)")
    q.add_argument("--lams", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="comma-separated lambdas")
    q.add_argument("--attacks", default="clean,pgd20", help="oblivious attacks crafted on the plain model")
    q.add_argument("--mode", choices=("ol", "pl"), default="ol")
    q.add_argument("--n", type=int, default=30, help="MI draws per image")
    q.add_argument("--samples", type=int, default=500, help="images evaluated (the first N held-out)")
    q.add_argument("--pool", type=int, default=None, help="the last N held-out images form the pool (default half)")
    q.add_argument("--from-json", help="redraw from a JSON file written by --save-json")
    q.add_argument("--save-json", help="also write the measured curves to this JSON file")
    for q in pk.choices.values():
        q.add_argument("--out", required=True, help="the .png to write")
        q.add_argument("--title", default=None)
        if q.prog.split()[-1] in ("eps", "mi"):
            q.add_argument("--eps", type=_number, help="mi: the attack radius (default: the training eps)")
            q.add_argument("--data-dir", default=None)
            q.add_argument("--device", default="auto")
            q.add_argument("--seed", type=int, default=0)
            q.add_argument("--batch-size", type=int, default=500)
            q.add_argument("--threads", type=int)
            q.add_argument("--no-progress", action="store_true")
    sub.add_parser("bench", help="run the op benchmarks (benchmarks/run.py), or `bench train` / `bench attacks` "
                                 "(arguments are passed through)", add_help=False)
    sub.add_parser("info", help="versions and backend status (python -m fastmix.info)")
    return p


_OS_FIXES = {
    errno.ENOSPC: "free some space, or write elsewhere with another --out",
    errno.EDQUOT: "free some space, or write elsewhere with another --out",
    errno.EACCES: "choose a location you can write (another --out), or fix its permissions",
    errno.EPERM: "choose a location you can write (another --out), or fix its permissions",
    errno.EROFS: "choose a writable location (another --out)",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "give a file path, not a directory",
    errno.ENOENT: "check the path",
}


def _describe(e: BaseException) -> str:
    """``<what> (<the fix>)`` for an expected failure."""
    if isinstance(e, OSError) and e.errno is not None and e.strerror:
        msg = e.strerror + (f": {e.filename}" if e.filename else "")
        fix = _OS_FIXES.get(e.errno)
        return f"{msg} ({fix})" if fix and "(" not in e.strerror else msg
    return str(e) or type(e).__name__


#: failures a user can cause and fix (bad argument, missing / corrupt / foreign file, no
#: space, no GPU, an unwritable or wrong output path): a one-line message and exit code 2.
#: Anything else is a bug: Python's traceback and exit code 1.
EXPECTED = (ValueError, OSError, ImportError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "?"
    a = None
    try:
        if argv[:1] == ["bench"]:
            return cmd_bench(None, argv[1:])
        a = build_parser().parse_args(argv)
        return {"train": cmd_train, "eval": cmd_eval, "plot": cmd_plot, "demo": cmd_demo,
                "info": cmd_info}[a.command](a)
    except EXPECTED as e:
        print(f"fastmix {command}: error: {_describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(a, "_out", None)
        if command == "train" and out and os.path.isfile(os.path.join(out, "last.pt")):
            hint = (f"; {os.path.join(out, 'last.pt')} holds the last finished epoch: continue with "
                    f"`fastmix train --resume --out {out}`")
        elif command == "train":
            hint = "; no epoch had finished, so there is nothing to resume"
        else:
            hint = ""
        print(f"\nfastmix {command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
