"""Sanity statistics of a corpus: python -m wav2sem.synth.check CORPUS [--items N] [--seed S]

Reads N random clips (vertex corpora through the dataset loader; blendshape corpora, e.g.
the ICT head's, from weights_npy/ with the lip gap of the template's lip-centre landmarks)
and reports how often the lips are closed
on p/b/m and open on open vowels, the phone coverage, clip durations and the splits.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import metrics
from ..dataset import open_dataset
from ..template import Template
from .timing import PhoneSegment, read_segments

CLOSED_MM = 0.3      # lip gap below which the lips count as closed
OPEN_MM = 6.0        # lip gap above which the mouth counts as open
OPEN_VOWELS = ("AA", "AE", "AO", "AH")
MIN_VOWEL_S = 0.09   # shorter vowels barely open in fast speech


def segment_frames(seg: PhoneSegment, n: int, fps: float) -> np.ndarray:
    """Frames whose time lies in the segment, widened by half a frame."""
    k = np.arange(int(np.floor(seg.start * fps)), int(np.ceil(seg.end * fps)) + 1)
    k = k[(k / fps >= seg.start - 0.5 / fps) & (k / fps <= seg.end + 0.5 / fps)]
    return np.clip(k, 0, n - 1)


def lip_gap_from_weights(template: Template, weights: np.ndarray) -> np.ndarray:
    """metrics.lip_gap (mm) per frame of a blendshape clip, from the two landmark vertices'
    deltas only (without building the whole head)."""
    assert template.blendshape_deltas is not None and template.lip_centres is not None
    motion = metrics.Motion(weights=np.asarray(weights, np.float32), deltas=template.blendshape_deltas)
    return metrics.motion_lip_gap(motion, template.vertices, *template.lip_centres) * 1000


class _BlendshapeCorpus:
    """The little of a blendshape corpus that the statistics need, read from its files
    (weights_npy/, phonemes/, splits/, corpus.json), independent of the dataset loader."""

    def __init__(self, root: Path, info: dict):
        self.root = root
        self.fps = float(info["fps"])
        self.sample_rate = int(info["sample_rate"])
        self.template = Template.load(root / "template.npz")
        self.splits = {s: (root / "splits" / f"{s}.txt").read_text(encoding="utf-8").split()
                       for s in ("train", "val", "test") if (root / "splits" / f"{s}.txt").is_file()}
        self.ids = sorted(p.stem for p in (root / "weights_npy").glob("*.npy") if not p.stem.endswith(".tmp"))
        subject = {i: i.rsplit("_", 1)[0] for i in self.ids}
        self.subjects = sorted(set(subject.values()))
        self.train_subjects = sorted({subject[i] for i in self.splits.get("train", []) if i in subject})

    def gap_mm(self, item_id: str) -> np.ndarray:
        return lip_gap_from_weights(self.template, np.load(self.root / "weights_npy" / f"{item_id}.npy"))

    def seconds(self, item_id: str) -> float:
        return float(sf.info(str(self.root / "wav" / f"{item_id}.wav")).duration)

    def phonemes(self, item_id: str) -> list[PhoneSegment]:
        path = self.root / "phonemes" / f"{item_id}.tsv"
        return read_segments(path) if path.is_file() else []


def _open(root: str):
    """-> (ids, fps, splits, subjects, train_subjects, clip(id) -> (gap_mm, seconds, phonemes))"""
    info_path = Path(root) / "corpus.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    if info.get("target") == "blendshapes":
        bc = _BlendshapeCorpus(Path(root), info)
        return bc.ids, bc.fps, bc.splits, bc.subjects, bc.train_subjects, \
            lambda i: (bc.gap_mm(i), bc.seconds(i), bc.phonemes(i))
    ds = open_dataset(root)
    lm = ds.template.landmarks

    def clip(item_id: str):
        item = ds.item(item_id)
        gap = (item.vertices[:, lm["upper_lip_center"], 1] - item.vertices[:, lm["lower_lip_center"], 1]) * 1000
        return gap, len(item.audio) / ds.sample_rate, item.phonemes or []
    return list(ds.ids), ds.fps, ds.splits, ds.subjects, ds.train_subjects, clip


def corpus_stats(root: str, items: int = 200, seed: int = 0) -> dict:
    """Statistics over `items` random clips of a wav2sem corpus (needs phoneme timings);
    vertex corpora through the dataset loader, blendshape corpora from their weights."""
    all_ids, fps, splits, subjects, train_subjects, clip = _open(root)
    rng = np.random.default_rng(seed)
    ids = rng.choice(all_ids, size=min(items, len(all_ids)), replace=False)
    closed = bilabials = opened = vowels = 0
    durations: list[float] = []
    phones: collections.Counter[str] = collections.Counter()
    for item_id in ids:
        gap_mm, seconds, segments = clip(str(item_id))
        durations.append(seconds)
        for seg in segments:
            phones[seg.arpabet] += 1
            k = segment_frames(seg, len(gap_mm), fps)
            if seg.arpabet in ("P", "B", "M"):
                bilabials += 1
                closed += int(gap_mm[k].min() < CLOSED_MM)
            elif seg.arpabet in OPEN_VOWELS and seg.duration > MIN_VOWEL_S:
                vowels += 1
                opened += int(gap_mm[k].max() > OPEN_MM)
    return {
        "clips": len(ids), "bilabials_closed": f"{closed}/{bilabials}", "open_vowels_open": f"{opened}/{vowels}",
        "phones": len(phones) - ("SIL" in phones), "rarest": phones.most_common()[-4:],
        "seconds": {"mean": float(np.mean(durations)), "min": float(np.min(durations)), "max": float(np.max(durations))},
        "splits": {k: len(v) for k, v in splits.items()},
        "speakers": {"train": len(train_subjects), "all": len(subjects)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in corpus_stats(args.corpus, args.items, args.seed).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
