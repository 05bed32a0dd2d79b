"""`make bench-image`: what `wms build-image` costs and weighs.

Starts a real OCI registry (Debian `docker-registry`) on 127.0.0.1 in a temp dir, makes two
versions of a U-Net-sized ONNX model (1 965 569 random fp32 weights, ~7.9 MB, incompressible like
trained weights), then in alternating rounds (who goes first alternates too):

- cold: `wms build-image --push` of version 1 with an empty layer cache (build + push of every
  layer) against the reference, `skopeo copy` of the same image (already built, as an OCI layout):
  the standard daemonless push, push only. Each round starts a fresh registry, so neither can skip
  or mount anything;
- model change: `wms build-image --push` of version 2 into the same repository (only the model
  layer and the config are new; the other layers come from the layer cache) against `skopeo copy`
  of version 2's layout.

Prints medians, spread and rounds of each, the ratios, and the image's compressed size next to the
upstream PyTorch/TorchServe image's size as reported in issue #12 (~8 GB; not measured here: no
Docker daemon or upstream image is available on this machine). Usage:
    run.py WMS_BINARY OUT_DIR VENV [ROUNDS]
"""

import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

UPSTREAM_IMAGE_BYTES = 8e9  # issue #12: "the upstream project's image is about 8 GB"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(path, version, seed, venv):
    code = r"""
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
path, version, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = np.random.default_rng(seed).standard_normal(1965569).astype(np.float32)
init = numpy_helper.from_array(w, "w")
node = helper.make_node("Identity", ["input"], ["logits"])
graph = helper.make_graph([node], "bench", [helper.make_tensor_value_info("input", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [init])
model = helper.make_model(graph)
for k, v in {"model_name": "water-meters-unet", "version": version}.items():
    model.metadata_props.add(key=k, value=v)
onnx.save(model, path)
"""
    subprocess.run([f"{venv}/bin/python", "-c", code, str(path), version, str(seed)], check=True)


def timed(argv, **kw):
    start = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - start, out.stdout


def summary(name, xs):
    med = statistics.median(xs)
    return f"{name:<34} median {med:7.3f} s  (min {min(xs):.3f}, max {max(xs):.3f}, {len(xs)} rounds)"


def main():
    wms, out_dir, venv = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    out_dir.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="wms-bench-image-"))
    registry = None
    try:
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
        models = {v: work / f"model-{v}.onnx" for v in ("1", "2")}
        for i, (v, p) in enumerate(models.items()):
            make_model(p, v, i, venv)
        # The reference pushes the very same image, prebuilt as an OCI layout.
        layouts = {}
        size = None
        for v, p in models.items():
            layouts[v] = work / f"layout-{v}"
            _, stdout = timed([wms, "build-image", "--base", "scratch", "--model", str(p), "--oci-layout", str(layouts[v]),
                               "--tag", f"bench/ref:v{v}"], env=dict(env, WMS_CACHE_DIR=str(work / "prebuild")))
            if v == "1":
                size = json.loads(stdout.strip().splitlines()[-1])["compressed_size"]
        results = {k: [] for k in ("wms_cold", "ref_cold", "wms_model", "ref_model")}

        for r in range(rounds):
            # A fresh registry (new port, empty storage) and an empty layer cache per round, so
            # "cold" is cold for both: nothing to skip, nothing to mount, nothing cached.
            host, registry = start_registry(work / f"registry-{r}")
            cache = work / f"cache-{r}"

            def wms_push(repo, v):
                t, _ = timed([wms, "build-image", "--push", "--insecure", "--base", "scratch", "--model", str(models[v]),
                              "--tag", f"{host}/{repo}:v{v}"], env=dict(env, WMS_CACHE_DIR=str(cache)))
                return t

            def ref_push(repo, v):
                t, _ = timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                              f"oci:{layouts[v]}:v{v}", f"docker://{host}/{repo}:v{v}"])
                return t

            order = [("wms", wms_push), ("ref", ref_push)]
            if r % 2:
                order.reverse()
            for name, push in order:
                results[f"{name}_cold"].append(push(f"{name}", "1"))
            for name, push in order:
                results[f"{name}_model"].append(push(f"{name}", "2"))
            registry.terminate()
            registry.wait(timeout=10)
            registry = None
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"bench-image: {rounds} rounds, alternating order, a fresh registry on 127.0.0.1 per round")
        print(summary("wms build-image --push (cold)", results["wms_cold"]))
        print(summary("skopeo copy oci: → registry (cold)", results["ref_cold"]))
        print(f"  ratio wms/skopeo (wms also builds the image): {med['wms_cold'] / med['ref_cold']:.2f}x")
        print(summary("wms build+push after model change", results["wms_model"]))
        print(summary("skopeo copy after model change", results["ref_model"]))
        print(f"  ratio wms/skopeo (wms also builds the image): {med['wms_model'] / med['ref_model']:.2f}x"
              f"; goal: wms <= 2 s")
        print(f"compressed image size: {size / 1e6:.1f} MB (goal <= 25 MB); upstream image ~{UPSTREAM_IMAGE_BYTES / 1e9:.0f} GB "
              f"(issue #12, not measured here): {UPSTREAM_IMAGE_BYTES / size:.0f}x smaller")
        (out_dir / "image.json").write_text(json.dumps(
            {"rounds": rounds, "seconds": results, "medians": med, "compressed_size": size,
             "upstream_bytes_quoted": UPSTREAM_IMAGE_BYTES}, indent=2))
    finally:
        if registry is not None:
            registry.terminate()
            registry.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def start_registry(root):
    root.mkdir(parents=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    (root / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {root}/data}}}}\n"
        f"http: {{addr: \"{host}\"}}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    return host, proc


if __name__ == "__main__":
    main()
