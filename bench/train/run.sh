#!/usr/bin/env bash
# `make bench-train`: 20 training steps at 512×512, batch 4, of wms-train (tch, with its data
# pipeline on synthetic photos) and of the PyTorch eager reference, on this machine, one after the
# other; prints images/s for both and the ratio.
# Usage: bench/train/run.sh RELEASE_DIR OUT_DIR [PYTHON]
set -euo pipefail
release=$1
out=$2
python=${3:-python3}
steps=${BENCH_STEPS:-20}
mkdir -p "$out"
data="$out/data-512"
if [ ! -d "$data/images" ]; then
  "$release/wms" data synth --out "$data" --count 48 --size 512x512 --seed 1 >/dev/null
fi
ours=$("$release/wms-train" bench --data "$data" --steps "$steps" --batch-size 4 --input-size 512 --device cpu)
theirs=$("$python" "$(dirname "$0")/reference.py" --steps "$steps" --batch-size 4 --input-size 512)
echo "$ours" > "$out/wms.json"
echo "$theirs" > "$out/pytorch.json"
"$python" - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = (json.loads(a) for a in sys.argv[1:3])
print(f"wms-train (tch):  {ours['images_per_second']:.3f} images/s  (data share {100 * ours['data_share']:.1f} %, {ours['threads']} threads)")
print(f"PyTorch eager:    {theirs['images_per_second']:.3f} images/s  ({theirs['threads']} threads, tensors in memory)")
print(f"ratio wms/PyTorch: {ours['images_per_second'] / theirs['images_per_second']:.2f}x")
PY
