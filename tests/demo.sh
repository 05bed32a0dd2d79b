#!/usr/bin/env bash
# The `make demo` job: the loop end to end on embedded local defaults, with the release binaries
# in $1, everything written under $2:
#   synthetic data → QA → train → export to ONNX (+ parity check) → serve → one prediction →
#   serving image (OCI layout, no registry or Docker needed) → the five deployment tasks with
#   `wms deploy` against a local stand-in for the Kubernetes API (examples/kube-standin.rs; not a
#   cluster) → reports (the PR report; the comparison from the demo's own timing records).
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

step "the five deployment tasks with wms deploy, against a LOCAL STAND-IN for the Kubernetes API"
# No cluster here: kube-standin (examples/kube-standin.rs, the API server of the deploy tests run
# as a process) answers on 127.0.0.1 like a real API server, but its controllers are simulated:
# no container runs and no image is pulled; pods reach their outcome after 300 ms. wms deploy is
# the real binary doing real API calls, and the smoke test goes through the stand-in's service
# proxy to a real wms-serve. The timing records it writes are therefore wms's own time against a
# stand-in, not a cluster's rollout time.
: >"$OUT/deploy/serve.out"
: >"$OUT/deploy/standin.out"
"$BIN/wms-serve" --model "$OUT/model.onnx" \
  --inference-address http://127.0.0.1:0 --management-address http://127.0.0.1:0 \
  --metrics-address http://127.0.0.1:0 >"$OUT/deploy/serve.out" 2>"$OUT/deploy/serve.log" &
SERVE_PID=$!
STANDIN_PID=""
stop_all() {
  [ -n "$STANDIN_PID" ] && kill -TERM "$STANDIN_PID" 2>/dev/null || true
  kill -TERM "$SERVE_PID" 2>/dev/null || true
}
trap stop_all EXIT
serve_addr=""
for _ in $(seq 1 100); do
  serve_addr="$(sed -n 's/^inference_address=//p;T;q' "$OUT/deploy/serve.out")"
  [ -n "$serve_addr" ] && curl -fsS "$serve_addr/ping" >/dev/null 2>&1 && break
  kill -0 $SERVE_PID 2>/dev/null || { cat "$OUT/deploy/serve.log"; echo "wms-serve exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$serve_addr" ] || { echo "wms-serve did not report its address" >&2; exit 1; }
MODEL=water-meters-unet
ns() { echo "wms-$MODEL-$1"; }
# v1 and v2 are served by the real wms-serve above (through the service proxy); v3's pods are
# made to crash (CrashLoopBackOff with a missing-model log line) so `debug` has something to find.
STANDIN="$BIN/kube-standin"
[ -x "$STANDIN" ] || STANDIN="$BIN/examples/kube-standin"   # where cargo puts an example
"$STANDIN" --kubeconfig "$OUT/deploy/cluster/kubeconfig" \
  --proxy "$(ns v1)/$MODEL:8080=${serve_addr#http://}" \
  --proxy "$(ns v2)/$MODEL:8080=${serve_addr#http://}" \
  --outcome "$(ns v3)=crashloopbackoff" \
  >"$OUT/deploy/standin.out" 2>"$OUT/deploy/standin.log" &
STANDIN_PID=$!
server=""
for _ in $(seq 1 100); do
  server="$(sed -n 's/^server=//p;T;q' "$OUT/deploy/standin.out")"
  [ -n "$server" ] && break
  kill -0 $STANDIN_PID 2>/dev/null || { cat "$OUT/deploy/standin.log"; echo "kube-standin exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$server" ] || { echo "kube-standin did not report its address" >&2; exit 1; }
echo "Kubernetes API: $server (a local stand-in with simulated controllers, NOT a cluster)"
export KUBECONFIG="$OUT/deploy/cluster/kubeconfig"
image="wms/water-meters@$digest"
# Each command prints one JSON object (kept in deploy/<n>-<task>.json) and logs to stderr
# (deploy/wms-deploy.log); a line per task here.
deploy() {
  local name="$1"; shift
  "$BIN/wms" deploy "$@" >"$OUT/deploy/$name.json" 2>>"$OUT/deploy/wms-deploy.log"
}
# field NAME EXPR: a Python expression over `v`, the JSON object that command printed.
field() { python3 -c 'import json,sys; v=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(eval(sys.argv[2]))' "$OUT/deploy/$1.json" "$2"; }
deploy 1-deploy-v1 apply --image "$image" --version v1 --onnx "$OUT/model.onnx" --wait 60s \
  --smoke-test "$photo"
echo "deploy   v1 → $(ns v1); smoke test through the service proxy to the real wms-serve: $(field 1-deploy-v1 '"ping {ping}, mask {mask_size[0]}x{mask_size[1]}".format(**v["smoke_test"])')"
deploy 2-promote-v1 promote --version v1
deploy 3-deploy-v2 apply --image "$image" --version v2 --onnx "$OUT/model.onnx" --wait 60s --smoke-ping
deploy 4-promote-v2 promote --version v2
echo "promote  v1, then v2 (the entry point $MODEL.wms-system is an ExternalName to the promoted version)"
deploy 5-scale-v2 scale --version v2 --replicas 2 --wait 60s
echo "scale    v2 to 2 replicas"
deploy 6-config-v2 config --version v2 --set batch_size=2 --set max_batch_delay=10 --wait 60s
echo "config   v2: batch_size=2, max_batch_delay=10 (pods rolled)"
deploy 7-rollback rollback
echo "rollback → $(field 7-rollback 'v["promoted"]["version"]') is promoted again"
if deploy 8-deploy-v3 apply --image "$image" --version v3 --onnx "$OUT/model.onnx" --wait 30s; then
  echo "v3 was meant to fail (its pods crash on the stand-in), but wms deploy apply succeeded" >&2
  exit 1
fi
echo "deploy   v3 failed as arranged (exit 1): $(grep -m1 -o 'the rollout of [^:]* failed' "$OUT/deploy/wms-deploy.log"), $(grep -m1 -o 'pod [^ ]*: CrashLoopBackOff' "$OUT/deploy/wms-deploy.log")"
deploy 9-debug-v3 debug --version v3
echo "debug    v3: $(field 9-debug-v3 '"; ".join(p["reason"] + ": " + (p["logs"][-1:] or [p["detail"]])[0] for p in v["pods"])')"
"$BIN/wms" deploy status >"$OUT/deploy/status.txt" 2>>"$OUT/deploy/wms-deploy.log"
cat "$OUT/deploy/status.txt"
stop_all
wait "$STANDIN_PID" 2>/dev/null || true
wait "$SERVE_PID" 2>/dev/null || true
trap - EXIT
unset KUBECONFIG
echo "$(wc -l <"$WMS_TIMING_DIR/automated.jsonl") timing records from those commands → $WMS_TIMING_DIR/"
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
# Only records the demo itself wrote count; a task with none shows "no data", never a guess. The
# automated figures are wms deploy against the local stand-in above (simulated pods that are
# ready in 300 ms), so they measure wms, not a cluster; no manual run was recorded here.
"$BIN/wms" compare report --records "$WMS_TIMING_DIR" --out "$OUT/comparison.md" >/dev/null
sed -n '/^## Summary/,/^## Per task/p' "$OUT/comparison.md" | sed '$d'
echo "(automated: wms deploy against the local stand-in, not a cluster; its one error is v3's"
echo " deliberately crashing rollout. manual: no runs recorded in the demo, so no data.)"

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
  deploy/*.json        what each `wms deploy` task printed against the local Kubernetes API
                       stand-in (deploy/wms-deploy.log: their logs; status.txt: the final state)
  records/             the timing records those commands wrote (JSON Lines)
  comparison.md        manual vs automated figures from the demo's timing records (records/),
                       with comparison-durations.svg and comparison-human.svg
  report.md            the PR comment wms report would post (metrics, gate verdict, Mermaid curves,
                       image); report-curves.svg: the same curves as SVG
EOM
