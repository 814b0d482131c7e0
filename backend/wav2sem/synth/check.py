"""Sanity statistics of a corpus: python -m wav2sem.synth.check CORPUS [--items N] [--seed S]

Reads N random clips through the dataset loader and reports how often the lips are closed
on p/b/m and open on open vowels, the phone coverage, clip durations and the splits.
"""
from __future__ import annotations

import argparse
import collections
import sys

import numpy as np

from ..dataset import open_dataset
from .timing import PhoneSegment

CLOSED_MM = 0.3      # lip gap below which the lips count as closed
OPEN_MM = 6.0        # lip gap above which the mouth counts as open
OPEN_VOWELS = ("AA", "AE", "AO", "AH")
MIN_VOWEL_S = 0.09   # shorter vowels barely open in fast speech


def segment_frames(seg: PhoneSegment, n: int, fps: float) -> np.ndarray:
    """Frames whose time lies in the segment, widened by half a frame."""
    k = np.arange(int(np.floor(seg.start * fps)), int(np.ceil(seg.end * fps)) + 1)
    k = k[(k / fps >= seg.start - 0.5 / fps) & (k / fps <= seg.end + 0.5 / fps)]
    return np.clip(k, 0, n - 1)


def corpus_stats(root: str, items: int = 200, seed: int = 0) -> dict:
    """Statistics over `items` random clips of a wav2sem corpus (needs phoneme timings)."""
    ds = open_dataset(root)
    rng = np.random.default_rng(seed)
    ids = rng.choice(ds.ids, size=min(items, len(ds)), replace=False)
    lm = ds.template.landmarks
    closed = bilabials = opened = vowels = 0
    durations: list[float] = []
    phones: collections.Counter[str] = collections.Counter()
    for item_id in ids:
        item = ds.item(str(item_id))
        gap_mm = (item.vertices[:, lm["upper_lip_center"], 1] - item.vertices[:, lm["lower_lip_center"], 1]) * 1000
        durations.append(len(item.audio) / ds.sample_rate)
        for seg in item.phonemes or []:
            phones[seg.arpabet] += 1
            k = segment_frames(seg, len(gap_mm), ds.fps)
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
        "splits": {k: len(v) for k, v in ds.splits.items()},
        "speakers": {"train": len(ds.train_subjects), "all": len(ds.subjects)},
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
