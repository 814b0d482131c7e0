"""The articulation rig: deterministic, rest = template, each articulator does its job."""
from __future__ import annotations

import numpy as np
import pytest

from wav2sem.synth.head import build_head
from wav2sem.synth.rig import ARTICULATORS, Rig


def pose(**values: float) -> np.ndarray:
    out = np.zeros((1, len(ARTICULATORS)))
    for name, value in values.items():
        out[0, ARTICULATORS.index(name)] = value
    return out


def gap_mm(head, verts: np.ndarray) -> float:
    lm = head.template.landmarks
    return float((verts[lm["upper_lip_center"], 1] - verts[lm["lower_lip_center"], 1]) * 1000)


def test_rig_is_deterministic(head, rig):
    again = Rig.for_head(build_head.__wrapped__())
    values = np.random.default_rng(3).random((7, len(ARTICULATORS)))
    np.testing.assert_array_equal(again.apply(values), rig.apply(values))


def test_rest_pose_is_the_template(head, rig):
    out = rig.apply(np.zeros((2, len(ARTICULATORS))))
    assert out.shape == (2, head.template.vertex_count, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], head.template.vertices, atol=1e-7)


@pytest.mark.parametrize("jaw", [0.0, 0.3, 0.8, 1.0])
def test_closure_closes_lips_whatever_the_jaw(head, rig, jaw):
    open_ = rig.apply(pose(jaw_open=jaw))[0]
    closed = rig.apply(pose(jaw_open=jaw, lip_close=1.0))[0]
    assert abs(gap_mm(head, closed)) < 0.05
    s = head.slit_upper[1:-1], head.slit_lower[1:-1]
    assert np.abs(closed[s[0]] - closed[s[1]]).max() < 1e-4             # the whole slit, not just the centre
    assert gap_mm(head, open_) > 0.5 + 20 * jaw


def test_jaw_opens_lower_face_only(head, rig):
    t = head.template
    moved = np.linalg.norm(rig.apply(pose(jaw_open=1.0))[0] - t.vertices, axis=1)
    assert moved[t.landmarks["chin"]] > 0.02
    assert gap_mm(head, rig.apply(pose(jaw_open=0.8))[0]) > 15
    for still in ("nose_tip", "brow_left", "brow_right", "upper_lip_center"):
        assert moved[t.landmarks[still]] < 1e-4
    assert moved[t.regions["upper_face"]].max() < 1e-4
    assert moved[t.vertices[:, 1] < -0.195].max() < 1e-6                # the base of the neck stays


def test_round_spread_tuck_and_brows(head, rig):
    t, lm = head.template, head.template.landmarks
    width = lambda v: v[lm["mouth_corner_left"], 0] - v[lm["mouth_corner_right"], 0]  # noqa: E731
    rest = t.vertices
    rounded = rig.apply(pose(lip_round=1.0))[0]
    spread = rig.apply(pose(lip_spread=1.0))[0]
    assert width(rounded) < width(rest) - 0.008 and rounded[lm["upper_lip_center"], 2] > rest[lm["upper_lip_center"], 2] + 0.004
    assert width(spread) > width(rest) + 0.006
    tucked = rig.apply(pose(jaw_open=0.12, lower_lip_tuck=1.0))[0]
    lower, upper = tucked[lm["lower_lip_center"]], tucked[lm["upper_lip_center"]]
    assert lower[2] < upper[2] - 0.002 and abs(lower[1] - upper[1]) < 0.003  # behind and under the upper lip
    brows = rig.apply(pose(brow_raise=1.0))[0]
    assert brows[lm["brow_left"], 1] - rest[lm["brow_left"], 1] > 0.004
    assert np.abs(brows[t.regions["lips"]] - rest[t.regions["lips"]]).max() < 1e-4


def test_fields_are_smooth(head, rig):
    """Neighbouring vertices move alike (no tearing); edges on the mouth slit excepted.

    Strain = |change of displacement along an edge| / edge length, at each articulator's
    full value. Opening the jaw fully stretches the mouth corners; nothing else should.
    """
    t = head.template
    out = rig.apply(np.eye(len(ARTICULATORS))) - t.vertices[None]         # (A, V, 3)
    f = t.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = e[~np.isin(e, np.union1d(head.slit_upper, head.slit_lower)).any(axis=1)]
    length = np.linalg.norm(t.vertices[e[:, 0]] - t.vertices[e[:, 1]], axis=1)
    for a, name in enumerate(ARTICULATORS):
        strain = np.linalg.norm(out[a][e[:, 0]] - out[a][e[:, 1]], axis=1) / length
        assert np.percentile(strain, 99.9) < (2.5 if name == "jaw_open" else 0.6), name
