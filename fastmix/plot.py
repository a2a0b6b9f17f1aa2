"""Figures as PNG files (matplotlib's Agg canvas; no display, no pyplot global state).

- :func:`plot_eps_curves`: robust accuracy against eps, one line per checkpoint.
- :func:`plot_training`: training curves from ``metrics.jsonl`` files (loss, accuracies).
- :func:`plot_attackable`: GIF's attackable ratios per epoch (``attackable_orig``,
  ``attackable_interp``; AT's ``1 - train_acc`` as the same quantity for comparison).
- :func:`plot_mi_lambda`: Mixup Inference accuracy against its mixing weight lambda.

Each takes plain data (dicts and lists, so tests can pass synthetic inputs), writes ``path``
and returns it. ``fastmix plot {eps,train,attackable,mi}`` builds the data from checkpoints
and run directories and calls these.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

__all__ = ["plot_eps_curves", "plot_training", "plot_attackable", "plot_mi_lambda", "read_metrics",
           "TRAINING_KEYS"]

#: the metrics.jsonl fields :func:`plot_training` draws by default (accuracies share one panel)
TRAINING_KEYS = ("train_loss", "train_acc", "clean_acc", "pgd_acc")
_LABELS = {"train_loss": "training loss", "train_acc": "training accuracy (on its inputs)",
           "clean_acc": "held-out clean accuracy", "pgd_acc": "held-out PGD accuracy", "lr": "learning rate",
           "attackable_orig": "attackable ratio, original", "attackable_interp": "attackable ratio, interpolated",
           "attackable_set": "attackable set / training set"}


def _figure(w: float = 6.0, h: float = 4.0, ncols: int = 1):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: `pip install matplotlib`") from e
    fig = Figure(figsize=(w * ncols, h))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _title(ax, text: str) -> None:
    import textwrap
    ax.set_title("\n".join(textwrap.wrap(text, 70)), fontsize=10)


def _save(fig, path: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path).lower().endswith(".png"):
        raise ValueError(f"path must be a .png file name, got {path!r}")
    d = os.path.dirname(os.fspath(path))
    if d:
        os.makedirs(d, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return os.fspath(path)


def _series(name: str, data) -> tuple[list, list]:
    """``{x: y}`` or ``(xs, ys)`` -> two sorted lists; ValueError names the series."""
    if isinstance(data, Mapping):
        pts = sorted((float(k), float(v)) for k, v in data.items())
    else:
        try:
            xs, ys = data
            pts = sorted(zip((float(v) for v in xs), (float(v) for v in ys)))
            if len(pts) != len(xs) or len(xs) != len(ys):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"series {name!r} must be a {{x: y}} dict or an (xs, ys) pair of equal length") from None
    if not pts:
        raise ValueError(f"series {name!r} is empty")
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_eps_curves(curves: Mapping, path: str, *, attack: str = "PGD-20", train_eps: float | None = None,
                    title: str | None = None, percent: bool = True) -> str:
    """Robust accuracy against the L-inf radius.

    Args:
        curves: ``{label: {eps: accuracy}}`` or ``{label: (eps_list, acc_list)}``; eps in
            [0, 1] pixel units, accuracy in [0, 1].
        path: the ``.png`` to write.  attack: its name for the axis label.
        train_eps: draws a dashed vertical line at the training radius.
        percent: show accuracy in percent.
    """
    if not curves:
        raise ValueError("curves must hold at least one series")
    fig, (ax,) = _figure()
    k = 100.0 if percent else 1.0
    for i, (label, data) in enumerate(curves.items()):
        xs, ys = _series(label, data)
        ax.plot(xs, [k * v for v in ys], marker="os^vDP*Xh"[i % 9], label=str(label))
    if train_eps is not None:
        ax.axvline(train_eps, color="grey", ls="--", lw=1, label=f"training eps {train_eps:g}")
    ax.set_xlabel("eps (L-inf, pixel units in [0, 1])")
    ax.set_ylabel(f"accuracy under {attack}" + (" (%)" if percent else ""))
    ax.set_ylim(-0.03 * k, 1.03 * k)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _title(ax, title or f"Robust accuracy against eps ({attack})")
    return _save(fig, path)


def read_metrics(path: str) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (or of ``RUN_DIR/metrics.jsonl``); FileNotFoundError
    names the path, ValueError the first bad line."""
    p = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(p):
        raise FileNotFoundError(f"metrics file not found: {p!r} (a run directory written by fastmix train holds one)")
    rows = []
    with open(p) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise ValueError(f"{p}: line {i} is not JSON") from None
    return rows


def _xy(rows: Sequence[Mapping], key: str) -> tuple[list, list]:
    pts = [(r.get("epoch", i + 1), r.get(key)) for i, r in enumerate(rows)]
    pts = [(e, v) for e, v in pts if isinstance(v, (int, float)) and v == v]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(runs: Mapping[str, Sequence[Mapping]], path: str, *, keys: Sequence[str] = TRAINING_KEYS,
                  title: str | None = None) -> str:
    """Training curves per epoch: the loss in the left panel, accuracies in the right one
    (any other key in a panel of its own).

    Args:
        runs: ``{label: rows}``, rows being ``metrics.jsonl`` dicts with ``epoch`` and the keys
            (missing or null values are skipped: the held-out evaluation may run every N epochs).
        keys: the fields to draw.
    """
    if not runs:
        raise ValueError("runs must hold at least one run")
    groups: dict = {}
    for k in keys:
        g = "acc" if k.endswith("_acc") else k
        groups.setdefault(g, []).append(k)
    fig, axes = _figure(5.0, 3.8, ncols=len(groups))
    styles = {"train_acc": ":", "clean_acc": "-", "pgd_acc": "--"}
    drawn = 0
    for ax, (g, ks) in zip(axes, groups.items()):
        used_keys = []
        for ci, (label, rows) in enumerate(runs.items()):
            for k in ks:
                xs, ys = _xy(rows, k)
                if xs:
                    # one legend entry per run; with several keys a panel adds one entry per line style
                    ax.plot(xs, ys, ls=styles.get(k, "-"), marker=".", color=f"C{ci % 10}",
                            label=label if (len(ks) == 1 or k == ks[0]) else None)
                    used_keys += [k] if k not in used_keys else []
                    drawn += 1
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_ylabel("accuracy" if g == "acc" else _LABELS.get(g, g))
        if g == "acc":
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if len(ks) > 1 and len(used_keys) > 1:
            from matplotlib.lines import Line2D
            handles = [Line2D([], [], color=h.get_color(), lw=2) for h in handles]
            handles += [Line2D([], [], color="black", ls=styles.get(k, "-")) for k in used_keys]
            labels = list(labels) + [_LABELS.get(k, k) for k in used_keys]
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best")
    if not drawn:
        raise ValueError(f"none of the keys {list(keys)} has a value in any run")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_attackable(runs: Mapping[str, Sequence[Mapping]], path: str, *, title: str | None = None) -> str:
    """GIF's attackable ratios per epoch (the GIF paper's Figure 1).

    Args:
        runs: ``{label: metrics rows}``. Rows with ``attackable_orig`` / ``attackable_interp``
            (written by GIF and AT-mixup) draw solid / dotted lines; a run without them (plain
            AT) draws ``1 - train_acc``, the same quantity (the share of originals whose
            adversarial prediction is wrong), dashed.
    """
    if not runs:
        raise ValueError("runs must hold at least one run")
    fig, (ax,) = _figure()
    drawn = 0
    for ci, (label, rows) in enumerate(runs.items()):
        c = f"C{ci % 10}"
        xo, yo = _xy(rows, "attackable_orig")
        if xo:
            ax.plot(xo, yo, "-o", color=c, ms=4, label=f"{label}: original")
            xi, yi = _xy(rows, "attackable_interp")
            if xi:
                ax.plot(xi, yi, ":s", color=c, ms=4, label=f"{label}: interpolated")
            drawn += 1
        else:
            xa, ya = _xy(rows, "train_acc")
            if xa:
                ax.plot(xa, [1 - v for v in ya], "--^", color=c, ms=4, label=f"{label}: 1 - adv. train acc")
                drawn += 1
    if not drawn:
        raise ValueError("no run has attackable_orig or train_acc values")
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_ylabel("attackable ratio")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _title(ax, title or "Attackable ratio per epoch (cf. GIF, Figure 1)")
    return _save(fig, path)


def plot_mi_lambda(curves: Mapping, path: str, *, title: str | None = None, percent: bool = True) -> str:
    """Mixup Inference accuracy against lambda (the weight of the input in ``lam * x + (1 - lam) * x_s``).

    Args:
        curves: ``{label: {lam: accuracy}}`` or ``{label: (lams, accs)}``, e.g.
            ``{"clean + MI-OL": {...}, "PGD-20 + MI-OL": {...}}``; lam in [0, 1], accuracy in [0, 1].
            A label ending in " (no MI)" with a single point draws a horizontal reference line.
    """
    if not curves:
        raise ValueError("curves must hold at least one series")
    fig, (ax,) = _figure()
    k = 100.0 if percent else 1.0
    colors: dict = {}  # one colour per attack: "pgd20 (no MI)" and "pgd20 + MI-OL" share it
    for i, (label, data) in enumerate(curves.items()):
        xs, ys = _series(label, data)
        base = str(label).split(" (no MI)")[0].split(" + ")[0]
        c = colors.setdefault(base, f"C{len(colors) % 10}")
        if len(xs) == 1 and str(label).endswith("(no MI)"):
            ax.axhline(k * ys[0], color=c, ls="--", lw=1, label=f"{label}: {k * ys[0]:.1f}")
        else:
            ax.plot(xs, [k * v for v in ys], marker="os^vD"[i % 5], color=c, label=str(label))
    ax.set_xlabel("lambda (weight of the input)")
    ax.set_ylabel("accuracy" + (" (%)" if percent else ""))
    ax.set_ylim(-0.03 * k, 1.03 * k)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _title(ax, title or "Mixup Inference accuracy against lambda")
    return _save(fig, path)
