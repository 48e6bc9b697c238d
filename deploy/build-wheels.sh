#!/usr/bin/env bash
# On a connected machine: build every wheel edgegw needs, to carry to an offline PC.
#
#   deploy/build-wheels.sh dist/wheels                 # for this machine's Python and CPU
#   deploy/build-wheels.sh dist/wheels-arm64 --platform manylinux2014_aarch64 --python-version 3.11
#
# Then on the PC:  sudo deploy/install.sh --wheels /path/to/wheels
# The target's Python version and CPU architecture must match the wheels: build on a twin of
# the PC, or give --platform/--python-version (binary wheels only are fetched then).
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: build-wheels.sh OUT_DIR [--platform TAG --python-version X.Y]}"
shift
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
# edgegw itself is pure Python: one wheel for every platform
"$PY" -m pip wheel --no-deps --wheel-dir "$OUT" "$SRC"
if [ $# -gt 0 ]; then
    "$PY" -m pip download --only-binary=:all: --dest "$OUT" "$@" "$OUT"/edgegw-*.whl
else
    "$PY" -m pip wheel --wheel-dir "$OUT" "$OUT"/edgegw-*.whl
fi
echo "wheels in $OUT: $(ls "$OUT" | wc -l) files; copy the folder and deploy/ to the PC"
