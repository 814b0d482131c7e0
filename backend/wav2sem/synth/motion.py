"""Speech (phone timings + audio) -> face motion on the template head."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .coarticulation import Style, articulator_curves
from .head import build_head
from .prosody import brow_curve
from .rig import ARTICULATORS, Rig
from .timing import PhoneSegment

FPS = 30.0                 # motion frames per second (VOCASET rate)
SAMPLE_RATE = 16000        # corpus audio rate (Hz)


@lru_cache(maxsize=1)
def default_rig() -> Rig:
    """The rig of the template head (built once per process)."""
    return Rig.for_head(build_head())


def frame_count(duration_s: float, fps: float = FPS) -> int:
    """Frames covering a clip: frame k shows time k / fps."""
    return max(1, int(round(duration_s * fps)))


def articulator_track(segments: list[PhoneSegment], audio: np.ndarray, sr: int, style: Style,
                      rng: np.random.Generator, fps: float = FPS) -> np.ndarray:
    """All articulator values per frame (columns in rig.ARTICULATORS order). -> (T, A) 0..1"""
    n = frame_count(len(audio) / sr, fps)
    speech = articulator_curves(segments, n, fps, style)                      # (T, A-1)
    brows = brow_curve(audio, sr, n, fps, rng)                                # (T,)
    track = np.concatenate([speech, brows[:, None]], axis=1)
    assert track.shape[1] == len(ARTICULATORS)
    return track


def animate(segments: list[PhoneSegment], audio: np.ndarray, sr: int, style: Style,
            rng: np.random.Generator, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Articulator track (T, A) and vertex positions (T, V, 3) float32 metres."""
    track = articulator_track(segments, audio, sr, style, rng, fps)
    return track, default_rig().apply(track)
