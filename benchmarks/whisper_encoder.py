"""Benchmark: the packaged whisper-base encoder (models/whisper.py) against the log-mel encoder
of default model 0.3 (results/default_model/model_0.3; 0.4, the shipped one, uses whisper-base), on the CPU.

Measures: import time (fresh interpreters, after torch), load time (converted folder fp32 and
fp16, straight from the package, and the default bundle as wav2sem.loaded_model loads it),
the speech-feature time of each encoder (own-length and 30 s-padded Whisper windows) for 5,
10, 30 and 60 s of speech at 1 and 2 torch threads, computed as inference computes it: a clip
up to 20 s is one encoder window, a longer one inference's cross-faded 20 s windows (the
Whisper encoder takes one 30 s window at most); rounds alternate encoders, threads and
lengths, medians of 3. Also how much own-length features of a 5 s clip differ from those of
the clip padded to 30 s (and the time of each), and the converted folders' sizes. Audio:
KTuberling's recorded words repeated to length (espeak-ng if absent).
Saves results/real_voices/whisper_encoder.{md,json} (--out for another folder).

Run: .venv/bin/python benchmarks/whisper_encoder.py
Quick check: .venv/bin/python benchmarks/whisper_encoder.py --lengths 5 35 --threads 1 --rounds 1 --out /tmp/w
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "backend"))
OUT = REPO / "results" / "real_voices"
LENGTHS_S = (5, 10, 30, 60)
THREADS = (1, 2)
ROUNDS = 3
LOGMEL_BUNDLE = REPO / "results" / "default_model" / "model_0.3"   # the last log-mel default model

from wav2sem.audio import SAMPLE_RATE, load_audio  # noqa: E402
from wav2sem.inference import ENCODER_WINDOW_S, _encode_windows  # noqa: E402
from wav2sem.loaded_model import load_model  # noqa: E402
from wav2sem.models.encoders import memory_frame_count  # noqa: E402
from wav2sem.models.whisper import load_whisper_encoder  # noqa: E402
from wav2sem.models.whisper_convert import convert_whisper, resolve_source, whisper_encoder_from_ct2  # noqa: E402


def speech() -> tuple[np.ndarray, str]:
    files = sorted(glob.glob("/usr/share/ktuberling/sounds/en/*.ogg"))
    if files:
        return np.concatenate([load_audio(f) for f in files]).astype(np.float32), f"{len(files)} KTuberling words"
    path = Path(tempfile.mkdtemp()) / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "The quick brown fox jumps over the lazy dog. " * 4], check=True)
    return load_audio(path).astype(np.float32), "espeak-ng sentence"


def import_time(statement: str) -> float:
    code = f"import time, torch; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=REPO / "backend", env={**os.environ, "PYTHONPATH": str(REPO / "backend")})
    return float(done.stdout.strip().splitlines()[-1])


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def encode_as_inference(encoder, clip: torch.Tensor, fps: float, alignment: str) -> torch.Tensor:
    """(1, M, H) speech features of `clip` (1, S) as generate computes them: one encoder window
    up to ENCODER_WINDOW_S, else inference's overlapping windows, cross-faded."""
    n_memory = memory_frame_count(encoder, clip.shape[1], fps, alignment)
    return _encode_windows(SimpleNamespace(audio_encoder=encoder), clip, fps, alignment, n_memory,
                           report=lambda stage, fraction, message: None, cancelled=lambda: False)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS_S), metavar="S",
                        help=f"seconds of speech to encode (default {' '.join(map(str, LENGTHS_S))})")
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS), metavar="N",
                        help=f"torch thread counts (default {' '.join(map(str, THREADS))})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per measurement (default {ROUNDS})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for whisper_encoder.md/.json (default {OUT})")
    args = parser.parse_args()
    lengths, threads, rounds = tuple(args.lengths), tuple(args.threads), args.rounds
    args.out.mkdir(parents=True, exist_ok=True)
    audio, audio_name = speech()
    work = Path(tempfile.mkdtemp(prefix="wav2sem_whisper_bench_"))
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "note": "2 shared CPU cores, no GPU", "torch": torch.__version__},
                     "audio": audio_name, "rounds": rounds, "lengths_s": lengths, "window_s": ENCODER_WINDOW_S}
    try:
        # conversion and sizes
        folders = {}
        for name, kw in (("fp32", {}), ("fp16", {"dtype": "float16"}), ("fp32 encoder only", {"encoder_only": True}),
                         ("fp16 encoder only", {"dtype": "float16", "encoder_only": True})):
            t = time.perf_counter()
            folders[name] = convert_whisper("base", work / name.replace(" ", "_"), **kw)
            results.setdefault("convert_s", {})[name] = time.perf_counter() - t
        results["size_bytes"] = {name: folder_size(path) for name, path in folders.items()}
        results["size_bytes"]["package (model.bin parts)"] = sum(p.stat().st_size for p in resolve_source("base").parts)

        # import times (fresh interpreters, torch already imported)
        statements = {"wav2sem.models.whisper": "import wav2sem.models.whisper",
                      "wav2sem.inference (default model path)": "import wav2sem.inference",
                      "transformers WhisperModel": "from transformers import WhisperModel"}
        samples = {k: [] for k in statements}
        for _ in range(rounds):
            for k, s in statements.items():
                samples[k].append(import_time(s))
        results["import_s"] = {k: statistics.median(v) for k, v in samples.items()}

        # load times, alternating
        torch.set_num_threads(2)
        loaders = {"whisper from fp32 folder": lambda: load_whisper_encoder(folders["fp32 encoder only"]),
                   "whisper from fp16 folder": lambda: load_whisper_encoder(folders["fp16 encoder only"]),
                   "whisper from the packages (no conversion)": lambda: whisper_encoder_from_ct2("base"),
                   "bundle 0.3 (log-mel), load_model": lambda: load_model(LOGMEL_BUNDLE, "cpu")}
        samples = {k: [] for k in loaders}
        for _ in range(rounds):
            for k, f in loaders.items():
                samples[k].append(timed(f))
        results["load_s"] = {k: statistics.median(v) for k, v in samples.items()}

        whisper, _ = load_whisper_encoder(folders["fp32 encoder only"])
        default = load_model(LOGMEL_BUNDLE, "cpu")
        fps, alignment = default.fps, default.net.config.alignment
        padded_whisper, _ = load_whisper_encoder(folders["fp32 encoder only"])
        padded_whisper.config.pad_windows = True
        encoders = {"whisper-base (own length)": whisper, "whisper-base (pad_windows: 30 s)": padded_whisper,
                    "log-mel (model 0.3)": default.net.audio_encoder}
        results["fps"], results["alignment"] = fps, alignment

        # own length against padded to 30 s, 5 s clip
        clip = torch.from_numpy(np.resize(audio, 5 * SAMPLE_RATE))[None]
        with torch.no_grad():
            own = whisper(clip).last_hidden_state[0]
            padded = whisper.encode_mel(whisper.log_mel(clip, pad_to=30 * SAMPLE_RATE))[0, : own.shape[0]]
            cos = torch.nn.functional.cosine_similarity(own, padded, dim=1)
            results["own_vs_padded_5s"] = {
                "positions": own.shape[0], "max_abs": (own - padded).abs().max().item(),
                "rms_diff_over_rms": ((own - padded).norm() / padded.norm()).item(),
                "mean_cosine": cos.mean().item(), "min_cosine": cos.min().item(),
                "padded_max_abs": padded.abs().max().item()}
            times = {"own": [], "padded": []}
            for _ in range(rounds):
                times["own"].append(timed(lambda: whisper(clip)))
                times["padded"].append(timed(lambda: padded_whisper(clip)))
            results["own_vs_padded_5s"]["time_s_2_threads"] = {k: statistics.median(v) for k, v in times.items()}

        # speech-feature times, as inference computes them
        clips = {s: torch.from_numpy(np.resize(audio, s * SAMPLE_RATE))[None] for s in lengths}
        samples = {(e, t, s): [] for e in encoders for t in threads for s in lengths}
        with torch.no_grad():
            for _ in range(rounds):
                for t in threads:
                    torch.set_num_threads(t)
                    for s in lengths:
                        for e, enc in encoders.items():
                            samples[(e, t, s)].append(timed(lambda: encode_as_inference(enc, clips[s], fps, alignment)))
        results["encode_s"] = {e: {str(t): {str(s): statistics.median(samples[(e, t, s)]) for s in lengths}
                                   for t in threads} for e in encoders}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    (args.out / "whisper_encoder.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (args.out / "whisper_encoder.md").write_text(md)
    print(md)
    return 0


def render(r: dict) -> str:
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    lines = ["# Whisper-base encoder against model 0.3's log-mel encoder", "",
             f"Machine: {r['machine']['cores']} CPU cores ({r['machine']['note']}), {r['machine']['cpu']}, "
             f"torch {r['machine']['torch']}. Audio: {r['audio']}, repeated to length. Medians of {r['rounds']} "
             f"alternating rounds. Motion rate {r['fps']} fps ({r['alignment']} alignment).", "",
             "Produced by `benchmarks/whisper_encoder.py`.", "", "## Import (fresh interpreter, after torch)", "",
             "| module | s |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["import_s"].items()]
    lines += ["", "## Load (2 threads)", "", "| what | s |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["load_s"].items()]
    lengths = r["lengths_s"]
    lines += ["", "## Speech features as inference computes them, seconds", "",
              f"One encoder window up to {r['window_s']} s; longer clips in inference's cross-faded "
              f"{r['window_s']} s windows.", "",
              "| encoder | threads | " + " | ".join(f"{s} s" for s in lengths) + " |",
              "|---|---|" + "---|" * len(lengths)]
    for e, by_t in r["encode_s"].items():
        for t, by_s in by_t.items():
            lines.append(f"| {e} | {t} | " + " | ".join(f"{by_s[str(s)]:.3f}" for s in lengths) + " |")
    o = r["own_vs_padded_5s"]
    lines += ["", "## 5 s clip: own length against padded to 30 s", "",
              f"{o['positions']} positions. Max |diff| {o['max_abs']:.4f} (outputs up to {o['padded_max_abs']:.2f}); "
              f"||diff|| / ||padded|| {o['rms_diff_over_rms']:.4f}; cosine per position mean {o['mean_cosine']:.4f}, "
              f"min {o['min_cosine']:.4f}. Time (2 threads): own length {o['time_s_2_threads']['own']:.3f} s, "
              f"padded {o['time_s_2_threads']['padded']:.3f} s.",
              "", "## Size on disk", "", "| folder | size |", "|---|---|"]
    lines += [f"| {k} | {mb(v)} |" for k, v in r["size_bytes"].items()]
    lines += ["", "Conversion time (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["convert_s"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
