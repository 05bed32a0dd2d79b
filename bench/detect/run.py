#!/usr/bin/env python3
"""Times `wms detect-changes --base B --head H --format json` against `git diff --name-only B H`
on the benchmark repository (see gen.py), median of several runs each, interleaved so both see
the same machine state. Prints both medians and the ratio (goal: ≤ 1.2×).

Usage: run.py WMS_BINARY REPO [RUNS]
"""
import json
import os
import statistics
import subprocess
import sys
import time

wms, repo = os.path.abspath(sys.argv[1]), sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 21
env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
env["GIT_CONFIG_NOSYSTEM"] = "1"
base, head = "bench-base", "bench-head"
wms_cmd = [wms, "detect-changes", "--base", base, "--head", head, "--format", "json"]
git_cmd = ["git", "diff", "--name-only", base, head]


def once(cmd):
    start = time.perf_counter()
    p = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {p.stderr.decode()}")
    return took, p.stdout


# Warm the page cache, and check both agree before timing anything.
_, wms_out = once(wms_cmd)
_, git_out = once(git_cmd)
ours = sorted(f["path"] for f in json.loads(wms_out)["files"])
theirs = sorted(git_out.decode().split())
if ours != theirs:
    sys.exit(f"wms and git disagree: {len(ours)} vs {len(theirs)} files")

wms_times, git_times = [], []
for _ in range(runs):
    wms_times.append(once(wms_cmd)[0])
    git_times.append(once(git_cmd)[0])
w, g = statistics.median(wms_times), statistics.median(git_times)
print(f"detect-changes benchmark: {len(ours)} changed files, median of {runs} runs")
print(f"  wms detect-changes --format json : {w * 1000:8.1f} ms")
print(f"  git diff --name-only             : {g * 1000:8.1f} ms")
print(f"  ratio wms/git                    : {w / g:8.2f}x  (goal <= 1.2x)")
