"""The one load tool `make bench-serve` points at both servers: POSTs the same JPEG body over
keep-alive HTTP/1.1 connections (stdlib only, one thread per client) and reports latency
percentiles and throughput as JSON.

Usage:
  load.py latency URL FILE [--requests N]            one client, N sequential requests
  load.py throughput URL FILE [--concurrency C] [--seconds S]
  load.py coldstart URL FILE -- CMD...               spawn CMD, time until the first 200
"""

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse


class Client:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.conn = None

    def post(self, body):
        return self.exchange(body)[0]

    def exchange(self, body):
        """POSTs `body`; (status, response headers)."""
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                self.conn.request("POST", self.path, body=body, headers={"Content-Type": "image/jpeg"})
                r = self.conn.getresponse()
                r.read()
                return r.status, r.headers
            except (ConnectionError, http.client.HTTPException, OSError):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return 0, {}


def server_timing(headers, name):
    """The `dur` (ms) of entry `name` in a `Server-Timing` header, or None."""
    for entry in (headers.get("Server-Timing") or "").split(","):
        parts = [p.strip() for p in entry.split(";")]
        if parts[0] == name:
            for p in parts[1:]:
                if p.startswith("dur="):
                    return float(p[4:])
    return None


def pct(sorted_ms, q):
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * (len(sorted_ms) - 1))))
    return sorted_ms[i]


def latency_samples(url, body, n, warm=3):
    """(milliseconds of each of n sequential requests, errors) after `warm` untimed ones."""
    c = Client(url)
    for _ in range(warm):  # warm the connection and the server's caches
        c.post(body)
    ms, errors = [], 0
    for _ in range(n):
        t = time.perf_counter()
        status = c.post(body)
        ms.append((time.perf_counter() - t) * 1e3)
        errors += status != 200
    return ms, errors


def latency_summary(ms, errors):
    ms = sorted(ms)
    return {"requests": len(ms), "errors": errors, "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95),
            "mean_ms": sum(ms) / len(ms)}


def latency(url, body, n):
    return latency_summary(*latency_samples(url, body, n))


def throughput(url, body, concurrency, seconds):
    stop = time.perf_counter() + seconds
    counts, errors, ms = [0] * concurrency, [0] * concurrency, [[] for _ in range(concurrency)]

    def run(i):
        c = Client(url)
        c.post(body)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                ok = c.post(body) == 200
            except OSError:
                ok = False
            ms[i].append((time.perf_counter() - t) * 1e3)
            counts[i] += ok
            errors[i] += not ok

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    all_ms = sorted(x for m in ms for x in m)
    return {"concurrency": concurrency, "seconds": elapsed, "ok": sum(counts), "errors": sum(errors),
            "requests_per_second": sum(counts) / elapsed, "p50_ms": pct(all_ms, 50), "p95_ms": pct(all_ms, 95),
            "ms": all_ms}


def coldstart(url, body, cmd, log):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if Client(url).post(body) == 200:
                s = time.perf_counter() - t0
                return proc, {"cold_start_s": s}
        except OSError:
            pass
        time.sleep(0.005)
    proc.kill()
    raise SystemExit("server did not answer a prediction within 120 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "throughput"])
    ap.add_argument("url")
    ap.add_argument("file")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    body = open(a.file, "rb").read()
    if a.mode == "latency":
        out = latency(a.url, body, a.requests)
    else:
        out = throughput(a.url, body, a.concurrency, a.seconds)
        out.pop("ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
