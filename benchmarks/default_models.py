"""Default model 0.4 (whisper-base encoder) against 0.3 (log-mel encoder), both ARKit weights
on the ICT head: real-time factor and peak memory of one generate, on the same audio.

    .venv/bin/python benchmarks/default_models.py [--durations 10 60] [--rounds 3]
        [--old results/default_model/model_0.3] [--threads 1 2]

Cases, each in a fresh subprocess so that its peak RSS (ru_maxrss, model load included) is
its own; rounds alternate the cases (A, B, C, C, B, A, ...) so that load on the shared cores
hits all alike, and the table quotes medians:
  0.3 weights    weights (T, 23) only, what the add-on asks for on a character with face keys
  0.4 weights    the same for the shipped model
  0.4 offsets    weights and the offsets on the 26,719-vertex reference head (template mesh)
Prints a Markdown table and saves results/default_models.md (+ .json). (The 0.3 vs 0.2 table
this replaced is in git history and docs/default_model.md.)
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
OLD_MODEL = RESULTS / "default_model" / "model_0.3"
BASE = "0.3 weights"
CASES = (BASE, "0.4 weights", "0.4 offsets")


def run_case(case: str, seconds: float, threads: int, old: str) -> dict:
    import numpy as np
    import torch

    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    torch.set_num_threads(threads)
    model = load_model(old if case == BASE else None, "cpu")
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
    envelope = (np.sin(2 * np.pi * 3.0 * t) > -0.2) * (np.sin(2 * np.pi * 0.15 * t) > -0.6)
    audio = (0.2 * (voiced + 0.3 * rng.normal(size=t.shape)) * envelope).astype(np.float32)
    offsets = case.endswith("offsets")
    generate(model, audio[: sr], offsets=offsets)                        # warm-up (one-off set-up costs)
    start = time.perf_counter()
    result = generate(model, audio, offsets=offsets)
    wall = time.perf_counter() - start
    return {"case": case, "seconds_audio": seconds, "threads": threads, "frames": int(result.frames),
            "wall_s": wall, "rtf": wall / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def subprocess_case(case: str, seconds: float, threads: int, old: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", case, str(seconds), str(threads), old],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"case {case} {seconds} s failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", default=str(OLD_MODEL), help="the 0.3 bundle")
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case, seconds, threads, old = args.case
        print(json.dumps(run_case(case, float(seconds), int(threads), old)))
        return 0
    rows = []
    for seconds in args.durations:
        for threads in args.threads:
            for round_ in range(args.rounds):
                for case in CASES if round_ % 2 == 0 else CASES[::-1]:
                    print(f"{case}, {seconds:g} s, {threads} thread(s), round {round_ + 1} ...", file=sys.stderr, flush=True)
                    rows.append(subprocess_case(case, seconds, threads, args.old))
    machine = f"{platform.machine()}, {subprocess.getoutput('nproc')} cores, {platform.python_version()}, CPU only"
    lines = [f"# Default model 0.4 vs 0.3 ({time.strftime('%Y-%m-%d')}, {machine})", "",
             f"Medians of {args.rounds} alternating rounds; peak RSS includes loading the model.", "",
             "| model / output | audio (s) | threads | frames | wall (s) | real-time factor | peak RSS (MB) | vs 0.3 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    summary = []
    for seconds in args.durations:
        for threads in args.threads:
            base = None
            for case in CASES:
                group = [r for r in rows if r["case"] == case and r["seconds_audio"] == seconds and r["threads"] == threads]
                wall = statistics.median(r["wall_s"] for r in group)
                rss = statistics.median(r["peak_rss_mb"] for r in group)
                base = wall if case == BASE else base
                summary.append({"case": case, "seconds_audio": seconds, "threads": threads, "wall_s": wall,
                                "rtf": wall / seconds, "peak_rss_mb": rss})
                lines.append(f"| {case} | {seconds:g} | {threads} | {group[0]['frames']} | {wall:.3f} | "
                             f"{wall / seconds:.4f} | {rss:.0f} | {wall / base:.2f}x |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "default_models.md").write_text(table + "\n")
    (RESULTS / "default_models.json").write_text(json.dumps({"machine": machine, "rows": rows, "summary": summary},
                                                            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
