"""``fastmix bench``: run the benchmarks in this process (no subprocess, no shell).

    fastmix bench [ARGS]          the op benchmarks (benchmarks/run.py: every op x provider x shape)
    fastmix bench train [ARGS]    training steps and loaders (benchmarks/bench_train.py)

The benchmark definitions live in the ``benchmarks/`` folder of the fastmix checkout that
this package was imported from (never the current directory); :func:`main` imports the
runner as a module and calls its ``main(argv)``. An installed wheel carries no benchmarks:
then the command says so and returns 2.
"""
from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["RUNNERS", "runner_path", "load_runner", "main"]

#: ``fastmix bench <name>`` -> the file in benchmarks/ (``None``: no name given)
RUNNERS = {None: "run.py", "train": "bench_train.py", "attacks": "bench_attacks.py"}

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runner_path(name: str | None = None) -> str:
    """The benchmark file for ``name`` (see :data:`RUNNERS`) in this checkout's benchmarks/."""
    if name not in RUNNERS:
        raise ValueError(f"benchmark must be one of {[k for k in RUNNERS if k]} (or none), got {name!r}")
    return os.path.join(_ROOT, "benchmarks", RUNNERS[name])


def load_runner(name: str | None = None):
    """Import the benchmark runner for ``name`` as a module (FileNotFoundError without one)."""
    path = runner_path(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"benchmark runner {path} not found: `fastmix bench` needs a fastmix checkout "
                                f"(an installed wheel carries no benchmarks)")
    here = os.path.dirname(path)
    if here not in sys.path:  # the runners import their case definitions (ops_cases) by plain name
        sys.path.insert(0, here)
    spec = importlib.util.spec_from_file_location(f"fastmix_benchmarks_{RUNNERS[name][:-3]}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    """``fastmix bench [train|attacks] [ARGS]``: run that runner's ``main(ARGS)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv[0] if argv[:1] and argv[0] in RUNNERS else None
    rest = argv[1:] if name is not None else argv
    try:
        mod = load_runner(name)
    except FileNotFoundError as e:
        print(f"fastmix bench: error: {e}", file=sys.stderr)
        return 2
    return int(mod.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
