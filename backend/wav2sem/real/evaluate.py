"""Lip sync on speakers a model never heard: open/closed separation, closure, opening and
pauses under noise, against a phone-recognition baseline.

    python -m wav2sem.real.evaluate --corpus corpus/real --split test --model BUNDLE [--model B2] \\
        [--baseline] [--noise] [--limit 100] -o results/real_voices/eval

The corpus is any ICT-head corpus with phone timings (`wav2sem corpus real`: forced
alignment of the transcript; `wav2sem synth`: the engine's own timings). Per predictor
(a model bundle, the baseline, and the corpus's own targets, i.e. the rig driven by the
aligned phones), on the lip gap of the ICT head (metrics.lip_gap, mm):
  auc            frame-level ROC AUC at the motion rate (30 fps): the gap on frames inside an
                 open vowel against frames inside an m/b/p; 1.0 = every open frame wider
                 than every bilabial frame, 0.5 = no separation
  closure_mm     median over m/b/p phones of the smallest gap within the phone +-1 frame
  closed_share   share of those phones closing under CLOSED_MM
  opening_mm     median over open vowels of the widest gap within the phone
  pause_mm       median gap on pause frames: inside a silence of at least PAUSE_S, at least
                 PAUSE_MARGIN_S from speech (the mouth should rest, near the head's 0.64 mm)
  rtf            seconds of prediction per second of audio
With --noise the test audio is also mixed with white noise and with babble (BABBLE_TALKERS
other clips of the corpus's training speakers summed) at 20 and 10 dB SNR (speech frames'
power), and every measure is repeated; the phone timings are the clean ones.
The baseline (`--baseline`) recognises phones with pocketsphinx without the transcript
(wav2sem.real.phone_baseline) and drives the same rig with them, the way a phone-based
lip-sync tool works.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import metrics
from ..audio import SAMPLE_RATE

log = logging.getLogger(__name__)

CLOSED_MM = 1.5          # the bar for a sealed m/b/p on the ICT head (it rests at 0.64 mm)
PAUSE_S = 0.3
PAUSE_MARGIN_S = 0.1
BABBLE_TALKERS = 6
NOISE_CONDITIONS = (("clean", None, None), ("white 20 dB", "white", 20.0), ("white 10 dB", "white", 10.0),
                    ("babble 20 dB", "babble", 20.0), ("babble 10 dB", "babble", 10.0))

Predictor = Callable[[np.ndarray], np.ndarray]     # 16 kHz audio (S,) -> ARKit weights (T, K) at 30 fps


@dataclass
class Scores:
    """Lip-gap evidence of one predictor under one condition, pooled over clips."""

    open_frames: list[float] = field(default_factory=list)
    closed_frames: list[float] = field(default_factory=list)
    closures: list[float] = field(default_factory=list)
    openings: list[float] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def add(self, gap: np.ndarray, phonemes, fps: float) -> None:
        times = np.arange(len(gap)) / fps
        labels = frame_labels(times, phonemes)
        self.open_frames += gap[labels == "open"].tolist()
        self.closed_frames += gap[labels == "bilabial"].tolist()
        self.closures += metrics.phone_gap_extrema(gap, phonemes, fps, metrics.BILABIALS, True)
        self.openings += metrics.phone_gap_extrema(gap, phonemes, fps, metrics.OPEN_VOWELS, False)
        self.pauses += gap[pause_frames(times, phonemes)].tolist()

    def summary(self) -> dict:
        closures = np.asarray(self.closures)
        return {
            "auc": roc_auc(np.asarray(self.open_frames), np.asarray(self.closed_frames)),
            "closure_mm": _median(closures), "closed_share": float(np.mean(closures < CLOSED_MM)) if len(closures) else None,
            "opening_mm": _median(self.openings), "pause_mm": _median(self.pauses),
            "bilabial_phones": int(len(closures)), "open_vowels": len(self.openings), "pause_frames": len(self.pauses),
            "rtf": self.seconds / self.audio_seconds if self.audio_seconds else None,
        }


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def frame_labels(times: np.ndarray, phonemes) -> np.ndarray:
    """Per frame time: "open" inside an open vowel, "bilabial" inside an m/b/p, else ""."""
    labels = np.full(len(times), "", dtype=object)
    for seg in phonemes:
        cls = "open" if seg.arpabet in metrics.OPEN_VOWELS else "bilabial" if seg.arpabet in metrics.BILABIALS else None
        if cls:
            labels[(times >= seg.start) & (times < seg.end)] = cls
    return labels


def pause_frames(times: np.ndarray, phonemes) -> np.ndarray:
    """Frames well inside a silence of at least PAUSE_S (clip edges count as silence too)."""
    mask = np.zeros(len(times), bool)
    for seg in phonemes:
        if seg.arpabet == "SIL" and seg.duration >= PAUSE_S:
            mask |= (times >= seg.start + PAUSE_MARGIN_S) & (times <= seg.end - PAUSE_MARGIN_S)
    return mask


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties half: the Mann-Whitney U statistic."""
    if not len(positive) or not len(negative):
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2.0
    return float(u / (len(positive) * len(negative)))


def speech_power(audio: np.ndarray, phonemes, sr: int = SAMPLE_RATE) -> float:
    """Mean power of the samples inside phones (not silences)."""
    mask = np.zeros(len(audio), bool)
    for seg in phonemes:
        if seg.arpabet != "SIL":
            mask[int(seg.start * sr): int(seg.end * sr)] = True
    speech = audio[mask] if mask.any() else audio
    return float(np.mean(speech.astype(np.float64) ** 2)) + 1e-12


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float, phonemes) -> np.ndarray:
    """Audio plus `noise` scaled to `snr_db` below the speech power (noise looped to length)."""
    reps = int(np.ceil(len(audio) / max(len(noise), 1)))
    noise = np.tile(noise, reps)[: len(audio)].astype(np.float64)
    scale = np.sqrt(speech_power(audio, phonemes) / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return (audio + scale * noise).astype(np.float32)


def babble(sources: list[np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """BABBLE_TALKERS clips, each normalised to unit power, started at random offsets, summed."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    for clip in rng.choice(len(sources), size=min(BABBLE_TALKERS, len(sources)), replace=False):
        x = np.tile(sources[clip], int(np.ceil(2 * n / len(sources[clip])))).astype(np.float64)
        start = int(rng.integers(len(x) - n + 1))
        piece = x[start: start + n]
        out += piece / np.sqrt(np.mean(piece ** 2) + 1e-12)
    return out


def model_predictor(bundle: str | Path | None, semantic: bool = True) -> Predictor:
    """A bundle's ARKit weights (the default model for None)."""
    from ..inference import generate
    from ..loaded_model import load_model

    model = load_model(bundle, device="cpu")
    if not model.predicts_weights:
        raise ValueError(f"{bundle or 'the default model'} predicts vertex offsets; this evaluation needs an ARKit-weight model")

    def predict(audio: np.ndarray) -> np.ndarray:
        return generate(model, audio, semantic=semantic, offsets=False).weights
    return predict


def baseline_predictor(channels: tuple[str, ...], seed: int = 0) -> Predictor:
    """Phones recognised without the transcript, through the corpus rig (neutral style)."""
    from ..synth.arkit_rig import arkit_weights
    from ..synth.coarticulation import Style
    from ..synth.motion import articulator_track
    from .phone_baseline import recognize_phones

    def predict(audio: np.ndarray) -> np.ndarray:
        segments = recognize_phones(audio, SAMPLE_RATE)
        track = articulator_track(segments, audio, SAMPLE_RATE, Style(), np.random.default_rng(seed))
        return arkit_weights(track, channels)
    return predict


def evaluate_real(corpus: str | Path, predictors: dict[str, Predictor], split: str = "test", noise: bool = False,
                  limit: int | None = None, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> dict:
    """Scores per predictor ("target" = the corpus's own motion), per condition, overall and
    per speaker. `limit`: at most that many clips per speaker (evenly spaced)."""
    from ..dataset import open_dataset

    ds = open_dataset(corpus, split=split)
    template = ds.template
    if template.lip_centres is None or not template.has_blendshapes:
        raise ValueError(f"{corpus} is not a blendshape corpus with lip landmarks (make it with the ICT head)")
    deltas, lips = template.blendshape_deltas, template.lip_centres
    items = _pick(ds, limit)
    rng = np.random.default_rng(seed)
    conditions = NOISE_CONDITIONS if noise else NOISE_CONDITIONS[:1]
    babble_sources = _babble_sources(corpus, {it.subject for it in items}, rng) if noise else []
    scores: dict[tuple[str, str, str], Scores] = {}

    def score(name, condition, speaker) -> list[Scores]:
        return [scores.setdefault((name, condition, s), Scores()) for s in ("all", speaker)]

    for done, item in enumerate(items):
        phonemes = item.phonemes or []
        gap_of = lambda w: metrics.motion_lip_gap(metrics.Motion(weights=w, deltas=deltas), template.vertices, *lips) * 1e3
        for s in score("target", "clean", item.subject):
            s.add(gap_of(item.weights), phonemes, ds.fps)
        for condition, kind, snr in conditions:
            audio = item.audio
            if kind == "white":
                audio = add_noise(audio, rng.standard_normal(len(audio)), snr, phonemes)
            elif kind == "babble":
                audio = add_noise(audio, babble(babble_sources, len(audio) / SAMPLE_RATE, rng), snr, phonemes)
            for name, predict in predictors.items():
                t0 = time.perf_counter()
                weights = predict(audio)
                elapsed = time.perf_counter() - t0
                gap = gap_of(weights)
                for s in score(name, condition, item.subject):
                    s.add(gap, phonemes, ds.fps)
                    s.seconds += elapsed
                    s.audio_seconds += len(audio) / SAMPLE_RATE
        if progress:
            progress(done + 1, len(items))
    out: dict = {"corpus": str(corpus), "split": split, "clips": len(items),
                 "minutes": round(sum(len(it.audio) for it in items) / SAMPLE_RATE / 60, 2),
                 "speakers": sorted({it.subject for it in items}), "closed_mm": CLOSED_MM, "results": {}}
    for (name, condition, speaker), s in sorted(scores.items()):
        out["results"].setdefault(name, {}).setdefault(condition, {})[speaker] = s.summary()
    return out


def _pick(ds, limit: int | None) -> list:
    from ..dataset import subject_of

    by_speaker: dict[str, list[int]] = {}
    for i, item_id in enumerate(ds.ids):
        by_speaker.setdefault(subject_of(item_id), []).append(i)
    chosen = []
    for indices in by_speaker.values():
        if limit and len(indices) > limit:
            indices = [indices[int(j)] for j in np.linspace(0, len(indices) - 1, limit).round()]
        chosen += indices
    return [ds[i] for i in sorted(chosen)]


def _babble_sources(corpus, exclude: set[str], rng: np.random.Generator, n: int = 24) -> list[np.ndarray]:
    """Clips of speakers outside the evaluated set (the corpus's training split, else any other split)."""
    from ..dataset import open_dataset, subject_of

    for split in ("train", "val", "test"):
        ds = open_dataset(corpus, split=split)
        ids = [i for i, item_id in enumerate(ds.ids) if subject_of(item_id) not in exclude]
        if ids:
            return [ds[int(i)].audio for i in rng.choice(ids, size=min(n, len(ids)), replace=False)]
    raise ValueError(f"{corpus} has no clips of other speakers to make babble noise from")


def markdown(result: dict, title: str) -> str:
    """One table per condition: predictors as rows, measures as columns (all speakers pooled)."""
    lines = [f"# {title}", "", f"{result['clips']} clips, {result['minutes']} min, speakers: "
             f"{', '.join(result['speakers'])} ({result['corpus']}, split {result['split']}).", ""]
    present = {c for by_condition in result["results"].values() for c in by_condition}
    conditions = [name for name, _, _ in NOISE_CONDITIONS if name in present]
    for condition in conditions:
        lines += [f"## {condition}", "", "| predictor | AUC open vs m/b/p | m/b/p closure (median) | closed < "
                  f"{result['closed_mm']} mm | open vowels (median) | pauses (median) | RTF |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, by_condition in result["results"].items():
            s = by_condition.get(condition, {}).get("all")
            if s:
                lines.append(f"| {name} | {_f(s['auc'], 3)} | {_f(s['closure_mm'], 2)} mm | {_pct(s['closed_share'])} | "
                             f"{_f(s['opening_mm'], 1)} mm | {_f(s['pause_mm'], 2)} mm | {_f(s['rtf'], 4)} |")
        lines.append("")
    return "\n".join(lines)


def _f(x, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.0f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="an ICT-head corpus with phone timings")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]BUNDLE",
                        help="a model bundle (repeatable); 'default' for the shipped model")
    parser.add_argument("--no-semantic", action="store_true", help="models run with Wav2Sem switched off")
    parser.add_argument("--baseline", action="store_true", help="also the pocketsphinx phone-recognition baseline")
    parser.add_argument("--noise", action="store_true", help="also white and babble noise at 20 and 10 dB SNR")
    parser.add_argument("--limit", type=int, help="at most this many clips per speaker")
    parser.add_argument("-o", "--out", required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..dataset import open_dataset

    predictors: dict[str, Predictor] = {}
    for spec in args.model or ["default"]:
        name, _, path = spec.rpartition("=")
        path = None if path == "default" else path
        predictors[name or (Path(path).name if path else "default")] = model_predictor(path, not args.no_semantic)
    if args.baseline:
        predictors["phone baseline"] = baseline_predictor(open_dataset(args.corpus).template.blendshape_names)
    result = evaluate_real(args.corpus, predictors, args.split, args.noise, args.limit,
                           progress=lambda d, n: print(f"\r{d}/{n} clips", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    text = markdown(result, f"Lip sync on {args.split} speakers of {Path(args.corpus).name}")
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
