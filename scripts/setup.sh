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
PIP=("$PY" -m pip install --disable-pip-version-check -q)
want="${1:-test}"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "fastmix setup: no torch importable; installing torch==${FASTMIX_TORCH:-2.13.0}"
  "${PIP[@]}" "torch==${FASTMIX_TORCH:-2.13.0}"
fi
"$PY" -c "import torch; print('fastmix setup: using torch', torch.__version__, '(CUDA ' + str(torch.version.cuda) + ')')"

# build requirements first (no isolation means they must already be here)
"${PIP[@]}" "setuptools>=64" wheel ninja
# What this script installs beside pyproject.toml's extras (scripts/check_env.py reads
# these two lines to tell that a CI environment holds nothing else):
NODEPS_PKGS="torchattacks==3.5.1"  # installed with --no-deps (its torchvision pin)
EXTRA_PKGS="scipy requests"        # torchattacks' own imports
extras="test"
[[ "$want" == "main" ]] && extras="test,plot"
"${PIP[@]}" --no-build-isolation -e ".[$extras]"
# shellcheck disable=SC2086
"${PIP[@]}" --no-deps $NODEPS_PKGS
# shellcheck disable=SC2086
"${PIP[@]}" $EXTRA_PKGS
"$PY" -m fastmix.info
