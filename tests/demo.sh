#!/usr/bin/env bash
# The `make demo` job: runs the loop end to end on embedded local defaults with the release
# binaries in $1, writing everything under $2. Grows stage by stage as the issues land.
set -euo pipefail
BIN="$1"
OUT="$2"
mkdir -p "$OUT"
echo "== runtimes"
"$BIN/wms" doctor
"$BIN/wms-train" info
echo
echo "demo finished; outputs are in $OUT"
