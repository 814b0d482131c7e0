"""Fit Face: ARKit-named shapes for a head mesh that has none, from the reference head.

    result = fit_face(vertices, loop_totals, loop_vertices)      # any head, any axes and scale
    result.names, result.deltas        # ARKit names, (K, V, 3) float32 in the input's space
    result.landmarks                   # {FIT_LANDMARKS name: (3,)} where the fit put them
    fit_face(..., landmarks=moved)     # refit from landmarks the user placed

Steps: place the reference head rigidly (orientation, head region and scale by ICP from the
24 axis-aligned orientations, or from the user's landmarks), warp it onto the surface
(`warp.register`), carry its shapes over (`transfer.transfer`). A mesh the reference does not
fit (a cube, a sphere) raises NoFaceError with a landmark guess the user can correct.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import BAD_REQUEST, Wav2SemError
from ..protocol import NO_FACE
from . import align, features, transfer, warp
from .geometry import Surface, sample_surface, triangulate
from .reference import FIT_LANDMARKS, Reference, reference_head, reference_landmarks

__all__ = ["FIT_LANDMARKS", "FitResult", "NoFaceError", "fit_face", "reference_landmarks"]

# Mean distance between the placed reference and the mesh (reference millimetres, trimmed)
# above which no face is found: heads fit within about 3 mm, spheres and boxes at 7 mm and more.
NO_FACE_MM = 5.0
Progress = Callable[[float, str], None]


class NoFaceError(Wav2SemError):
    def __init__(self, message: str, landmarks: dict[str, np.ndarray]):
        super().__init__(NO_FACE, message)
        self.landmarks = landmarks


@dataclass
class FitResult:
    names: tuple[str, ...]
    deltas: np.ndarray                       # (K, V, 3) float32
    landmarks: dict[str, np.ndarray]
    report: dict = field(default_factory=dict)


def _checked_mesh(vertices, loop_totals, loop_vertices, object_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 4:
        raise Wav2SemError(BAD_REQUEST, f"Fit Face needs a mesh with vertices of shape (V, 3), V >= 4; got {vertices.shape}.")
    if not np.isfinite(vertices).all():
        raise Wav2SemError(BAD_REQUEST, "The mesh has vertices at NaN or infinite positions; fix them and fit again.")
    totals = np.asarray(loop_totals, dtype=np.int64)
    loops = np.asarray(loop_vertices, dtype=np.int64)
    if totals.sum() != len(loops) or (len(loops) and (loops.min() < 0 or loops.max() >= len(vertices))):
        raise Wav2SemError(BAD_REQUEST, "The mesh's polygons do not match its vertices (loop_totals, loop_vertices).")
    ids = np.zeros(len(vertices), np.int64) if object_ids is None else np.asarray(object_ids, dtype=np.int64)
    if ids.shape != (len(vertices),):
        raise Wav2SemError(BAD_REQUEST, f"object_ids must have one entry per vertex ({len(vertices)}), got {ids.shape}.")
    triangles = triangulate(totals, loops)
    return vertices, triangles, ids


def _landmarks_on_surface(ref: Reference, place: align.Placement, fitted_warp: warp.Warp | None,
                          surface: Surface) -> dict[str, np.ndarray]:
    names = list(ref.landmarks)
    points = place.apply(ref.vertices[[ref.landmarks[n] for n in names]])
    if fitted_warp is not None:
        points = fitted_warp(points)
    hits = surface.closest(points)
    return {n: hits.points[i] for i, n in enumerate(names)}


def _conventional_placement(ref: Reference, points: np.ndarray) -> align.Placement:
    """The reference standing in the mesh's bounding box as Blender expects a character
    (Z up, facing -Y): a starting layout for landmarks the user will move when no face is found."""
    rotation = next(r for u, f, r in align.orientations() if (u, f) == ("+Z", "-Y"))
    lo, hi = points.min(axis=0), points.max(axis=0)
    skin = ref.vertices[ref.skin] @ rotation.T
    scale = float((hi - lo)[2] / np.ptp(skin[:, 2]))
    centre = 0.5 * (skin.min(axis=0) + skin.max(axis=0)) * scale
    translation = 0.5 * (lo + hi) - centre
    translation[1] = lo[1] - scale * skin[:, 1].min()           # the face at the front
    return align.Placement(scale, rotation, translation, 0.0, "+Z", "-Y")


def _user_landmarks(landmarks: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, value in landmarks.items():
        if name not in FIT_LANDMARKS:
            raise Wav2SemError(BAD_REQUEST, f"Unknown landmark {name!r}; the landmarks are {', '.join(FIT_LANDMARKS)}.")
        point = np.asarray(value, dtype=np.float64)
        if point.shape != (3,) or not np.isfinite(point).all():
            raise Wav2SemError(BAD_REQUEST, f"Landmark {name!r} must be three finite numbers.")
        out[name] = point
    if len(out) < 4:
        raise Wav2SemError(BAD_REQUEST, f"Fitting from landmarks needs at least 4 of them ({', '.join(FIT_LANDMARKS)}); "
                                        f"got {len(out)}.")
    return out


def fit_face(vertices, loop_totals, loop_vertices, object_ids=None, landmarks: dict | None = None,
             include_eyes: bool = False, progress: Progress | None = None) -> FitResult:
    started = time.monotonic()
    report_progress = progress or (lambda fraction, message: None)

    def stage(low: float, high: float) -> Progress:
        return lambda fraction, message: report_progress(low + (high - low) * fraction, message)

    vertices, triangles, ids = _checked_mesh(vertices, loop_totals, loop_vertices, object_ids)
    head_tris = triangles[(ids[triangles] == 0).all(axis=1)]
    if len(head_tris) == 0:
        raise Wav2SemError(BAD_REQUEST, "The head object has no faces; Fit Face needs a surface mesh.")
    ref = reference_head()
    names = ref.shape_names(include_eyes)
    user_surface = Surface(vertices, head_tris)
    ref_surface = Surface(ref.vertices, ref.triangles_of(ref.skin))
    rng = np.random.default_rng(0)

    user_marks = _user_landmarks(landmarks) if landmarks else None
    if user_marks is None:
        place = align.place_reference(ref, vertices, head_tris, user_surface, ref_surface, stage(0.0, 0.35), rng)
        place = align.refine(ref, vertices, head_tris, user_surface, ref_surface, place, rng)
        if place.error * 1000 > NO_FACE_MM:
            raise NoFaceError(
                f"No face was found on this mesh (the reference head fits it only within {place.error * 1000:.1f} mm, "
                f"a head fits within {NO_FACE_MM:.0f}). Place the landmarks on the face (nose tip, lip centres, mouth "
                "corners, chin, eye corners): in Blender move the W2S_ empties and fit again with Use Existing "
                "Landmarks; on the command line give them with --landmarks FILE.",
                _landmarks_on_surface(ref, _conventional_placement(ref, vertices[np.unique(head_tris)]), None,
                                      user_surface))
    else:
        place = align.from_landmarks(ref, user_marks)
        place = align.refine(ref, vertices, head_tris, user_surface, ref_surface, place, rng)
    report_progress(0.4, "Fitting the reference head")

    unit = ref.eye_corner_distance * place.scale
    placed = place.apply(ref.vertices)
    near = _near_placed_head(vertices, head_tris, placed[ref.skin])
    user_points = sample_surface(vertices, head_tris[near[head_tris].all(axis=1)], 4000, rng)[0]
    landmark_pairs = None
    if user_marks is not None:
        names_in = [n for n in ref.landmarks if n in user_marks]
        landmark_pairs = warp.Pairs(placed[[ref.landmarks[n] for n in names_in]],
                                    np.array([user_marks[n] for n in names_in]), np.ones(len(names_in)))
    landing, skin_tris = ref.triangles, ref.triangles_of(ref.skin)
    fitted_warp = warp.register(placed, landing, skin_tris, user_surface, user_points, unit, landmark_pairs,
                                stage(0.4, 0.6 if user_marks is None else 0.8), rng)
    openings = None
    if user_marks is None:
        # The mouth and eye openings set the corners and the lip line; fit again with them.
        names_in = list(ref.landmarks)
        marks = placed[[ref.landmarks[n] for n in names_in]]
        feature, openings = features.feature_pairs(dict(zip(names_in, marks)), dict(zip(names_in, fitted_warp(marks))),
                                                   vertices, head_tris, place.apply_vectors(ref.up) / place.scale,
                                                   place.apply_vectors(ref.forward) / place.scale)
        if feature is not None:
            fitted_warp = warp.register(placed, landing, skin_tris, user_surface, user_points, unit, feature,
                                        stage(0.6, 0.8), np.random.default_rng(3))
    out_marks = user_marks or _landmarks_on_surface(ref, place, fitted_warp, user_surface)
    deltas, transfer_report = transfer.transfer(ref, names, place, fitted_warp, vertices, triangles, ids, unit,
                                                stage(0.8, 1.0), openings)
    report = {"orientation": {"up": place.up, "forward": place.forward} if user_marks is None else "from landmarks",
              "scale": place.scale, "rigid_error_mm": place.error * 1000, "seconds": time.monotonic() - started,
              "shapes": len(names), "openings_found": openings.found if openings else {}, **transfer_report}
    return FitResult(names, deltas, {n: out_marks[n] for n in FIT_LANDMARKS if n in out_marks}, report)


def _near_placed_head(vertices: np.ndarray, triangles: np.ndarray, placed_skin: np.ndarray) -> np.ndarray:
    lo, hi = placed_skin.min(axis=0), placed_skin.max(axis=0)
    pad = 0.1 * (hi - lo)
    return np.all((vertices >= lo - pad) & (vertices <= hi + pad), axis=1)
