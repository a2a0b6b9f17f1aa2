#!/usr/bin/env bash
# Set-up and the whole test suite, on a fresh machine: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
bash scripts/setup.sh test
bash scripts/check_cuda_compile.sh || { echo "CUDA sources failed to compile"; exit 1; }
# conftest.py sets TRITON_INTERPRET=1 on a torch without CUDA, so the Triton kernels run too
exec "$PY" -m pytest -q -p no:cacheprovider tests "$@"
