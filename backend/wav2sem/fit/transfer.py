"""The reference head's expressions carried onto the user's vertices through the fitted map.

Transfer by the map's derivative: with M the fitted map from the reference to the user's
space (similarity, then warp), a reference shape that moves a point r by d moves the
corresponding user point by J_M(r) d (the first-order term of M(r + d) - M(r), exact for
the similarity and accurate while the warp is smooth over a shape's few centimetres).
Unlike deformation transfer (Sumner and Popovic 2004) it needs no solve over the user's
triangles, so several objects, holes, non-manifold edges and n-gons make no difference and
a full-body mesh costs only its head's vertices; on a re-topologised reference head it
reproduces the shapes within the sampling error (benchmarks/fit_face_quality.py).

Each user vertex takes the deltas at its closest point on the fitted reference, with two
guards: the lip seam (a vertex of the upper lip may only land on the upper lip's side, one
of the lower lip on the jaw's side; which lip a vertex near the seam is on comes from the
user's own edges, so touching lips never swap), and a falloff that fades to nothing away
from the reference's surface (the rest of a body, hair, accessories). Extra objects (teeth,
gums, tongue) land on the reference's mouth interior only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from .align import Placement
from .geometry import Surface, interpolate
from .reference import Reference
from .warp import Warp

# Falloff (in eye-corner distances from the fitted reference surface): full inside NEAR, none beyond FAR.
NEAR, FAR = 0.08, 0.3
# A vertex is on the seam when its closest points on the two lips' sides are this close in distance.
SEAM_BAND = 0.025


def transferred_reference_deltas(ref: Reference, names: tuple[str, ...], place: Placement, warp: Warp
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """(fitted reference vertices (V, 3), deltas (K, V, 3) in the user's space)."""
    placed = place.apply(ref.vertices)
    fitted = warp(placed)
    jac = warp.jacobian(placed) * place.scale @ place.rotation                     # (V, 3, 3)
    index = [ref.names.index(n) for n in names]
    deltas = np.einsum("vij,kvj->kvi", jac, ref.deltas[index].astype(np.float64))
    return fitted, deltas.astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _edges_graph(vertices: np.ndarray, triangles: np.ndarray):
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    length = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1) + 1e-12
    n = len(vertices)
    return coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()


def seam_labels(vertices: np.ndarray, triangles: np.ndarray, provisional: np.ndarray, ambiguous: np.ndarray
                ) -> np.ndarray:
    """Side of the lip seam (-1 upper, +1 lower, 0 neither) for every vertex: certain vertices
    keep their provisional side, ambiguous ones take the side of the nearer certain vertex
    along the mesh's edges."""
    labels = provisional.copy()
    if not ambiguous.any():
        return labels
    graph = _edges_graph(vertices, triangles)
    certain = ~ambiguous
    upper = np.flatnonzero(certain & (provisional == -1))
    lower = np.flatnonzero(certain & (provisional == 1))
    if len(upper) == 0 or len(lower) == 0:
        return labels
    targets = np.flatnonzero(ambiguous)
    to_upper = dijkstra(graph, directed=False, indices=upper, min_only=True)[targets]
    to_lower = dijkstra(graph, directed=False, indices=lower, min_only=True)[targets]
    labels[targets] = np.where(to_upper <= to_lower, -1, 1)
    labels[targets[~np.isfinite(np.minimum(to_upper, to_lower))]] = provisional[targets[~np.isfinite(np.minimum(to_upper, to_lower))]]
    return labels


def transfer(ref: Reference, names: tuple[str, ...], place: Placement, warp: Warp, vertices: np.ndarray,
             triangles: np.ndarray, object_ids: np.ndarray, unit: float,
             progress: Callable[[float, str], None] | None = None) -> tuple[np.ndarray, dict]:
    """Deltas (K, V, 3) float32 for the user's vertices, and figures for the report."""
    fitted, ref_deltas = transferred_reference_deltas(ref, names, place, warp)
    if progress:
        progress(0.3, "Transferring the shapes")
    out = np.zeros((len(names),) + vertices.shape, dtype=np.float32)
    lo, hi = fitted.min(axis=0), fitted.max(axis=0)
    reach = FAR * unit
    near_head = np.all((vertices >= lo - reach) & (vertices <= hi + reach), axis=1)
    tris = ref.triangles
    side = ref.seam_side
    tri_side = side[tris]
    upper_ok = ~(tri_side == 1).any(axis=1)
    lower_ok = ~(tri_side == -1).any(axis=1)
    interior_tris = tris[ref.interior[tris].all(axis=1)]
    surfaces = {"all": Surface(fitted, tris), "upper": Surface(fitted, tris[upper_ok]),
                "lower": Surface(fitted, tris[lower_ok]), "interior": Surface(fitted, interior_tris)}
    head = near_head & (object_ids == 0)
    extra = near_head & (object_ids != 0)

    # Head object: a first closest point, its side, then the seam's vertices by the user's edges.
    idx = np.flatnonzero(head)
    hit = surfaces["all"].closest(vertices[idx])
    hit_side = np.rint((hit.barycentrics * side[tris[hit.triangles]]).sum(axis=1)).astype(np.int8)
    provisional = np.zeros(len(vertices), np.int8)
    provisional[idx] = hit_side
    mouth = idx[hit_side != 0]
    d_up = surfaces["upper"].closest(vertices[mouth]).distances
    d_low = surfaces["lower"].closest(vertices[mouth]).distances
    ambiguous = np.zeros(len(vertices), bool)
    ambiguous[mouth[np.abs(d_up - d_low) < SEAM_BAND * unit]] = True
    provisional[mouth] = np.where(d_up <= d_low, -1, 1)
    labels = seam_labels(vertices, triangles, provisional, ambiguous)
    if progress:
        progress(0.6, "Transferring the shapes")

    report = {"vertices_moved": 0, "seam_vertices": int(ambiguous.sum()),
              "upper_lip_vertices": int((labels == -1).sum()), "lower_lip_vertices": int((labels == 1).sum())}
    for which, selector in (("all", head & (labels == 0)), ("upper", head & (labels == -1)),
                            ("lower", head & (labels == 1)), ("interior", extra)):
        chosen = np.flatnonzero(selector)
        if len(chosen) == 0:
            continue
        surface = surfaces[which]
        hits = surface.closest(vertices[chosen])
        weight = 1.0 - _smoothstep((hits.distances / unit - NEAR) / (FAR - NEAR))
        for k in range(len(names)):
            out[k, chosen] = interpolate(ref_deltas[k], surface.triangles, hits.triangles, hits.barycentrics) * weight[:, None]
        report["vertices_moved"] += int((weight > 0).sum())
    if progress:
        progress(1.0, "Transferring the shapes")
    return out, report
