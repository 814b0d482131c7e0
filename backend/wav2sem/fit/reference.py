"""The reference head as Fit Face uses it: the ICT FaceKit head in metres (Y up, face towards
+Z, +X the subject's left), its 53 ARKit shapes, its landmarks, and the labels the transfer
needs (skin or mouth interior, eyes, and which side of the lip seam a vertex is on).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from ..heads import ICT_LANDMARKS, ICT_LOWER_CONTACT, ICT_UNIT_M, ICT_UPPER_CONTACT, ict_arrays, ict_triangles

# Landmarks the fit places and the user may move (left = the character's own left).
FIT_LANDMARKS = (
    "nose_tip", "upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right",
    "chin", "eye_outer_left", "eye_inner_left", "eye_inner_right", "eye_outer_right",
)
# Vertices of the kit: the lip, nose and chin ones of heads.ICT_LANDMARKS, and the eye
# corners, where the face part's eye-opening border turns (x +-2.05 cm inner, +-4.45 cm outer).
REFERENCE_LANDMARKS = {
    **{name: ICT_LANDMARKS[name] for name in FIT_LANDMARKS if name in ICT_LANDMARKS},
    "eye_outer_left": 6548, "eye_inner_left": 6588, "eye_inner_right": 6630, "eye_outer_right": 6590,
}
SKIN_PARTS = ("face", "head_and_neck")
INTERIOR_PARTS = ("mouth_socket", "gums_and_tongue", "teeth")
EYE_SHAPES = ("eyeBlink", "eyeLook", "eyeSquint", "eyeWide")


@dataclass(frozen=True)
class Reference:
    vertices: np.ndarray          # (V, 3) metres
    triangles: np.ndarray         # (F, 3)
    names: tuple[str, ...]        # the 53 ARKit shapes
    deltas: np.ndarray            # (53, V, 3) metres
    part: np.ndarray              # (V,) part index into part_names
    part_names: tuple[str, ...]
    landmarks: dict[str, int]     # FIT_LANDMARKS -> vertex
    seam_side: np.ndarray         # (V,) -1 upper lip / skull side, +1 lower lip / jaw side, 0 neither
    seam_distance: np.ndarray     # (V,) metres to the nearest vertex of the lips' contact edges
    up: np.ndarray                # (3,) unit vectors in the reference's frame
    forward: np.ndarray

    def part_mask(self, names: tuple[str, ...]) -> np.ndarray:
        wanted = [self.part_names.index(n) for n in names]
        return np.isin(self.part, wanted)

    def triangles_of(self, vertex_mask: np.ndarray) -> np.ndarray:
        return self.triangles[vertex_mask[self.triangles].all(axis=1)]

    @property
    def skin(self) -> np.ndarray:
        return self.part_mask(SKIN_PARTS)

    @property
    def interior(self) -> np.ndarray:
        return self.part_mask(INTERIOR_PARTS)

    @property
    def eye_corner_distance(self) -> float:
        """Outer eye corner to outer eye corner, the head's size unit for tolerances."""
        lm = self.vertices[[self.landmarks["eye_outer_left"], self.landmarks["eye_outer_right"]]]
        return float(np.linalg.norm(lm[0] - lm[1]))

    def shape_names(self, include_eyes: bool) -> tuple[str, ...]:
        return tuple(n for n in self.names if include_eyes or not n.startswith(EYE_SHAPES))

    def landmark_positions(self) -> dict[str, np.ndarray]:
        return {name: self.vertices[index].copy() for name, index in self.landmarks.items()}


def _seam_side(vertices: np.ndarray, triangles: np.ndarray, lower_moves: np.ndarray) -> np.ndarray:
    """Which lip a face vertex near the mouth belongs to: graph distance over the skin's
    edges to the upper and to the lower contact loop decides (they meet only at the corners)."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    length = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    graph = coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    to_upper = dijkstra(graph, directed=False, indices=list(ICT_UPPER_CONTACT), min_only=True, limit=0.04)
    to_lower = dijkstra(graph, directed=False, indices=list(ICT_LOWER_CONTACT), min_only=True, limit=0.04)
    side = np.zeros(n, dtype=np.int8)
    near = np.isfinite(to_upper) | np.isfinite(to_lower)
    side[near & (to_upper < to_lower)] = -1
    side[near & (to_lower <= to_upper)] = 1
    # The corners belong to both lips; keep a side only where the jaw's motion agrees.
    side[(side == 1) & ~lower_moves] = 0
    return side


@lru_cache(maxsize=1)
def reference_head() -> Reference:
    arrays = ict_arrays()
    vertices = arrays["neutral"].astype(np.float64) * ICT_UNIT_M
    deltas = arrays["expression_deltas"].astype(np.float32) * ICT_UNIT_M
    names = tuple(arrays["expression_names"].tolist())
    part_names = tuple(arrays["part_names"].tolist())
    part = np.zeros(len(vertices), dtype=np.int16)
    for i, (start, end) in enumerate(arrays["part_ranges"]):
        part[start:end] = i
    triangles = ict_triangles().astype(np.int64)
    skin = np.isin(part, [part_names.index(p) for p in SKIN_PARTS])
    skin_tris = triangles[skin[triangles].all(axis=1)]
    jaw = np.linalg.norm(deltas[names.index("jawOpen")], axis=1)
    side = _seam_side(vertices, skin_tris, jaw > 0.25 * jaw.max())
    side[~skin] = 0
    # Inside the mouth the same two sides: what the jaw carries (lower teeth, tongue, the
    # socket's floor) and what stays with the skull; in between (part of the socket) neither.
    interior = np.isin(part, [part_names.index(p) for p in INTERIOR_PARTS])
    carried = jaw / jaw[interior].max()
    side[interior & (carried > 0.3)] = 1
    side[interior & (carried < 0.1)] = -1
    contact = vertices[list(ICT_UPPER_CONTACT) + list(ICT_LOWER_CONTACT)]
    seam_distance = cKDTree(contact).query(vertices)[0]
    return Reference(vertices, triangles, names, deltas, part, part_names, dict(REFERENCE_LANDMARKS), side,
                     seam_distance, np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))


def reference_landmarks() -> dict[str, np.ndarray]:
    """FIT_LANDMARKS on the reference head, in metres (Y up, face towards +Z)."""
    return reference_head().landmark_positions()
