"""Training examples from any corpus `wav2sem.dataset` reads, held in memory.

Offsets are kept as float16 (about 1e-3 relative precision, far below the motion's
variation) so an hour of 30 fps motion on a ~5k-vertex head fits comfortably in RAM. On a
blendshape corpus the examples hold the channel weights (T, K) float32 instead (an hour of
23 channels is 10 MB); vertices follow from the template's deltas where a loss or metric
needs them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..dataset import open_dataset
from ..errors import BAD_REQUEST, Wav2SemError
from ..template import Template

log = logging.getLogger(__name__)


@dataclass
class Example:
    name: str
    subject: str
    audio: np.ndarray                 # (S,) float32, 16 kHz
    offsets: np.ndarray | None        # (T, V, 3) float16, displacements from the template
    transcript: str | None
    phonemes: list | None = None      # PhoneSegments where the corpus has timings
    weights: np.ndarray | None = None  # (T, K) float32 channel weights (blendshape corpora; offsets None)

    @property
    def target(self) -> np.ndarray | None:
        """What the model learns to output: weights (T, K), or offsets (T, V, 3)."""
        return self.weights if self.weights is not None else self.offsets


def corpus_list(corpus) -> list[Path]:
    """One corpus folder or several (a mix, e.g. synthetic and recorded voices)."""
    return [Path(c) for c in (corpus if isinstance(corpus, (list, tuple)) else [corpus])]


def load_template(corpus) -> Template:
    """The template of a corpus, or of a mix: every corpus must be made on the same head
    (same vertex count and, for blendshape corpora, the same channels in the same order)."""
    folders = corpus_list(corpus)
    template = open_dataset(folders[0]).template
    for other in folders[1:]:
        t = open_dataset(other).template
        if t.vertex_count != template.vertex_count or tuple(t.blendshape_names) != tuple(template.blendshape_names):
            raise Wav2SemError(BAD_REQUEST, f"The corpora {folders[0]} and {other} are made on different heads "
                                            f"({template.vertex_count} vs {t.vertex_count} vertices, or other channels); "
                                            "a mix needs corpora of one head (wav2sem synth and wav2sem corpus real both "
                                            "use the ICT head by default).")
    return template


def load_examples(corpus, split: str, with_motion: bool, max_seconds: float,
                  template: Template | None = None) -> list[Example]:
    """All items of a split (of every corpus of a mix); clips longer than `max_seconds` are cut
    (audio and motion)."""
    folders = corpus_list(corpus)
    if len(folders) > 1:
        return [e for folder in folders for e in load_examples(folder, split, with_motion, max_seconds, template)]
    corpus = folders[0]
    ds = open_dataset(corpus, split=split)
    out = []
    for item in ds:
        audio = item.audio[: int(max_seconds * SAMPLE_RATE)]
        offsets = weights = None
        if with_motion:
            frames = min(item.frames, int(len(audio) / SAMPLE_RATE * ds.fps))
            if item.weights is not None:
                weights = np.ascontiguousarray(item.weights[:frames], dtype=np.float32)
            else:
                offsets = (item.vertices[:frames] - item.template[None]).astype(np.float16)
        out.append(Example(item.id, item.subject, audio, offsets, item.transcript, item.phonemes, weights))
    log.info("%s/%s: %d clips, %.1f min", Path(corpus).name, split, len(out),
             sum(len(e.audio) for e in out) / SAMPLE_RATE / 60)
    return out
