"""The machine's SGEMM rate for `make bench-serve`'s compute-floor figure: n×n float32 matrix
products in PyTorch (MKL) with the given number of threads, repeated; prints the rate of the
mean and of the fastest product as JSON. The mean is what the model's compute (a mean over the
single-client requests) is compared with; the fastest is printed alongside.

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
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = torch.rand(a.n, a.n), torch.rand(a.n, a.n)
    torch.mm(x, y)  # first call: MKL's own lazy setup
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        torch.mm(x, y)
        times.append(time.perf_counter() - t)
    flop = 2 * a.n**3
    best, mean = min(times), sum(times) / len(times)
    print(json.dumps({"threads": a.threads, "n": a.n, "repeats": a.repeats, "best_s": best, "mean_s": mean,
                      "gflop_per_s": flop / mean / 1e9, "best_gflop_per_s": flop / best / 1e9}))


if __name__ == "__main__":
    main()
