#!/usr/bin/env bash
# The one prepared GPU run (issue 15 item 3; issue 17's compute-sanitizer passes).
#
#   bash scripts/gpu_check.sh             # on the GPU machine: results under $OUT
#   bash scripts/gpu_check.sh --dry-run   # on a CPU machine at tiny sizes (CI): results under $OUT
#                                         # or a temporary folder; exit status 0 = every phase ran
#
# Everything it needs travels with the checkout: nothing is downloaded there. torchattacks
# (not in the GPU image) travels as a wheel in .whl/ (DEVELOPERS.md, "The GPU run", says how
# to fetch it here and which `run` call to make); it is installed into /tmp/site when
# present and torchattacks is not importable. The driver is benchmarks/gpu_check.py; its
# docstring lists the phases and their time caps (450 s in all, inside the 8-minute box).
set -u
cd "$(dirname "$0")/.."
DRY=()
EXTRA=()
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=(--dry-run) ;;
    *) EXTRA+=("$a") ;;
  esac
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ${#DRY[@]} -eq 0 ] && [ -d .whl ] && ! "$PY" -c "import torchattacks" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -z "${OUT:-}" ]; then
  OUT=$(mktemp -d -t fastmix-gpu-check.XXXXXX)
  echo "gpu_check: no \$OUT set; writing to $OUT"
fi
start=$(date +%s)
"$PY" benchmarks/gpu_check.py --out "$OUT" "${DRY[@]}" "${EXTRA[@]}"
rc=$?
echo "gpu_check: exit $rc after $(( $(date +%s) - start )) s; results in $OUT"
exit $rc
