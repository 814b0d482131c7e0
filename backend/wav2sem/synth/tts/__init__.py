"""Text-to-speech engines that return audio plus phone timings (festival, espeak-ng)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..timing import PhoneSegment

# Error code for a missing engine (the message names the Debian package to install).
TTS_UNAVAILABLE = "TTS_UNAVAILABLE"


@dataclass
class SpeechClip:
    """Synthesised speech: mono float32 audio and its phone segments (seconds)."""

    audio: np.ndarray                  # (N,) float32, -1..1
    sample_rate: int                   # Hz
    segments: list[PhoneSegment]
    text: str

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate
