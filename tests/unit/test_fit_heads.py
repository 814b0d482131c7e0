"""The Fit Face test meshes (tests/fit_heads.py): valid polygons, truth that reproduces the ICT
shapes where the mesh is the kit's own, landmarks on the surface."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fit_heads  # noqa: E402
from fit_heads import FIT_LANDMARKS  # noqa: E402

needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="decimation runs Blender (the bpy module; pip install -e '.[test]' installs it)")


def _kit():
    from wav2sem.heads import ict_arrays

    a = ict_arrays()
    return a, a["expression_names"].tolist()


def _check_mesh(head):
    totals, loops = head.loop_totals, head.loop_vertices
    assert head.vertices.shape == (head.vertex_count, 3) and head.vertices.dtype == np.float64
    assert totals.min() >= 3 and int(totals.sum()) == len(loops)
    assert loops.min() >= 0 and loops.max() < head.vertex_count
    assert len(np.unique(loops)) == head.vertex_count, "every vertex is used by a polygon"
    starts = np.concatenate([[0], np.cumsum(totals)[:-1]])
    for f in np.random.default_rng(0).choice(len(totals), size=min(2000, len(totals)), replace=False):
        poly = loops[starts[f]:starts[f] + totals[f]]
        assert len(set(poly.tolist())) == len(poly), "no repeated corner"


def _surface_distance(head, point):
    tris = head.triangles()
    q = fit_heads.project_to_surface(point[None], head.vertices, tris)[0]
    return float(np.linalg.norm(q - point))


@pytest.mark.parametrize("include_eyes", [False, True])
def test_truth_reproduces_the_kit_on_its_own_topology(include_eyes):
    head = fit_heads.ict_decimated(ratio=1.0, mix=False, include_eyes=include_eyes)
    _check_mesh(head)
    a, names = _kit()
    kit = fit_heads.ict_kit_vertices(include_eyes)
    assert head.vertex_count == len(kit)
    np.testing.assert_allclose(head.to_source(head.vertices), a["neutral"][kit] * 0.01, atol=1e-6)
    wanted = ["jawOpen", "mouthClose", "mouthFunnel", "mouthRollLower", "eyeBlink_L", "browInnerUp_R"]
    got = head.truth_deltas(wanted)
    for k, name in enumerate(wanted):
        expected = head.vector_to_mesh(a["expression_deltas"][names.index(name)][kit] * 0.01)
        np.testing.assert_allclose(got[k], expected, atol=1e-4 * head.scale * 1e-3)   # 0.1 um
    assert head.info["truth_distance_mm_max"] < 1e-6


def test_stylised_truth_is_the_kit_shape_through_the_warp():
    head = fit_heads.ict_stylised(ratio=1.0)    # no decimation: the kit's own vertices
    a, names = _kit()
    kit = fit_heads.ict_kit_vertices(False)
    rest = a["neutral"][kit].astype(np.float64) * 0.01
    np.testing.assert_allclose(head.vertices, head.scale * fit_heads.style_warp(rest) @ head.rotation.T + head.offset,
                               atol=1e-6)
    eps = 1e-3                                   # the warp is smooth: the Jacobian is its small-step limit
    for name in ("jawOpen", "mouthPucker"):
        d = a["expression_deltas"][names.index(name)][kit] * 0.01
        step = (fit_heads.style_warp(rest + eps * d) - fit_heads.style_warp(rest)) / eps
        got = head.vector_to_source(head.truth_deltas([name])[0])
        scale = np.abs(d).max()
        assert np.abs(got - step).max() < 0.01 * scale
        assert np.abs(got - d).max() > 0.05 * scale           # ... and not the unwarped shape
    # It is not the reference: the mouth is wider and the chin longer than a scaled copy.
    lm = {n: head.to_source(p) for n, p in head.landmarks.items()}
    ref = fit_heads.reference_landmarks_m()
    width = np.linalg.norm(lm["mouth_corner_left"] - lm["mouth_corner_right"])
    assert width > 1.25 * np.linalg.norm(ref["mouth_corner_left"] - ref["mouth_corner_right"])
    assert lm["chin"][1] < ref["chin"][1] - 0.01


@needs_bpy
def test_decimated_head():
    head = fit_heads.ict_decimated()
    _check_mesh(head)
    full = fit_heads.ict_decimated(ratio=1.0, mix=False)
    assert 0.28 < head.vertex_count / full.vertex_count < 0.42
    sizes = fit_heads.polygon_sizes(head)
    assert sizes["triangles"] > 1000 and sizes["quads"] > 1000 and sizes["ngons"] > 20
    assert head.info["truth_distance_mm_max"] < 1.0
    # Blender's axes, centimetres: the face looks along -Y, the top of the head is up (+Z).
    lm = head.landmarks
    assert lm["nose_tip"][1] < lm["eye_inner_left"][1] - 1.0
    assert lm["eye_inner_left"][2] > lm["nose_tip"][2] > lm["upper_lip_center"][2] > lm["chin"][2]
    x = {n: p[0] - head.offset[0] for n, p in lm.items()}
    assert x["eye_outer_left"] > x["eye_inner_left"] > 0 > x["eye_inner_right"] > x["eye_outer_right"]
    # The lower lip moves with the jaw, the upper one does not (the seam is kept apart).
    jaw = np.linalg.norm(head.truth_deltas(["jawOpen"])[0], axis=1) * 10.0          # mm
    near = lambda p: np.argsort(np.linalg.norm(head.vertices - p, axis=1))[:8]     # noqa: E731
    below = lm["lower_lip_center"] + np.array([0.0, -0.1, -0.3])
    above = lm["upper_lip_center"] + np.array([0.0, -0.1, 0.3])
    assert np.median(jaw[near(below)]) > 25.0
    assert np.median(jaw[near(above)]) < 8.0
    assert jaw[head.back].max() < 0.1


@needs_bpy
@pytest.mark.parametrize("name", ["ict_decimated", "ict_eyes", "ict_tilted", "ict_stylised", "synthetic", "full_body"])
def test_landmarks_are_on_the_surface(name):
    head = fit_heads.HEADS[name]()
    assert set(head.landmarks) == set(FIT_LANDMARKS)
    for n, p in head.landmarks.items():
        assert head.mm(_surface_distance(head, p)) < 1e-3, n
    e2m = head.mm(head.eye_to_mouth)
    assert 50 < e2m < 110
    if head.kind == "ict":
        ref = fit_heads.reference_landmarks_m()
        for n, p in head.landmarks.items():
            mapped = head.scale * (head.warp(ref[n]) if head.warp else ref[n]) @ head.rotation.T + head.offset
            assert head.mm(np.linalg.norm(p - mapped)) < 1.5, n


def test_synthetic_head():
    head = fit_heads.synthetic()
    _check_mesh(head)
    from wav2sem.synth.head import build_head

    t = build_head().template
    assert head.vertex_count == t.vertex_count
    assert fit_heads.polygon_sizes(head)["quads"] > 4000
    np.testing.assert_allclose(head.to_source(head.vertices), t.vertices, atol=1e-6)
    for n in FIT_LANDMARKS:
        assert head.mm(_surface_distance(head, head.landmarks[n])) < 1e-3, n
    lm = {n: head.to_source(p) for n, p in head.landmarks.items()}
    assert lm["eye_outer_left"][0] > lm["eye_inner_left"][0] > 0
    assert lm["nose_tip"][1] > lm["upper_lip_center"][1] > lm["lower_lip_center"][1] > lm["chin"][1]
    motion = fit_heads.synthetic_rig_motion(head, np.array([[1.0, 0, 0, 0, 0, 0, 0]]))[0]   # jaw open
    lower, upper = t.lip_centres[1], t.lip_centres[0]
    assert np.linalg.norm(motion[lower]) > 0.015 > np.linalg.norm(motion[upper])


@needs_bpy
def test_full_body():
    head = fit_heads.full_body()
    _check_mesh(head)
    assert 150_000 <= head.vertex_count <= 250_000
    body = ~head.head
    assert (head.ict_tri[body] == -1).all() and (head.ict_tri[head.head] >= 0).all()
    assert np.abs(head.truth_deltas(["jawOpen"])[0][body]).max() == 0.0
    # Standing: the head on top, in metres.
    assert head.vertices[head.head, 2].min() > head.vertices[body, 2].max() - 0.1
    assert 1.6 < head.vertices[:, 2].max() < 1.9


@pytest.mark.parametrize("name", ["cube", "uv_sphere"])
def test_non_heads_are_closed_and_head_sized(name):
    head = fit_heads.HEADS[name]()
    _check_mesh(head)
    assert head.landmarks == {} and head.kind == "none"
    tris = head.triangles()
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all(), "closed surface"
    size = head.vertices.max(axis=0) - head.vertices.min(axis=0)
    assert 0.15 < size.min() and size.max() < 0.3
