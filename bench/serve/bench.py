"""`make bench-serve` driver: starts wms-serve and the PyTorch reference server one after the
other on loopback, measures with the same client (load.py) cold start (process start -> first
successful prediction), single-client p50/p95 latency and requests/s at concurrency 8 for one
640x480 JPEG, prints both and the ratios, and writes them to OUT/serve.json.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402


MODEL_GFLOP = 28.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def compute_totals(metrics_url):
    """(sum of seconds, runs) of wms-serve's `wms_inference_compute_seconds` histogram."""
    text = urllib.request.urlopen(metrics_url).read().decode()
    total, runs = 0.0, 0
    for line in text.splitlines():
        if line.startswith("wms_inference_compute_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("wms_inference_compute_seconds_count"):
            runs += int(float(line.split()[-1]))
    return total, runs


def measure(name, cmd, cold_url, url_of, body, log, requests, seconds, metrics_url=None):
    print(f"== {name}", flush=True)
    proc, cold = load.coldstart(cold_url, body, cmd, log)
    try:
        url = url_of()
        before = compute_totals(metrics_url) if metrics_url else None
        lat = load.latency(url, body, requests)
        if metrics_url:
            # Every single-client request is a batch of one on the all-threads session.
            after = compute_totals(metrics_url)
            lat["model_compute_ms"] = 1e3 * (after[0] - before[0]) / max(1, after[1] - before[1])
        thr = load.throughput(url, body, 8, seconds)
    finally:
        stop(proc)
    out = {**cold, "latency": lat, "throughput": thr}
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wms-serve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--photo", required=True)
    ap.add_argument("--ref-python", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--requests", type=int, default=int(os.environ.get("BENCH_REQUESTS", 40)))
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 20)))
    ap.add_argument("--batch-size", default=os.environ.get("BENCH_BATCH_SIZE", "4"))
    ap.add_argument("--max-batch-delay", default=os.environ.get("BENCH_MAX_BATCH_DELAY", "5"))
    a = ap.parse_args()
    body = open(a.photo, "rb").read()
    os.makedirs(a.out, exist_ok=True)

    pi, pm, px = free_port(), free_port(), free_port()
    wms_cmd = [a.wms_serve, "--model", a.model,
               "--inference-address", f"http://127.0.0.1:{pi}",
               "--management-address", f"http://127.0.0.1:{pm}",
               "--metrics-address", f"http://127.0.0.1:{px}",
               "--batch-size", a.batch_size, "--max-batch-delay", a.max_batch_delay]

    def wms_url():
        models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{pm}/models"))
        return f"http://127.0.0.1:{pi}/predictions/{models['models'][0]['modelName']}"

    with open(os.path.join(a.out, "wms-serve.log"), "w") as log:
        ours = measure("wms-serve (ONNX Runtime)", wms_cmd, f"http://127.0.0.1:{pi}/predict",
                       wms_url, body, log, a.requests, a.seconds,
                       metrics_url=f"http://127.0.0.1:{px}/metrics")

    pr = free_port()
    ref_cmd = [a.ref_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_server.py"),
               "serve", "--weights", a.weights, "--port", str(pr)]
    ref_url = f"http://127.0.0.1:{pr}/predictions/model"
    with open(os.path.join(a.out, "reference.log"), "w") as log:
        theirs = measure("reference (PyTorch eager)", ref_cmd, ref_url, lambda: ref_url, body, log,
                         a.requests, a.seconds)
    with open(os.path.join(a.out, "reference.log")) as f:
        ref_kind = next((l.strip() for l in f if l.startswith("reference:")), "reference: ?")

    # The compute floor: the model's 28.0 GFLOPs (DESIGN §5, 512x512, b=16) at the machine's
    # measured SGEMM rate, with as many threads as wms-serve uses (all cores).
    threads = os.cpu_count()
    sgemm = json.loads(subprocess.run([a.ref_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sgemm.py"),
                                       str(threads)], check=True, capture_output=True, text=True).stdout)
    floor_ms = MODEL_GFLOP / sgemm["gflop_per_s"] * 1e3
    print(f"SGEMM: {sgemm['gflop_per_s']:.1f} GFLOP/s mean, {sgemm['best_gflop_per_s']:.1f} fastest "
          f"({threads} threads, n={sgemm['n']}, {sgemm['repeats']} products) -> floor {floor_ms:.1f} ms "
          f"for {MODEL_GFLOP} GFLOPs", flush=True)

    result = {"wms_serve": ours, "sgemm": sgemm, "compute_floor_ms": floor_ms, "reference": theirs, "reference_kind": ref_kind,
              "photo": "640x480 JPEG", "cpus": os.cpu_count(),
              "wms_serve_batching": {"batch_size": a.batch_size, "max_batch_delay_ms": a.max_batch_delay}}
    with open(os.path.join(a.out, "serve.json"), "w") as f:
        json.dump(result, f, indent=2)

    o, t = ours, theirs
    print()
    print(f"{'':28}{'wms-serve':>12}{'reference':>12}{'ratio':>9}")
    rows = [("p50 latency, 1 client (ms)", o["latency"]["p50_ms"], t["latency"]["p50_ms"]),
            ("p95 latency, 1 client (ms)", o["latency"]["p95_ms"], t["latency"]["p95_ms"]),
            ("requests/s, concurrency 8", o["throughput"]["requests_per_second"], t["throughput"]["requests_per_second"]),
            ("cold start (s)", o["cold_start_s"], t["cold_start_s"])]
    for label, x, y in rows:
        print(f"{label:28}{x:12.2f}{y:12.2f}{x / y:8.2f}x")
    compute = o["latency"]["model_compute_ms"]
    print(f"model compute, 512x512, 1 image (mean of {o['latency']['requests']} requests): {compute:.1f} ms "
          f"vs SGEMM floor {floor_ms:.1f} ms = {compute / floor_ms:.2f}x (goal <= 1.3x)")
    print(f"errors: wms-serve {o['latency']['errors'] + o['throughput']['errors']}, "
          f"reference {t['latency']['errors'] + t['throughput']['errors']}; {ref_kind}")


if __name__ == "__main__":
    main()
