#!/usr/bin/env bash
# The API reference, generated from the docstrings with pdoc, into build/docs (git-ignored).
#   bash scripts/build_docs.sh [OUT_DIR]        # then open build/docs/index.html
# Any pdoc warning (an annotation it cannot resolve, a module that fails to import) fails
# the build. Needs the docs extra: pip install --no-build-isolation -e ".[docs]".
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${1:-build/docs}"
"$PY" -c "import pdoc" 2>/dev/null || { echo "build_docs: pdoc is not installed (pip install -e '.[docs]')" >&2; exit 2; }
rm -rf "$OUT"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# Every public module (no name part starting with "_"; fastmix._C is the compiled extension).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# pdoc walks a package's submodules through its __all__; the public modules it would not
# reach (those a package re-exports from) are added by name, so every public module (no
# name part starting with "_") gets a page. fastmix._C is the compiled extension.
MODULES="$("$PY" - <<'PY'
import pathlib
import warnings
import pdoc.extract
warnings.simplefilter("error")  # a module pdoc cannot walk fails the build here too
public = []
for p in sorted(pathlib.Path("fastmix").rglob("*.py")):
    parts = list(p.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[-1] != "__main__" and not any(q.startswith("_") for q in parts):
        public.append(".".join(parts))
walked = set(pdoc.extract.walk_specs(["fastmix"]))
print("fastmix", r"!fastmix\._C$", r"!fastmix\._backend$", *[m for m in public if m not in walked])
PY
)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
status=0
# shellcheck disable=SC2086  # one argument per module
"$PY" -m pdoc --docformat restructuredtext --no-show-source --footer-text "fastmix $VERSION" \
    -o "$OUT" $MODULES >"$LOG" 2>&1 || status=$?
if [ "$status" -ne 0 ] || grep -qiE "warn|error|traceback" "$LOG"; then
    cat "$LOG" >&2
    echo "build_docs: FAILED (pdoc exit $status; warnings are errors)" >&2
    exit 1
fi
[ -f "$OUT/index.html" ] && [ -f "$OUT/fastmix/methods/loop.html" ] || { echo "build_docs: pages missing in $OUT" >&2; exit 1; }
echo "build_docs: $(find "$OUT" -name '*.html' | wc -l) pages in $OUT, no warnings"
