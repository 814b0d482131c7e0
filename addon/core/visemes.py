"""Visemes as ARKit weights: what each Oculus/ReadyPlayerMe viseme and each VRM vowel key is
taken to look like, so that a viseme-only character can be solved for from the model's ARKit
prediction (addon/key_solve.py). No bpy; numpy only.

    VISEME_SHAPES: dict[viseme id, dict[ARKit name, weight]]
        names are side-less ARKit bases or channels in ICT spelling; a sided base
        ("mouthPress") means the same weight on both sides.
    viseme_weights(viseme_id, channels) -> np.ndarray (K,) float64
        the viseme's row over the model's channels (zeros for channels it does not use,
        all zeros for viseme_sil and unknown ids).

The values are hand-set from articulatory phonetics, not measured: each viseme is the lip and
jaw posture of its phoneme class as textbooks of phonetics describe it (bilabial closure for
p/b/m, labiodental contact for f/v, rounding for o/u and sh, spreading for i/e/s, jaw height
by vowel height: open a > mid e/o > close i/u). They only need to be plausible: the solver
picks the mix of the character's visemes whose ARKit picture is nearest the prediction, and
the character's own viseme shapes then do the rest.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VISEME_SHAPES: dict[str, dict[str, float]] = {
    # Silence: the rest pose.
    "viseme_sil": {},
    # p, b, m: lips sealed and pressed, jaw nearly closed (mouthClose cancels the lip part of
    # the little jaw opening; ICT's mouthShrugLower pushes the lower lip up against the upper).
    "viseme_PP": {"jawOpen": 0.05, "mouthClose": 0.05, "mouthPress": 0.40, "mouthShrugLower": 0.10},
    # f, v: lower lip tucked under the upper teeth, upper lip raised a little.
    "viseme_FF": {"jawOpen": 0.08, "mouthRollLower": 0.50, "mouthUpperUp": 0.20},
    # th: tongue between the teeth, lips slightly apart.
    "viseme_TH": {"jawOpen": 0.15, "mouthLowerDown": 0.15},
    # t, d: alveolar stop, jaw nearly closed, lips neutral.
    "viseme_DD": {"jawOpen": 0.15, "mouthLowerDown": 0.10, "mouthStretch": 0.10},
    # k, g: velar stop, jaw a little more open.
    "viseme_kk": {"jawOpen": 0.20, "mouthStretch": 0.15},
    # ch, j, sh: lips protruded and flared.
    "viseme_CH": {"jawOpen": 0.10, "mouthFunnel": 0.45, "mouthPucker": 0.15,
                  "mouthUpperUp": 0.10, "mouthLowerDown": 0.10},
    # s, z: teeth nearly together, lips spread.
    "viseme_SS": {"jawOpen": 0.05, "mouthStretch": 0.30, "mouthSmile": 0.15,
                  "mouthUpperUp": 0.10, "mouthLowerDown": 0.10},
    # n, l: alveolar, jaw slightly open.
    "viseme_nn": {"jawOpen": 0.15, "mouthStretch": 0.10},
    # r: slight rounding.
    "viseme_RR": {"jawOpen": 0.15, "mouthFunnel": 0.25, "mouthPucker": 0.20},
    # a (father): open vowel, jaw low, lower lip down.
    "viseme_aa": {"jawOpen": 0.50, "mouthLowerDown": 0.30},
    # e (bed): mid front unrounded, spread.
    "viseme_E": {"jawOpen": 0.30, "mouthStretch": 0.30, "mouthSmile": 0.20, "mouthLowerDown": 0.15},
    # i (see): close front unrounded, spread, jaw nearly closed.
    "viseme_I": {"jawOpen": 0.10, "mouthSmile": 0.40, "mouthStretch": 0.30, "mouthUpperUp": 0.10},
    # o (thought): mid back rounded.
    "viseme_O": {"jawOpen": 0.40, "mouthFunnel": 0.50, "mouthPucker": 0.10},
    # u (blue): close back rounded, lips pushed forward round a small opening (ICT's
    # mouthFunnel opens the lips a lot, so little of it).
    "viseme_U": {"jawOpen": 0.08, "mouthPucker": 0.60, "mouthFunnel": 0.15},
}
# VRM presets are the five vowels.
VISEME_SHAPES.update({
    "vrm_A": VISEME_SHAPES["viseme_aa"], "vrm_I": VISEME_SHAPES["viseme_I"],
    "vrm_U": VISEME_SHAPES["viseme_U"], "vrm_E": VISEME_SHAPES["viseme_E"],
    "vrm_O": VISEME_SHAPES["viseme_O"],
})


def viseme_weights(viseme_id: str, channels: Sequence[str]) -> np.ndarray:
    """The viseme's ARKit weights over `channels` (K,) float64. Channels are ARKit names as
    face_keys.canonical_source gives them (face_keys.viseme_row takes any spelling)."""
    shape = VISEME_SHAPES.get(viseme_id, {})
    row = np.zeros(len(channels), dtype=np.float64)
    for i, channel in enumerate(channels):
        if channel in shape:
            row[i] = shape[channel]
        elif channel[-2:] in ("_L", "_R") and channel[:-2] in shape:
            row[i] = shape[channel[:-2]]
    return row
