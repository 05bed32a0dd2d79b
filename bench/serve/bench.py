"""`make bench-serve` driver: starts wms-serve with the fp32 model, wms-serve with the int8 model
(when --model-int8 is given) and the PyTorch reference server on loopback and measures them with
the same client (load.py) on one 640x480 JPEG: cold start (process start -> first successful
prediction, each alone on the machine), then single-client p50/p95 latency and requests/s at
concurrency 8 in alternating rounds, then each wms-serve's forward pass against the SGEMM floor,
also alternating; peak resident memory of every server idle (after its cold start), after the
serial requests and under concurrency 8. Prints all sides and the ratios; writes OUT/serve.json.
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


def rss(pid):
    """(VmRSS, VmHWM) in MB of a process and its children (uvicorn workers, if any)."""
    def one(p):
        out = {}
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM"):
                        out[k] = int(v.split()[0]) / 1024
        except OSError:
            pass
        return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    vals = [one(p) for p in pids]
    return sum(v[0] for v in vals), sum(v[1] for v in vals)


def interleaved_compute(url, body, sgemm_cmd, n, rounds, per_round):
    """The model's forward pass for one image (wms-serve's `Server-Timing: compute`, single
    client, so a batch of one on the all-threads session) against the SGEMM floor, measured in
    alternating rounds: this shared 2-vCPU VM drifts by 10-30 % within a minute, more than the
    gap being measured, so the two must see the same stretch of it. `url` may be a dict
    {name: url}: every server then takes its turn in each round, and each gets its own figures
    against the same floor."""
    if isinstance(url, dict):
        return interleaved_compute_many(url, body, sgemm_cmd, n, rounds, per_round)
    return interleaved_compute_many({"_": url}, body, sgemm_cmd, n, rounds, per_round)["_"]


def interleaved_compute_many(urls, body, sgemm_cmd, n, rounds, per_round):
    sg = subprocess.Popen(sgemm_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if sg.stdout.readline().strip() != "ready":
            raise SystemExit(f"sgemm helper did not start: {' '.join(sgemm_cmd)}")
        clients = {k: load.Client(u) for k, u in urls.items()}
        for c in clients.values():
            c.post(body)
        compute = {k: [] for k in urls}
        floor_ms = []
        for r in range(rounds):
            names = list(urls) if r % 2 == 0 else list(urls)[::-1]
            for k in names:
                for _ in range(per_round):
                    status, headers = clients[k].exchange(body)
                    ms = load.server_timing(headers, "compute")
                    if status != 200 or ms is None:
                        raise SystemExit(f"wms-serve answered {status} without a Server-Timing compute entry")
                    compute[k].append(ms)
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
    return {k: {"rounds": rounds, "per_round": per_round, "sgemm_n": n,
                "compute_median_ms": median(compute_ms), "compute_mean_ms": sum(compute_ms) / len(compute_ms),
                "floor_median_ms": median(floor_ms), "floor_mean_ms": sum(floor_ms) / len(floor_ms),
                "sgemm_median_gflop_per_s": MODEL_GFLOP / median(floor_ms) * 1e3,
                "sgemm_best_gflop_per_s": MODEL_GFLOP / min(floor_ms) * 1e3,
                "ratio_of_medians": median(compute_ms) / median(floor_ms),
                "ratio_of_means": (sum(compute_ms) / len(compute_ms)) / (sum(floor_ms) / len(floor_ms)),
                "compute_ms": compute_ms, "floor_ms": floor_ms}
            for k, compute_ms in compute.items()}


def settle():
    """Lets the side that just ran go idle (ONNX Runtime's and OpenMP's threads spin briefly
    after work) before the other side is timed."""
    time.sleep(0.2)


def interleaved(sides, body, requests, window, rounds, pids=None):
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
    memory = {n: {} for n in names}
    for n in names:
        if pids and n in pids:
            memory[n]["after_serial_peak_mb"] = rss(pids[n])[1]
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
        if pids and n in pids:
            memory[n]["concurrency8_peak_mb"] = rss(pids[n])[1]
        out[n] = {"latency": load.latency_summary(*lat[n]), "throughput": t, "memory": memory[n]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wms-serve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-int8", help="the int8 export of --model: served by a second wms-serve")
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

    def wms_server(model):
        pi, pm, px = free_port(), free_port(), free_port()
        cmd = [a.wms_serve, "--model", model,
               "--inference-address", f"http://127.0.0.1:{pi}",
               "--management-address", f"http://127.0.0.1:{pm}",
               "--metrics-address", f"http://127.0.0.1:{px}",
               "--batch-size", a.batch_size, "--max-batch-delay", a.max_batch_delay]

        # `?size=model`: the mask at the network's size, as the reference answers, so both sides
        # do the same work (wms-serve's default is the photo's size).
        def url():
            models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{pm}/models"))
            return f"http://127.0.0.1:{pi}/predictions/{models['models'][0]['modelName']}?size=model"
        return cmd, f"http://127.0.0.1:{pi}/predict?size=model", url

    wms_cmd, wms_predict, wms_url = wms_server(a.model)
    if a.model_int8:
        int8_cmd, int8_predict, int8_url = wms_server(a.model_int8)

    # The compute floor: the model's 28.0 GFLOPs (DESIGN §5, 512x512, b=16) at the machine's
    # measured SGEMM rate, with as many threads as wms-serve uses (all cores).
    threads = os.cpu_count()
    sgemm_cmd = [a.ref_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sgemm.py"),
                 str(threads), "--n", "2048", "--serve"]

    pr = free_port()
    ref_cmd = [a.ref_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_server.py"),
               "serve", "--weights", a.weights, "--port", str(pr)]
    ref_url = f"http://127.0.0.1:{pr}/predictions/model"

    # Cold starts one at a time, each on an otherwise idle machine; then all stay up (an idle
    # one costs memory, not CPU) for the interleaved measurements.
    procs = {}
    results = {}
    try:
        with open(os.path.join(a.out, "wms-serve.log"), "w") as wlog, \
                open(os.path.join(a.out, "wms-serve-int8.log"), "w") as qlog, \
                open(os.path.join(a.out, "reference.log"), "w") as rlog:
            print("== cold start: wms-serve (ONNX Runtime, fp32)", flush=True)
            procs["wms"], results["wms"] = load.coldstart(wms_predict, body, wms_cmd, wlog)
            if a.model_int8:
                print("== cold start: wms-serve (ONNX Runtime, int8)", flush=True)
                procs["int8"], results["int8"] = load.coldstart(int8_predict, body, int8_cmd, qlog)
            print("== cold start: reference (PyTorch eager)", flush=True)
            procs["ref"], results["ref"] = load.coldstart(ref_url, body, ref_cmd, rlog)
            time.sleep(1.0)
            for n, proc in procs.items():
                results[n]["idle_rss_mb"] = rss(proc.pid)[0]
            sides = {"wms": wms_url(), "ref": ref_url}
            if a.model_int8:
                sides["int8"] = int8_url()
            print(f"== latency and throughput, {a.rounds} alternating rounds", flush=True)
            both = interleaved(sides, body, a.requests, a.seconds, a.rounds,
                               pids={n: p.pid for n, p in procs.items()})
            for n in sides:
                results[n].update(both[n])
            print(f"== model compute vs SGEMM floor, {a.compute_rounds} alternating rounds", flush=True)
            wms_sides = {n: u for n, u in sides.items() if n != "ref"}
            compute = interleaved_compute(wms_sides, body, sgemm_cmd, 2048, a.compute_rounds, 4)
            for n, c in compute.items():
                results[n]["compute_vs_floor"] = c
    finally:
        for proc in procs.values():
            stop(proc)
    ours, theirs, int8 = results["wms"], results["ref"], results.get("int8")
    print(json.dumps({"wms_serve": ours, "wms_serve_int8": int8, "reference": theirs}), flush=True)
    with open(os.path.join(a.out, "reference.log")) as f:
        ref_kind = next((l.strip() for l in f if l.startswith("reference:")), "reference: ?")

    cf = ours["compute_vs_floor"]
    print(f"SGEMM ({threads} threads, n=2048, {len(cf['floor_ms'])} products interleaved with the model's): "
          f"{cf['sgemm_median_gflop_per_s']:.1f} GFLOP/s median, {cf['sgemm_best_gflop_per_s']:.1f} fastest "
          f"-> floor {cf['floor_median_ms']:.1f} ms for {MODEL_GFLOP} GFLOPs", flush=True)

    result = {"wms_serve": ours, "wms_serve_int8": int8, "compute_floor_ms": cf["floor_median_ms"],
              "reference": theirs, "reference_kind": ref_kind,
              "photo": "640x480 JPEG", "cpus": os.cpu_count(),
              "wms_serve_batching": {"batch_size": a.batch_size, "max_batch_delay_ms": a.max_batch_delay}}
    with open(os.path.join(a.out, "serve.json"), "w") as f:
        json.dump(result, f, indent=2)

    o, t = ours, theirs
    print()
    print(f"{'':30}{'wms fp32':>10}{'wms int8':>10}{'reference':>11}{'fp32/ref':>9}{'int8/ref':>9}{'int8/fp32':>10}")

    def row(label, x, q, y):
        qs = f"{q:10.2f}" if q is not None else f"{'-':>10}"
        r1 = f"{x / y:8.2f}x" if y else f"{'-':>9}"
        r2 = f"{q / y:8.2f}x" if q is not None and y else f"{'-':>9}"
        r3 = f"{q / x:9.2f}x" if q is not None and x else f"{'-':>10}"
        ys = f"{y:11.2f}" if y is not None else f"{'-':>11}"
        print(f"{label:30}{x:10.2f}{qs}{ys}{r1}{r2}{r3}")

    g = (lambda *k: _dig(int8, *k)) if int8 else (lambda *k: None)
    row("p50 latency, 1 client (ms)", o["latency"]["p50_ms"], g("latency", "p50_ms"), t["latency"]["p50_ms"])
    row("p95 latency, 1 client (ms)", o["latency"]["p95_ms"], g("latency", "p95_ms"), t["latency"]["p95_ms"])
    row("requests/s, concurrency 8", o["throughput"]["requests_per_second"],
        g("throughput", "requests_per_second"), t["throughput"]["requests_per_second"])
    row("p50 latency, concurrency 8", o["throughput"]["p50_ms"], g("throughput", "p50_ms"), t["throughput"]["p50_ms"])
    row("cold start (s)", o["cold_start_s"], g("cold_start_s"), t["cold_start_s"])
    row("compute, 1 image (ms, median)", cf["compute_median_ms"], g("compute_vs_floor", "compute_median_ms"), None)
    row("RSS idle (MB)", o["idle_rss_mb"], g("idle_rss_mb"), t["idle_rss_mb"])
    row("peak RSS after serial (MB)", o["memory"]["after_serial_peak_mb"], g("memory", "after_serial_peak_mb"),
        t["memory"]["after_serial_peak_mb"])
    row("peak RSS, concurrency 8 (MB)", o["memory"]["concurrency8_peak_mb"], g("memory", "concurrency8_peak_mb"),
        t["memory"]["concurrency8_peak_mb"])
    print(f"model compute, 512x512, 1 image, {cf['rounds']} rounds of {cf['per_round']} forward passes and "
          f"{cf['per_round']} SGEMMs: median {cf['compute_median_ms']:.1f} ms vs floor {cf['floor_median_ms']:.1f} ms "
          f"= {cf['ratio_of_medians']:.2f}x (means: {cf['compute_mean_ms']:.1f} vs {cf['floor_mean_ms']:.1f} ms "
          f"= {cf['ratio_of_means']:.2f}x) (goal <= 1.3x)")
    if int8:
        qf = int8["compute_vs_floor"]
        print(f"int8 model compute: median {qf['compute_median_ms']:.1f} ms = "
              f"{qf['compute_median_ms'] / cf['compute_median_ms']:.2f}x fp32 (goal <= 0.5x); "
              f"int8 throughput {int8['throughput']['requests_per_second'] / t['throughput']['requests_per_second']:.2f}x "
              f"the reference (goal >= 3x); peak RSS under concurrency 8 {int8['memory']['concurrency8_peak_mb']:.0f} MB "
              f"int8, {o['memory']['concurrency8_peak_mb']:.0f} MB fp32 (goal <= 300 MB)")
    errors = {n: r["latency"]["errors"] + r["throughput"]["errors"] for n, r in results.items()}
    print(f"errors: {errors}; {ref_kind}")


def _dig(d, *keys):
    for k in keys:
        d = d[k]
    return d


if __name__ == "__main__":
    main()
