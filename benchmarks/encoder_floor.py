"""How fast the base-size FaceFormer path could be at float32 on this CPU: the wav2vec 2.0 base
encoder's arithmetic on a clip, divided by the machine's measured matrix-product throughput.

The encoder is the same network in the project and in the official code, and it is 90-97 % of
the project's generate (results/faceformer_official.md), so this floor bounds the speed-up over
the official code that any exact (float32) implementation can reach:
    official time / (encoder floor + the project's decoder time).

FLOPs (multiply-adds x 2) from Wav2Vec2Config() (base): the seven feature-extractor convolutions
at 16 kHz, the feature projection and the transformer at the model's frame rate (the official
FaceFormer interpolates the 50 Hz features to 30 fps before them: VOCASET), the grouped
positional convolution, and attention (scores and weighted sum). Layer norms, GELUs and the
group norm are left out (they only make the floor lower). Throughputs, at 1 and 2 threads
(--threads), best of 5: a 2048^3 float32 product (the peak), the transformer's feed-forward shape
(600 x 768 x 3072) and the second feature convolution of a 20 s clip (torch's conv1d).

    .venv/bin/python benchmarks/encoder_floor.py [--seconds 20] [--fps 30] [--threads 1 2]

Prints a table and saves results/encoder_floor.md (+ .json); reads the official time from
results/speed/faceformer_official.json or results/faceformer_official.json when there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import best_seconds, cpu_name  # noqa: E402


def encoder_flops(seconds: float, fps: float) -> dict:
    from transformers import Wav2Vec2Config

    c = Wav2Vec2Config()
    length, channels, conv = int(seconds * 16000), 1, 0.0
    for dim, kernel, stride in zip(c.conv_dim, c.conv_kernel, c.conv_stride):
        length = (length - kernel) // stride + 1
        conv += 2.0 * length * dim * channels * kernel
        channels = dim
    frames = int(seconds * fps)
    d, ff, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    projection = 2.0 * frames * channels * d
    positional = 2.0 * frames * d * (d // c.num_conv_pos_embedding_groups) * c.num_conv_pos_embeddings
    dense = 2.0 * frames * layers * (4 * d * d + 2 * d * ff)
    attention = 2.0 * layers * 2 * frames * frames * d
    return {"feature convolutions (50 Hz)": conv, "feature projection": projection,
            "positional convolution": positional, "transformer matrix products": dense,
            "attention scores + sums": attention}


def throughputs() -> dict:
    import torch
    import torch.nn.functional as F

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    h, w = torch.randn(600, 768), torch.randn(768, 3072)
    x, k = torch.randn(1, 512, 63999), torch.randn(512, 512, 3)
    out_len = (63999 - 3) // 2 + 1
    return {"2048^3 product": 2 * 2048 ** 3 / best_seconds(lambda: a @ b, 5),
            "600 x 768 x 3072 product": 2 * 600 * 768 * 3072 / best_seconds(lambda: h @ w, 10),
            "conv1d 512 -> 512, k 3, stride 2, 20 s": 2 * out_len * 512 * 512 * 3 / best_seconds(
                lambda: F.conv1d(x, k, stride=2), 3)}


def official_times(seconds: float, threads: int) -> dict | None:
    for path in (RESULTS / "speed" / "faceformer_official.json", RESULTS / "faceformer_official.json"):
        if path.is_file():
            runs = json.loads(path.read_text())["runs"]
            run = runs.get(f"{threads}t/{seconds:g}s")
            if run:
                return {"file": str(path.relative_to(ROOT)), "official_s": run["median_official"],
                        "project_s": run["median_project"]}
    return None


def section(seconds: float, fps: float, threads: int) -> tuple[list[str], dict]:
    import torch

    torch.set_num_threads(threads)
    flops = encoder_flops(seconds, fps)
    total = sum(flops.values())
    rates = throughputs()
    peak = max(rates.values())
    floor = total / peak
    lines = [f"## {threads} thread(s)", "", f"Load average {tuple(round(v, 2) for v in os.getloadavg())}.", "",
             "| part | GFLOP |", "| --- | ---: |"]
    lines += [f"| {name} | {value / 1e9:.1f} |" for name, value in flops.items()]
    lines += [f"| total | {total / 1e9:.1f} |", "", "| measured throughput | GFLOP/s |", "| --- | ---: |"]
    lines += [f"| {name} | {value / 1e9:.1f} |" for name, value in rates.items()]
    lines += ["", f"Floor: {total / 1e9:.0f} GFLOP / {peak / 1e9:.1f} GFLOP/s = {floor:.2f} s for the encoder alone."]
    result = {"threads": threads, "flops": flops, "throughputs": rates, "floor_s": floor}
    official = official_times(seconds, threads)
    if official:
        best_ratio = official["official_s"] / floor
        result.update(official=official, best_ratio=best_ratio)
        lines += [f"The official code took {official['official_s']:.2f} s and the project {official['project_s']:.2f} s "
                  f"on this clip length ({official['file']}): at most {best_ratio:.1f}x for an exact path with a "
                  f"decoder of zero cost (the project now: {official['official_s'] / official['project_s']:.1f}x)."]
    return lines + [""], result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import torch

    lines = [f"# wav2vec 2.0 base encoder: arithmetic floor at float32 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
             "", f"{platform.machine()} ({cpu_name()}), {os.cpu_count()} cores, torch {torch.__version__}. "
             f"Clip {args.seconds:g} s, transformer at {args.fps:g} fps.", ""]
    results = []
    for threads in args.threads:
        part, result = section(args.seconds, args.fps, threads)
        lines += part
        results.append(result)
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoder_floor.md").write_text(text, encoding="utf-8")
    (RESULTS / "encoder_floor.json").write_text(json.dumps({"seconds": args.seconds, "fps": args.fps,
                                                            "runs": results}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
