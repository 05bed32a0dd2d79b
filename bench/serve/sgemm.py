"""The machine's SGEMM rate for `make bench-serve`'s compute-floor figure: the best of several
n×n float32 matrix products in PyTorch (MKL), with the given number of threads. Prints JSON.

Usage: sgemm.py THREADS [--n 2048] [--repeats 7]
"""

import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", type=int)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = torch.rand(a.n, a.n), torch.rand(a.n, a.n)
    torch.mm(x, y)  # first call: MKL's own lazy setup
    best = float("inf")
    for _ in range(a.repeats):
        t = time.perf_counter()
        torch.mm(x, y)
        best = min(best, time.perf_counter() - t)
    gflops = 2 * a.n**3 / best / 1e9
    print(json.dumps({"threads": a.threads, "n": a.n, "best_s": best, "gflop_per_s": gflops}))


if __name__ == "__main__":
    main()
