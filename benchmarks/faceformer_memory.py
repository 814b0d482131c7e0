"""Peak memory of loading a base-size FaceFormer and animating 20 s of speech: the official code
as its demo does it (`Faceformer(args)`, `load_state_dict(torch.load(vocaset.pth))`, `predict`)
against the project (`load_model(bundle)`, `generate`), same weights, Wav2Sem off, CPU, one
thread. Issue 13's goal: the project's peak no higher than the official code's.

Each side runs in its own fresh process. Its peak is the process's high-water resident size
(VmHWM) at the end, reset after the imports (transformers and torch on both sides) through
/proc/self/clear_refs (ru_maxrss would carry the parent's size over the fork); the growth is
that peak minus the resident size after the imports: what loading and generating add. The weights are written once by the parent (the official
state dict as a .pth, and the bundle `wav2sem convert` makes from it), with the helpers of
faceformer_official.py (same shims, same offline random weights, same espeak-ng speech).
Rounds alternate the sides; medians.

    .venv/bin/python benchmarks/faceformer_memory.py [--official DIR] [--rounds 2] [--seconds 20]

Without a local copy of the official code it says so and exits 0. Prints a table and saves
results/faceformer_memory.md (+ .json).
"""
from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import faceformer_official as ff  # noqa: E402  (the official code's offline build, shared)
from machine import reset_peak, status_kb  # noqa: E402

RESULTS = HERE.parent / "results"


def _after_imports_mb() -> float:
    """Resident size now, with the high-water mark reset to it."""
    reset_peak()
    return status_kb("VmRSS") / 1024


def _peak_mb() -> float:
    return status_kb("VmHWM") / 1024


def child_official(folder: Path, work: Path) -> dict:
    import numpy as np
    import torch

    faceformer = ff.load_official(folder)
    wave = np.load(work / "speech.npy")
    audio = torch.from_numpy(np.asarray(ff.feature_extractor()(wave, sampling_rate=ff.SAMPLE_RATE).input_values[0],
                                        np.float32)).unsqueeze(0)
    template = torch.from_numpy(np.load(work / "template.npy").reshape(1, -1))
    one_hot = torch.zeros(1, 8)
    one_hot[0, ff.SUBJECT] = 1.0
    base = _after_imports_mb()
    model = ff.build_official(faceformer)                          # Faceformer(args), as the demo
    model.load_state_dict(torch.load(work / "vocaset.pth"))        # the demo's load
    out = ff.run_official(model.eval(), audio, template, one_hot)
    return {"frames": int(out.shape[1]), "after_imports_mb": base, "peak_mb": _peak_mb()}


def child_project(work: Path) -> dict:
    import numpy as np

    from wav2sem.loaded_model import load_model

    wave = np.load(work / "speech.npy")
    base = _after_imports_mb()
    result = ff.run_project(load_model(work / "bundle", "cpu"), wave)
    return {"frames": int(result.frames), "after_imports_mb": base, "peak_mb": _peak_mb()}


def measure(side: str, folder: Path, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", side, "--official", str(folder), "--work", str(work)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help="local copy of the official FaceFormer code (default: $FACEFORMER_DIR, "
                                           "else ../FaceFormer beside the repository)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(RESULTS / "faceformer_memory"), help="results path without extension")
    parser.add_argument("--child", choices=("official", "project"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = ff.official_dir(args.official)
    if args.child:
        import torch

        torch.set_num_threads(1)
        work = Path(args.work)
        print(json.dumps(child_official(folder, work) if args.child == "official" else child_project(work)))
        return 0
    missing = ff.missing_files(folder)
    if missing:
        print(f"SKIP: the official FaceFormer code is not at {folder} (no {', '.join(missing)}); pass --official DIR "
              "or set FACEFORMER_DIR.")
        return 0
    if args.seconds > 20.0:
        raise SystemExit("The official code stops at 20 s of audio (600 frames at 30 fps).")

    import numpy as np
    import torch

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = [round(v, 2) for v in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="faceformer_memory_"))
    try:
        official = ff.build_official(ff.load_official(folder))
        template = (np.random.default_rng(0).normal(size=(ff.VERTICES, 3)) * 0.05).astype(np.float32)
        ff.convert(official, template, work)                       # writes vocaset.pth, template.npy, bundle/
        del official
        wave, audio_source = ff.speech(args.seconds, None, work)
        np.save(work / "speech.npy", np.ascontiguousarray(wave[: int(round(args.seconds * ff.SAMPLE_RATE))]))
        runs: dict[str, list[dict]] = {"official": [], "project": []}
        for r in range(args.rounds):
            for side in (("official", "project") if r % 2 == 0 else ("project", "official")):
                runs[side].append(measure(side, folder, work))
                print(f"round {r + 1} {side}: {runs[side][-1]}", file=sys.stderr, flush=True)
        weights_mb = (work / "vocaset.pth").stat().st_size / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {side: {k: statistics.median(run[k] for run in v) for k in ("after_imports_mb", "peak_mb")}
           for side, v in runs.items()}
    for side in med:
        med[side]["growth_mb"] = med[side]["peak_mb"] - med[side]["after_imports_mb"]
    result = {"started": started, "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                             f"{platform.python_version()}, torch {torch.__version__}, 1 thread",
              "load_average_before": load_before, "load_average_after": [round(v, 2) for v in os.getloadavg()],
              "seconds": args.seconds, "audio": audio_source, "weights_mb": weights_mb, "runs": runs, "median": med,
              "goal_met": med["project"]["peak_mb"] <= med["official"]["peak_mb"]}
    o, p = med["official"], med["project"]
    lines = [f"# Peak memory: load + {args.seconds:g} s generate, base-size FaceFormer ({started}, {result['machine']})",
             "", f"Load average {tuple(load_before)} before, {tuple(result['load_average_after'])} after. "
             f"Weights {weights_mb:.0f} MB (float32). Speech: {audio_source}. Each side in a fresh process, "
             f"{args.rounds} alternating rounds, medians. Peak = high-water resident size, reset after the imports; growth = peak minus the resident size after the imports.", "",
             "| side | after imports | peak | growth (load + generate) | frames |", "| --- | ---: | ---: | ---: | ---: |",
             f"| official (`Faceformer(args)` + `load_state_dict(torch.load(...))` + `predict`) | "
             f"{o['after_imports_mb']:.0f} MB | {o['peak_mb']:.0f} MB | {o['growth_mb']:.0f} MB | {runs['official'][0]['frames']} |",
             f"| project (`load_model` + `generate`) | {p['after_imports_mb']:.0f} MB | {p['peak_mb']:.0f} MB | "
             f"{p['growth_mb']:.0f} MB | {runs['project'][0]['frames']} |", "",
             f"Goal (issue 13): the project's peak no higher than the official code's: "
             f"{'met' if result['goal_met'] else 'NOT met'} ({p['peak_mb']:.0f} vs {o['peak_mb']:.0f} MB; growth "
             f"{p['growth_mb']:.0f} vs {o['growth_mb']:.0f} MB).", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
