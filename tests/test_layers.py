"""The layer structure (issue 12): the import contracts hold, each moved piece has one
definition reachable from its old public paths, the CLI only parses arguments, and
``fastmix bench`` runs the benchmark code in this process."""
import os
import shutil
import subprocess
import sys

import pytest

import fastmix
from fastmix import bench, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastmix.__file__)))


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_import_contracts_hold():
    r = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 kept, 0 broken" in r.stdout


def test_moved_pieces_have_one_definition_under_every_old_path():
    from fastmix import attacks, checkpoint, data, dist, eval as feval, ops, train
    from fastmix.attacks import specs
    from fastmix.ops.target import SoftTarget
    from fastmix.train import checkpoint as train_checkpoint, config, trainer
    from fastmix.train import dist as train_dist
    assert attacks.SoftTarget is ops.SoftTarget is SoftTarget
    assert feval.parse_attack is train.parse_attack is attacks.parse_attack is specs.parse_attack
    assert feval.EvalAttack is specs.EvalAttack and feval.expand_attacks is specs.expand_attacks
    assert train.load_model is trainer.load_model is checkpoint.load_model
    assert train_checkpoint.load is checkpoint.read and train_checkpoint.FORMAT == checkpoint.FORMAT
    assert train.DATASET_DEFAULTS is config.DATASET_DEFAULTS is data.DATASET_DEFAULTS
    assert train_dist.all_reduce_sum is dist.all_reduce_sum and train_dist.init is dist.init


def test_attack_eps_is_the_one_default_rule():
    from fastmix.data import DATASET_DEFAULTS, attack_eps
    assert attack_eps("mnist", 0.1, train_eps=0.3) == 0.1  # given wins
    assert attack_eps("mnist", None, train_eps=0.2) == 0.2  # then the training eps
    assert attack_eps("cifar10", None, train_eps=0.0) == DATASET_DEFAULTS["cifar10"]["eps"] == 8 / 255
    assert attack_eps("svhn") == 4 / 255
    with pytest.raises(ValueError, match="dataset must be one of"):
        attack_eps("imagenet")
    with pytest.raises(ValueError, match="eps must be in"):
        attack_eps("mnist", 2.0)


def test_cli_holds_no_evaluation_logic_and_starts_no_process():
    src = open(cli.__file__).read()
    assert "subprocess" not in src and "fork_rng" not in src and "MixupInference" not in src


def test_bench_runs_the_runner_in_process(capsys):
    # capsys sees only this process's writes: a subprocess's usage text would not show up
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "train", "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out
    assert callable(bench.load_runner(None).main) and callable(bench.load_runner("attacks").main)
    with pytest.raises(ValueError, match="benchmark must be one of"):
        bench.runner_path("nope")


def test_bench_never_runs_a_file_from_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "run.py").write_text("raise SystemExit('ran a file from the cwd')\n")
    monkeypatch.chdir(tmp_path)
    assert bench.runner_path(None) == os.path.join(ROOT, "benchmarks", "run.py")
    monkeypatch.setattr(bench, "_ROOT", str(tmp_path / "elsewhere"))  # an installed wheel: no benchmarks/
    assert cli.main(["bench"]) == 2
    assert "needs a fastmix checkout" in capsys.readouterr().err


def test_importing_eval_and_methods_loads_nothing_of_train():
    code = ("import sys, fastmix.eval, fastmix.methods; "
            "bad = [m for m in sys.modules if m.startswith('fastmix.train')]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_demo_prints_the_table_of_the_library_run(tmp_path, capsys):
    import json
    assert cli.main(["demo", "--epochs", "1", "--methods", "standard", "--out", str(tmp_path), "--quiet",
                     "--json"]) == 0
    out = capsys.readouterr().out
    assert "| method   |  clean |   fgsm |  pgd20 |   cw20 | train s |" in out and "| standard |" in out
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res["results"]["standard"]) == {"clean", "fgsm", "pgd20", "cw20", "train_s"}
    assert os.path.isfile(tmp_path / "standard" / "last.pt")
