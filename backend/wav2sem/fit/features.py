"""Features of the user's mesh that closest points miss: the mouth opening and the eye
openings as border loops of the mesh, whose ends are the mouth and eye corners.

After a first warp the reference's mouth and eyes lie near the user's; a border loop of the
right size around each is taken as that opening. Its extreme points along the face's
left-right axis are the corners, its points on the mid-plane the lip centres. They pair with
the reference's landmarks in the face's plane only (sideways and up-down, not in depth),
because where a mesh's lips end inside the mouth differs from head to head. The mouth's
border also says which lip each of its vertices is on, which settles the lip seam.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .warp import Pairs


def border_loops(n_vertices: int, triangles: np.ndarray) -> list[np.ndarray]:
    """Vertex sets of the mesh's borders, one per connected border (unordered)."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    border = unique[counts == 1]
    if len(border) == 0:
        return []
    graph = coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(n_vertices, n_vertices))
    _, label = connected_components(graph, directed=False)
    on_border = np.unique(border)
    return [on_border[label[on_border] == k] for k in np.unique(label[on_border])]


def _opening(loops: list[np.ndarray], vertices: np.ndarray, centre: np.ndarray, across: np.ndarray,
             width: float) -> np.ndarray | None:
    """The loop around `centre` whose extent along `across` is near `width`."""
    best, best_distance = None, np.inf
    for loop in loops:
        points = vertices[loop]
        extent = np.ptp(points @ across)
        distance = np.linalg.norm(points.mean(axis=0) - centre)
        if 0.5 * width < extent < 2.0 * width and distance < 0.6 * width and distance < best_distance:
            best, best_distance = loop, distance
    return best


@dataclass
class Openings:
    found: dict[str, bool]
    upper_lip_edge: np.ndarray     # vertices of the mouth's border on the upper lip ([] if none)
    lower_lip_edge: np.ndarray


def _split_lips(loop: np.ndarray, vertices: np.ndarray, across: np.ndarray, up: np.ndarray, width: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The mouth's border loop -> its upper and lower lip edges: each vertex against the mean
    height of the border at about its place across the mouth."""
    along = vertices[loop] @ across
    height = vertices[loop] @ up
    near = np.abs(along[:, None] - along[None, :]) < 0.06 * width
    mean = (near * height[None, :]).sum(axis=1) / near.sum(axis=1)
    ends = (along <= along.min() + 0.03 * width) | (along >= along.max() - 0.03 * width)
    upper = loop[(height > mean) & ~ends]
    lower = loop[(height < mean) & ~ends]
    return upper, lower


def feature_pairs(ref_points: dict[str, np.ndarray], fitted_points: dict[str, np.ndarray], vertices: np.ndarray,
                  triangles: np.ndarray, up: np.ndarray, forward: np.ndarray) -> tuple[Pairs | None, Openings]:
    """Pairs (placed reference landmark -> where the user's opening puts it, in-plane) for the
    mouth corners and lip centres and the eye corners; and which openings were found.
    `ref_points` are the placed (unwarped) landmarks, `fitted_points` the same after the warp."""
    loops = border_loops(len(vertices), triangles)
    found = {"mouth": False, "eye_left": False, "eye_right": False}
    edges = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    sources, targets = [], []

    def pair(name: str, target: np.ndarray) -> None:
        current = fitted_points[name]
        # Keep the warp's depth: move the target onto the current point's depth along forward.
        target = target + forward * ((current - target) @ forward)
        sources.append(ref_points[name])
        targets.append(target)

    left, right = fitted_points["mouth_corner_left"], fitted_points["mouth_corner_right"]
    across = (left - right) / np.linalg.norm(left - right)
    width = float(np.linalg.norm(left - right))
    centre = 0.5 * (fitted_points["upper_lip_center"] + fitted_points["lower_lip_center"])
    mouth = _opening(loops, vertices, centre, across, width)
    if mouth is not None:
        found["mouth"] = True
        edges = _split_lips(mouth, vertices, across, up, width)
        points = vertices[mouth]
        along = points @ across
        pair("mouth_corner_left", points[np.argmax(along)])
        pair("mouth_corner_right", points[np.argmin(along)])
        middle = np.abs((points - centre) @ across) < 0.12 * width
        if middle.sum() >= 2:
            height = points[middle] @ up
            pair("upper_lip_center", points[middle][np.argmax(height)])
            pair("lower_lip_center", points[middle][np.argmin(height)])
    for side in ("left", "right"):
        inner, outer = fitted_points[f"eye_inner_{side}"], fitted_points[f"eye_outer_{side}"]
        eye_width = float(np.linalg.norm(outer - inner))
        direction = (outer - inner) / eye_width
        eye = _opening(loops, vertices, 0.5 * (inner + outer), direction, eye_width)
        if eye is not None:
            found[f"eye_{side}"] = True
            along = vertices[eye] @ direction
            pair(f"eye_outer_{side}", vertices[eye][np.argmax(along)])
            pair(f"eye_inner_{side}", vertices[eye][np.argmin(along)])
    openings = Openings(found, *edges)
    if not sources:
        return None, openings
    return Pairs(np.array(sources), np.array(targets), np.full(len(sources), 1.0)), openings
