"""Inference speed and memory: real-time factor and peak RSS for the tiny and the base-size
(random weights) configurations at 10 s, 60 s and 600 s of audio, and the speed-up of the
key/value-cached decoder over the reference full-prefix loop at 600 frames.

    .venv/bin/python benchmarks/inference.py [--durations 10 60 600] [--configs tiny base]

Each case runs in a fresh subprocess so its peak memory (ru_maxrss) is its own. Prints a
Markdown table and saves it to results/inference.md (+ .json).
Targets on the 2-core CPU: cached decoding >= 10x faster than the reference at 600 frames;
600 s of audio under 4 GB peak memory.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
BASE_VERTICES = 5023          # FLAME topology, as VOCASET
TINY_VERTICES = 300


def make_bundle(config: str, directory: Path) -> Path:
    from wav2sem.testing import grid_template, tiny_encoder_spec, write_tiny_bundle

    if config == "tiny":
        return write_tiny_bundle(directory, grid_template(TINY_VERTICES))
    if config == "default":                 # the embedded default model, as shipped
        from wav2sem.bundle import DEFAULT_BUNDLE_DIR

        return DEFAULT_BUNDLE_DIR
    # base: wav2vec 2.0 base speech encoder + wav2vec 2.0 base Wav2Sem encoder + VOCASET decoder
    base = {"type": "wav2vec2", "config": {}}
    return write_tiny_bundle(directory, grid_template(BASE_VERTICES), encoder_spec=base, semantic_spec=base,
                             feature_dim=64, n_subjects=8)


def speech_like(seconds: float, seed: int = 0):
    """Amplitude-modulated harmonic noise with pauses: exercises windows and segmentation."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
    envelope = (np.sin(2 * np.pi * 3.0 * t) > -0.2) * (np.sin(2 * np.pi * 0.15 * t) > -0.6)
    return (0.2 * (voiced + 0.3 * rng.normal(size=t.shape)) * envelope).astype(np.float32)


def case_generate(config: str, seconds: float) -> dict:
    import torch

    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(config, Path(tmp) / "bundle")
        model = load_model(bundle, "cpu")
        audio = speech_like(seconds)
        start = time.perf_counter()
        result = generate(model, audio)
        wall = time.perf_counter() - start
    return {"kind": "generate", "config": config, "seconds_audio": seconds, "frames": int(result.offsets.shape[0]),
            "wall_s": wall, "rtf": wall / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def case_decoder(config: str, frames: int) -> dict:
    import numpy as np
    import torch

    from wav2sem.bundle import load_weights, read_bundle

    with tempfile.TemporaryDirectory() as tmp:
        net = load_weights(read_bundle(make_bundle(config, Path(tmp) / "bundle")))
    d = net.config.feature_dim
    memory = torch.randn(1, frames * (2 if net.config.alignment == "pair" else 1), d)
    style = net.style_embedding(torch.eye(net.config.n_subjects)[0])
    with torch.inference_mode():
        net.decode(memory, style, 20)                 # warm-up: first calls pay one-off set-up costs
        net.decode_reference(memory, style, 20)
        cached_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            cached = net.decode(memory, style, frames)
            cached_times.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        reference = net.decode_reference(memory, style, frames)
        reference_s = time.perf_counter() - t1
    cached_s = float(np.median(cached_times))
    return {"kind": "decoder", "config": config, "frames": frames, "cached_s": cached_s, "reference_s": reference_s,
            "speedup": reference_s / cached_s, "max_abs_diff": float((cached - reference).abs().max())}


def run_case(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"case {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10, 60, 600])
    parser.add_argument("--configs", nargs="+", default=["tiny", "base", "default"])
    parser.add_argument("--decoder-frames", type=int, default=600)
    parser.add_argument("--output", default="inference", help="table name under results/")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, config, amount = args.case
        result = case_generate(config, float(amount)) if kind == "generate" else case_decoder(config, int(amount))
        print(json.dumps(result))
        return 0

    rows = []
    for config in args.configs:
        for seconds in args.durations:
            print(f"generate {config} {seconds:g} s ...", file=sys.stderr, flush=True)
            rows.append(run_case(["generate", config, str(seconds)]))
        if config != "default":             # the default model's decoder is not autoregressive
            print(f"decoder {config} {args.decoder_frames} frames ...", file=sys.stderr, flush=True)
            rows.append(run_case(["decoder", config, str(args.decoder_frames)]))

    machine = f"{platform.machine()}, {subprocess.getoutput('nproc')} cores, {platform.python_version()}, CPU only"
    lines = [f"# Inference benchmark ({time.strftime('%Y-%m-%d')}, {machine})", "",
             "| config | audio (s) | frames | wall (s) | real-time factor | peak RSS (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["kind"] == "generate":
            lines.append(f"| {r['config']} | {r['seconds_audio']:g} | {r['frames']} | {r['wall_s']:.2f} | "
                         f"{r['rtf']:.4f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "| config | frames | cached decoder (s) | reference loop (s) | speed-up | max abs diff |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["kind"] == "decoder":
            lines.append(f"| {r['config']} | {r['frames']} | {r['cached_s']:.3f} | {r['reference_s']:.3f} | "
                         f"{r['speedup']:.1f}x | {r['max_abs_diff']:.2e} |")
    lines += ["", "tiny: 2-layer hidden-32 wav2vec2 encoders, 16-d decoder, 300 vertices. base: wav2vec 2.0 base "
              "speech encoder + wav2vec 2.0 base Wav2Sem encoder (random weights), VOCASET-size decoder "
              "(64-d, 8 subjects), 5023 vertices. default: the embedded model (log-mel encoders, Wav2Sem, "
              "direct decoder, 4423 vertices). Generate: single run each; wall time includes encoding, "
              "Wav2Sem and decoding, not model loading. Decoder: after a warm-up, median of 3 cached runs vs "
              "one reference run."]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.md").write_text(table + "\n")
    (RESULTS / f"{args.output}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
