#!/usr/bin/env bash
# The layer contracts of pyproject.toml ([tool.importlinter]): every fastmix module imports
# only from the layers below it (DESIGN.md), and the attacks, models, data and distributed
# helpers stay independent of each other. A violation prints the offending import chain
# and exits non-zero. Usage: bash scripts/lint_imports.sh   (needs import-linter: pip
# install -e .[test]; the package is found from the repository root, no install needed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v lint-imports >/dev/null 2>&1; then
    echo "lint-imports not found: pip install 'import-linter>=2.1' (it is in the test extras)" >&2
    exit 2
fi
exec lint-imports "$@"
