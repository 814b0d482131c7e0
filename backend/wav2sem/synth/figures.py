"""Make the inspection images in results/synth/ (run: python -m wav2sem.synth.figures [OUT]).

  head.png              the template head from the front, three-quarter and side, and the mouth
  visemes.png           the mouth at each viseme class (rig at the phoneme's targets)
  articulators.png      articulator curves over a spoken sentence with phone boundaries,
                        the lip gap, and frames at the centres of chosen phones
  minimal_pairs.png     the mouth at the first consonant of near-homophone words (espeak-ng),
                        front and profile: the lip shapes a speech model must tell apart
  head_workbench.png    smooth Workbench renders (needs the bpy wheel; made in a subprocess)
  ict_head.png          the ICT FaceKit head (the default corpus's head) at rest (bpy subprocess)
  ict_visemes.png       its mouth at each viseme class through synth/arkit_rig.py: front and
                        three-quarter close-ups, profiles; teeth, gums, tongue coloured
  ict_sentence.png      a spoken sentence on the ICT head: the main ARKit weights, the lip
                        gap with p/b/m and f/v marked, and rendered frames at chosen phones
Only the ICT sheets: python -m wav2sem.synth.figures [OUT] --ict
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import metrics
from .head import build_head
from .motion import FPS, SAMPLE_RATE, animate, default_rig
from .coarticulation import Style
from .phonemes import PHONEMES, VISEMES
from .render import contact_sheet, draw_head
from .rig import ARTICULATORS

log = logging.getLogger(__name__)
SENTENCE = "Bob thought the five fat bats were fine, but I said map."


def viseme_pose(arpabet: str) -> np.ndarray:
    """Rig values at a phoneme's (first) target. -> (1, A)"""
    target = PHONEMES[arpabet][0]
    return np.array([[target.values.get(a, 0.0) for a in ARTICULATORS]])


def lip_gap(vertices: np.ndarray) -> np.ndarray:
    """metrics.lip_gap (m) of the synthetic head's vertices per frame. (T, V, 3) -> (T,)"""
    template = build_head().template
    return metrics.lip_gap(vertices - template.vertices[None], template.vertices, *template.lip_centres)


def _sentence_curves(fig, grid, times, curves, clip, gap_mm, ylabel: str, title: str, gap_label: str,
                     legend_columns: int) -> None:
    """The top two rows of a sentence figure: the control curves with the phones above them,
    and the lip gap with the p/b/m and f/v phones shaded."""
    ax = fig.add_subplot(grid[0, :])
    for label, values in curves:
        ax.plot(times, values, label=label, lw=1.5)
    for seg in clip.segments:
        ax.axvline(seg.start, color="0.85", lw=0.6, zorder=0)
        if seg.arpabet != "SIL":
            ax.text((seg.start + seg.end) / 2, 1.03, seg.arpabet, ha="center", fontsize=7, rotation=90)
    ax.set_xlim(0, times[-1])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(ylabel)
    ax.legend(ncol=legend_columns, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title(title, pad=28)
    ax2 = fig.add_subplot(grid[1, :])
    ax2.plot(times, gap_mm, color="k")
    for seg in clip.segments:
        if seg.arpabet in ("P", "B", "M"):
            ax2.axvspan(seg.start, seg.end, color="tab:red", alpha=0.25)
        elif seg.arpabet in ("F", "V"):
            ax2.axvspan(seg.start, seg.end, color="tab:green", alpha=0.25)
    ax2.set_xlim(0, times[-1])
    ax2.set_ylabel(gap_label)
    ax2.set_xlabel("time (s)   red: p/b/m   green: f/v")


def make_head_sheet(out: Path) -> None:
    t = build_head().template
    contact_sheet(out / "head.png", t, [("front", None, "front", False), ("three-quarter", None, "three_quarter", False),
                                        ("side", None, "side", False), ("mouth (rest)", None, "front", True)],
                  columns=4, panel_size=4.0)


def make_viseme_sheet(out: Path) -> None:
    t = build_head().template
    rig = default_rig()
    panels = []
    for name, members in VISEMES.items():
        verts = rig.apply(viseme_pose(members[0]))[0]
        panels.append((f"{name}", verts, "front", True))
    panels.append(("aa: three-quarter", rig.apply(viseme_pose("AA"))[0], "three_quarter", False))
    for name, phone in (("rest", "SIL"), ("PP", "M"), ("FF", "F"), ("U", "UW")):
        panels.append((f"{name}: side", rig.apply(viseme_pose(phone))[0], "side", True))
    contact_sheet(out / "visemes.png", t, panels, columns=5, panel_size=2.8)


def make_articulator_plot(out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soxr

    from .tts.espeak import EspeakEngine

    clip = EspeakEngine.get().synthesize(SENTENCE, "en-us", "m3", 150, 50)
    audio = soxr.resample(clip.audio, clip.sample_rate, SAMPLE_RATE).astype(np.float32)
    track, verts = animate(clip.segments, audio, SAMPLE_RATE, Style(), np.random.default_rng(0))
    times = np.arange(len(track)) / FPS
    gap_mm = lip_gap(verts) * 1000

    fig = plt.figure(figsize=(16, 10))
    grid = fig.add_gridspec(3, 6, height_ratios=[2.2, 1.0, 1.6])
    _sentence_curves(fig, grid, times, [(name, track[:, i]) for i, name in enumerate(ARTICULATORS)], clip, gap_mm,
                     "articulator value", f'espeak-ng en-us+m3: "{SENTENCE}"', "lip gap (mm)", legend_columns=7)
    # Frames at the centres of some phones.
    wanted = ["B", "TH", "F", "AE", "M", "AY"]
    t = build_head().template
    for k, phone in enumerate(wanted):
        seg = next(s for s in clip.segments if s.arpabet == phone)
        frame = min(len(verts) - 1, int(round((seg.start + seg.end) / 2 * FPS)))
        axk = fig.add_subplot(grid[2, k])
        draw_head(axk, t, verts[frame], "front", zoom_mouth=True)
        axk.set_title(f"{phone} ({seg.symbol}) t={frame / FPS:.2f}s", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "articulators.png", dpi=100)
    plt.close(fig)


MINIMAL_PAIR_WORDS = ("fin", "thin", "sin", "shin", "bat", "pat", "mat", "fat", "vet", "bet", "wet",
                      "map", "nap", "sip", "ship", "zip")


def make_minimal_pair_sheet(out: Path) -> None:
    """Frames at the centre of each word's first phone, spoken in a carrier phrase."""
    import soxr

    from .tts.espeak import EspeakEngine

    t = build_head().template
    panels = []
    for word in MINIMAL_PAIR_WORDS:
        clip = EspeakEngine.get().synthesize(f"Say {word} again.", "en-us", "m3", 140, 50)
        audio = soxr.resample(clip.audio, clip.sample_rate, SAMPLE_RATE).astype(np.float32)
        _, verts = animate(clip.segments, audio, SAMPLE_RATE, Style(), np.random.default_rng(0))
        speech = [s for s in clip.segments if s.arpabet != "SIL"]
        seg = speech[2]                       # "S EY <first phone of the word>"
        frame = min(len(verts) - 1, int(round((seg.start + seg.end) / 2 * FPS)))
        panels.append((f"{word}: {seg.arpabet}", verts[frame], "front", True))
        panels.append((f"{word}: {seg.arpabet} (profile)", verts[frame], "side", True))
    contact_sheet(out / "minimal_pairs.png", t, panels, columns=8, panel_size=2.2)


def make_ict_sheets(out: Path) -> bool:
    """ict_head.png and ict_visemes.png (Blender Workbench in a subprocess). -> written"""
    with tempfile.TemporaryDirectory() as home:   # Blender writes into $HOME/.config
        done = subprocess.run([sys.executable, "-m", "wav2sem.synth.render_ict", str(out)],
                              env={**os.environ, "HOME": home}, capture_output=True, text=True)
    if done.returncode == 0:
        print(f"wrote {out}/ict_head.png, ict_visemes.png")
        return True
    log.warning("no ICT renders (is the bpy wheel installed?): %s", done.stderr.strip()[-300:])
    return False


ICT_CURVES = ("jawOpen", "mouthClose", "mouthPress_L", "mouthFunnel", "mouthPucker", "mouthRollLower",
              "mouthStretch_L", "mouthSmile_L", "mouthUpperUp_L", "mouthLowerDown_L", "browInnerUp_L")


def make_ict_sentence(out: Path) -> bool:
    """ict_sentence.png: SENTENCE through the rig and arkit_rig onto the ICT head."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    import soxr

    from ..heads import SPEECH_CHANNELS, ict_head
    from .arkit_rig import arkit_weights
    from .check import lip_gap_from_weights
    from .motion import articulator_track
    from .tts.espeak import EspeakEngine

    clip = EspeakEngine.get().synthesize(SENTENCE, "en-us", "m3", 150, 50)
    audio = soxr.resample(clip.audio, clip.sample_rate, SAMPLE_RATE).astype(np.float32)
    track = articulator_track(clip.segments, audio, SAMPLE_RATE, Style(), np.random.default_rng(0))
    weights = arkit_weights(track)
    times = np.arange(len(weights)) / FPS
    gap_mm = lip_gap_from_weights(ict_head(SPEECH_CHANNELS), weights)
    wanted = ["B", "TH", "F", "AE", "M", "AY"]
    frames = []
    for phone in wanted:
        seg = next(s for s in clip.segments if s.arpabet == phone)
        frames.append((phone, seg, min(len(weights) - 1, int(round((seg.start + seg.end) / 2 * FPS)))))
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "w.npy", weights[[f for _, _, f in frames]])
        done = subprocess.run([sys.executable, "-m", "wav2sem.synth.render_ict", "--weights", str(Path(tmp) / "w.npy"),
                               str(Path(tmp) / "frames")], env={**os.environ, "HOME": tmp}, capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("no ICT frames (is the bpy wheel installed?): %s", done.stderr.strip()[-300:])
            return False
        images = [mpimg.imread(Path(tmp) / "frames" / f"frame_{n}.png") for n in range(len(frames))]

    fig = plt.figure(figsize=(16, 10.5))
    grid = fig.add_gridspec(3, 6, height_ratios=[2.2, 1.0, 1.7])
    _sentence_curves(fig, grid, times, [(n, weights[:, SPEECH_CHANNELS.index(n)]) for n in ICT_CURVES], clip, gap_mm,
                     "ARKit weight", f'ICT head, espeak-ng en-us+m3: "{SENTENCE}"', "inner-lip gap (mm)", legend_columns=6)
    for k, ((phone, seg, frame), image) in enumerate(zip(frames, images)):
        axk = fig.add_subplot(grid[2, k])
        axk.imshow(image)
        axk.axis("off")
        axk.set_title(f"{phone} ({seg.symbol}) t={frame / FPS:.2f}s, gap {gap_mm[frame]:.1f} mm", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "ict_sentence.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out}/ict_sentence.png")
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ict_only = "--ict" in argv
    argv = [a for a in argv if a != "--ict"]
    out = Path(argv[0] if argv else "results/synth")
    out.mkdir(parents=True, exist_ok=True)
    if ict_only:
        return 0 if make_ict_sheets(out) and make_ict_sentence(out) else 1
    make_head_sheet(out)
    make_viseme_sheet(out)
    make_articulator_plot(out)
    make_minimal_pair_sheet(out)
    print(f"wrote {out}/head.png, visemes.png, articulators.png, minimal_pairs.png")
    with tempfile.TemporaryDirectory() as home:   # Blender writes into $HOME/.config
        done = subprocess.run([sys.executable, "-m", "wav2sem.synth.render_bpy", str(out / "head_workbench.png")],
                              env={**os.environ, "HOME": home}, capture_output=True, text=True)
    if done.returncode == 0:
        print(f"wrote {out}/head_workbench.png")
    else:
        log.warning("no Workbench render (is the bpy wheel installed?): %s", done.stderr.strip()[-300:])
    make_ict_sheets(out)
    make_ict_sentence(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
