"""Phone segments -> smooth articulator curves by dominance-weighted blending.

The Cohen-Massaro coarticulation model: every phone pulls each articulator towards its
target with a dominance that is flat over the phone's core and decays before it
(anticipation) and after it (carry-over); the curve is the dominance-weighted mean of all
targets plus a weak rest target. Strong dominances (lip closure of m/b/p, lip tuck of
f/v, rounding of w) override the context; weak ones (h, k, g) take it from the context.
Hand-written: no library implements this model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .phonemes import PHONEMES, SPEECH_ARTICULATORS
from .timing import PhoneSegment

CORE_FRACTION = 0.2        # the outer 20 % of each side of a phone is transition
REST_DOMINANCE = 0.02      # pull of the neutral pose, so gaps between phones relax
SHAPE_EXPONENT = 1.3       # > 1: the dominance leaves the core with zero slope (smooth)

# Articulatory gestures that must reach their target whatever the context: the lips close
# for p/b/m and the lower lip tucks for f/v over the phone's core (at least one frame wide),
# with raised-cosine ramps (seconds) before and after.
GESTURES = {"lip_close": frozenset({"P", "B", "M"}), "lower_lip_tuck": frozenset({"F", "V"})}
GESTURE_RAMP_IN_S = 0.045
GESTURE_RAMP_OUT_S = 0.04

# Time constants (seconds) of the dominance decay before (anticipation) / after (carry-over).
ANTICIPATION_S = {"jaw_open": 0.07, "lip_close": 0.05, "lip_round": 0.14, "lip_spread": 0.09,
                  "lower_lip_tuck": 0.05, "upper_lip_raise": 0.08}
CARRY_OVER_S = {"jaw_open": 0.06, "lip_close": 0.04, "lip_round": 0.09, "lip_spread": 0.07,
                "lower_lip_tuck": 0.04, "upper_lip_raise": 0.06}


@dataclass(frozen=True)
class Style:
    """A speaker's articulation style: gains on the targets and a tempo of coarticulation."""

    jaw_gain: float = 1.0
    lip_gain: float = 1.0        # rounding and spreading
    anticipation: float = 1.0    # multiplies the time constants


def articulator_curves(segments: Sequence[PhoneSegment], n_frames: int, fps: float,
                       style: Style = Style()) -> np.ndarray:
    """Articulator values at frame times k / fps, k = 0..n_frames-1. -> (n_frames, A) in 0..1.

    Columns are in the order of `phonemes.SPEECH_ARTICULATORS`.
    """
    times = np.arange(n_frames) / fps                                        # (T,) seconds
    cores, targets, dominances = _targets(segments)                          # (N, 2), (N, A), (N, A)
    curves = np.zeros((n_frames, len(SPEECH_ARTICULATORS)))
    if len(cores) == 0:
        return curves
    before = np.clip(cores[:, :1] - times[None, :], 0.0, None)               # (N, T)
    after = np.clip(times[None, :] - cores[:, 1:], 0.0, None)                # (N, T)
    for a, name in enumerate(SPEECH_ARTICULATORS):
        tau_a = ANTICIPATION_S[name] * style.anticipation
        tau_c = CARRY_OVER_S[name] * style.anticipation
        weight = np.exp(-((before / tau_a) ** SHAPE_EXPONENT) - (after / tau_c) ** SHAPE_EXPONENT)
        weight *= dominances[:, a:a + 1]                                     # (N, T)
        curves[:, a] = (weight * targets[:, a:a + 1]).sum(0) / (weight.sum(0) + REST_DOMINANCE)
    for name, phones in GESTURES.items():
        a = SPEECH_ARTICULATORS.index(name)
        curves[:, a] = np.maximum(curves[:, a], _gesture(segments, phones, times, fps, style.anticipation))
    gains = {"jaw_open": style.jaw_gain, "lip_round": style.lip_gain, "lip_spread": style.lip_gain}
    for a, name in enumerate(SPEECH_ARTICULATORS):
        curves[:, a] *= gains.get(name, 1.0)
    return np.clip(curves, 0.0, 1.0)


def _gesture(segments: Sequence[PhoneSegment], phones: frozenset, times: np.ndarray, fps: float,
             tempo: float) -> np.ndarray:
    """1 over the core of each phone in `phones`, raised-cosine ramps around it. -> (T,)"""
    out = np.zeros_like(times)
    half_frame = 0.5 / fps + 1e-6
    for seg in segments:
        if seg.arpabet not in phones:
            continue
        centre = 0.5 * (seg.start + seg.end)
        half = max(0.5 * seg.duration * (1 - 2 * CORE_FRACTION), half_frame)
        before = np.clip(centre - half - times, 0.0, None) / (GESTURE_RAMP_IN_S * tempo)
        after = np.clip(times - centre - half, 0.0, None) / (GESTURE_RAMP_OUT_S * tempo)
        d = np.clip(before + after, 0.0, 1.0)
        out = np.maximum(out, 0.5 * (1.0 + np.cos(np.pi * d)))
    return out


def _targets(segments: Sequence[PhoneSegment]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core intervals (N, 2) s, target values (N, A) and dominances (N, A) of all phone parts."""
    cores, values, doms = [], [], []
    for seg in segments:
        parts = PHONEMES.get(seg.arpabet, PHONEMES["SIL"])
        step = seg.duration / len(parts)
        for i, part in enumerate(parts):
            start = seg.start + i * step
            margin = CORE_FRACTION * step
            cores.append((start + margin, start + step - margin))
            values.append([part.values[n] for n in SPEECH_ARTICULATORS])
            doms.append([part.dominance[n] for n in SPEECH_ARTICULATORS])
    return (np.asarray(cores, dtype=np.float64).reshape(-1, 2), np.asarray(values, dtype=np.float64),
            np.asarray(doms, dtype=np.float64))
