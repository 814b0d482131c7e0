"""The project's FaceFormer inference path against the official FaceFormer code
(github.com/EvelynFan/FaceFormer: `faceformer.py` + `wav2vec.py`, its own `predict`), base size
(VOCASET: wav2vec 2.0 base, feature_dim 64, period 30, 5023 vertices), same weights, same
speech, Wav2Sem off, on the CPU.

The official code is not a dependency. Give a local copy:

    git clone https://github.com/EvelynFan/FaceFormer ../FaceFormer
    .venv/bin/python benchmarks/faceformer_official.py [--official DIR] [--rounds 3]

(default DIR: $FACEFORMER_DIR, else ../FaceFormer beside the repository). Without one it says
so and exits 0. Nothing is downloaded:
- the official model builds its encoder with `Wav2Vec2Model.from_pretrained("facebook/
  wav2vec2-base-960h")`; here that one call is replaced, in this process only, by the model
  built from `Wav2Vec2Config()` (base size) with random weights. The output layer
  `vertice_map_r`, zero in a fresh official model, gets small random weights so the offsets
  (and the feedback through them) are not zero;
- shims for the transformers of this venv (the official code was written for 4.6.1), applied
  to the official model object only, its files untouched: eager attention (its forward sets
  `config.output_attentions = True`, which the newer default SDPA attention refuses; 4.6.1
  only had eager attention), and `feature_projection`'s output reduced to the hidden states
  (newer versions return a pair);
- the official state dict is converted into a project bundle by `wav2sem convert`'s own
  function (`wav2sem.commands.convert.run`, in-process), which the project then loads with
  `wav2sem.loaded_model.load_model`;
- the speech is espeak-ng reading an English paragraph (a local program), resampled to 16 kHz
  and cut to 5, 10 and 20 s (`--wav FILE` gives another recording). The official code stops
  at 20 s (600 frames at 30 fps: its temporal-bias mask and positional table); 20 s = 599
  frames.

Timed: the official `model.predict(audio, template, one_hot)` under `torch.no_grad()` (the
demo's call; the audio normalised beforehand by the same feature extractor as the project's,
not timed) against the project's `generate(model, wave, subject, semantic=False)` (its
normalisation, encoder, decoder and output checks all timed). Both models live in one process
and are loaded before any timing (loading excluded); each duration and thread count gets a
warm-up run of both, then alternating rounds A B, B A, A B, ... (A = official); medians.
Threads: `torch.set_num_threads(1)` and `(2)`. The outputs are compared (max abs difference of
the offsets over all frames). Then the project's time is split by manual timers into its
stages (normalisation, conv features, interpolation + projection, the transformer encoder, the
decoder memory, the decoder loop, the output map), and the official time into encoder and
decoder.

Prints a Markdown table and saves results/faceformer_official.md (+ .json). Goal (issue 13):
the project at least 10x faster than the official code at 20 s, Wav2Sem off.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
OFFICIAL_FILES = ("faceformer.py", "wav2vec.py")
OFFICIAL_URL = "https://github.com/EvelynFan/FaceFormer"
VOCASET_SUBJECTS = ("FaceTalk_170728_03272_TA FaceTalk_170904_00128_TA FaceTalk_170725_00137_TA "
                    "FaceTalk_170915_00223_TA FaceTalk_170811_03274_TA FaceTalk_170913_03279_TA "
                    "FaceTalk_170904_03276_TA FaceTalk_170912_03278_TA")
SUBJECT = 5                    # FaceTalk_170913_03279_TA, the official demo's default condition
VERTICES = 5023
SAMPLE_RATE = 16_000
GOAL = 10.0                    # issue 13: >= 10x faster than the official code at 20 s
PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog while the children watch from the garden. "
    "Every morning the baker opens his shop at six, and the smell of fresh bread fills the "
    "whole street. She said that the train would leave at half past nine, so we packed our "
    "bags, locked the door, and walked to the station in the rain. Nobody expected the old "
    "bridge to hold, but it carried the heavy trucks for another fifty years. Please speak "
    "clearly into the microphone, and remember to pause between the sentences."
)


def official_dir(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    env = os.environ.get("FACEFORMER_DIR")
    return Path(env).expanduser() if env else ROOT.parent / "FaceFormer"


def missing_files(folder: Path) -> list[str]:
    return [name for name in OFFICIAL_FILES if not (folder / name).is_file()]


# ----- the official code, built offline ----------------------------------------------------------
def load_official(folder: Path):
    """Import the official faceformer.py (which imports wav2vec.py by that name) with
    `Wav2Vec2Model.from_pretrained` replaced by a base-size model with random weights."""
    from transformers import Wav2Vec2Config

    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("wav2vec", folder / "wav2vec.py")
        wav2vec = importlib.util.module_from_spec(spec)
        sys.modules["wav2vec"] = wav2vec
        spec.loader.exec_module(wav2vec)

        def offline(cls, name, *args, **kwargs):   # instead of a download of facebook/wav2vec2-base-960h
            return cls(Wav2Vec2Config(attn_implementation="eager"))

        wav2vec.Wav2Vec2Model.from_pretrained = classmethod(offline)
        spec = importlib.util.spec_from_file_location("faceformer_official", folder / "faceformer.py")
        faceformer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(faceformer)
    finally:
        sys.path.remove(str(folder))
    return faceformer


def build_official(faceformer, seed: int = 0):
    import torch

    args = types.SimpleNamespace(dataset="vocaset", feature_dim=64, period=30, vertice_dim=VERTICES * 3,
                                 device="cpu", train_subjects=VOCASET_SUBJECTS)
    torch.manual_seed(seed)
    model = faceformer.Faceformer(args)
    torch.nn.init.normal_(model.vertice_map_r.weight, std=0.002)   # zero in a fresh model
    torch.nn.init.normal_(model.vertice_map_r.bias, std=0.0002)
    projection = model.audio_encoder.feature_projection
    newer = projection.forward

    def hidden_only(x):          # transformers >= 4.1x: (hidden_states, normed conv features)
        out = newer(x)
        return out[0] if isinstance(out, tuple) else out

    projection.forward = hidden_only
    return model.eval()


def official_source(folder: Path) -> dict:
    source = {"folder": str(folder)}
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if done.returncode == 0:
            source["commit"] = done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    source["sha256"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16] for name in OFFICIAL_FILES}
    return source


# ----- the same weights as a project bundle ------------------------------------------------------
def convert(official_model, template, work: Path) -> Path:
    """The official state dict -> a bundle, through `wav2sem convert`'s own function."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2Config

    from wav2sem.commands import convert as convert_command

    checkpoint = work / "vocaset.pth"
    torch.save(official_model.state_dict(), checkpoint)
    encoder = work / "wav2vec2-base"
    Wav2Vec2Config().save_pretrained(encoder)            # the base-960h folder's config: sizes only
    feature_extractor().save_pretrained(encoder)
    np.save(work / "template.npy", template)
    out = work / "bundle"
    parser = argparse.ArgumentParser()
    convert_command.add_arguments(parser)        # the command's own options and defaults
    args = parser.parse_args(["--checkpoint", str(checkpoint), "--dataset", "vocaset", "--encoder", str(encoder),
                              "--template", str(work / "template.npy"), "--name", "faceformer-official-random",
                              "-o", str(out)])
    with contextlib.redirect_stderr(io.StringIO()):
        code = convert_command.run(args)
    if code != 0:
        raise SystemExit(f"wav2sem convert failed ({code})")
    return out


def feature_extractor():
    """The wav2vec2-base-960h preprocessor (what the official demo's Wav2Vec2Processor runs)."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=False)


# ----- speech ------------------------------------------------------------------------------------
def speech(seconds: float, wav: str | None, work: Path) -> tuple:
    """(S,) float32 16 kHz speech at least `seconds` long, and where it came from."""
    import numpy as np

    from wav2sem.audio import load_audio

    if wav:
        wave, source = load_audio(wav), str(wav)
    elif shutil.which("espeak-ng"):
        path = work / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), PARAGRAPH], check=True,
                       capture_output=True)
        wave, source = load_audio(path), "espeak-ng -v en-us -s 160 (an English paragraph), resampled to 16 kHz"
    else:
        raise SystemExit("No speech: install espeak-ng or give --wav FILE (16 kHz or any rate).")
    need = int(round(seconds * SAMPLE_RATE))
    if wave.shape[0] < need:         # repeat a short recording
        wave = np.tile(wave, need // wave.shape[0] + 1)
        source += " (repeated)"
    return wave, source


# ----- runs --------------------------------------------------------------------------------------
def run_official(model, audio, template, one_hot):
    import torch

    with torch.no_grad():
        return model.predict(audio, template, one_hot)


def run_project(loaded, wave):
    from wav2sem.inference import generate

    return generate(loaded, wave, subject=SUBJECT, semantic=False)


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def project_stages(loaded, wave) -> dict:
    """The project's generate split by manual timers (same calls as generate, Wav2Sem off)."""
    import torch
    import torch.nn.functional as F

    from wav2sem import audio as audio_io
    from wav2sem.inference import subject_weights
    from wav2sem.models.encoders import CONV_FEATURE_RATE, encoder_input, memory_frame_count

    net, cfg = loaded.net, loaded.bundle.config
    enc = net.audio_encoder
    stages = {}
    clock = time.perf_counter
    with torch.inference_mode():
        t = clock()
        normalized = audio_io.normalize(wave, loaded.feature_extractor)
        wav = torch.from_numpy(normalized).unsqueeze(0)
        stages["normalise"] = clock() - t
        t = clock()
        conv = enc.feature_extractor(encoder_input(enc, wav))                         # (1, 512, N)
        stages["conv features"] = clock() - t
        t = clock()
        n = conv.shape[-1]
        size = max(int(n / CONV_FEATURE_RATE * cfg.fps), 1)
        features = F.interpolate(conv, size=size, mode="linear", align_corners=True).transpose(1, 2)
        projected = enc.feature_projection(features)
        projected = projected[0] if isinstance(projected, tuple) else projected
        stages["interpolate + projection"] = clock() - t
        t = clock()
        hidden = enc.encoder(projected).last_hidden_state
        stages["transformer encoder (12 layers)"] = clock() - t
        t = clock()
        memory = net.memory(hidden, None)
        style = net.style_embedding(subject_weights(loaded, SUBJECT))
        stages["decoder memory (audio_feature_map)"] = clock() - t
        n_frames = memory_frame_count(enc, wave.shape[0], cfg.fps, cfg.decoder.alignment)
        t = clock()
        net.decode(memory, style, n_frames)
        decode = clock() - t
        rows = torch.randn(n_frames, cfg.decoder.feature_dim)
        t = clock()
        net.vertice_map_r(rows)
        output_map = clock() - t
        stages["decoder loop"] = decode - output_map
        stages["output map (vertice_map_r, once)"] = output_map
    return stages


def official_stages(model, audio) -> dict:
    import torch

    clock = time.perf_counter
    with torch.no_grad():
        t = clock()
        hidden = model.audio_encoder(audio, model.dataset).last_hidden_state
        model.audio_feature_map(hidden)
        encoder = clock() - t
    return {"encoder (eager attention, as the official forward asks for attentions)": encoder}


def official_output_map(model, n_frames: int) -> float:
    """What the official loop spends in `vertice_map_r` alone: frame i maps all i+1 rows of
    the prefix to 15,069 values (timed on random rows of the same shapes)."""
    import torch

    clock = time.perf_counter
    total = 0.0
    with torch.no_grad():
        for i in range(1, n_frames + 1):
            rows = torch.randn(1, i, model.vertice_map_r.in_features)
            t = clock()
            model.vertice_map_r(rows)
            total += clock() - t
    return total


def median(xs):
    return statistics.median(xs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help="local copy of github.com/EvelynFan/FaceFormer (default: $FACEFORMER_DIR, "
                                           "else ../FaceFormer beside the repository)")
    parser.add_argument("--durations", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wav", help="speech to use instead of espeak-ng's (any rate; cut or repeated)")
    parser.add_argument("--out", default=str(RESULTS / "faceformer_official"),
                        help="results path without extension (.md and .json are written)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--note", default="", help="a sentence for the results (e.g. what else ran)")
    args = parser.parse_args()

    folder = official_dir(args.official)
    missing = missing_files(folder)
    if missing:
        print(f"SKIP: the official FaceFormer code is not at {folder} (no {', '.join(missing)}). Get it with "
              f"`git clone {OFFICIAL_URL} {ROOT.parent / 'FaceFormer'}` or pass --official DIR "
              f"(or set FACEFORMER_DIR).")
        return 0
    if max(args.durations) > 20.0:
        raise SystemExit("The official code stops at 20 s of audio (600 frames at 30 fps).")

    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from wav2sem.loaded_model import load_model

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="faceformer_official_"))
    try:
        faceformer = load_official(folder)
        official = build_official(faceformer)
        rng = np.random.default_rng(0)
        template = (rng.normal(size=(VERTICES, 3)) * 0.05).astype(np.float32)
        bundle = convert(official, template, work)
        project = load_model(bundle, "cpu")
        wave_full, audio_source = speech(max(args.durations), args.wav, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    extractor = feature_extractor()
    template_t = torch.from_numpy(template.reshape(1, -1))
    one_hot = torch.zeros(1, 8)
    one_hot[0, SUBJECT] = 1.0
    print(f"official: {folder}; project encoder attention: {project.net.audio_encoder.config._attn_implementation}, "
          f"official: {official.audio_encoder.config._attn_implementation}", file=sys.stderr)

    agreement, runs, stages = {}, {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for seconds in args.durations:
            wave = np.ascontiguousarray(wave_full[: int(round(seconds * SAMPLE_RATE))])
            audio = torch.from_numpy(np.asarray(extractor(wave, sampling_rate=SAMPLE_RATE).input_values[0],
                                                np.float32)).unsqueeze(0)
            key = f"{threads}t/{seconds:g}s"
            # warm-up of both, and the agreement check on their outputs
            t_off, out = timed(run_official, official, audio, template_t, one_hot)
            ref = (out[0].double().numpy() - template.reshape(1, -1).astype(np.float64)).reshape(-1, VERTICES, 3)
            t_pro, res = timed(run_project, project, wave)
            got = res.offsets.astype(np.float64)
            if got.shape != ref.shape:
                raise SystemExit(f"{key}: official {ref.shape} frames, project {got.shape}")
            diff = float(np.abs(got - ref).max())
            agreement[key] = {"frames": int(got.shape[0]), "max_abs_diff": diff,
                              "max_abs_offset": float(np.abs(ref).max()),
                              "rms_offset": float(np.sqrt(np.mean(ref ** 2)))}
            print(f"{key}: {got.shape[0]} frames, max |diff| {diff:.3g} (max |offset| {np.abs(ref).max():.3g}); "
                  f"warm-up official {t_off:.2f} s, project {t_pro:.2f} s", file=sys.stderr)
            times = {"official": [], "project": []}
            load1 = []
            for r in range(args.rounds):
                order = ("official", "project") if r % 2 == 0 else ("project", "official")
                for side in order:
                    if side == "official":
                        times[side].append(timed(run_official, official, audio, template_t, one_hot)[0])
                    else:
                        times[side].append(timed(run_project, project, wave)[0])
                load1.append(os.getloadavg()[0])
            runs[key] = {"threads": threads, "seconds": seconds, "frames": int(got.shape[0]), **times,
                         "median_official": median(times["official"]), "median_project": median(times["project"]),
                         "ratio": median(times["official"]) / median(times["project"]), "load1": load1}
            print(f"{key}: official {runs[key]['median_official']:.3f} s, project {runs[key]['median_project']:.3f} s, "
                  f"ratio {runs[key]['ratio']:.2f}", file=sys.stderr)
            if seconds == max(args.durations):     # where the time goes, at the longest clip
                parts = [project_stages(project, wave) for _ in range(args.rounds)]
                off = [official_stages(official, audio) for _ in range(args.rounds)]
                stages[key] = {
                    "project": {name: median([p[name] for p in parts]) for name in parts[0]},
                    "official": {name: median([o[name] for o in off]) for name in off[0]},
                }
                project_total = runs[key]["median_project"]
                stages[key]["project"]["rest of generate (checks, copies)"] = max(
                    0.0, project_total - sum(stages[key]["project"].values()))
                official_encoder = next(iter(stages[key]["official"].values()))
                official_decoder = max(0.0, runs[key]["median_official"] - official_encoder)
                output_map = official_output_map(official, runs[key]["frames"])     # once: it is slow
                stages[key]["official"]["decoder loop: output map on the whole prefix every frame"] = output_map
                stages[key]["official"]["decoder loop: the rest (full prefix through the decoder layer)"] = max(
                    0.0, official_decoder - output_map)
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    import transformers

    longest = max(args.durations)
    goal_keys = [k for k, v in runs.items() if v["seconds"] == longest]
    result = {
        "started": started,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "load_average_before": load_before, "load_average_after": load_after,
        "official": official_source(folder),
        "audio": audio_source, "subject": SUBJECT, "rounds": args.rounds, "note": args.note,
        "shims": ["Wav2Vec2Model.from_pretrained -> Wav2Vec2Config() (base) with random weights (no download)",
                  "official encoder built with attn_implementation='eager' (its forward sets output_attentions=True)",
                  "official feature_projection output reduced to the hidden states (transformers >= 4.1x returns a pair)",
                  "vertice_map_r given random weights (std 0.002, bias 0.0002): zero in a fresh official model"],
        "project_encoder_attention": project.net.audio_encoder.config._attn_implementation,
        "agreement": agreement, "runs": runs, "stages": stages,
        "goal": {"ratio": GOAL, "seconds": longest,
                 "met": {k: runs[k]["ratio"] >= GOAL for k in goal_keys}},
    }
    md = markdown(result)
    print(md)
    if not args.no_save:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(md)
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    lb, la = (tuple(round(x, 2) for x in result[k]) for k in ("load_average_before", "load_average_after"))
    src = result["official"]
    version = src.get("commit", "") or ", ".join(f"{k} {v}" for k, v in src["sha256"].items())
    lines = [
        "# FaceFormer: the project's inference path vs the official code",
        "",
        f"Run {result['started']} by `benchmarks/faceformer_official.py`: {m['platform']}, {m['cores']} cores, "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}. Load average (1, 5, 15 min) "
        f"before {lb}, after {la}." + (f" {result['note']}" if result.get("note") else ""),
        "",
        f"Official code: {src['folder']} ({version}), its `Faceformer.predict` under `torch.no_grad()`. "
        f"Project: `wav2sem.inference.generate(..., semantic=False)` on the bundle `wav2sem convert` made from the "
        f"official model's state dict. Base size (wav2vec 2.0 base, random weights, feature_dim 64, 5023 vertices), "
        f"VOCASET conventions (30 fps), subject {result['subject']}, CPU. Speech: {result['audio']}.",
        "",
        f"Seconds, medians of {result['rounds']} alternating rounds (A B, B A, ...) after one warm-up run of each; "
        "models loaded beforehand (loading not timed), both in one process; `torch.set_num_threads(n)`.",
        "",
        "| threads | audio | frames | official (s) | project (s) | official / project | max abs diff of offsets |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in result["runs"].items():
        a = result["agreement"][key]
        lines.append(f"| {r['threads']} | {r['seconds']:g} s | {r['frames']} | {r['median_official']:.3f} | "
                     f"{r['median_project']:.3f} | {r['ratio']:.1f}x | {a['max_abs_diff']:.2g} |")
    offsets = [a["max_abs_offset"] for a in result["agreement"].values()]
    lines += ["", f"Offsets reach {max(offsets):.3g} in magnitude (the output layer's random weights); the "
                  "difference is over all frames and vertices.", ""]
    goal = result["goal"]
    verdict = ", ".join(f"{k}: {'met' if ok else 'NOT met'} ({result['runs'][k]['ratio']:.1f}x)"
                        for k, ok in goal["met"].items())
    lines += [f"Goal (issue 13): >= {goal['ratio']:g}x at {goal['seconds']:g} s, Wav2Sem off: {verdict}.", ""]
    for key, parts in result["stages"].items():
        total_p = result["runs"][key]["median_project"]
        total_o = result["runs"][key]["median_official"]
        lines += [f"Where the time goes at {key} (medians of separate timed runs of each stage):", "",
                  "| side | stage | seconds | share |", "| --- | --- | ---: | ---: |"]
        for side, total in (("project", total_p), ("official", total_o)):
            for name, secs in parts[side].items():
                lines.append(f"| {side} | {name} | {secs:.3f} | {100 * secs / total:.0f}% |")
        p = parts["project"]
        encoder = sum(v for k, v in p.items() if k in ("conv features", "interpolate + projection",
                                                        "transformer encoder (12 layers)"))
        decoder = sum(v for k, v in p.items() if k.startswith(("decoder", "output map")))
        official_encoder = next(iter(parts["official"].values()))
        lines += ["", f"The project's speech encoder (conv features, projection, transformer) takes {encoder:.2f} s, "
                      f"{100 * encoder / total_p:.0f}% of its generate; its decoder (loop + output map + memory) "
                      f"{decoder:.3f} s. The official encoder (the same network, eager attention) takes "
                      f"{official_encoder:.2f} s. With a decoder of zero cost the project's ratio could reach at most "
                      f"{total_o:.2f} / {encoder:.2f} = {total_o / encoder:.1f}x.", ""]
    lines += ["Shims (the official files untouched): " + "; ".join(result["shims"]) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
