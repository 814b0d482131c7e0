"""Recorded human speech for the Blender tests: Debian's ktuberling-data (GPL-2+), single
English words spoken by a person (/usr/share/ktuberling/sounds/en/*.ogg; `make system-deps`
installs it), and how the tests read a lip-gap curve over a word."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wav2sem import metrics

RECORDINGS = Path("/usr/share/ktuberling/sounds/en")
PAD_S = 0.4                    # silence before and after the word, as in a dialogue track
OPEN_MM = 1.5                  # a frame with the lips further apart than the silence may be is open
WIDE_MM = 5.0                  # the widest frame of the word must open at least this far
CLOSED_MM = metrics.CLOSED_MM  # 1.0 mm, the project's closure (0.42 mm measured on "salami", model 0.4)
REST_MM = 1.5                  # the silence around the word: nearly closed (the ICT neutral gap is 0.64 mm)


def recording(word: str) -> Path:
    path = RECORDINGS / f"{word}.ogg"
    if not path.is_file():
        pytest.skip(f"the recorded words are missing ({path}): install Debian's ktuberling-data (make system-deps)")
    return path


def padded_wav(word: str, out: Path, pad_s: float = PAD_S) -> Path:
    """The recording as 16-bit WAV at its own rate, with `pad_s` of silence on each side (the
    clips are cut right at the word, so without it there is no rest to test)."""
    import soundfile as sf

    data, rate = sf.read(str(recording(word)), dtype="float32", always_2d=True)
    silence = np.zeros((int(rate * pad_s), data.shape[1]), np.float32)
    sf.write(str(out), np.concatenate([silence, data, silence]), rate, subtype="PCM_16")
    return out


def medial_dip(gaps: np.ndarray) -> tuple[float, float, float]:
    """The deepest valley between two openings, as (its gap, the opening before, the one after):
    of the frames between the first and the last open one, the one furthest below the smaller
    of the widest gaps on its two sides (an m between two vowels, not the word's onset)."""
    open_frames = np.nonzero(gaps >= OPEN_MM)[0]
    inner = np.arange(open_frames[0], open_frames[-1] + 1)
    before = np.maximum.accumulate(gaps)[inner]
    after = np.maximum.accumulate(gaps[::-1])[::-1][inner]
    depth = np.minimum(before, after) - gaps[inner]
    best = int(np.argmax(depth))
    return float(gaps[inner[best]]), float(before[best]), float(after[best])
