"""`make bench-serve` driver: starts wms-serve and the PyTorch reference server on loopback and
measures both with the same client (load.py) on one 640x480 JPEG: cold start (process start ->
first successful prediction, each alone on the machine), then single-client p50/p95 latency and
requests/s at concurrency 8 in alternating rounds, then wms-serve's forward pass against the
SGEMM floor, also alternating. Prints both sides and the ratios; writes OUT/serve.json.
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


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def interleaved_compute(url, body, sgemm_cmd, n, rounds, per_round):
    """The model's forward pass for one image (wms-serve's `Server-Timing: compute`, single
    client, so a batch of one on the all-threads session) against the SGEMM floor, measured in
    alternating rounds: this shared 2-vCPU VM drifts by 10-30 % within a minute, more than the
    gap being measured, so the two must see the same stretch of it."""
    sg = subprocess.Popen(sgemm_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if sg.stdout.readline().strip() != "ready":
            raise SystemExit(f"sgemm helper did not start: {' '.join(sgemm_cmd)}")
        client = load.Client(url)
        client.post(body)
        compute_ms, floor_ms = [], []
        for _ in range(rounds):
            for _ in range(per_round):
                status, headers = client.exchange(body)
                ms = load.server_timing(headers, "compute")
                if status != 200 or ms is None:
                    raise SystemExit(f"wms-serve answered {status} without a Server-Timing compute entry")
                compute_ms.append(ms)
            time.sleep(0.05)  # let each side's spinning threads go idle before the other runs
            sg.stdin.write(f"{per_round}\n")
            sg.stdin.flush()
            for seconds in json.loads(sg.stdout.readline()):
                # 28 GFLOPs at this product's rate (2 n^3 FLOPs in `seconds`).
                floor_ms.append(MODEL_GFLOP * 1e9 * seconds / (2 * n**3) * 1e3)
            time.sleep(0.05)
    finally:
        if sg.stdin:
            sg.stdin.close()
        sg.wait()
    return {"rounds": rounds, "per_round": per_round, "sgemm_n": n,
            "compute_median_ms": median(compute_ms), "compute_mean_ms": sum(compute_ms) / len(compute_ms),
            "floor_median_ms": median(floor_ms), "floor_mean_ms": sum(floor_ms) / len(floor_ms),
            "sgemm_median_gflop_per_s": MODEL_GFLOP / median(floor_ms) * 1e3,
            "sgemm_best_gflop_per_s": MODEL_GFLOP / min(floor_ms) * 1e3,
            "ratio_of_medians": median(compute_ms) / median(floor_ms),
            "ratio_of_means": (sum(compute_ms) / len(compute_ms)) / (sum(floor_ms) / len(floor_ms)),
            "compute_ms": compute_ms, "floor_ms": floor_ms}


def settle():
    """Lets the side that just ran go idle (ONNX Runtime's and OpenMP's threads spin briefly
    after work) before the other side is timed."""
    time.sleep(0.2)


def interleaved(sides, body, requests, window, rounds):
    """Single-client latency (`requests` in all), then requests/s at concurrency 8 (`window`
    seconds a round), for every server in `sides` ({name: url}), in alternating rounds (who goes first alternates too): this shared VM's
    speed drifts by 10-30 % within a minute, so each side gets slices of the same stretch."""
    names = list(sides)
    lat = {n: ([], 0) for n in names}
    for n in names:  # warm each connection and server once, untimed
        load.latency_samples(sides[n], body, 0)
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            ms, errors = load.latency_samples(sides[n], body, max(1, requests // rounds), warm=0)
            lat[n] = (lat[n][0] + ms, lat[n][1] + errors)
            settle()
    thr = {n: {"concurrency": 8, "seconds": 0.0, "ok": 0, "errors": 0, "ms": []} for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            t = load.throughput(sides[n], body, 8, window)
            for k in ("seconds", "ok", "errors", "ms"):
                thr[n][k] += t[k]
            settle()
    out = {}
    for n in names:
        t = thr[n]
        ms = sorted(t.pop("ms"))
        t.update(requests_per_second=t["ok"] / t["seconds"], p50_ms=load.pct(ms, 50), p95_ms=load.pct(ms, 95),
                 windows=rounds)
        out[n] = {"latency": load.latency_summary(*lat[n]), "throughput": t}
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
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 8)),
                    help="requests/s window per server per round")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 4)))
    ap.add_argument("--compute-rounds", type=int, default=int(os.environ.get("BENCH_COMPUTE_ROUNDS", 10)))
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

    # The compute floor: the model's 28.0 GFLOPs (DESIGN §5, 512x512, b=16) at the machine's
    # measured SGEMM rate, with as many threads as wms-serve uses (all cores).
    threads = os.cpu_count()
    sgemm_cmd = [a.ref_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sgemm.py"),
                 str(threads), "--n", "2048", "--serve"]

    def compute(url):
        return interleaved_compute(url, body, sgemm_cmd, 2048, a.compute_rounds, 4)

    pr = free_port()
    ref_cmd = [a.ref_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_server.py"),
               "serve", "--weights", a.weights, "--port", str(pr)]
    ref_url = f"http://127.0.0.1:{pr}/predictions/model"

    # Cold starts one at a time, each on an otherwise idle machine; then both stay up (the idle
    # one costs memory, not CPU) for the interleaved measurements.
    procs = []
    try:
        with open(os.path.join(a.out, "wms-serve.log"), "w") as wlog, \
                open(os.path.join(a.out, "reference.log"), "w") as rlog:
            print("== cold start: wms-serve (ONNX Runtime)", flush=True)
            proc, ours = load.coldstart(f"http://127.0.0.1:{pi}/predict", body, wms_cmd, wlog)
            procs.append(proc)
            print("== cold start: reference (PyTorch eager)", flush=True)
            proc, theirs = load.coldstart(ref_url, body, ref_cmd, rlog)
            procs.append(proc)
            print(f"== latency and throughput, {a.rounds} alternating rounds", flush=True)
            both = interleaved({"wms": wms_url(), "ref": ref_url}, body, a.requests, a.seconds, a.rounds)
            ours.update(both["wms"])
            theirs.update(both["ref"])
            print(f"== model compute vs SGEMM floor, {a.compute_rounds} alternating rounds", flush=True)
            ours["compute_vs_floor"] = compute(wms_url())
    finally:
        for proc in procs:
            stop(proc)
    print(json.dumps({"wms_serve": ours, "reference": theirs}), flush=True)
    with open(os.path.join(a.out, "reference.log")) as f:
        ref_kind = next((l.strip() for l in f if l.startswith("reference:")), "reference: ?")

    cf = ours["compute_vs_floor"]
    print(f"SGEMM ({threads} threads, n=2048, {len(cf['floor_ms'])} products interleaved with the model's): "
          f"{cf['sgemm_median_gflop_per_s']:.1f} GFLOP/s median, {cf['sgemm_best_gflop_per_s']:.1f} fastest "
          f"-> floor {cf['floor_median_ms']:.1f} ms for {MODEL_GFLOP} GFLOPs", flush=True)

    result = {"wms_serve": ours, "compute_floor_ms": cf["floor_median_ms"], "reference": theirs, "reference_kind": ref_kind,
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
    print(f"model compute, 512x512, 1 image, {cf['rounds']} rounds of {cf['per_round']} forward passes and "
          f"{cf['per_round']} SGEMMs: median {cf['compute_median_ms']:.1f} ms vs floor {cf['floor_median_ms']:.1f} ms "
          f"= {cf['ratio_of_medians']:.2f}x (means: {cf['compute_mean_ms']:.1f} vs {cf['floor_mean_ms']:.1f} ms "
          f"= {cf['ratio_of_means']:.2f}x) (goal <= 1.3x)")
    print(f"errors: wms-serve {o['latency']['errors'] + o['throughput']['errors']}, "
          f"reference {t['latency']['errors'] + t['throughput']['errors']}; {ref_kind}")


if __name__ == "__main__":
    main()
