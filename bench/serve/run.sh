#!/usr/bin/env bash
# `make bench-serve`: wms-serve vs a PyTorch-eager reference server on the same random upstream
# weights and the same 640x480 JPEG, measured with the same client (bench/serve/load.py).
# Usage: bench/serve/run.sh RELEASE_DIR OUT_DIR PROJECT_VENV
# The reference (Pillow, OpenCV, FastAPI, uvicorn, torch) runs from the project venv, pinned in
# requirements.lock.
set -euo pipefail
release=$1
out=$2
venv=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
pyenv="$venv"

if [ ! -f "$out/model.onnx" ]; then
  "$pyenv/bin/python" "$here/reference_server.py" init --out "$out/model.pth" --seed 0
  "$release/wms-train" import --from "$out/model.pth" --out "$out/model.safetensors" --input-size 512
  "$release/wms" export-onnx --checkpoint "$out/model.safetensors" --out "$out/model.onnx"
fi
if [ ! -f "$out/photo.jpg" ]; then
  rm -rf "$out/synth"
  "$release/wms" data synth --out "$out/synth" --count 1 --size 640x480 --seed 3 >/dev/null
  cp "$(ls "$out"/synth/images/* | head -1)" "$out/photo.jpg"
fi
"$pyenv/bin/python" "$here/bench.py" --wms-serve "$release/wms-serve" --model "$out/model.onnx" \
  --weights "$out/model.pth" --photo "$out/photo.jpg" --ref-python "$pyenv/bin/python" --out "$out"
