"""Plots (fastmix.plot, ``fastmix plot``): each writes a non-empty PNG from small synthetic
inputs; bad inputs raise errors that name the argument."""
import json
import os

import pytest

pytest.importorskip("matplotlib")

from fastmix import cli, plot  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG and os.path.getsize(path) > 5000  # a drawn figure, not an empty canvas


def _rows(epochs=4, gif=False):
    rows = []
    for e in range(1, epochs + 1):
        r = {"epoch": e, "lr": 0.05, "train_loss": 2.0 / e, "train_acc": 0.3 + 0.1 * e,
             "clean_acc": None if e % 2 else 0.8 + 0.03 * e, "pgd_acc": None if e % 2 else 0.4 + 0.05 * e}
        if gif:
            r.update(attackable_orig=0.7 / e, attackable_interp=None if e == 1 else 0.6 + 0.05 * e)
        rows.append(r)
    return rows


def test_each_plot_writes_a_png(tmp_path):
    eps = {"at": {0.0: 0.98, 0.1: 0.9, 0.2: 0.7, 0.4: 0.05}, "standard": ([0, 0.1, 0.2, 0.4], [0.99, 0.3, 0.01, 0])}
    paths = [
        plot.plot_eps_curves(eps, str(tmp_path / "eps.png"), train_eps=0.2),
        plot.plot_training({"at": _rows(), "gif": _rows(gif=True)}, str(tmp_path / "sub" / "train.png")),
        plot.plot_attackable({"gif": _rows(gif=True), "at": _rows()}, str(tmp_path / "att.png")),
        plot.plot_mi_lambda({"clean + MI-OL": {0.4: 0.9, 0.6: 0.95}, "pgd20 + MI-OL": {0.4: 0.5, 0.6: 0.4},
                             "pgd20 (no MI)": {0.5: 0.3}}, str(tmp_path / "mi.png")),
    ]
    for p in paths:
        assert _is_png(p), p


def test_plot_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="path must be a .png"):
        plot.plot_eps_curves({"a": {0: 1.0}}, str(tmp_path / "x.jpg"))
    with pytest.raises(ValueError, match="curves"):
        plot.plot_eps_curves({}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="series 'a'"):
        plot.plot_mi_lambda({"a": ([0.1, 0.2], [0.5])}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="none of the keys"):
        plot.plot_training({"a": _rows()}, str(tmp_path / "x.png"), keys=["nope"])
    with pytest.raises(ValueError, match="attackable_orig"):
        plot.plot_attackable({"a": [{"epoch": 1}]}, str(tmp_path / "x.png"))
    with pytest.raises(FileNotFoundError, match="metrics"):
        plot.read_metrics(str(tmp_path / "missing"))


def test_cli_plot_from_run_directories_and_json(tmp_path, capsys):
    for name, gif in (("gif", True), ("at", False)):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(gif=gif)))
    out = tmp_path / "figs"
    assert cli.main(["plot", "train", str(tmp_path / "gif"), str(tmp_path / "at" / "metrics.jsonl"),
                     "--out", str(out / "train.png")]) == 0
    assert cli.main(["plot", "attackable", str(tmp_path / "gif"), str(tmp_path / "at"), "--labels", "GIF,AT",
                     "--out", str(out / "att.png")]) == 0
    data = {"attack": "pgd20", "train_eps": 0.2, "curves": {"at": {"0": 0.9, "0.2": 0.6}}}
    (tmp_path / "eps.json").write_text(json.dumps(data))
    assert cli.main(["plot", "eps", "--from-json", str(tmp_path / "eps.json"), "--out", str(out / "eps.png")]) == 0
    assert all(_is_png(out / f) for f in ("train.png", "att.png", "eps.png"))
    capsys.readouterr()
    assert cli.main(["plot", "attackable", str(tmp_path / "gif"), "--labels", "a,b", "--out",
                     str(out / "x.png")]) == 2
    assert "--labels" in capsys.readouterr().err
    assert cli.main(["plot", "train", str(tmp_path / "none"), "--out", str(out / "x.png")]) == 2
