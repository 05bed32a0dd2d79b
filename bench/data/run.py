"""bench-data: `wms data pull` vs `dvc pull` of the same 2 000 small files from one S3 remote.

Usage: run.py WMS_BINARY OUT_DIR VENV [JSON]

Starts its own moto server (S3) on a free loopback port, builds a git + DVC repository of
N files (default 2 000) of ~50 KB random bytes under OUT_DIR, pushes them once with
`dvc push`, then pulls into fresh clones: `wms data pull --jobs J` and `dvc pull --jobs J`
(same J for both; default 4 x CPU cores, dvc's own default for S3), one of each per round, who
goes first alternating, ROUNDS rounds (default 5). Prints every timing, both medians with their
spread, the per-round ratio's median and spread, and the verdict (bench/rounds.py: a ratio whose
spread crosses the goal is not met); writes the raw timings to JSON (default OUT_DIR/../data.json).
Checks that both clones end up with identical files. Nothing is cached between rounds: every pull
starts from an empty clone (no .dvc/cache, no dvc site cache). The figures are measured here,
never assumed.

Environment: BENCH_DATA_FILES, BENCH_DATA_KB, BENCH_DATA_JOBS, BENCH_DATA_ROUNDS.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rounds as bench_rounds  # noqa: E402  (bench/rounds.py)

GOAL = 2.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    wms, out, venv = (os.path.abspath(a) for a in sys.argv[1:4])
    json_path = os.path.abspath(sys.argv[4]) if len(sys.argv) > 4 else os.path.join(
        os.path.dirname(out), "data.json")
    files = int(os.environ.get("BENCH_DATA_FILES", "2000"))
    kb = int(os.environ.get("BENCH_DATA_KB", "50"))
    jobs = int(os.environ.get("BENCH_DATA_JOBS", str(4 * (os.cpu_count() or 1))))
    rounds = int(os.environ.get("BENCH_DATA_ROUNDS", "5"))
    dvc = os.path.join(venv, "bin", "dvc")

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    home = os.path.join(out, "home")
    os.makedirs(home)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "GITHUB_ACTIONS",
                "WMS_DVC_ENDPOINT_URL", "WMS_DVC_TRUST_ENDPOINT", "WMS_DVC_ALLOW_HTTP"):
        env.pop(var, None)
    env.update(
        HOME=home,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=os.path.join(home, "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=os.path.join(home, "dvc-system"),
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
    )

    def run(args, cwd, **kw):
        subprocess.run(args, cwd=cwd, env=kw.get("env", env), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    log = open(os.path.join(out, "moto.log"), "wb")
    moto = subprocess.Popen(
        [os.path.join(venv, "bin", "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log, start_new_session=True,
    )
    load_before = bench_rounds.load_average()
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except Exception:
                if time.time() > deadline or moto.poll() is not None:
                    sys.exit("bench-data: moto server did not start; see " + log.name)
                time.sleep(0.2)
        req = urllib.request.Request(endpoint + "/bench", method="PUT")
        urllib.request.urlopen(req).read()

        origin = os.path.join(out, "origin")
        os.makedirs(os.path.join(origin, "data", "images"))
        run(["git", "init", "-q", "-b", "main"], origin)
        run([dvc, "init", "-q"], origin)
        run([dvc, "remote", "add", "-d", "storage", "s3://bench/store"], origin)
        run([dvc, "remote", "modify", "storage", "endpointurl", endpoint], origin)
        print(f"bench-data: generating {files} files of ~{kb} KB", flush=True)
        for i in range(files):
            size = kb * 1000 + (i % 97) * 10
            with open(os.path.join(origin, "data", "images", f"{i:05d}.bin"), "wb") as f:
                f.write(os.urandom(size))
        run([dvc, "add", "-q", "data/images"], origin)
        run(["git", "add", "-A"], origin)
        run(["git", "commit", "-q", "-m", "data"], origin)
        t = time.perf_counter()
        run([dvc, "push", "-q", "--jobs", str(jobs)], origin)
        print(f"bench-data: pushed once with dvc in {time.perf_counter() - t:.1f} s", flush=True)

        def pull(tool, n):
            clone = os.path.join(out, f"{tool}-{n}")
            shutil.rmtree(clone, ignore_errors=True)
            run(["git", "clone", "-q", origin, clone], out)
            e = dict(env, DVC_SITE_CACHE_DIR=os.path.join(out, f"site-{tool}-{n}"))
            if tool == "wms":
                # The endpoint comes from the repository's .dvc/config (dvc needs it there), so
                # wms must be told to trust it (docs/SECURITY.md, "DVC remotes").
                e["WMS_DVC_TRUST_ENDPOINT"] = "1"
                args = [wms, "data", "pull", "--jobs", str(jobs)]
            else:
                args = [dvc, "pull", "-q", "--jobs", str(jobs)]
            t = time.perf_counter()
            run(args, clone, env=e)
            return time.perf_counter() - t, clone

        def digest(clone):
            h = hashlib.sha256()
            root = os.path.join(clone, "data", "images")
            names = sorted(os.listdir(root))
            for name in names:
                with open(os.path.join(root, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
            return len(names), h.hexdigest()

        times = {"wms": [], "dvc": []}
        firsts = []
        expected = digest(origin)
        for n in range(rounds):
            sides = bench_rounds.order(n, ("dvc", "wms"))
            firsts.append(sides[0])
            for tool in sides:
                secs, clone = pull(tool, n)
                got = digest(clone)
                if got != expected:
                    sys.exit(f"bench-data: {tool} pull produced different files ({got[0]} files)")
                times[tool].append(secs)
                print(f"  round {n + 1}: {tool} pull {secs:.2f} s", flush=True)
                shutil.rmtree(clone, ignore_errors=True)

        # Per round: how many times faster wms was than dvc in that same round.
        ratios = [d / w for d, w in zip(times["dvc"], times["wms"])]
        print(
            f"bench-data: pull of {files} files (~{kb} KB each) from moto S3, --jobs {jobs}, "
            f"{os.cpu_count()} CPU(s); seconds, lower is better; ratio = dvc / wms"
        )
        summary = bench_rounds.summarize("wms data pull vs dvc pull", "s", times["wms"],
                                         times["dvc"], ratios, GOAL)
        dvc_version = subprocess.run([dvc, "--version"], capture_output=True, text=True,
                                     env=env).stdout.strip()
        bench_rounds.write_json(json_path, {
            "benchmark": "bench-data",
            "what": f"pull of {files} files (~{kb} KB each) from a moto S3 remote into fresh clones",
            "files": files, "kb": kb, "jobs": jobs,
            "reference": f"dvc pull {dvc_version}",
            "unit": "seconds (lower is better); ratio = dvc / wms per round",
            "first_in_round": firsts,
            "seconds": times, "ratios": ratios, "summary": summary,
            "load_average_before": load_before, "load_average_after": bench_rounds.load_average(),
        })
    finally:
        os.killpg(moto.pid, 15)
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
