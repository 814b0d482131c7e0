"""Bundle loading: wall time and peak memory of `wav2sem.bundle.load_weights` (network built with
its parameters left uninitialised, the file's tensors assigned) against the previous path
(a randomly initialised network, then load_state_dict copying the file into it), for the
embedded default bundle and a base-size FaceFormer bundle (wav2vec 2.0 base speech encoder,
95M parameters, + the VOCASET decoder, 5023 vertices; random weights, written once to a
temporary folder).

Every load runs in a fresh subprocess (imports done and the bundle's config read before the
clock starts); peak memory is that process's ru_maxrss after the load minus before it, and the
resident size after the load is read from /proc/self/statm. Rounds alternate old/new.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bundle_load.py [--rounds 3]

Prints a Markdown table and saves results/bundle_load.md (+ .json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

CHILD = r"""
import json, os, resource, sys, time
import torch
torch.set_num_threads(1)
from wav2sem.bundle import WEIGHTS_FILE, build_model, load_weights, read_bundle
method, path = sys.argv[1], sys.argv[2]
bundle = read_bundle(path)
t0 = time.perf_counter()
if bundle.config.encoder["type"] in ("wav2vec2", "hubert", "wavlm"):   # the same import either way: off the clock
    import transformers.models.wav2vec2.modeling_wav2vec2
import_seconds = time.perf_counter() - t0
def old(bundle):
    from safetensors.torch import load_file
    model = build_model(bundle.config)
    model.load_state_dict(load_file(str(bundle.directory / WEIGHTS_FILE)), strict=True)
    return model.eval()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
net = (old if method == "old" else load_weights)(bundle)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/statm") as f:
    resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
with open("/proc/self/status") as f:
    hwm = [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")][0]
params = sum(p.numel() for p in net.parameters())
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak / 1024, "peak_growth_mb": (peak - before) / 1024,
                  "rss_after_mb": resident, "rss_before_mb": before / 1024, "vm_hwm_mb": hwm,
                  "import_seconds": import_seconds, "parameters": params}))
"""


MAKE_BASE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from bundle_load import make_base_faceformer
make_base_faceformer(sys.argv[2])
"""


def make_base_faceformer(directory) -> Path:
    """wav2vec 2.0 base (transformers' default Wav2Vec2Config) + the VOCASET FaceFormer decoder."""
    import torch

    from wav2sem.bundle import BundleConfig, build_model, save_bundle
    from wav2sem.models.faceformer import DecoderConfig
    from wav2sem.testing import grid_template

    template = grid_template(5023)
    config = BundleConfig(
        name="base-faceformer-random",
        decoder=DecoderConfig(vertex_count=5023, n_subjects=8, feature_dim=64, period=30),
        fps=30.0, subjects=tuple(f"subject_{i}" for i in range(8)),
        encoder={"type": "wav2vec2", "config": {}}, semantic=None,
        description="Random weights for the loading benchmark.",
    )
    torch.manual_seed(0)
    return save_bundle(directory, config, build_model(config), template)


def measure(method: str, bundle: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(bundle)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{method} {bundle} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="bundle_load", help="table name under results/")
    args = parser.parse_args()
    # this process never imports torch: a child's ru_maxrss starts from its parent's size at fork
    default_bundle = ROOT / "backend" / "wav2sem" / "assets" / "default"
    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run([sys.executable, "-c", MAKE_BASE, str(Path(__file__).parent), str(base)], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        bundles = {"default (whisper-base + log-mel, fp16 parts)": default_bundle,
                   "base FaceFormer (wav2vec 2.0 base + VOCASET decoder)": base}
        for name, path in bundles.items():
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for r in range(args.rounds):
                for method in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    runs[method].append(measure(method, path))
            med = {m: {k: statistics.median(run[k] for run in v) for k in v[0]} for m, v in runs.items()}
            row = {"bundle": name, "weights_mb": (Path(path) / "model.safetensors").stat().st_size / 2**20,
                   "runs": runs, "median": med,
                   "time_ratio": med["old"]["seconds"] / med["new"]["seconds"],
                   "peak_growth_ratio": med["old"]["peak_growth_mb"] / max(med["new"]["peak_growth_mb"], 1e-9)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    facts = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
             "cpu_count": os.cpu_count(), "load_average_before": load_before,
             "load_average_after": [round(v, 2) for v in os.getloadavg()], "nice": os.nice(0), "threads": 1}
    lines = [
        "# Bundle loading: uninitialised build + assign vs random init + copy",
        "",
        f"Machine: {facts['platform']}, {facts['processor']}, {facts['cpu_count']} cores, 1 thread, nice {facts['nice']}; "
        f"load average {facts['load_average_before']} before, {facts['load_average_after']} after (other jobs were "
        "running: compare ratios). Each load in a fresh process; "
        f"{args.rounds} alternating rounds, medians. Peak growth = ru_maxrss after the load minus before it. "
        "Off the clock in both paths: imports, reading the config, and for wav2vec 2.0 bundles transformers' "
        f"modeling import ({statistics.median(run['import_seconds'] for r in rows for run in r['runs']['new'] if run['import_seconds'] > 0.01):.1f} s here).",
        "",
        "| bundle | weights file | old: time | new: time | old / new time | old: peak RSS | new: peak RSS "
        "| old: peak growth | new: peak growth | old / new peak growth | old: RSS after | new: RSS after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        o, n = r["median"]["old"], r["median"]["new"]
        lines.append(f"| {r['bundle']} | {r['weights_mb']:.0f} MB | {o['seconds']:.2f} s | {n['seconds']:.2f} s "
                     f"| {r['time_ratio']:.1f}x | {o['peak_rss_mb']:.0f} MB | {n['peak_rss_mb']:.0f} MB "
                     f"| {o['peak_growth_mb']:.0f} MB | {n['peak_growth_mb']:.0f} MB "
                     f"| {r['peak_growth_ratio']:.2f}x | {o['rss_after_mb']:.0f} MB | {n['rss_after_mb']:.0f} MB |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.md").write_text(text, encoding="utf-8")
    (RESULTS / f"{args.output}.json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=2) + "\n",
                                                 encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
