#!/usr/bin/env bash
# `make bench-train`: training steps at 512×512, batch 4, of wms-train (tch, with its data pipeline
# on synthetic photos) and of the PyTorch eager reference, on this machine, one of each per round,
# who goes first alternating (bench/rounds.py), so a machine that slows down mid-run slows both
# sides of a round. Prints images/s medians with their spread and the number of rounds, the
# per-round ratio wms/PyTorch with its spread and the verdict (a spread that crosses the goal is
# not met); writes every round's raw JSON to bench-out/train.json (or $4).
# Usage: bench/train/run.sh RELEASE_DIR OUT_DIR [PYTHON] [JSON]
set -euo pipefail
release=$1
out=$2
python=${3:-python3}
json=${4:-$(dirname "$out")/train.json}
steps=${BENCH_STEPS:-20}
rounds=${BENCH_TRAIN_ROUNDS:-5}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
data="$out/data-512"
if [ ! -d "$data/images" ]; then
  "$release/wms" data synth --out "$data" --count 48 --size 512x512 --seed 1 >/dev/null
fi
: > "$out/wms.jsonl"
: > "$out/pytorch.jsonl"
ours() {
  "$release/wms-train" bench --data "$data" --steps "$steps" --batch-size 4 --input-size 512 \
    --device cpu >> "$out/wms.jsonl"
}
theirs() {
  "$python" "$here/reference.py" --steps "$steps" --batch-size 4 --input-size 512 >> "$out/pytorch.jsonl"
}
for ((r = 0; r < rounds; r++)); do
  if ((r % 2 == 0)); then ours; theirs; else theirs; ours; fi
  echo "  round $((r + 1)): wms $(tail -n1 "$out/wms.jsonl" | cut -c1-80)…" >&2
done
"$python" - "$out/wms.jsonl" "$out/pytorch.jsonl" "$json" "$here/.." <<'PY'
import json, sys
sys.path.insert(0, sys.argv[4])
import rounds as bench_rounds

ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
theirs = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
a = [o["images_per_second"] for o in ours]
b = [t["images_per_second"] for t in theirs]
ratios = [x / y for x, y in zip(a, b)]
print(f"bench-train: {ours[0]['threads']} threads; wms-train with its data pipeline (data share "
      f"{100 * max(o['data_share'] for o in ours):.1f} % at most), PyTorch eager on tensors in memory; "
      "images/s, higher is better; ratio = wms / PyTorch")
summary = bench_rounds.summarize("wms-train vs PyTorch eager", "images/s", a, b, ratios, 1.3,
                                 fmt="{:.3f}")
bench_rounds.write_json(sys.argv[3], {
    "benchmark": "bench-train",
    "unit": "images/s (higher is better); ratio = wms / PyTorch per round",
    "first_in_round": [bench_rounds.order(i, ("wms", "pytorch"))[0] for i in range(len(ratios))],
    "wms": ours, "pytorch": theirs, "ratios": ratios, "summary": summary,
    "load_average_after": bench_rounds.load_average(),
})
PY
