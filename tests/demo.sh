#!/usr/bin/env bash
# The `make demo` job: the loop end to end on embedded local defaults, with the release binaries
# in $1, everything written under $2:
#   synthetic data → QA → train → export to ONNX (+ parity check) → serve → one prediction →
#   serving image (OCI layout, no registry or Docker needed) → report.
set -euo pipefail
BIN="$1"
OUT="$2"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
rm -rf "$OUT"
mkdir -p "$OUT"
# Timing records of what the demo does (wms deploy appends to it) feed the comparison report at
# the end; they stay out of the repository's comparison/records/.
export WMS_TIMING_DIR="$OUT/records"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "runtimes"
"$BIN/wms" doctor
"$BIN/wms-train" info

step "1/7 synthetic water meters (240 photos, 256x192)"
"$BIN/wms" data synth --out "$OUT/data" --count 240 --size 256x192 --seed 7

step "2/7 data QA"
"$BIN/wms" data qa "$OUT/data" --json "$OUT/data-qa.json" --markdown "$OUT/data-qa.md"

step "3/7 train (configs/demo.yaml: upstream recipe scaled for 2 CPU cores)"
"$BIN/wms-train" train --config "$ROOT/configs/demo.yaml" --data "$OUT/data" --out "$OUT/train"

step "4/7 export to ONNX and check it against the checkpoint in ONNX Runtime"
"$BIN/wms" export-onnx --checkpoint "$OUT/train/best.safetensors" --out "$OUT/model.onnx" \
  --version demo --check --mar "$OUT/torchserve"

step "5/7 serve and predict one photo"
"$BIN/wms-serve" --model "$OUT/model.onnx" \
  --inference-address http://127.0.0.1:0 --management-address http://127.0.0.1:0 \
  --metrics-address http://127.0.0.1:0 >"$OUT/serve.out" 2>"$OUT/serve.log" &
SERVE_PID=$!
trap 'kill -TERM $SERVE_PID 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^inference_address=//p;T;q' "$OUT/serve.out")"
  [ -n "$addr" ] && curl -fsS "$addr/ping" >/dev/null 2>&1 && break
  kill -0 $SERVE_PID 2>/dev/null || { cat "$OUT/serve.log"; echo "wms-serve exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "wms-serve did not report its address" >&2; exit 1; }
# A glob, not `ls | head`: under pipefail, head closing the pipe early makes ls die of SIGPIPE.
photos=("$OUT"/data/images/*)
photo="${photos[0]}"
curl -fsS --data-binary @"$photo" "$addr/predictions/water-meters-unet" -o "$OUT/prediction.png"
curl -fsS -H 'Accept: application/json' --data-binary @"$photo" \
  "$addr/predictions/water-meters-unet" -o "$OUT/prediction.json"
metrics_addr="$(sed -n 's/^metrics_address=//p;T;q' "$OUT/serve.out")"
curl -fsS "$metrics_addr/metrics" -o "$OUT/serve-metrics.txt"
kill -TERM $SERVE_PID
wait $SERVE_PID
trap - EXIT
echo "served $photo → $OUT/prediction.png"

step "6/7 build the serving image (scratch base, reproducible) into an OCI layout"
# The commit time makes the digest reproducible; outside a git checkout, the epoch. The demo
# stays offline: `--base scratch` (the default base is pulled from gcr.io).
SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)" \
  "$BIN/wms" build-image --base scratch --model "$OUT/model.onnx" --oci-layout "$OUT/image" \
  --tag wms/water-meters:demo >"$OUT/image.json"
python3 - "$OUT/image.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"image {r['digest']}, {r['compressed_size'] / 1e6:.1f} MB compressed")
for layer in r["layers"]:
    print(f"  {layer['role']:<26} {layer['size'] / 1e6:6.1f} MB  {layer['digest'][:19]}")
PY
step "deploy manifests for that image (wms deploy render: no cluster needed)"
# The same objects `wms deploy apply` would create for this version; apply them with
# `wms deploy apply` (same flags) or commit them for GitOps.
digest="$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["digest"])' "$OUT/image.json")"
mkdir -p "$OUT/deploy"
"$BIN/wms" deploy render --image "wms/water-meters@$digest" --version demo --onnx "$OUT/model.onnx" \
  >"$OUT/deploy/manifests.tmp" && mv "$OUT/deploy/manifests.tmp" "$OUT/deploy/manifests.yaml"
echo "$(grep -c '^kind:' "$OUT/deploy/manifests.yaml") objects → $OUT/deploy/manifests.yaml"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
m = json.loads((out / "train/metrics.json").read_text())
p = json.loads((out / "prediction.json").read_text())
print()
print("\033[1m== 7/7 report\033[0m")
print(f"| metric | value |\n|---|---|")
for k in ["test_iou", "test_dice", "test_accuracy", "test_hausdorff", "best_epoch", "epochs_run", "train_seconds", "images_per_second"]:
    if k in m:
        v = m[k]
        print(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
md = p.get("metadata", {})
print(f"| served coverage | {md.get('coverage')} |")
print(f"| served latency_ms | {md.get('latency_ms')} |")
PY
step "comparison report from the demo's own timing records"
# Only records the demo itself wrote count; a task with none shows "no data", never a guess.
"$BIN/wms" compare report --records "$WMS_TIMING_DIR" --out "$OUT/comparison.md" >/dev/null
sed -n '/^## Summary/,/^## Per task/p' "$OUT/comparison.md" | sed '$d'

step "the pull-request report wms would post (no token here: report.md and the summary only)"
# Without GITHUB_TOKEN, `wms report pr` posts nothing, warns, and exits 0; the file is what the
# sticky comment would say, Mermaid curves included (GitHub renders them; no image host).
env -u GITHUB_TOKEN -u GITHUB_REPOSITORY -u GITHUB_EVENT_NAME -u GITHUB_STEP_SUMMARY \
  "$BIN/wms" report pr --metrics "$OUT/train/metrics.json" --history "$OUT/train/history.csv" \
  --image "$OUT/image.json" --markdown "$OUT/report.md" --svg "$OUT/report-curves.svg" >/dev/null
sed -n '2,/^### Training curves/p' "$OUT/report.md" | sed '$d'

cat <<EOM

demo finished; outputs are in $OUT:
  data/                synthetic photos and masks (data-qa.md: QA report)
  train/               best.safetensors, last.safetensors, checkpoint.json, metrics.json, history.csv, curves.svg
  model.onnx           the exported model (torchserve/: the same model as a TorchServe archive)
  prediction.png       the served mask for $(basename "$photo") (prediction.json: with metadata)
  serve.log            the server's log; serve-metrics.txt: its Prometheus metrics
  image/               the serving image as an OCI layout (image.json: digest, layers, sizes);
                       (skopeo copy oci:$OUT/image:demo docker://REGISTRY/REPO:TAG pushes it)
  deploy/manifests.yaml  the Kubernetes objects of this version (wms deploy render)
  comparison.md        manual vs automated figures from the demo's timing records (records/),
                       with comparison-durations.svg and comparison-human.svg
  report.md            the PR comment wms report would post (metrics, gate verdict, Mermaid curves,
                       image); report-curves.svg: the same curves as SVG
EOM
