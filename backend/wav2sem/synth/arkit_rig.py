"""Articulation rig -> ARKit blendshape weights on the ICT FaceKit head.

The synthetic corpus's motion is written as articulator tracks (rig.ARTICULATORS, 0..1,
see phonemes.py and coarticulation.py). On the ICT head it becomes per-frame weights of
heads.SPEECH_CHANNELS (0..1), and vertices = template + weights @ deltas.

    weights = arkit_weights(track)            # (T, 7) -> (T, K) in SPEECH_CHANNELS order

Mapping (gains measured on the ICT head, tests/synth/test_arkit_rig.py checks the result):
  jaw_open         -> jawOpen (the "aa" target 0.80 -> an 18 mm inner-lip gap, about as the
                      old rig), and a share of mouthLowerDown_L/R (the lower lip shows the
                      lower teeth), less when the lips close or tuck
  lip_close        -> mouthClose with mouthPress_L/R and a little mouthRollLower and
                      mouthShrugLower, fitted per frame (bounded least squares over the
                      inner-lip gap across the mouth) so that the lips meet across the mouth
                      (midline gap SEAL_GAP_M) on p/b/m whatever the jaw and lips do (ICT's
                      mouthClose lifts the lower lip back towards the upper one and is meant
                      to be used with jawOpen; see _seal); the press part
                      (lip_close > PRESS_FROM) sets a floor on mouthPress_L/R
  lip_round        -> mouthPucker (protrude, narrow) and some mouthFunnel (small aperture)
  lip_spread       -> mouthStretch_L/R and mouthSmile_L/R
  lower_lip_tuck   -> mouthRollLower and mouthShrugLower: the lower lip rolls in and up
                      under the upper incisors (f, v)
  upper_lip_raise  -> mouthUpperUp_L/R
  brow_raise       -> browInnerUp_L/R and browOuterUp_L/R
Channels of SPEECH_CHANNELS that the rig does not drive stay 0.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..heads import ICT_LOWER_CONTACT, ICT_UPPER_CONTACT, SPEECH_CHANNELS, ict_head
from ..template import Template
from .rig import ARTICULATORS

JAW_GAIN = 0.60              # jawOpen per unit jaw_open
LOWER_DOWN_GAIN = 0.25       # mouthLowerDown_L/R per unit jaw_open (with open, unsealed lips)
PUCKER_GAIN = 0.85           # mouthPucker per unit lip_round
FUNNEL_GAIN = 0.30           # mouthFunnel per unit lip_round
STRETCH_GAIN = 0.25          # mouthStretch_L/R per unit lip_spread
SMILE_GAIN = 0.35            # mouthSmile_L/R per unit lip_spread
ROLL_LOWER_GAIN = 0.20       # mouthRollLower per unit lower_lip_tuck
SHRUG_LOWER_GAIN = 0.05      # mouthShrugLower per unit lower_lip_tuck
UPPER_UP_GAIN = 0.45         # mouthUpperUp_L/R per unit upper_lip_raise
PRESS_GAIN = 0.30           # mouthPress_L/R at least, at full press
FIT_PENALTY_M = 0.0005       # gap (m) that a unit of press, roll or shrug costs in the sealing fit
FV_GAP_M = 0.003             # midline gap (m) of f/v: the lower lip at the upper incisors' edge
MIDLINE_WEIGHT = 6.0         # weight of the midline gap in the sealing fit
SEAL_SHRUG_MAX = 0.5         # mouthShrugLower at most from the sealing fit
PRESS_MAX = 0.6              # mouthPress_L/R at most from the sealing fit
SEAL_ROLL_MAX = 0.15         # mouthRollLower at most from the sealing fit
BROW_INNER_GAIN = 0.55       # browInnerUp_L/R per unit brow_raise
BROW_OUTER_GAIN = 0.40       # browOuterUp_L/R per unit brow_raise
CLOSURE_SATURATION = 0.85    # lip_close >= this: lips sealed (as rig.CLOSURE_SATURATION)
PRESS_FROM = 0.85            # lip_close above this presses
SEAL_GAP_M = 0.0001          # midline inner-lip gap left when sealed (m): touching, not crossing


@lru_cache(maxsize=1)
def _head(channels: tuple[str, ...] = SPEECH_CHANNELS) -> Template:
    return ict_head(channels)


def arkit_weights(track: np.ndarray, channels: tuple[str, ...] | list[str] = SPEECH_CHANNELS) -> np.ndarray:
    """Articulator track (T, len(rig.ARTICULATORS)) 0..1 -> weights (T, len(channels)) float32 0..1.
    Channels are picked from the SPEECH_CHANNELS solution (others are 0)."""
    full = _speech_weights(track)
    out = np.zeros((len(full), len(channels)), dtype=np.float32)
    for j, name in enumerate(channels):
        if name in SPEECH_CHANNELS:
            out[:, j] = full[:, SPEECH_CHANNELS.index(name)]
    return out


def _speech_weights(track: np.ndarray) -> np.ndarray:
    """The mapping, on all of SPEECH_CHANNELS. -> (T, K) float32"""
    track = np.clip(np.asarray(track, dtype=np.float64), 0.0, 1.0)
    assert track.ndim == 2 and track.shape[1] == len(ARTICULATORS), track.shape
    a = {name: track[:, i] for i, name in enumerate(ARTICULATORS)}
    channels = SPEECH_CHANNELS
    head = _head(channels)
    index = {n: i for i, n in enumerate(channels)}
    w = np.zeros((len(track), len(channels)))

    def put(name: str, value: np.ndarray) -> None:
        if name in index:
            w[:, index[name]] = value

    close = np.clip(a["lip_close"] / CLOSURE_SATURATION, 0.0, 1.0)
    press = np.clip((a["lip_close"] - PRESS_FROM) / (1.0 - PRESS_FROM), 0.0, 1.0)
    tuck = a["lower_lip_tuck"]
    put("jawOpen", JAW_GAIN * a["jaw_open"])
    lower_down = LOWER_DOWN_GAIN * a["jaw_open"] * (1.0 - close) * (1.0 - tuck)
    put("mouthPucker", PUCKER_GAIN * a["lip_round"])
    put("mouthFunnel", FUNNEL_GAIN * a["lip_round"] * (1.0 - close))
    put("mouthRollLower", ROLL_LOWER_GAIN * tuck)
    put("mouthShrugLower", SHRUG_LOWER_GAIN * tuck)
    for side in "LR":
        put(f"mouthLowerDown_{side}", lower_down)
        put(f"mouthStretch_{side}", STRETCH_GAIN * a["lip_spread"])
        put(f"mouthSmile_{side}", SMILE_GAIN * a["lip_spread"])
        put(f"mouthUpperUp_{side}", UPPER_UP_GAIN * a["upper_lip_raise"] * (1.0 - 0.7 * close))
        put(f"browInnerUp_{side}", BROW_INNER_GAIN * a["brow_raise"])
        put(f"browOuterUp_{side}", BROW_OUTER_GAIN * a["brow_raise"])
    _seal(w, close, press, tuck)
    return np.clip(w, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=1)
def _closure_model() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Linearised inner-lip gaps on the ICT head: rest gaps (C,), each channel's change per
    unit weight (K, C), the closing channels' columns (4, C) (mouthClose, mouthPress_L+R,
    mouthRollLower, mouthShrugLower) and the midline column."""
    head = _head()
    k = len(head.blendshape_names)
    rest = lip_gaps(head.vertices, head)
    unit = np.stack([lip_gaps(head.vertices + head.blendshape_deltas[i], head) for i in range(k)]) - rest
    index = {n: i for i, n in enumerate(head.blendshape_names)}
    closing = np.stack([unit[index["mouthClose"]], unit[index["mouthPress_L"]] + unit[index["mouthPress_R"]],
                        unit[index["mouthRollLower"]], unit[index["mouthShrugLower"]]])
    x = head.vertices[np.array(ICT_LOWER_CONTACT), 0]
    keep = np.abs(x) <= 0.85 * abs(head.vertices[head.landmarks["mouth_corner_left"], 0])
    mid = int(np.argmin(np.abs(x[keep])))
    return rest, unit, closing, mid


def _seal(w: np.ndarray, close: np.ndarray, press: np.ndarray, tuck: np.ndarray) -> None:
    """Set mouthClose, mouthPress_L/R and (adding to the tuck's) mouthRollLower and
    mouthShrugLower in place so
    that the lips meet along the mouth on p/b/m whatever the other weights do.

    ICT's mouthClose closes the sides of the mouth more than jawOpen opens them (0.67 of
    its closing at the sides, 0.85 at the midline), so mouthClose alone, sealing the
    midline, would push the lips through each other at the sides: mouthClose, mouthPress_L/R,
    mouthRollLower and mouthShrugLower (which lifts the lower lip) are fitted by bounded
    least squares to the rest pose's contact profile across the mouth, the midline weighted
    most (its gap ends near SEAL_GAP_M). `close` (0..1) blends from the open pose to the
    sealed one; `press` (0..1) puts a floor of PRESS_GAIN * press under mouthPress_L/R.
    mouthClose is preferred to the other three (they cost FIT_PENALTY_M of gap per unit), as
    ARKit rigs close the lips over an open jaw with mouthClose.
    f/v (`tuck`, 0..1): mouthClose also lifts the lower lip back to the upper incisors when
    the jaw is open (midline gap FV_GAP_M, the f pose's own), so the tuck does not depend on
    the jaw's context."""
    from scipy.optimize import lsq_linear

    rest, unit, closing, mid = _closure_model()
    i_close, i_roll = SPEECH_CHANNELS.index("mouthClose"), SPEECH_CHANNELS.index("mouthRollLower")
    i_press = [SPEECH_CHANNELS.index("mouthPress_L"), SPEECH_CHANNELS.index("mouthPress_R")]
    w[:, i_close] = 0.0
    w[:, i_press] = 0.0
    gaps = rest[None] + w @ unit                                            # (T, C) without closure
    # Target: the rest pose's own contact profile (the lips touch at rest, overlapping a
    # little at the sides), lowered so that the midline gap is SEAL_GAP_M.
    target = rest - (rest[mid] - SEAL_GAP_M)
    lower = np.zeros(4)
    upper = np.array([1.0, PRESS_MAX, SEAL_ROLL_MAX, SEAL_SHRUG_MAX])
    row_weight = np.ones(len(rest))
    row_weight[mid] = MIDLINE_WEIGHT                                        # the midline seals first
    a_matrix = np.concatenate([closing.T * row_weight[:, None],                # (C + 3, 4)
                               np.diag([0.0, FIT_PENALTY_M, FIT_PENALTY_M, FIT_PENALTY_M])[1:]])
    tuck_close = tuck * np.clip((gaps[:, mid] - FV_GAP_M) / -closing[0, mid], 0.0, 1.0)
    x = np.zeros((len(w), 4))
    for t in np.where(close > 1e-3)[0]:                                       # bounded least squares
        lower[1] = PRESS_GAIN * press[t]
        fit = lsq_linear(a_matrix, np.concatenate([(target - gaps[t]) * row_weight, np.zeros(3)]),
                         bounds=(lower, upper), method="bvls")
        x[t] = fit.x
    close_w, press_w, roll, shrug = x.T
    w[:, i_close] = close * close_w + (1.0 - close) * tuck_close
    for i in i_press:
        w[:, i] = close * press_w
    w[:, i_roll] = np.clip(w[:, i_roll] + close * roll, 0.0, 1.0)
    i_shrug = SPEECH_CHANNELS.index("mouthShrugLower")
    w[:, i_shrug] = np.clip(w[:, i_shrug] + close * shrug, 0.0, 1.0)


def lip_gaps(vertices: np.ndarray, head: Template | None = None, inner: float = 0.85) -> np.ndarray:
    """Inner-lip gap (m) across the mouth: upper contact edge minus lower contact edge in y,
    compared at equal x, at the lower edge's vertices within `inner` of the half-width.
    vertices (T, V, 3) or (V, 3) -> (T, C) or (C,). Negative: the lips pass through each other."""
    head = head or _head()
    v = np.asarray(vertices, dtype=np.float64)
    single = v.ndim == 2
    v = v[None] if single else v
    up, lo = np.array(ICT_UPPER_CONTACT), np.array(ICT_LOWER_CONTACT)
    half = float(abs(head.vertices[head.landmarks["mouth_corner_left"], 0]))
    rest_x = head.vertices[lo, 0]
    keep = lo[np.abs(rest_x) <= inner * half]
    out = np.empty((len(v), len(keep)))
    for t in range(len(v)):
        ux, uy = v[t, up, 0], v[t, up, 1]
        order = np.argsort(ux)
        out[t] = np.interp(v[t, keep, 0], ux[order], uy[order]) - v[t, keep, 1]
    return out[0] if single else out


def vertices_from_track(track: np.ndarray, head: Template | None = None) -> np.ndarray:
    """Articulator track (T, 7) -> ICT vertices (T, V, 3) float32 metres (for figures, tests)."""
    head = head or _head()
    return head.vertices[None] + head.offsets_from_weights(arkit_weights(track, head.blendshape_names))
