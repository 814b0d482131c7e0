"""Rigid placement of the reference head on a user's mesh: which axis is up and which way the
face looks, where the head is (a bust, or the top of a full body) and its scale, by trying
the 24 axis-aligned orientations and keeping the one whose similarity ICP fits best.

A similarity maps reference metres to the user's space: x -> scale * R @ x + t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from scipy.spatial import cKDTree

from .geometry import Surface, SurfaceHit, sample_surface, similarity
from .reference import Reference

AXES = {"+X": (1, 0, 0), "-X": (-1, 0, 0), "+Y": (0, 1, 0), "-Y": (0, -1, 0), "+Z": (0, 0, 1), "-Z": (0, 0, -1)}


@dataclass
class Placement:
    scale: float
    rotation: np.ndarray          # (3, 3)
    translation: np.ndarray       # (3,)
    error: float                  # mean distance after the fit, in reference metres (trimmed)
    up: str = ""                  # e.g. "+Z", the user's axis the head's up points along
    forward: str = ""

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return self.scale * vectors @ self.rotation.T


def orientations() -> list[tuple[str, str, np.ndarray]]:
    """(up name, forward name, R) with R @ (0, 1, 0) = up and R @ (0, 0, 1) = forward."""
    out = []
    for up_name, up in AXES.items():
        for fwd_name, fwd in AXES.items():
            u, f = np.array(up, float), np.array(fwd, float)
            if abs(u @ f) > 0:
                continue
            out.append((up_name, fwd_name, np.stack([np.cross(u, f), u, f], axis=1)))
    return out


def width_profile(points: np.ndarray, up: np.ndarray, bins: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Slice heights (top down) and the horizontal extent of each slice (nan when empty)."""
    h = points @ up
    top, bottom = h.max(), h.min()
    edges = np.linspace(top, bottom, bins + 1)
    basis = np.linalg.svd(np.eye(3) - np.outer(up, up))[0][:, :2]
    flat = points @ basis
    which = np.clip(((top - h) / max(top - bottom, 1e-12) * bins).astype(int), 0, bins - 1)
    width = np.full(bins, np.nan)
    for i in range(bins):
        sel = flat[which == i]
        if len(sel) >= 3:
            width[i] = float(np.max(np.ptp(sel, axis=0)))
    return 0.5 * (edges[:-1] + edges[1:]), width


def head_top_and_neck(points: np.ndarray, up: np.ndarray) -> tuple[float, float | None]:
    """Height of the top along `up`, and of the neck (the narrowest slice between the head's
    widest slice and shoulders that are wider than the head), None when there is no such
    narrowing (a head cut at the neck)."""
    heights, width = width_profile(points, up)
    w = np.nan_to_num(width, nan=0.0)
    top = float(heights[0])
    best = 0.0
    for i in range(3, len(w)):
        best = max(best, w[i - 1])
        if w[i] > 1.15 * best and best > 0:
            # Wider than anything above: shoulders (or arms). The neck is the narrowest above.
            start = int(np.argmax(w[:i]))
            neck = start + int(np.argmin(np.where(w[start:i] > 0, w[start:i], np.inf)))
            if w[neck] < 0.8 * w[start] and top - heights[neck] > 0:
                return top, float(heights[neck])
            return top, None
    return top, None


class _Cloud:
    """Dense surface samples standing in for a surface in the coarse search: nearest-sample
    queries cost little even far from the surface, where the exact query is slow."""

    def __init__(self, points: np.ndarray):
        self.points = points
        self._tree = cKDTree(points)

    def closest(self, query: np.ndarray):
        distances, index = self._tree.query(query)
        return SurfaceHit(self.points[index], index, np.zeros((len(query), 3)), distances)


def _icp(ref_points: np.ndarray, ref_surface: Surface | _Cloud, user_points: np.ndarray, user_surface: Surface | _Cloud,
         start: Placement, iterations: int, trim: float = 0.8) -> Placement:
    """Similarity ICP with point-to-surface pairs both ways (reference samples onto the
    user's surface, the user's samples onto the reference's), the worst (1 - trim) dropped."""
    place = start

    def pairs(place: Placement) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        fwd = user_surface.closest(place.apply(ref_points))
        inverse = (user_points - place.translation) @ place.rotation / place.scale
        back = ref_surface.closest(inverse)
        return fwd.points, fwd.distances, back.points, back.distances * place.scale

    for _ in range(iterations):
        hit_user, d_fwd, hit_ref, d_back = pairs(place)
        keep_f = d_fwd <= np.quantile(d_fwd, trim)
        keep_b = d_back <= np.quantile(d_back, trim)
        src = np.concatenate([ref_points[keep_f], hit_ref[keep_b]])
        dst = np.concatenate([hit_user[keep_f], user_points[keep_b]])
        scale, rotation, translation = similarity(src, dst)
        place = Placement(scale, rotation, translation, 0.0, place.up, place.forward)
    # The score is how far the reference's face and head lie from the mesh; the other way
    # round would count a body's shoulders, hair or a hat against a good fit.
    _, d_fwd, _, _ = pairs(place)
    place.error = float(np.sort(d_fwd)[: int(trim * len(d_fwd))].mean() / place.scale)
    return place


def _box_centre(points: np.ndarray) -> np.ndarray:
    return 0.5 * (points.min(axis=0) + points.max(axis=0))


@dataclass
class HeadRegion:
    mask: np.ndarray              # (V,) user vertices that belong to the head
    top: float
    neck: float | None


def head_region(vertices: np.ndarray, up: np.ndarray) -> HeadRegion:
    top, neck = head_top_and_neck(vertices, up)
    h = vertices @ up
    if neck is None:
        return HeadRegion(np.ones(len(vertices), bool), top, None)
    return HeadRegion(h >= neck - 0.35 * (top - neck), top, neck)


def place_reference(ref: Reference, vertices: np.ndarray, triangles: np.ndarray, user_surface: Surface,
                    ref_surface: Surface, progress: Callable[[float, str], None] | None = None,
                    rng: np.random.Generator | None = None, keep: int = 3) -> Placement:
    """The best similarity over the 24 orientations (its `error` says how well it fits):
    a coarse ICP from each, then more points and iterations for the `keep` best."""
    rng = rng or np.random.default_rng(0)
    skin = ref.skin
    face = ref.part_mask(("face",))
    ref_pts = np.concatenate([sample_surface(ref.vertices, ref.triangles_of(face), 1100, rng)[0],
                              sample_surface(ref.vertices, ref.triangles_of(skin), 500, rng)[0]])
    coarse_ref = ref_pts[rng.choice(len(ref_pts), 400, replace=False)]
    ref_cloud = _Cloud(np.concatenate([ref_pts, sample_surface(ref.vertices, ref.triangles_of(skin), 4000, rng)[0]]))
    # The reference's height top to neck (its narrowest slice below the chin; the kit has no
    # shoulders, so head_top_and_neck finds none) and top to its cut.
    heights, widths = width_profile(ref.vertices[skin], ref.up)
    below_chin = heights < ref.vertices[ref.landmarks["chin"]] @ ref.up
    ref_neck = heights[below_chin][np.nanargmin(widths[below_chin])]
    ref_to_neck = heights[0] - ref_neck
    ref_to_cut = heights[0] - (ref.vertices[skin] @ ref.up).min()

    tried: list[tuple[Placement, np.ndarray]] = []
    candidates = orientations()
    for i, (up_name, fwd_name, rotation) in enumerate(candidates):
        up = rotation[:, 1]
        region = head_region(vertices, up)
        used = region.mask[triangles].all(axis=1)
        if not used.any():
            continue
        user_pts, _, _ = sample_surface(vertices, triangles[used], 6000, rng)
        user_h = user_pts @ up
        if region.neck is not None:
            scale = (region.top - region.neck) / ref_to_neck
        else:
            scale = (region.top - user_h.min()) / ref_to_cut
        # Bounding-box centres together, then the tops.
        ref_box = rotation @ _box_centre(ref.vertices[skin]) * scale
        t = _box_centre(vertices[region.mask]) - ref_box
        t += up * (region.top - ((scale * ref.vertices[skin] @ rotation.T + t) @ up).max())
        start = Placement(scale, rotation, t, 0.0, up_name, fwd_name)
        coarse = _icp(coarse_ref, ref_cloud, user_pts[:400], _Cloud(user_pts), start, iterations=8)
        tried.append((coarse, user_pts[:1500]))
        if progress:
            progress(0.8 * (i + 1) / len(candidates), "Finding the face")
    tried.sort(key=lambda pair: pair[0].error * _convention_bias(pair[0]))
    # A head turned or tilted between the axes: try turns about its own up and left-right axes
    # around the best few.
    centre_ref = ref.vertices[skin].mean(axis=0)
    for place, user_pts in list(tried[:2]):
        centre = place.apply(centre_ref[None])[0]
        for axis_column, angle in ((1, 25), (1, -25), (1, 50), (1, -50), (0, 20), (0, -20)):
            turn = _rotation_about(place.rotation[:, axis_column], np.radians(angle))
            start = Placement(place.scale, turn @ place.rotation, turn @ (place.translation - centre) + centre, 0.0,
                              place.up, place.forward)
            tried.append((_icp(coarse_ref, ref_cloud, user_pts[:400], _Cloud(user_pts), start, iterations=8), user_pts))
    tried.sort(key=lambda pair: pair[0].error * _convention_bias(pair[0]))
    best: Placement | None = None
    for j, (place, user_pts) in enumerate(tried[:keep]):
        place = _icp(ref_pts, ref_surface, user_pts, user_surface, place, iterations=8)
        if best is None or place.error * _convention_bias(place) < best.error * _convention_bias(best):
            best = place
        if progress:
            progress(0.8 + 0.2 * (j + 1) / keep, "Finding the face")
    assert best is not None
    return best


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: the rotation by `angle` radians about the unit `axis`."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _convention_bias(place: Placement) -> float:
    """A slightly larger error is accepted for Blender's own convention (Z up, facing -Y)."""
    return 0.97 if (place.up, place.forward) == ("+Z", "-Y") else 1.0


def refine(ref: Reference, vertices: np.ndarray, triangles: np.ndarray, user_surface: Surface,
           ref_surface: Surface, start: Placement, rng: np.random.Generator | None = None) -> Placement:
    """More points and iterations around a chosen placement."""
    rng = rng or np.random.default_rng(1)
    face = ref.part_mask(("face",))
    ref_pts = np.concatenate([sample_surface(ref.vertices, ref.triangles_of(face), 2000, rng)[0],
                              sample_surface(ref.vertices, ref.triangles_of(ref.skin), 700, rng)[0]])
    # Only the user's surface near the placed head takes part.
    moved = start.apply(ref.vertices[ref.skin])
    lo, hi = moved.min(axis=0), moved.max(axis=0)
    pad = 0.15 * (hi - lo)
    inside = np.all((vertices >= lo - pad) & (vertices <= hi + pad), axis=1)
    used = inside[triangles].all(axis=1)
    user_pts, _, _ = sample_surface(vertices, triangles[used], 6000, rng)
    # Only the user's surface near the placed reference pulls on it (not a body's shoulders).
    placed_surface = Surface(start.apply(ref_surface.vertices), ref_surface.triangles)
    near = placed_surface.closest(user_pts).distances < 0.25 * ref.eye_corner_distance * start.scale
    user_pts = user_pts[near][:3000]
    return _icp(ref_pts, ref_surface, user_pts, user_surface, start, iterations=10)


def from_landmarks(ref: Reference, user_landmarks: dict[str, np.ndarray]) -> Placement:
    """The similarity that maps the reference's landmarks onto the user's."""
    names = [n for n in ref.landmarks if n in user_landmarks]
    src = np.array([ref.vertices[ref.landmarks[n]] for n in names])
    dst = np.array([user_landmarks[n] for n in names], dtype=np.float64)
    scale, rotation, translation = similarity(src, dst)
    residual = np.linalg.norm(scale * src @ rotation.T + translation - dst, axis=1).mean()
    return Placement(scale, rotation, translation, float(residual / scale), "", "")
