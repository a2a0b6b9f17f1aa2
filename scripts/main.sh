#!/usr/bin/env bash
# Set-up and the main job on a fresh machine: bash scripts/main.sh
# Trains standard and Madry-AT small CNNs on scikit-learn's digits (no download), evaluates
# both under FGSM / PGD-20 / CW-20 and prints the clean-versus-robust table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
bash scripts/setup.sh main
exec "$PY" -m fastmix demo "$@"
