#!/usr/bin/env bash
# Installs fastmix (editable, with the C++ extension) and what its tests need into the
# current Python, on top of the torch that is already installed.
#
# - A torch that imports is kept as it is: the build runs with --no-build-isolation so
#   pip never fetches another (an isolated build, or an unpinned `torch`, would pull
#   several GB of CUDA wheels onto a CPU machine).
# - With no torch at all it installs torch==${FASTMIX_TORCH:-2.13.0} (on these machines
#   that is the local CPU wheel; on a GPU machine install the CUDA torch you want first).
# - torchattacks is installed with --no-deps: its metadata asks for torchvision, whose
#   wheel does not import against a CPU torch, and fastmix keeps torchvision optional.
#
# Usage: bash scripts/setup.sh [test|main]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[[ "$PY" == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: a check below runs from /
PIP=("$PY" -m pip install --disable-pip-version-check -q)
want="${1:-test}"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "fastmix setup: no torch importable; installing torch==${FASTMIX_TORCH:-2.13.0}"
  "${PIP[@]}" "torch==${FASTMIX_TORCH:-2.13.0}"
fi
"$PY" -c "import torch; print('fastmix setup: using torch', torch.__version__, '(CUDA ' + str(torch.version.cuda) + ')')"

# What this script installs beside pyproject.toml's extras (scripts/check_env.py reads
# these two lines to tell that a CI environment holds nothing else):
NODEPS_PKGS="torchattacks==3.5.1"  # installed with --no-deps (its torchvision pin)
EXTRA_PKGS="scipy requests"        # torchattacks' own imports
# the test extras hold the plot extras too, so `main` and `test` install the same set
case "$want" in test|main) extras="test" ;; *) echo "usage: bash scripts/setup.sh [test|main]" >&2; exit 2 ;; esac

# A second run with nothing changed (scripts/main.sh after scripts/test.sh) skips pip and
# the C++ rebuild: the stamp names this Python, its torch, the extras and a hash of every
# file the build or the install list depends on.
stamp_file="build/.setup-stamp"
stamp="$("$PY" -c 'import sys, torch; print(sys.prefix, torch.__version__)') $extras $NODEPS_PKGS $EXTRA_PKGS
$(cat pyproject.toml setup.py scripts/setup.sh $(find csrc -type f -not -path "*/__pycache__/*" | LC_ALL=C sort) | sha256sum)"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] \
   && (cd / && "$PY" -c "import importlib.metadata as m; m.version('fastmix'); import fastmix._C") >/dev/null 2>&1; then
  echo "fastmix setup: nothing changed since the last set-up ($stamp_file); skipping pip and the build"
else
  # build requirements first (no isolation means they must already be here)
  "${PIP[@]}" "setuptools>=64" wheel ninja
  "${PIP[@]}" --no-build-isolation -e ".[$extras]"
  # shellcheck disable=SC2086
  "${PIP[@]}" --no-deps $NODEPS_PKGS
  # shellcheck disable=SC2086
  "${PIP[@]}" $EXTRA_PKGS
  mkdir -p build && printf '%s' "$stamp" > "$stamp_file"
fi
"$PY" -m fastmix.info
