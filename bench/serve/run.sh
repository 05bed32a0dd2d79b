#!/usr/bin/env bash
# `make bench-serve`: wms-serve (fp32 and int8 exports) vs a PyTorch-eager reference server on the
# same random upstream weights and the same 640x480 JPEG, measured with the same client (bench/serve/load.py).
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
# The int8 model of the same checkpoint, calibrated on synthetic photos. The weights are random,
# so the accuracy guard has nothing to protect here (IoU against synthetic masks is ~0 for both);
# BENCH_MAX_IOU_DROP (default 1) keeps it from refusing on noise. A trained model uses 0.005.
if [ ! -f "$out/model-int8.onnx" ]; then
  rm -rf "$out/calib"
  "$release/wms" data synth --out "$out/calib" --count 40 --size 640x480 --seed 7 >/dev/null
  "$release/wms" export-onnx --checkpoint "$out/model.safetensors" --out "$out/model-int8.onnx" \
    --precision int8 --calibrate "$out/calib" --calibration-images 16 --max-iou-drop "${BENCH_MAX_IOU_DROP:-1}"
fi
if [ ! -f "$out/photo.jpg" ]; then
  rm -rf "$out/synth"
  "$release/wms" data synth --out "$out/synth" --count 1 --size 640x480 --seed 3 >/dev/null
  cp "$(ls "$out"/synth/images/* | head -1)" "$out/photo.jpg"
fi
"$pyenv/bin/python" "$here/bench.py" --wms-serve "$release/wms-serve" --model "$out/model.onnx" \
  --model-int8 "$out/model-int8.onnx" \
  --weights "$out/model.pth" --photo "$out/photo.jpg" --ref-python "$pyenv/bin/python" --out "$out"
