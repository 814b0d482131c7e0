"""Benchmark: the packaged whisper-base encoder (models/whisper.py) against the log-mel encoder
of default model 0.3 (results/default_model/model_0.3; 0.4, the shipped one, uses whisper-base), on the CPU.

Measures: import time (fresh interpreters, after torch), load time (converted folder fp32 and
fp16, straight from the package, and the default bundle as wav2sem.loaded_model loads it),
encode_aligned time (own-length and 30 s-padded windows) for 5, 10, 30 and 60 s of
speech at 1 and 2 torch threads (rounds
alternate encoders, threads and lengths; medians of 3), how much own-length features of a 5 s
clip differ from those of the clip padded to 30 s (and the time of each), and the converted
folders' sizes. Audio: KTuberling's recorded words repeated to length (espeak-ng if absent).
Saves results/real_voices/whisper_encoder.{md,json}.

Run: .venv/bin/python benchmarks/whisper_encoder.py
"""
from __future__ import annotations

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
from wav2sem.loaded_model import load_model  # noqa: E402
from wav2sem.models.encoders import encode_aligned  # noqa: E402
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


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    audio, audio_name = speech()
    work = Path(tempfile.mkdtemp(prefix="wav2sem_whisper_bench_"))
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "note": "2 shared CPU cores, no GPU", "torch": torch.__version__},
                     "audio": audio_name}
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
        for _ in range(ROUNDS):
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
        for _ in range(ROUNDS):
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
            for _ in range(ROUNDS):
                times["own"].append(timed(lambda: whisper(clip)))
                times["padded"].append(timed(lambda: padded_whisper(clip)))
            results["own_vs_padded_5s"]["time_s_2_threads"] = {k: statistics.median(v) for k, v in times.items()}

        # encode times
        clips = {s: torch.from_numpy(np.resize(audio, s * SAMPLE_RATE))[None] for s in LENGTHS_S}
        samples = {(e, t, s): [] for e in encoders for t in THREADS for s in LENGTHS_S}
        with torch.no_grad():
            for _ in range(ROUNDS):
                for t in THREADS:
                    torch.set_num_threads(t)
                    for s in LENGTHS_S:
                        for e, enc in encoders.items():
                            samples[(e, t, s)].append(timed(lambda: encode_aligned(enc, clips[s], fps, alignment)))
        results["encode_s"] = {e: {str(t): {str(s): statistics.median(samples[(e, t, s)]) for s in LENGTHS_S}
                                   for t in THREADS} for e in encoders}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    (OUT / "whisper_encoder.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (OUT / "whisper_encoder.md").write_text(md)
    print(md)
    return 0


def render(r: dict) -> str:
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    lines = ["# Whisper-base encoder against model 0.3's log-mel encoder", "",
             f"Machine: {r['machine']['cores']} CPU cores ({r['machine']['note']}), {r['machine']['cpu']}, "
             f"torch {r['machine']['torch']}. Audio: {r['audio']}, repeated to length. Medians of {ROUNDS} "
             f"alternating rounds. Motion rate {r['fps']} fps ({r['alignment']} alignment).", "",
             "Produced by `benchmarks/whisper_encoder.py`.", "", "## Import (fresh interpreter, after torch)", "",
             "| module | s |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["import_s"].items()]
    lines += ["", "## Load (2 threads)", "", "| what | s |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["load_s"].items()]
    lines += ["", "## encode_aligned, seconds", "", "| encoder | threads | " + " | ".join(f"{s} s" for s in LENGTHS_S) + " |",
              "|---|---|" + "---|" * len(LENGTHS_S)]
    for e, by_t in r["encode_s"].items():
        for t, by_s in by_t.items():
            lines.append(f"| {e} | {t} | " + " | ".join(f"{by_s[str(s)]:.3f}" for s in LENGTHS_S) + " |")
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
