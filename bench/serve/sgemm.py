"""The machine's SGEMM rate for `make bench-serve`'s compute-floor figure: n×n float32 matrix
products in PyTorch (MKL) with the given number of threads. Alone it prints the rate of the
mean and of the fastest product as JSON; with --serve it answers batches of products on demand,
so bench.py can alternate them with the model's forward passes and compare the two on the same
stretch of a machine whose speed drifts.

Usage: sgemm.py THREADS [--n 2048] [--repeats 20]
       sgemm.py THREADS --serve    one line "K" on stdin -> K products, their seconds as a JSON
                                    list on stdout; for measurements interleaved with another's
"""

import argparse
import json
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", type=int)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = torch.rand(a.n, a.n), torch.rand(a.n, a.n)
    torch.mm(x, y)  # first call: MKL's own lazy setup

    def products(k):
        times = []
        for _ in range(k):
            t = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - t)
        return times

    if a.serve:
        print("ready", flush=True)
        for line in sys.stdin:
            print(json.dumps(products(int(line))), flush=True)
        return
    times = products(a.repeats)
    flop = 2 * a.n**3
    best, mean = min(times), sum(times) / len(times)
    print(json.dumps({"threads": a.threads, "n": a.n, "repeats": a.repeats, "best_s": best, "mean_s": mean,
                      "gflop_per_s": flop / mean / 1e9, "best_gflop_per_s": flop / best / 1e9}))


if __name__ == "__main__":
    main()
