"""Base-size CodeTalker speed, official vs project: the half of benchmarks/codetalker_official.py
that times (run that script; this module only holds the comparison)."""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SAMPLE_RATE = 16_000
PARAGRAPH = ("The quick brown fox jumps over the lazy dog while the children watch from the garden. Every morning "
             "the baker opens his shop at six, and the smell of fresh bread fills the whole street. She said that the "
             "train would leave at half past nine, so we packed our bags, locked the door, and walked to the station "
             "in the rain. ")


def speech(seconds: float, work: Path):
    """espeak-ng reading a paragraph (repeated), 16 kHz, cut to `seconds`."""
    import numpy as np

    from wav2sem.audio import load_audio

    wav = work / "paragraph.wav"
    if not wav.exists():
        subprocess.run(["espeak-ng", "-w", str(wav), PARAGRAPH * 6], check=True, capture_output=True)
    audio = load_audio(wav)
    need = int(seconds * SAMPLE_RATE)
    return np.tile(audio, need // audio.size + 1)[:need].astype(np.float32)


def run_speed(args, paths, run_official, write_encoder_folder, results: Path) -> None:
    import numpy as np
    import torch

    from wav2sem.audio import normalize
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.testing_codetalker import BASE, BASE_SPEECH, encoder_config, official_stage1, official_stage2

    torch.set_num_threads(args.threads)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        stage1 = official_stage1("vocaset", sizes=BASE)
        stage2 = official_stage2("vocaset", sizes=BASE, speech=BASE_SPEECH)
        torch.save({"state_dict": stage1}, work / "s_stage1.pth.tar")
        torch.save({"state_dict": stage2}, work / "s_stage2.pth.tar")
        write_encoder_folder(stage2, work / "encoder", encoder_config(BASE_SPEECH))
        template = (np.random.default_rng(0).normal(size=(BASE["vertices"], 3)) * 0.05).astype(np.float32)
        np.save(work / "template.npy", template)
        from wav2sem.cli import main

        bundles = {}
        for window in (0, args.feedback_window):
            out = work / f"bundle_{window}"
            assert main(["convert", "--arch", "codetalker", "--checkpoint", str(work / "s_stage2.pth.tar"),
                         "--stage1", str(work / "s_stage1.pth.tar"), "--dataset", "vocaset", "--encoder",
                         str(work / "encoder"), "--template", str(work / "template.npy"), "-o", str(out),
                         "--feedback-window", str(window)]) == 0
            bundles[window] = load_model(out, device="cpu")
        notes.append(f"weights built and converted in {time.perf_counter() - started:.0f} s")
        del stage1, stage2

        def project(model, audio):
            t = time.perf_counter()
            result = generate(model, audio, subject=2, semantic=False)
            return result.offsets.reshape(result.offsets.shape[0], -1), time.perf_counter() - t

        for seconds in args.durations:
            audio = speech(seconds, work)
            np.save(work / "audio.npy", normalize(audio))
            job = {"code": str(paths["codetalker"]), "dataset": "vocaset", "wav2sem": False,
                   "encoder": str(work / "encoder"), "stage1": str(work / "s_stage1.pth.tar"),
                   "stage2": str(work / "s_stage2.pth.tar"), "audio": str(work / "audio.npy"),
                   "template": str(work / "template.npy"), "output": str(work / "official.npy"), "rounds": 1,
                   "threads": args.threads, "subject": 2, "sizes": {**BASE, "period": 30}, "semantic_sizes": {}}
            official_times, project_times, approx_times = [], [], []
            exact = official_out = approx = None
            for r in range(args.rounds):                 # alternating: official, project, project with the window
                official_out, times = run_official(job, paths["scratch"])
                official_times.append(times[0])
                exact, t = project(bundles[0], audio)
                project_times.append(t)
                approx, t = project(bundles[args.feedback_window], audio)
                approx_times.append(t)
            peak = float(np.abs(official_out).max())
            rows.append({"seconds": seconds, "frames": int(exact.shape[0]),
                         "official_s": statistics.median(official_times), "project_s": statistics.median(project_times),
                         "window_s": statistics.median(approx_times),
                         "exact_vs_official": float(np.abs(exact - official_out).max()) / peak,
                         "window_vs_exact": float(np.abs(approx - exact).max()) / peak})
            print(rows[-1], flush=True)
        for seconds in args.project_durations:
            audio = speech(seconds, work)
            approx, t = project(bundles[args.feedback_window], audio)
            rows.append({"seconds": seconds, "frames": int(approx.shape[0]), "official_s": None, "project_s": None,
                         "window_s": t, "exact_vs_official": None, "window_vs_exact": None})
            print(rows[-1], flush=True)
    lines = [
        "# CodeTalker: project vs official code (base size, VOCASET, Wav2Sem off)", "",
        f"Machine: {platform.processor() or platform.machine()}, {args.threads} thread(s), shared 2-core CPU "
        "(other work was running: absolute times are high, compare within a row). Random base-size weights "
        "(wav2vec 2.0 base; stage 2 1024 x 6 layers; stage 1 1024 x 6 layers, 8 heads, 16 x 64 codes of 256; "
        "5023 vertices); espeak-ng speech. Medians of "
        f"{args.rounds} alternating round(s) (official, project exact, project with --feedback-window "
        f"{args.feedback_window}); model loading excluded. Differences: max abs over all frames / the official peak.",
        "", "| speech | frames | official predict() | project (exact) | speed-up | project, window "
        f"{args.feedback_window} | speed-up | exact vs official | window vs exact |",
        "|---|---|---|---|---|---|---|---|---|"]

    def cell(value, fmt):
        return "-" if value is None else fmt.format(value)
    for row in rows:
        o, p, w = row["official_s"], row["project_s"], row["window_s"]
        lines.append(f"| {row['seconds']:g} s | {row['frames']} | {cell(o, '{:.1f} s')} | {cell(p, '{:.1f} s')} | "
                     f"{cell(o / p if o and p else None, '{:.1f}x')} | {w:.1f} s | "
                     f"{cell(o / w if o else None, '{:.1f}x')} | {cell(row['exact_vs_official'], '{:.1e}')} | "
                     f"{cell(row['window_vs_exact'], '{:.1e}')} |")
    lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    print(text)
    results.mkdir(exist_ok=True)
    (results / "codetalker_official.md").write_text(text)
    (results / "codetalker_official.json").write_text(json.dumps({"rows": rows, "threads": args.threads,
                                                                  "rounds": args.rounds}, indent=2))
