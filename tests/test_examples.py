"""Every script in ``examples/`` runs to completion (each checks its own result and prints
``OK``). They run on scikit-learn's digits, each in its own process with the repository on
PYTHONPATH, so they exercise fastmix exactly as a user's script would. Their wall times are
reported by ``pytest --durations=0 tests/test_examples.py`` (not asserted)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))


def test_the_five_examples_of_issue_16_are_there():
    for prefix in ("a_", "b_", "c_", "d_", "e_"):
        assert any(f.startswith(prefix) for f in SCRIPTS), prefix
    for f in SCRIPTS:  # each says what it shows
        with open(os.path.join(EXAMPLES, f)) as fh:
            assert fh.read().lstrip().startswith('"""'), f"{f} has no docstring"


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("FASTMIX_EXAMPLE_OUT", None)
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if script != "mynet.py":
        assert proc.stdout.rstrip().endswith("OK"), proc.stdout[-2000:]
