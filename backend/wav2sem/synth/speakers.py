"""The corpus speakers (engine, voice, variant, articulation style) and their split.

Splits are by voice so that test voices are never heard in training: whole base voices
are held out for validation and test, and the espeak-ng variants used in each split are
disjoint as well.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

import numpy as np

from .coarticulation import Style
from .tts import espeak, festival

SPLITS = ("train", "val", "test")
SPLIT_SHARE = {"train": 0.8, "val": 0.1, "test": 0.1}     # of the corpus duration
BASE_VOICE_SPLIT = {
    ("festival", "ked_diphone"): "train", ("festival", "cmu_us_slt_arctic_hts"): "train",
    ("festival", "kal_diphone"): "test",
    ("espeak", "en"): "train", ("espeak", "en-us"): "train", ("espeak", "en-gb-x-gbclan"): "train",
    ("espeak", "en-gb-x-gbcwmd"): "train", ("espeak", "en-gb-x-rp"): "train",
    ("espeak", "en-029"): "val",
    ("espeak", "en-gb-scotland"): "test", ("espeak", "en-us-nyc"): "test",
}
VARIANTS_PER_VOICE = 4


@dataclass(frozen=True)
class Speaker:
    id: str                 # file-name safe, no "_" (ids are "<speaker>_<number>" as in VOCASET)
    engine: str             # "espeak" | "festival"
    voice: str
    variant: str | None
    split: str
    rate_wpm: float         # espeak rate; festival: 1 / Duration_Stretch * 180
    pitch: float            # espeak pitch 0..100 (festival: unused)
    jaw_gain: float
    lip_gain: float
    anticipation: float

    style = property(lambda self: speaker_style(self))
    to_dict = asdict


def _safe(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def speaker_style(speaker) -> Style:
    """The articulation style of a speaker record with jaw_gain, lip_gain and anticipation
    (synthetic and recorded speakers alike)."""
    return Style(speaker.jaw_gain, speaker.lip_gain, speaker.anticipation)


def unit_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from text (stable across runs, processes and machines)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_speakers(seed: int, engines: tuple[str, ...] = ("espeak", "festival")) -> list[Speaker]:
    """All speakers for a corpus seed: 3 festival voices and 8 espeak voices x 4 variants."""
    rng = np.random.default_rng([seed, 0x5BEA])
    variants = list(espeak.VARIANTS)
    rng.shuffle(variants)
    # Disjoint variant pools per split.
    pools = {"train": variants[: len(variants) // 2], "val": variants[len(variants) // 2: 3 * len(variants) // 4],
             "test": variants[3 * len(variants) // 4:]}
    speakers = []
    for (engine, voice), split in BASE_VOICE_SPLIT.items():
        if engine not in engines:
            continue
        choices: list[str | None] = [None]
        if engine == "espeak":
            pool = pools[split]
            choices = [pool[i] for i in rng.choice(len(pool), size=VARIANTS_PER_VOICE, replace=False)]
        for variant in choices:
            name = f"{engine}-{voice}" + (f"-{variant}" if variant else "")
            r = unit_rng(seed, name)
            speakers.append(Speaker(
                id=_safe(name), engine=engine, voice=voice, variant=variant, split=split,
                rate_wpm=float(r.uniform(140, 195)), pitch=float(r.uniform(35, 65)),
                jaw_gain=float(r.uniform(0.85, 1.15)), lip_gain=float(r.uniform(0.85, 1.15)),
                anticipation=float(r.uniform(0.85, 1.2))))
    assert all(s.voice in festival.VOICES or s.engine == "espeak" for s in speakers)
    return speakers
