"""The template head: deterministic, the right size, a closed manifold except the mouth slit."""
from __future__ import annotations

import numpy as np

from wav2sem.synth.head import build_head
from wav2sem.template import LANDMARK_NAMES, Template


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def test_head_is_deterministic(head):
    again = build_head.__wrapped__()          # bypass the cache: build from scratch
    np.testing.assert_array_equal(again.template.vertices, head.template.vertices)
    np.testing.assert_array_equal(again.template.faces, head.template.faces)
    assert again.template.landmarks == head.template.landmarks
    for name, idx in head.template.regions.items():
        np.testing.assert_array_equal(again.template.regions[name], idx)


def test_head_size_and_units(head):
    t = head.template
    assert 2000 <= t.vertex_count <= 8000
    lo, hi = t.vertices.min(0), t.vertices.max(0)
    height = t.vertices[:, 1].max() - t.vertices[t.landmarks["chin"], 1]
    assert 0.2 < height < 0.26                            # crown to chin, metres
    assert 0.14 < hi[0] - lo[0] < 0.19                    # width incl. ears
    assert np.isfinite(t.vertices).all()


def test_manifold_except_mouth_slit(head):
    t = head.template
    edges, counts = _edges(t.faces)
    assert set(np.unique(counts)) <= {1, 2}
    boundary = edges[counts == 1]
    slit = set(head.slit_upper.tolist()) | set(head.slit_lower.tolist())
    assert set(boundary.ravel().tolist()) == slit          # the only hole is the mouth
    # One closed loop: every boundary vertex has exactly two boundary edges.
    assert np.all(np.bincount(boundary.ravel())[sorted(slit)] == 2)
    assert len(boundary) == 2 * (len(head.slit_upper) - 1)
    # No degenerate or duplicated faces; every vertex is used.
    assert len(np.unique(np.sort(t.faces, axis=1), axis=0)) == len(t.faces)
    assert np.all(np.diff(np.sort(t.faces, axis=1), axis=1) > 0)
    assert len(np.unique(t.faces)) == t.vertex_count


def test_faces_point_outwards(head):
    v, f = head.template.vertices.astype(np.float64), head.template.faces
    signed_volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert signed_volume > 0.002                           # m^3: a head is ~4 litres


def test_landmarks_and_regions(head):
    t = head.template
    assert set(t.landmarks) == set(LANDMARK_NAMES)
    p = {name: t.vertices[i] for name, i in t.landmarks.items()}
    assert p["nose_tip"][2] == t.vertices[:, 2].max()
    assert p["mouth_corner_left"][0] > 0.015 > -0.015 > p["mouth_corner_right"][0]
    assert p["brow_left"][0] > 0 > p["brow_right"][0]
    assert p["chin"][1] < p["lower_lip_center"][1] < p["upper_lip_center"][1] < p["nose_tip"][1] < p["brow_left"][1]
    assert 0 < p["upper_lip_center"][1] - p["lower_lip_center"][1] < 0.002   # lips slightly parted at rest
    lips, upper = t.regions["lips"], t.regions["upper_face"]
    assert t.landmarks["upper_lip_center"] in lips and t.landmarks["lower_lip_center"] in lips
    assert len(np.intersect1d(lips, upper)) == 0
    assert np.all(t.vertices[upper, 1] > t.vertices[lips, 1].max())
    assert 100 < len(lips) < 800 and len(upper) > 300


def test_template_round_trip(head, tmp_path):
    head.template.save(tmp_path / "template.npz")
    back = Template.load(tmp_path / "template.npz")
    np.testing.assert_array_equal(back.vertices, head.template.vertices)
    np.testing.assert_array_equal(back.faces, head.template.faces)
    assert back.landmarks == head.template.landmarks
    assert set(back.regions) == set(head.template.regions)
