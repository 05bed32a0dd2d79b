#!/usr/bin/env bash
# `make bench-serve`: wms-serve vs a PyTorch-eager reference server on the same random upstream
# weights and the same 640x480 JPEG, measured with the same client (bench/serve/load.py).
# Usage: bench/serve/run.sh RELEASE_DIR OUT_DIR PROJECT_VENV
# The reference needs Pillow, OpenCV, FastAPI and uvicorn, which the product venv does not carry:
# they go into OUT_DIR/pyenv (once), layered over the project venv for torch.
set -euo pipefail
release=$1
out=$2
venv=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
pyenv="$out/pyenv"
if [ ! -x "$pyenv/bin/python" ] || [ ! -f "$pyenv/.wms-ready" ]; then
  echo "bench-serve: creating $pyenv (pillow, opencv-python-headless, fastapi, uvicorn, python-multipart)"
  "$venv/bin/uv" venv -q --clear --python "$venv/bin/python" "$pyenv"
  "$venv/bin/uv" pip install -q --python "$pyenv/bin/python" \
    pillow opencv-python-headless fastapi uvicorn python-multipart
  touch "$pyenv/.wms-ready"
fi
# torch (and everything else of the product venv) visible to the reference's interpreter.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
refsite=$("$pyenv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$refsite/wms-project-venv.pth"

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
