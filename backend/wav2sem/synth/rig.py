"""Articulation rig of the template head: articulator values -> vertex positions.

Articulators (all 0..1):
  jaw_open          rotation of the jaw region about the jaw hinge (plus a small slide)
  lip_close         lips meet (and press at full value), whatever the jaw does
  lip_round         pucker: mouth narrows and protrudes
  lip_spread        corners move out and back
  lower_lip_tuck    lower lip goes up under the upper lip/teeth (f, v)
  upper_lip_raise   upper lip lifts
  brow_raise        brows and forehead lift
Linear articulators are smooth displacement fields (Gaussian falloffs in metres). The jaw
is an actual rotation; closure and tuck are constraints evaluated after the other
articulators (they move the lips by the remaining gap), so m/b/p close the mouth even when
the jaw is open. Hand-written: the falloffs are specific to our head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .head import MOUTH_HALF_WIDTH, MOUTH_Y, HeadMesh
from .phonemes import SPEECH_ARTICULATORS

ARTICULATORS = SPEECH_ARTICULATORS + ("brow_raise",)
JAW_MAX_ANGLE = 0.25                       # radians at jaw_open = 1
JAW_PIVOT_YZ = np.array([-0.015, 0.0])     # (y, z) metres, the jaw hinge (x axis)
JAW_SLIDE = np.array([0.0, -0.002, 0.004])  # metres at jaw_open = 1 (condyle slides forward)
CLOSURE_SATURATION = 0.85                  # lip_close >= this: lips touch
UPPER_SHARE = 0.4                          # part of the closing done by the upper lip
TUCK_OFFSET = np.array([0.0, -0.0015, -0.0035])  # lower lip ends behind/below the upper lip (m)
PRESS_DEPTH = 0.0018                       # lips pushed back when fully pressed (m)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class Rig:
    """Precomputed fields for one head. Build with `Rig.for_head(build_head())`."""

    rest: np.ndarray            # (V, 3) metres
    linear: np.ndarray          # (L, V, 3) metres per unit of each linear articulator
    linear_names: tuple[str, ...]
    jaw_weight: np.ndarray      # (V,)
    slit_upper: np.ndarray      # (K,) interior slit columns, upper copies
    slit_lower: np.ndarray      # (K,)
    pair_of: np.ndarray         # (V,) index into the slit pairs of the vertex column, -1 if none
    upper_fall: np.ndarray      # (V,) closure falloff on the upper lip side (0 elsewhere)
    lower_fall: np.ndarray      # (V,) closure falloff on the lower lip side
    press_weight: np.ndarray    # (V,)
    pair_taper: np.ndarray      # (K,) 1 at the mouth centre, towards 0 at the corners

    @classmethod
    def for_head(cls, head: HeadMesh) -> "Rig":
        p = head.template.vertices.astype(np.float64)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        dy = y - MOUTH_Y
        upper = ~head.lower_side
        front = _smoothstep(0.03, 0.06, z)
        xs = x / MOUTH_HALF_WIDTH                                               # -1..1 across the mouth
        mouth_band = np.exp(-np.abs(xs / 1.15) ** 6)
        lip_band = np.exp(-(dy / 0.013) ** 2) * front

        fields = {}
        # lip_round: narrow towards the midline, protrude, open a small round aperture.
        w = mouth_band * lip_band
        slit_near = np.exp(-(dy / 0.006) ** 2) * w
        fields["lip_round"] = np.stack([-0.30 * x * w, np.where(upper, 1, -1) * 0.0012 * slit_near,
                                        0.0065 * w * (1 - 0.4 * np.clip(xs, -1, 1) ** 2)], axis=1)
        # lip_spread: corners out, slightly up and back; the cheeks follow a little.
        w = np.exp(-np.abs(x / 0.036) ** 4) * np.exp(-(dy / 0.02) ** 2) * front
        corner = np.clip(xs, -1.6, 1.6) ** 2
        fields["lip_spread"] = np.stack([0.20 * x * w, 0.0015 * corner * w, -0.0035 * corner * w], axis=1)
        # upper_lip_raise: the upper lip lifts, more beside the midline than on it.
        w = np.where(upper, np.exp(-(dy / 0.011) ** 2), 0.0) * mouth_band * front
        fields["upper_lip_raise"] = np.stack([0 * x, 0.0035 * w * (0.6 + 0.4 * np.clip(np.abs(xs), 0, 1)),
                                              0.0008 * w], axis=1)
        # brow_raise: brows lift most, the forehead above them less.
        w = (np.exp(-((y - 0.047) / 0.016) ** 2) + 0.4 * _smoothstep(0.05, 0.07, y) * (1 - _smoothstep(0.085, 0.11, y)))
        w *= np.exp(-np.abs(x / 0.06) ** 4) * _smoothstep(0.04, 0.07, z)
        fields["brow_raise"] = np.stack([0 * x, 0.0055 * w, 0.0008 * w], axis=1)
        linear_names = ("lip_round", "lip_spread", "upper_lip_raise", "brow_raise")
        linear = np.stack([fields[n] for n in linear_names])

        jaw_weight = _jaw_weight(head, y)
        interior_upper, interior_lower = head.slit_upper[1:-1], head.slit_lower[1:-1]
        pair_of = np.full(len(p), -1)
        column_to_pair = {int(head.column[v]): i for i, v in enumerate(interior_upper)}
        for v in range(len(p)):
            pair_of[v] = column_to_pair.get(int(head.column[v]), -1)
        in_pair = pair_of >= 0
        # Falloff from the slit vertex of the same column: exactly 1 on the slit itself.
        safe_pair = np.where(in_pair, pair_of, 0)
        d_upper = y - p[interior_upper[safe_pair], 1]
        d_lower = y - p[interior_lower[safe_pair], 1]
        upper_fall = np.where(upper & in_pair, np.exp(-(d_upper / 0.008) ** 2), 0.0)
        lower_fall = np.where(~upper & in_pair, np.exp(-(d_lower / 0.015) ** 2), 0.0)
        # Pressing pushes both lips back alike: measured from the slit's midline, so the two
        # copies of a slit vertex get the same weight and stay together.
        midline = np.where(in_pair, 0.5 * (p[interior_upper[safe_pair], 1] + p[interior_lower[safe_pair], 1]), MOUTH_Y)
        press_weight = mouth_band * np.exp(-((y - midline) / 0.009) ** 2) * front
        pair_taper = 1.0 - (np.abs(head.azimuth[interior_upper]) / head.mouth_half_angle) ** 2
        return cls(p, linear, linear_names, jaw_weight, interior_upper, interior_lower, pair_of,
                   upper_fall, lower_fall, press_weight, pair_taper)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Articulator values (T, len(ARTICULATORS)) in 0..1 -> vertices (T, V, 3) float32 metres."""
        values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        col = {name: values[:, i] for i, name in enumerate(ARTICULATORS)}
        lin = np.stack([col[n] for n in self.linear_names], axis=1)              # (T, L)
        verts = self.rest[None] + np.einsum("tl,lvc->tvc", lin, self.linear)       # (T, V, 3)

        # Jaw: rotate about the hinge's x axis, weighted per vertex.
        angle = col["jaw_open"] * JAW_MAX_ANGLE                                   # (T,)
        q = self.rest[:, 1:] - JAW_PIVOT_YZ                                       # (V, 2) (y, z)
        c, s = (np.cos(angle) - 1.0)[:, None], np.sin(angle)[:, None]             # (T, 1)
        w = self.jaw_weight[None]                                                 # (1, V)
        verts[:, :, 1] += w * (c * q[:, 0] - s * q[:, 1])
        verts[:, :, 2] += w * (s * q[:, 0] + c * q[:, 1])
        verts += (col["jaw_open"][:, None, None] * w[..., None]) * JAW_SLIDE

        # Lower-lip tuck: the lower lip goes to just behind and below the upper lip.
        tuck = col["lower_lip_tuck"][:, None, None]
        # The offset tapers towards the fixed mouth corners so the lip does not tear there.
        target = verts[:, self.slit_upper] + self.pair_taper[:, None] * TUCK_OFFSET  # (T, K, 3)
        self._move_pairs(verts, tuck * (target - verts[:, self.slit_lower]), self.lower_fall)

        # Closure: both lips meet at the point that splits the remaining gap.
        close = np.clip(col["lip_close"] / CLOSURE_SATURATION, 0.0, 1.0)[:, None, None]
        gap = verts[:, self.slit_upper] - verts[:, self.slit_lower]               # (T, K, 3)
        self._move_pairs(verts, -close * UPPER_SHARE * gap, self.upper_fall)
        self._move_pairs(verts, close * (1 - UPPER_SHARE) * gap, self.lower_fall)
        press = np.clip((col["lip_close"] - CLOSURE_SATURATION) / (1 - CLOSURE_SATURATION), 0, 1)
        verts[:, :, 2] -= press[:, None] * PRESS_DEPTH * self.press_weight[None]
        return verts.astype(np.float32)

    def _move_pairs(self, verts: np.ndarray, pair_disp: np.ndarray, fall: np.ndarray) -> None:
        """Add each slit pair's displacement (T, K, 3) to its column, scaled by `fall` (V,)."""
        idx = np.where(fall > 1e-6)[0]
        verts[:, idx] += pair_disp[:, self.pair_of[idx]] * fall[idx, None]


def _jaw_weight(head: HeadMesh, y: np.ndarray) -> np.ndarray:
    """How much each vertex follows the jaw: 1 on the lower lip and chin, 0 on the upper lip
    and the skull. A soft boundary runs from the mouth corners up to the hinge; across the
    slit the weight jumps (0 above, 1 below) at the mouth centre, fading to 0.5 at the
    corners, so the field is continuous everywhere except across the opening."""
    az, el = np.abs(head.azimuth), head.elevation
    beyond = np.clip(az - head.mouth_half_angle, 0.0, None)
    hinge_el = np.arctan2(JAW_PIVOT_YZ[0] - (-0.01), 0.06)
    slope = (hinge_el - head.mouth_elevation) / (np.pi / 2 - head.mouth_half_angle)
    offset = el - (head.mouth_elevation + slope * beyond)                  # radians above the boundary
    base = 1.0 - _smoothstep(-1.0, 1.0, offset / (0.06 + 0.15 * beyond))
    across = np.clip(1.0 - (az / head.mouth_half_angle) ** 2, 0.0, 1.0) * np.exp(-(offset / 0.08) ** 2)
    w = np.where(head.lower_side, base + (1.0 - base) * across, base * (1.0 - across))
    w *= _smoothstep(-0.19, -0.11, y)                     # the neck stays
    w *= 1.0 - _smoothstep(JAW_PIVOT_YZ[0] - 0.02, JAW_PIVOT_YZ[0], y)   # nothing above the hinge
    w *= 1.0 - _smoothstep(1.45, 1.9, az)                   # nor the back of the head
    w[head.row < 0] = 0.0                                   # poles
    return w
