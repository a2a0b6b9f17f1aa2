"""Every script in ``examples/`` runs to completion (each checks its own result and prints
``OK``). They run on scikit-learn's digits, each in its own process with the repository on
PYTHONPATH, so they exercise fastmix exactly as a user's script would. Their wall times are
reported by ``pytest --durations=0 tests/test_examples.py`` (not asserted)."""
import os
import signal
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
    # A session of its own, so a hung run (e.g. torchrun's workers) is killed whole.
    proc = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, script)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script} did not finish in 600 s:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    if script != "mynet.py":
        assert out.rstrip().endswith("OK"), out[-2000:]
