"""Check that a Python environment holds exactly what fastmix's set-up installs.

The expected set is computed, not listed: the requirements of pyproject.toml
(``[build-system] requires``, ``[project] dependencies`` and the extras given on the
command line) and the two package lists of ``scripts/setup.sh`` (``NODEPS_PKGS``,
installed without their dependencies, and ``EXTRA_PKGS``), closed over the installed
packages' own requirements (environment markers evaluated, extras followed), plus the
tools a virtual environment starts with. Any installed distribution outside that set
was put there by something else (by hand, by an earlier run), and that is what a CI
environment must not have: it could hide a missing install step.

Usage: python scripts/check_env.py [--extras test,plot]   (exit 1 on a mismatch)
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what `python -m venv` puts into a new environment
VENV_BASE = {"pip", "setuptools"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> tuple[str, list[str], str | None]:
    """(name, extras, marker) of a PEP 508 requirement string."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement
    r = Requirement(req)
    return _norm(r.name), sorted(r.extras), (str(r.marker) if r.marker else None)


def _marker_ok(marker: str | None, extra: str | None = None) -> bool:
    if marker is None:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:
        from pip._vendor.packaging.markers import Marker
    return Marker(marker).evaluate({"extra": extra or ""})


def _setup_sh_lists() -> tuple[list[str], list[str]]:
    text = open(os.path.join(ROOT, "scripts", "setup.sh")).read()
    out = []
    for var in ("NODEPS_PKGS", "EXTRA_PKGS"):
        m = re.search(rf'^{var}="([^"]*)"', text, re.M)
        if not m:
            raise SystemExit(f"check_env: scripts/setup.sh defines no {var}=\"...\" line")
        out.append(m.group(1).split())
    return out[0], out[1]


def expected(extras: list[str]) -> tuple[set[str], list[str]]:
    py = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    roots = list(py["build-system"]["requires"]) + list(py["project"]["dependencies"])
    for e in extras:
        roots += py["project"]["optional-dependencies"][e]
    nodeps, extra = _setup_sh_lists()
    roots += extra
    want: set[str] = set(VENV_BASE) | {_norm(py["project"]["name"])}
    missing: list[str] = []
    stack = [(r, None) for r in roots]
    want |= {_req_name(p)[0] for p in nodeps}  # their own requirements are not followed
    seen: set[tuple[str, tuple]] = set()
    while stack:
        req, _ = stack.pop()
        name, rextras, marker = _req_name(req)
        if marker is not None and "extra" not in marker and not _marker_ok(marker):
            continue
        key = (name, tuple(rextras))
        if key in seen:
            continue
        seen.add(key)
        want.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        for sub in dist.requires or []:
            smarker = _req_name(sub)[2]
            # a requirement counts when its marker holds here, for no extra or for one asked
            if any(_marker_ok(smarker, e) for e in [None] + rextras):
                stack.append((sub, None))
    return want, missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", default="test", help="comma-separated extras of pyproject.toml that were installed")
    a = ap.parse_args()
    want, missing = expected([e for e in a.extras.split(",") if e])
    have = {_norm(d.metadata["Name"]) for d in md.distributions()}
    extra = sorted(have - want)
    print(f"check_env: {len(have)} distributions installed in {sys.prefix}; {len(want)} expected "
          f"from pyproject.toml [{a.extras}] + scripts/setup.sh")
    if missing:
        print("check_env: required but not installed: " + ", ".join(sorted(missing)))
    if extra:
        print("check_env: installed but not asked for by pyproject.toml or scripts/setup.sh: " + ", ".join(extra))
    if missing or extra:
        return 1
    print("check_env: the environment holds exactly what the set-up installs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
