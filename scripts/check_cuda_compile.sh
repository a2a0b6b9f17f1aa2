#!/usr/bin/env bash
# Compile-checks every csrc/cuda/*.cu with the flags of the real build, without
# linking and without needing a GPU or a CUDA build of torch (the CPU torch wheel
# ships the c10/cuda and ATen/cuda headers the kernels use).  The flags and the GPU
# architectures come from csrc/build_flags.py, the one definition setup.py uses
# (FASTMIX_CUDA_ARCH, else TORCH_CUDA_ARCH_LIST, else 9.0+PTX = sm_90 SASS + PTX).
# Exits 0 with a message when nvcc is absent.
#
#   scripts/check_cuda_compile.sh                       # sm_90 SASS + compute_90 PTX
#   FASTMIX_CUDA_ARCH="8.0;9.0+PTX" scripts/check_cuda_compile.sh
#   KEEP_DIR=/tmp/objs scripts/check_cuda_compile.sh    # keep the objects (cuobjdump)
#   PTX_DIR=/tmp/ptx scripts/check_cuda_compile.sh      # also copy the checked PTX there
set -euo pipefail

cd "$(dirname "$0")/.."

NVCC="${NVCC:-}"
if [[ -z "$NVCC" ]]; then
  if command -v nvcc >/dev/null 2>&1; then
    NVCC="$(command -v nvcc)"
  elif [[ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]]; then
    NVCC="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
  else
    echo "check_cuda_compile: nvcc not found, skipping the CUDA compile check"
    exit 0
  fi
fi

PYTHON="${PYTHON:-python}"
mapfile -t FLAGS < <("$PYTHON" csrc/build_flags.py nvcc)
ARCH="$("$PYTHON" csrc/build_flags.py arch)"
if [[ -n "${KEEP_DIR:-}" ]]; then
  OUT_DIR="$KEEP_DIR"
  mkdir -p "$OUT_DIR"
else
  OUT_DIR="$(mktemp -d)"
  trap 'rm -rf "$OUT_DIR"' EXIT
fi

echo "check_cuda_compile: $("$NVCC" --version | tail -n 1), arch $ARCH"
status=0
shopt -s nullglob
files=(csrc/cuda/*.cu)
if (( ${#files[@]} == 0 )); then
  echo "check_cuda_compile: no .cu files"
  exit 0
fi
for f in "${files[@]}"; do
  keep="$OUT_DIR/keep_$(basename "$f" .cu)"
  mkdir -p "$keep"
  # -keep leaves the PTX of this very compile in $keep, for the numerics check below
  if "$NVCC" "${FLAGS[@]}" -keep -keep-dir "$keep" -c "$f" -o "$OUT_DIR/$(basename "$f").o"; then
    echo "  ok      $f"
  else
    echo "  FAILED  $f"
    status=1
  fi
done
(( status == 0 )) || exit $status

# Numerics of the generated code (csrc/ptx_rules.py): no flush-to-zero, no approximate
# instruction except the written-out one inside expf, IEEE sqrt/div in the L2 kernels,
# no FMA contraction in the kernels that are bitwise equal to the reference.
ptx=("$OUT_DIR"/keep_*/*.ptx)
if (( ${#ptx[@]} == 0 )); then
  echo "check_cuda_compile: nvcc -keep left no PTX (is a +PTX or compute_XY target listed?)"
  exit 1
fi
if [[ -n "${PTX_DIR:-}" ]]; then
  mkdir -p "$PTX_DIR"
  cp "${ptx[@]}" "$PTX_DIR"/
fi
"$PYTHON" csrc/ptx_rules.py "${ptx[@]}" || exit 1
exit 0
