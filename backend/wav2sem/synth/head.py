"""The project's own template head, generated deterministically from code.

The head is a star-shaped surface around a centre point: for every direction of a
latitude/longitude grid, the radius is where a signed distance function (smooth blend of
ellipsoids: cranium, jaw, cheeks, nose, brow ridge, eyes, lips, chin, ears, neck) crosses
zero. The grid is denser on the face than on the back of the head. One grid row, between
the lips, is cut open over the mouth width (its interior vertices are duplicated, one copy
for the upper lip and one for the lower lip), so the mesh is a closed manifold except for
the mouth slit.

Coordinates: metres, Y up, the face looks along +Z, +X is the subject's left (as FLAME).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..template import Template
from . import sdf

# Grid resolution: longitudes x latitudes (plus two poles) -> about 4,300 vertices.
N_AZIMUTH = 88
N_ELEVATION = 50
CENTER = np.array([0.0, -0.01, 0.0])        # ray origin inside the head (m)
MOUTH_Y = -0.058                             # height of the lip line (m)
MOUTH_HALF_WIDTH = 0.0245                    # half the mouth slit width (m)
REST_LIP_GAP = 0.0012                        # lips slightly parted at rest (m)
SLIT_INSET = 0.0035                          # slit vertices pulled into the mouth (m)


@dataclass(frozen=True)
class HeadMesh:
    """The template plus the grid parameterisation the articulation rig needs."""

    template: Template
    azimuth: np.ndarray        # (V,) radians, 0 = front, + towards the subject's left
    elevation: np.ndarray      # (V,) radians, 0 = level with CENTER, + up
    column: np.ndarray         # (V,) int grid column (-1 for the poles)
    row: np.ndarray            # (V,) int grid row from the bottom (-1 for the poles)
    lower_side: np.ndarray     # (V,) bool: belongs to the lower lip/jaw side of the slit
    slit_upper: np.ndarray     # (K,) vertex indices along the slit, upper lip, corners included
    slit_lower: np.ndarray     # (K,) the matching lower-lip vertices (corners shared)
    mouth_elevation: float     # radians, the slit row
    mouth_half_angle: float    # radians, azimuth of the mouth corners


def head_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (m) of points `p` (N, 3) to the head surface. -> (N,)"""
    e = sdf.ellipsoid
    d = e(p, (0.0, 0.032, -0.014), (0.076, 0.092, 0.100))                 # cranium
    d = sdf.smooth_union(d, e(p, (0.0, -0.036, 0.020), (0.055, 0.060, 0.066)), 0.03)  # face
    d = sdf.smooth_union(d, e(p, (0.0, -0.072, 0.024), (0.049, 0.034, 0.058)), 0.03)  # mandible
    d = sdf.smooth_union(d, e(p, (0.0, -0.094, 0.058), (0.030, 0.022, 0.026)), 0.025)  # chin
    for side in (-1.0, 1.0):
        d = sdf.smooth_union(d, e(p, (side * 0.037, -0.018, 0.056), (0.026, 0.024, 0.028)), 0.02)  # cheek
        d = sdf.smooth_union(d, e(p, (side * 0.072, 0.004, -0.008), (0.010, 0.028, 0.016)), 0.01)  # ear
    d = sdf.smooth_union(d, e(p, (0.0, 0.046, 0.066), (0.062, 0.012, 0.020)), 0.03)    # brow ridge
    d = sdf.smooth_union(d, e(p, (0.0, 0.008, 0.087), (0.010, 0.027, 0.015)), 0.016)   # nose bridge
    d = sdf.smooth_union(d, e(p, (0.0, -0.014, 0.100), (0.012, 0.011, 0.012)), 0.014)  # nose tip
    for side in (-1.0, 1.0):
        d = sdf.smooth_union(d, e(p, (side * 0.012, -0.022, 0.091), (0.009, 0.007, 0.009)), 0.006)  # nostril wing
    for side in (-1.0, 1.0):
        d = sdf.smooth_subtract(d, e(p, (side * 0.032, 0.026, 0.088), (0.017, 0.012, 0.015)), 0.010)  # eye socket
        d = sdf.smooth_union(d, e(p, (side * 0.032, 0.026, 0.071), (0.013, 0.013, 0.013)), 0.004)      # eyeball
    d = sdf.smooth_union(d, e(p, (0.0, -0.0525, 0.084), (0.025, 0.0070, 0.011)), 0.010)  # upper lip
    d = sdf.smooth_union(d, e(p, (0.0, -0.0645, 0.081), (0.022, 0.0080, 0.011)), 0.010)  # lower lip
    # Neck, ending in a rounded base like a bust.
    return sdf.smooth_union(d, sdf.vertical_capsule(p, 0.0, -0.015, -0.17, -0.06, 0.052), 0.03)


def _directions(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Unit vectors for (az, el) in radians -> (..., 3)."""
    ce = np.cos(elevation)
    return np.stack([ce * np.sin(azimuth), np.sin(elevation), ce * np.cos(azimuth)], axis=-1)


def _ray_radius(directions: np.ndarray, r_max: float = 0.35, iterations: int = 40) -> np.ndarray:
    """Distance from CENTER along each unit direction (N, 3) to the surface, by bisection. -> (N,)"""
    lo = np.zeros(len(directions))
    hi = np.full(len(directions), r_max)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        inside = head_sdf(CENTER + directions * mid[:, None]) < 0.0
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


def _warped_samples(n: int, lo: float, hi: float, peaks: list[tuple[float, float, float]],
                    endpoint: bool = False) -> np.ndarray:
    """`n` samples on [lo, hi) (or [lo, hi]) spaced by a density 1 + sum(gain * gauss).

    Places grid lines densely where detail is needed (mouth, eyes, nose).
    """
    fine = np.linspace(lo, hi, 4001)
    density = np.ones_like(fine)
    for center, width, gain in peaks:
        density += gain * np.exp(-0.5 * ((fine - center) / width) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    cdf /= cdf[-1]
    u = np.linspace(0.0, 1.0, n) if endpoint else np.arange(n) / n
    return np.interp(u, cdf, fine)


def _grid_angles() -> tuple[np.ndarray, np.ndarray, int, int]:
    """Azimuths (n_az,), elevations (n_el,), the mouth row and half the number of slit columns."""
    # Azimuth: exactly mirror-symmetric with a column at az = 0, dense on the face.
    half = _warped_samples(N_AZIMUTH // 2 + 1, 0.0, np.pi, [(0.0, 0.35, 4.0)], endpoint=True)
    azimuth = np.concatenate([-half[::-1], half[1:-1]])            # -pi .. 0 .. < pi
    mouth_el = float(np.arctan2(MOUTH_Y - CENTER[1], 0.09))
    el_min, el_max = -np.pi / 2 + 0.12, np.pi / 2 - 0.08
    peaks = [(mouth_el, 0.12, 3.5), (0.25, 0.2, 1.2)]
    # Two ranges joined at the mouth so that one row lies exactly on the lip line.
    n_below = int(round(N_ELEVATION * 0.34))
    below = _warped_samples(n_below, el_min, mouth_el, peaks)
    above = _warped_samples(N_ELEVATION - n_below, mouth_el, el_max, peaks)
    elevation = np.concatenate([below, above])
    # Mouth corners: the columns nearest the half width at the lip's radius.
    mouth_half_angle = np.arctan2(MOUTH_HALF_WIDTH, 0.088)
    n_half = int(np.sum((azimuth > 0) & (azimuth <= mouth_half_angle)))
    return azimuth, elevation, n_below, n_half


@lru_cache(maxsize=1)
def build_head() -> HeadMesh:
    """Build the template head. Deterministic: plain numpy arithmetic, no randomness, so every
    call (and every run) gives the same arrays. Cached; treat the result as read-only."""
    azimuth, elevation, mouth_row, n_half = _grid_angles()
    n_az, n_el = len(azimuth), len(elevation)
    az_grid, el_grid = np.meshgrid(azimuth, elevation)                       # (n_el, n_az)
    dirs = _directions(az_grid, el_grid).reshape(-1, 3)
    radius = _ray_radius(dirs)
    grid_pts = CENTER + dirs * radius[:, None]                              # (n_el*n_az, 3)
    grid_index = np.arange(n_el * n_az).reshape(n_el, n_az)

    front = int(np.argmin(np.abs(azimuth)))
    slit_cols = np.arange(front - n_half, front + n_half + 1)               # corners included
    interior = slit_cols[1:-1]

    # Vertices: grid, bottom pole, top pole, then lower-lip duplicates of the slit interior.
    bottom_pole = n_el * n_az
    top_pole = bottom_pole + 1
    pole_dirs = _directions(np.zeros(2), np.array([-np.pi / 2, np.pi / 2]))   # (2, 3) down, up
    poles = CENTER + pole_dirs * _ray_radius(pole_dirs)[:, None]
    dup_start = top_pole + 1
    dup_of = grid_index[mouth_row, interior]
    vertices = np.concatenate([grid_pts, poles, grid_pts[dup_of]])
    lower_dup = {int(c): dup_start + i for i, c in enumerate(interior)}

    face_list: list[tuple[int, int, int]] = []
    for r in range(n_el - 1):
        for c in range(n_az):
            c1 = (c + 1) % n_az
            a, b = grid_index[r, c], grid_index[r, c1]
            d, e = grid_index[r + 1, c], grid_index[r + 1, c1]
            if r + 1 == mouth_row:       # the quad just below the slit uses the lower copies
                d = lower_dup.get(c, d)
                e = lower_dup.get(c1, e)
            # counter-clockwise seen from outside: (a, b, e), (a, e, d)
            face_list.append((a, b, e))
            face_list.append((a, e, d))
    for c in range(n_az):
        c1 = (c + 1) % n_az
        face_list.append((bottom_pole, grid_index[0, c1], grid_index[0, c]))
        face_list.append((top_pole, grid_index[n_el - 1, c], grid_index[n_el - 1, c1]))
    faces = _orient_outwards(vertices, np.asarray(face_list, dtype=np.int32))

    n_vert = len(vertices)
    v_az = np.concatenate([az_grid.ravel(), [0.0, 0.0], azimuth[interior]])
    v_el = np.concatenate([el_grid.ravel(), [-np.pi / 2, np.pi / 2], np.full(len(interior), elevation[mouth_row])])
    v_col = np.concatenate([np.tile(np.arange(n_az), n_el), [-1, -1], interior])
    v_row = np.concatenate([np.repeat(np.arange(n_el), n_az), [-1, -1], np.full(len(interior), mouth_row)])
    lower_side = v_el < elevation[mouth_row] - 1e-9
    lower_side[dup_start:] = True

    slit_upper = grid_index[mouth_row, slit_cols]
    slit_lower = np.array([lower_dup.get(int(c), grid_index[mouth_row, c]) for c in slit_cols])
    mouth_el = float(elevation[mouth_row])
    mouth_half_angle = float(abs(azimuth[slit_cols[-1]]))

    vertices = _shape_lips(vertices, v_az, v_el, lower_side, mouth_el, mouth_half_angle)
    template = Template(vertices.astype(np.float32), faces,
                        _regions(vertices, v_az, v_el, mouth_el),
                        _landmarks(vertices, slit_upper, slit_lower))
    assert template.vertex_count == n_vert
    return HeadMesh(template, v_az, v_el, v_col, v_row, lower_side, slit_upper, slit_lower,
                    mouth_el, mouth_half_angle)


def _orient_outwards(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip every face whose normal points towards CENTER (the surface is star-shaped)."""
    tri = vertices[faces]                                                    # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("fi,fi->f", normal, tri.mean(axis=1) - CENTER) > 0
    return np.where(outward[:, None], faces, faces[:, [0, 2, 1]]).astype(np.int32)


def _shape_lips(vertices: np.ndarray, v_az: np.ndarray, v_el: np.ndarray, lower_side: np.ndarray,
                mouth_el: float, half_angle: float) -> np.ndarray:
    """Part the lips slightly and roll the slit edge into the mouth (gives lips thickness)."""
    v = vertices.copy()
    s = np.clip(np.abs(v_az) / half_angle, 0.0, 1.0)
    in_mouth = (np.abs(v_az) <= half_angle + 1e-9)
    # Falloff over about two grid rows from the slit.
    near = np.exp(-0.5 * ((v_el - mouth_el) / 0.012) ** 2) * in_mouth * (1 - s ** 4)
    sign = np.where(lower_side, -1.0, 1.0)
    v[:, 1] += sign * near * REST_LIP_GAP / 2
    v[:, 2] -= near * SLIT_INSET
    return v


def _regions(vertices: np.ndarray, v_az: np.ndarray, v_el: np.ndarray, mouth_el: float) -> dict[str, np.ndarray]:
    """Vertex index sets: lips (LVE), upper_face (FDD), jaw, brows, eyes, face."""
    p = vertices
    lips_sdf = np.minimum(sdf.ellipsoid(p, (0.0, -0.052, 0.085), (0.030, 0.011, 0.016)),
                          sdf.ellipsoid(p, (0.0, -0.066, 0.082), (0.027, 0.012, 0.016)))
    front = np.abs(v_az) < np.radians(100)
    lips = np.where((lips_sdf < 0.0012) & (p[:, 2] > 0.06))[0]
    upper_face = np.where(front & (p[:, 1] > 0.0) & (p[:, 1] < 0.085) & (p[:, 2] > 0.0))[0]
    # Brows: an arc above each eye. Eyes: the exposed front of the eyeballs.
    brow_y = 0.047 - 0.25 * (np.abs(p[:, 0]) - 0.030) ** 2 / 0.02
    brows = np.where(front & (np.abs(np.abs(p[:, 0]) - 0.031) < 0.019) & (np.abs(p[:, 1] - brow_y) < 0.0055)
                     & (p[:, 2] > 0.05))[0]
    eyeball = np.minimum(np.linalg.norm(p - (0.032, 0.026, 0.071), axis=1),
                         np.linalg.norm(p - (-0.032, 0.026, 0.071), axis=1))
    eyes = np.where((eyeball < 0.0136) & (p[:, 2] > 0.0765))[0]
    jaw = np.where(front & (v_el < mouth_el + 1e-9) & (p[:, 1] > -0.13) & (p[:, 2] > 0.0))[0]
    face = np.where(front & (p[:, 2] > 0.02) & (p[:, 1] > -0.12) & (p[:, 1] < 0.08))[0]
    return {"lips": lips, "upper_face": upper_face, "brows": brows, "eyes": eyes, "jaw": jaw, "face": face}


def _landmarks(vertices: np.ndarray, slit_upper: np.ndarray, slit_lower: np.ndarray) -> dict[str, int]:
    """Named landmark vertices (names from template.LANDMARK_NAMES)."""
    centre = len(slit_upper) // 2

    def nearest(point) -> int:
        return int(np.argmin(np.linalg.norm(vertices - np.asarray(point), axis=1)))

    return {
        "upper_lip_center": int(slit_upper[centre]),
        "lower_lip_center": int(slit_lower[centre]),
        "mouth_corner_left": int(slit_upper[-1]),      # +x: the subject's left
        "mouth_corner_right": int(slit_upper[0]),
        "chin": nearest((0.0, -0.118, 0.075)),
        "nose_tip": int(np.argmax(vertices[:, 2] - 10 * np.abs(vertices[:, 0]))),
        "brow_left": nearest((0.035, 0.050, 0.09)),
        "brow_right": nearest((-0.035, 0.050, 0.09)),
    }
