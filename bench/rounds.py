"""Alternating-round statistics shared by `make bench-data` and `make bench-train`.

Both benchmarks run the two sides (wms and the reference) once per round, in alternating order,
so that a machine whose speed drifts during the run (a shared 2-core VM, other builds) slows both
sides of a round alike. Each round gives one paired ratio; the verdict is taken on the spread of
those ratios, not on one median: a goal counts as met only when every round met it, and a ratio
whose spread crosses the goal is reported as not met. Nothing here assumes a figure.
"""

import json
import os
import statistics
import time


def order(round_index, sides):
    """The two sides in the order round `round_index` runs them (who goes first alternates)."""
    return tuple(sides) if round_index % 2 == 0 else tuple(reversed(sides))


def spread(xs):
    """Median, min and max of `xs`."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def verdict(ratios, goal, higher_is_better=True):
    """'met' when every round's ratio meets `goal`; otherwise 'not met', saying whether the
    spread crosses the goal or lies wholly on the wrong side."""
    ok = [(r >= goal) if higher_is_better else (r <= goal) for r in ratios]
    if all(ok):
        return "met"
    if any(ok):
        return "not met (the spread crosses the goal)"
    return "not met"


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def summarize(name, unit, ours, theirs, ratios, goal, higher_is_better=True, fmt="{:.2f}"):
    """Prints the medians with their spread and the number of rounds, the paired ratio with its
    spread, and the verdict; returns the same as a dict for the JSON file."""
    s_ours, s_theirs, s_ratio = spread(ours), spread(theirs), spread(ratios)
    v = verdict(ratios, goal, higher_is_better)
    f = fmt.format
    rounds = len(ratios)
    print(f"{name}: {rounds} alternating rounds (median, min-max)")
    print(f"  wms       : {f(s_ours['median'])} {unit} ({f(s_ours['min'])}-{f(s_ours['max'])})")
    print(f"  reference : {f(s_theirs['median'])} {unit} ({f(s_theirs['min'])}-{f(s_theirs['max'])})")
    sign = ">=" if higher_is_better else "<="
    print(
        f"  ratio     : {s_ratio['median']:.2f}x ({s_ratio['min']:.2f}-{s_ratio['max']:.2f}x per round), "
        f"goal {sign} {goal}x: {v}"
    )
    return {"wms": s_ours, "reference": s_theirs, "ratio": s_ratio, "goal": goal,
            "goal_direction": sign, "verdict": v, "rounds": rounds}


def write_json(path, result):
    """Writes `result` (plus when and under what load it ran) to `path`, atomically."""
    result = dict(result)
    result.setdefault("finished_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    result.setdefault("cpus", os.cpu_count())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    print(f"raw results: {path}")
