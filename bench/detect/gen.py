#!/usr/bin/env python3
"""Writes a `git fast-import` stream for the detect-changes benchmark repository.

50 000 files in 250 directories, then commits that each touch a few files, 10 000 commits in
all; the last one changes 200 files spread over many directories (the change being timed).
Deterministic: the same stream on every machine. Usage: gen.py | git fast-import --quiet
"""
import random
import sys

FILES = 50_000
COMMITS = 10_000
DIRS = 250
BIG_CHANGE = 200
PER_COMMIT = 4

rng = random.Random(5)
out = sys.stdout.buffer
paths = [f"src/m{i % DIRS:03d}/sub{(i // DIRS) % 4}/file_{i:05d}.txt" for i in range(FILES)]
mark = 0
when = 1_700_000_000


def blob(text: str) -> int:
    global mark
    mark += 1
    data = text.encode()
    out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
    out.write(data)
    out.write(b"\n")
    return mark


def commit(message: str, changes, parent_mark):
    global mark, when
    mark += 1
    when += 60
    msg = message.encode()
    out.write(b"commit refs/heads/main\nmark :%d\n" % mark)
    out.write(b"author Bench <bench@example.com> %d +0000\n" % when)
    out.write(b"committer Bench <bench@example.com> %d +0000\n" % when)
    out.write(b"data %d\n" % len(msg) + msg + b"\n")
    if parent_mark is not None:
        out.write(b"from :%d\n" % parent_mark)
    for path, m in changes:
        out.write(b"M 100644 :%d %s\n" % (m, path.encode()))
    out.write(b"\n")
    return mark


marks = [blob(f"{p}\nversion 0\n" + "x" * (i % 200) + "\n") for i, p in enumerate(paths)]
head = commit("initial: 50000 files", list(zip(paths, marks)), None)
for n in range(1, COMMITS - 1):
    picked = rng.sample(range(FILES), PER_COMMIT)
    changes = [(paths[i], blob(f"{paths[i]}\nversion {n}\n")) for i in picked]
    head = commit(f"change {n}", changes, head)
base = head
picked = rng.sample(range(FILES), BIG_CHANGE)
changes = [(paths[i], blob(f"{paths[i]}\nbig change\n")) for i in sorted(picked)]
head = commit("the 200-file change", changes, head)
out.write(b"reset refs/tags/bench-base\nfrom :%d\n\n" % base)
out.write(b"reset refs/tags/bench-head\nfrom :%d\n\n" % head)
