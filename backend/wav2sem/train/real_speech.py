"""Lip closure on recorded human speech: a folder of single-word recordings, no ground truth.

    python -m wav2sem.train.real_speech DIR [--model BUNDLE] [--drop-prefix] --out results/x

Each file is one spoken word (or short phrase) named after its text, e.g. `umbrella.ogg`
(`--drop-prefix` turns `pizzeria_salami.ogg` into "salami"). For every clip we predict the
lip gap (distance between the lip-centre landmarks) and measure, inside the speech span
(frames within 30 dB of the loudest):
  widest      the largest gap: the mouth must open on the vowels
  dip         the smallest gap between the first and the last frame that opens to at least
              OPEN_FRACTION of the widest, i.e. between the outer vowels. A bilabial inside the word (salami,
              umbrella) must close the lips there; a word with no bilabial (oregano,
              satellite) may narrow but should not close.
  silence     the gap in the first and last 3 frames (before and after the word): closed.
The bilabial classes come from the spelling: m, b or p after removing "ph". Word-initial
bilabials close before the onset, where silence already closes the lips, so they are not
counted as evidence. Writes OUT.json (per word and summary), OUT.png (all curves) and, with
`--mouths umbrella,tomato,...`, OUT_mouths.png: each word's mouth at its widest and at its dip.

Debian's ktuberling-data package carries 72 such English words recorded by a person:
    apt-get download ktuberling-data && dpkg -x ktuberling-data_*.deb /tmp/kt
    python -m wav2sem.train.real_speech /tmp/kt/usr/share/ktuberling/sounds/en --drop-prefix \\
        --out results/default_model/real_speech_words
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import metrics

AUDIO_SUFFIXES = {".wav", ".ogg", ".flac"}
SPEECH_DB = 30.0     # frames within this many dB of the loudest frame are speech
EDGE_FRAMES = 3      # frames at each end of a clip taken as the surrounding silence
OPEN_FRACTION = 0.3  # a vowel counts as open at this fraction of the word's widest gap (unstressed
                     # final vowels, as in "salami", open to a third of the stressed one)


@dataclass
class WordResult:
    word: str
    medial_bilabial: bool      # an m/b/p after the first letter: must close between the vowels
    has_bilabial: bool
    widest_mm: float
    dip_mm: float | None       # None when the word has a single open peak (no interior)
    silence_mm: float


def word_of(path: Path, drop_prefix: bool) -> str:
    stem = path.stem
    if drop_prefix and "_" in stem:
        stem = stem.split("_", 1)[1]
    return stem.replace("_", " ").lower()


def bilabial_positions(word: str) -> list[int]:
    """Letter positions of m, b, p in the spelling (a "ph" is an f, not a bilabial)."""
    spelling = word.replace("ph", "f_")
    return [i for i, c in enumerate(spelling) if c in "mbp"]


def speech_mask(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Frames (at the animation rate) whose RMS is within SPEECH_DB of the loudest."""
    edges = np.linspace(0, len(audio), n_frames + 1).astype(int)
    rms = np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    db = 20 * np.log10(rms + 1e-9)
    return db > db.max() - SPEECH_DB


def interior_frames(gap: np.ndarray, speech: np.ndarray) -> np.ndarray | None:
    """Frame indices from the first to the last speech frame that opens to OPEN_FRACTION of the
    widest, i.e. between the outer vowels; None without speech or with a single open peak."""
    idx = np.nonzero(speech)[0]
    if not len(idx):
        return None
    span = np.arange(idx[0], min(idx[-1] + 1, len(gap)))
    open_frames = span[gap[span] >= OPEN_FRACTION * gap[span].max()]
    if open_frames[-1] - open_frames[0] < 2:
        return None
    return np.arange(open_frames[0], open_frames[-1] + 1)


def interior_dip(gap: np.ndarray, speech: np.ndarray) -> float | None:
    """Smallest gap between the outer vowels (see interior_frames)."""
    inner = interior_frames(gap, speech)
    return None if inner is None else float(gap[inner].min())


def analyse(word: str, gap_mm: np.ndarray, audio: np.ndarray) -> WordResult:
    speech = speech_mask(audio, len(gap_mm))
    positions = bilabial_positions(word.replace(" ", ""))
    edges = np.concatenate([gap_mm[:EDGE_FRAMES], gap_mm[-EDGE_FRAMES:]])
    return WordResult(word, any(p > 0 for p in positions), bool(positions),
                      float(gap_mm[speech].max()) if speech.any() else float("nan"),
                      interior_dip(gap_mm, speech), float(np.median(edges)))


def summarise(results: list[WordResult]) -> dict:
    def median(values):
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    medial = [r.dip_mm for r in results if r.medial_bilabial and r.dip_mm is not None]
    plain = [r.dip_mm for r in results if not r.has_bilabial and r.dip_mm is not None]
    return {
        "words": len(results),
        "widest_mm_median": median([r.widest_mm for r in results]),
        "silence_mm_median": median([r.silence_mm for r in results]),
        "medial_bilabial_words": len(medial),
        "medial_bilabial_dip_mm_median": median(medial),
        "medial_bilabial_closed": int(sum(d < metrics.CLOSED_MM for d in medial)),
        "no_bilabial_words_with_interior": len(plain),
        "no_bilabial_dip_mm_median": median(plain),
        "no_bilabial_closed": int(sum(d < metrics.CLOSED_MM for d in plain)),
    }


def run_folder(folder: str | Path, model_dir: str | Path | None, drop_prefix: bool, semantic: bool = True):
    from ..audio import load_audio
    from ..inference import generate
    from ..loaded_model import load_model

    if not Path(folder).is_dir():
        raise SystemExit(f"{folder} is not a folder of recordings")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"no .wav/.ogg/.flac files in {folder}")
    model = load_model(model_dir, "cpu")
    template = model.bundle.template
    lips = template.lip_centres
    if lips is None:
        raise SystemExit("the model's template has no upper_lip_center / lower_lip_center landmarks")
    everyone = {i: 1.0 for i in range(len(model.subjects))}
    curves, results = [], []
    for path in files:
        audio = load_audio(path)
        offsets = generate(model, audio, subject=everyone, semantic=semantic).offsets
        gap = metrics.lip_gap(offsets, template.vertices, *lips) * 1000.0
        result = analyse(word_of(path, drop_prefix), gap, audio)
        results.append(result)
        curves.append((gap, speech_mask(audio, len(gap)), offsets))
    return model, results, curves


def mouth_sheet(words: list[str], results: list[WordResult], curves, template, out: Path) -> None:
    """Front views of the mouth at each listed word's widest frame and at its dip."""
    from ..synth.render import contact_sheet

    panels = []
    by_word = {r.word: (r, c) for r, c in zip(results, curves)}
    for word in words:
        if word not in by_word:
            raise SystemExit(f"--mouths: no recording of {word!r}; words: {', '.join(sorted(by_word))}")
        r, (gap, speech, offsets) = by_word[word]
        widest = int(np.argmax(np.where(speech, gap, -np.inf)) if speech.any() else np.argmax(gap))
        inner = interior_frames(gap, speech)
        dip = widest if inner is None else int(inner[np.argmin(gap[inner])])
        for label, frame in (("widest", widest), ("dip", dip)):
            panels.append((f"{word}: {label} {gap[frame]:.1f} mm", template.vertices + offsets[frame], "front", True))
    contact_sheet(out, template, panels, columns=4, panel_size=2.6)


def plot(results: list[WordResult], curves, fps: float, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 8
    rows = int(np.ceil(len(results) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 1.45 * rows), sharey=True, squeeze=False)
    top = max(float(c[0].max()) for c in curves) * 1.05
    for ax, r, (gap, speech, _) in zip(axes.flat, results, curves):
        t = np.arange(len(gap)) / fps
        ax.fill_between(t, 0, top, where=speech, color="0.9", step="mid")
        ax.plot(t, gap, color="C3" if r.medial_bilabial else ("C1" if r.has_bilabial else "C0"), lw=1.2)
        ax.axhline(metrics.CLOSED_MM, color="0.5", lw=0.5, ls=":")
        ax.set_title(r.word + ("" if r.dip_mm is None else f"  dip {r.dip_mm:.1f}"), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_ylim(0, top)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    fig.suptitle(f"{title}\npredicted lip gap (mm) per word; grey: speech; red: m/b/p inside the word, "
                 f"orange: word-initial m/b/p only, blue: no m/b/p; dotted: {metrics.CLOSED_MM:g} mm", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wav2sem.train.real_speech", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="folder of single-word recordings named after their text")
    parser.add_argument("--model", help="model bundle (default: the embedded default)")
    parser.add_argument("--drop-prefix", action="store_true", help="drop the file name up to the first '_'")
    parser.add_argument("--no-semantic", action="store_true", help="switch the Wav2Sem module off")
    parser.add_argument("--out", required=True, help="output path without suffix: writes OUT.json and OUT.png")
    parser.add_argument("--mouths", help="comma-separated words whose mouth to draw at the widest and the dip")
    args = parser.parse_args(argv)
    from ..errors import Wav2SemError

    try:
        model, results, curves = run_folder(args.folder, args.model, args.drop_prefix, not args.no_semantic)
    except Wav2SemError as exc:             # an unreadable recording, a missing model: say which
        raise SystemExit(f"real_speech: {exc.message}") from None
    summary = summarise(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(
        {"model": model.bundle.config.name, "folder": str(args.folder), "summary": summary,
         "words": [asdict(r) for r in results]}, indent=2) + "\n")
    plot(results, curves, model.fps, f"{model.bundle.config.name} on {Path(args.folder).name}/", out.with_name(out.name + ".png"))
    if args.mouths:
        mouth_sheet([w.strip() for w in args.mouths.split(",") if w.strip()], results, curves, model.bundle.template,
                    out.with_name(out.name + "_mouths.png"))
    for r in results:
        dip = "    -" if r.dip_mm is None else f"{r.dip_mm:5.1f}"
        kind = "m/b/p inside" if r.medial_bilabial else ("m/b/p first" if r.has_bilabial else "")
        print(f"{r.word:14s} widest {r.widest_mm:5.1f}  dip {dip}  silence {r.silence_mm:4.1f}  {kind}")
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
