"""Serving memory settings side by side (issue 18): starts wms-serve once per setting on one
model, waits for /ping, sends serial requests, then drives concurrency 8, and prints resident
memory (idle, peak after serial, peak under concurrency 8) with the requests/s of that window.
Settings run one after another in the order given; run it several times with the order
reversed to see the spread (this VM drifts by 10-30 % within a minute).

Usage:
  memory_ab.py WMS_SERVE PHOTO.jpg SETTINGS_JSON [--seconds S] [--requests N]
SETTINGS_JSON: [[label, model.onnx, {ENV: value, ...}], ...], e.g.
  '[["int8", "m8.onnx", {}], ["int8 shared arena", "m8.onnx", {"WMS_SERVE_ORT_SHARED_ARENA": "1"}]]'
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402
from bench import free_port, rss, stop  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wms_serve")
    ap.add_argument("photo")
    ap.add_argument("settings")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=20)
    a = ap.parse_args()
    body = open(a.photo, "rb").read()
    for label, model, extra in json.loads(a.settings):
        pi, pm, px = free_port(), free_port(), free_port()
        cmd = [a.wms_serve, "--model", model,
               "--inference-address", f"http://127.0.0.1:{pi}",
               "--management-address", f"http://127.0.0.1:{pm}",
               "--metrics-address", f"http://127.0.0.1:{px}",
               "--batch-size", "4", "--max-batch-delay", "5"]
        url = f"http://127.0.0.1:{pi}/predict?size=model"
        proc = subprocess.Popen(cmd, env=dict(os.environ, **extra),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{pi}/ping", timeout=5)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{label}: wms-serve did not become ready")
                    time.sleep(0.1)
            idle = rss(proc.pid)[0]
            ms, errors = load.latency_samples(url, body, a.requests, warm=1)
            serial = rss(proc.pid)[1]
            t = load.throughput(url, body, 8, a.seconds)
            peak = rss(proc.pid)[1]
            print(json.dumps({"label": label, "idle_mb": round(idle), "after_serial_peak_mb": round(serial),
                              "concurrency8_peak_mb": round(peak),
                              "requests_per_second": round(t["ok"] / t["seconds"], 2),
                              "serial_p50_ms": round(sorted(ms)[len(ms) // 2]),
                              "errors": errors + t["errors"]}), flush=True)
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
