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
gums, tongue) land on the reference's mouth interior only, and so does a separate piece of
the head's own mesh that lands there for the most part (teeth modelled inside the head).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix, diags
from scipy.sparse.linalg import splu
from scipy.sparse.csgraph import connected_components, dijkstra

from .align import Placement
from .features import Openings
from .geometry import Surface, interpolate, vertex_normals
from .reference import INTERIOR_PARTS, SKIN_PARTS, Reference
from .warp import Warp

# Falloff (in eye-corner distances from the fitted reference surface): full inside NEAR, none beyond FAR.
NEAR, FAR = 0.08, 0.3
# Cost of landing on a surface turned away from the vertex's own (in eye-corner distances, at
# right angles): keeps the outside of a thin lip off the inside of the reference's full one.
FACING = 0.1
# The most the warp may stretch or squash a shape, per direction.
STRETCH = 1.5
# Weight of the edges' smoothness against the landed deltas (see smooth_on_mesh).
SMOOTHNESS = 0.1
# A vertex is on the seam when its closest points on the two lips' sides are this close in distance.
SEAM_BAND = 0.025
# ... or when it lands this close to the reference's contact edges (eye-corner distances).
SEAM_ZONE = 0.15


def transferred_reference_deltas(ref: Reference, names: tuple[str, ...], place: Placement, warp: Warp
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """(fitted reference vertices (V, 3), deltas (K, V, 3) in the user's space)."""
    placed = place.apply(ref.vertices)
    fitted = warp(placed)
    jac = _bounded(warp.jacobian(placed)) * place.scale @ place.rotation         # (V, 3, 3)
    index = [ref.names.index(n) for n in names]
    deltas = np.einsum("vij,kvj->kvi", jac, ref.deltas[index].astype(np.float64))
    return fitted, deltas.astype(np.float32)


def _bounded(jac: np.ndarray, low: float = 1 / STRETCH, high: float = STRETCH) -> np.ndarray:
    """The warp's Jacobians with their stretches (singular values) held within [low, high]: a
    face wider or longer than the reference scales its shapes with it, but where the warp
    folds or stretches sharply (a thin lip pulled over a full one) the shapes do not explode."""
    u, sigma, vt = np.linalg.svd(jac)
    return u @ (np.clip(sigma, low, high)[..., None] * vt)


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


class _Landing:
    """Surfaces of the fitted reference to land on, by allowed parts and lip side, made once each."""

    def __init__(self, ref: Reference, fitted: np.ndarray):
        self.ref, self.fitted = ref, fitted
        self._cache: dict[tuple, Surface] = {}

    def surface(self, parts: tuple[int, ...] | None, side: int) -> Surface:
        key = (parts, side)
        if key not in self._cache:
            tris = self.ref.triangles
            ok = np.ones(len(tris), bool)
            if parts is not None:
                ok &= np.isin(self.ref.part[tris], parts).all(axis=1)
            if side:
                ok &= ~(self.ref.seam_side[tris] == -side).any(axis=1)
            self._cache[key] = Surface(self.fitted, tris[ok])
        return self._cache[key]


def _piece_parts(ref: Reference, piece: np.ndarray, hit_part: np.ndarray, extra: np.ndarray) -> dict[int, tuple | None]:
    """Allowed reference parts per piece of the user's mesh: the part it mostly lands on for a
    piece that lands mostly inside the mouth or on an eye (teeth on teeth, a tongue on the
    tongue), or for any piece of an extra object (inside the mouth); everything for the rest."""
    inner = [ref.part_names.index(n) for n in INTERIOR_PARTS]
    skin = [ref.part_names.index(n) for n in SKIN_PARTS]
    out: dict[int, tuple | None] = {}
    for p in np.unique(piece):
        members = piece == p
        parts = hit_part[members]
        counts = np.bincount(parts, minlength=len(ref.part_names))
        if extra[members].any():
            counts[[i for i in range(len(counts)) if i not in inner]] = 0
            out[int(p)] = (int(np.argmax(counts)),) if counts.any() else tuple(inner)
            continue
        top = int(np.argmax(counts))
        out[int(p)] = None if top in skin else (top,)
    return out


def smooth_on_mesh(deltas: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, moving: np.ndarray,
                   confidence: np.ndarray, sides: np.ndarray, smoothness: float = SMOOTHNESS, rounds: int = 2
                   ) -> np.ndarray:
    """The landed deltas refitted as smooth fields on the user's mesh: least squares of
    confidence * |d - landed|^2 + smoothness * sum over the mesh's edges |d_i - d_j|^2, solved
    once per round for all shapes (one sparse factorisation), the confidence of vertices far
    from the fit of the first round lowered (spikes where neighbours landed on different parts
    of the reference: the inside of its lips, a fold). Edges are the user's own: the mouth's
    slit is none, and edges between the two sides of the seam (`sides` -1 and +1: the lips,
    the upper gums and the tongue) are left out, so what the jaw carries does not bleed into
    what stays."""
    rows = np.flatnonzero(moving)
    if len(rows) == 0:
        return deltas
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = edges[sides[edges[:, 0]].astype(int) * sides[edges[:, 1]] >= 0]
    n = len(vertices)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    graph = ((graph + graph.T) > 0).astype(np.float64).tocsr()[rows][:, rows]
    laplacian = diags(np.asarray(graph.sum(axis=1)).ravel()) - graph
    landed = deltas[:, rows].transpose(1, 0, 2).reshape(len(rows), -1).astype(np.float64)
    weight = confidence[rows].astype(np.float64)
    fitted = landed
    for _ in range(rounds):
        solver = splu((diags(weight) + smoothness * laplacian).tocsc())
        fitted = solver.solve(weight[:, None] * landed)
        size = np.sqrt((fitted ** 2).mean(axis=1)) + 1e-12
        residual = np.sqrt(((fitted - landed) ** 2).mean(axis=1))
        weight = confidence[rows] / (1.0 + (residual / (0.3 * size)) ** 2)
    out = deltas.copy()
    out[:, rows] = fitted.reshape(len(rows), deltas.shape[0], 3).transpose(1, 0, 2)
    return out


def transfer(ref: Reference, names: tuple[str, ...], place: Placement, warp: Warp, vertices: np.ndarray,
             triangles: np.ndarray, object_ids: np.ndarray, unit: float,
             progress: Callable[[float, str], None] | None = None, openings: Openings | None = None
             ) -> tuple[np.ndarray, dict]:
    """Deltas (K, V, 3) float32 for the user's vertices, and figures for the report. With the
    mouth's border known (`openings`), every vertex near the seam takes the side of the lip edge
    it is nearer along the mesh's edges."""
    fitted, ref_deltas = transferred_reference_deltas(ref, names, place, warp)
    if progress:
        progress(0.3, "Transferring the shapes")
    out = np.zeros((len(names),) + vertices.shape, dtype=np.float32)
    lo, hi = fitted.min(axis=0), fitted.max(axis=0)
    reach = FAR * unit
    near = np.all((vertices >= lo - reach) & (vertices <= hi + reach), axis=1)
    idx = np.flatnonzero(near)
    landing = _Landing(ref, fitted)
    side = ref.seam_side
    tris = ref.triangles

    # A first landing anywhere says which part and which side of the seam each vertex is near;
    # each piece of the user's mesh (connected by edges) then keeps to its part.
    normals = vertex_normals(vertices, triangles)
    first = landing.surface(None, 0).closest(vertices[idx], normals=normals[idx], facing=FACING * unit)
    hit_part = ref.part[tris[first.triangles, np.argmax(first.barycentrics, axis=1)]].astype(np.int64)
    _, piece_all = connected_components(_edges_graph(vertices, triangles), directed=False)
    piece = piece_all[idx]
    allowed = _piece_parts(ref, piece, hit_part, object_ids[idx] != 0)
    if progress:
        progress(0.45, "Transferring the shapes")

    # The seam: where a vertex is near both sides, the user's own edges decide.
    provisional = np.zeros(len(vertices), np.int8)
    ambiguous = np.zeros(len(vertices), bool)
    for p, parts in allowed.items():
        members = idx[piece == p]
        d_up = landing.surface(parts, -1).closest(vertices[members]).distances
        d_low = landing.surface(parts, 1).closest(vertices[members]).distances
        near_seam = np.rint((first.barycentrics * side[tris[first.triangles]]).sum(axis=1))[piece == p] != 0
        provisional[members[near_seam]] = np.where(d_up <= d_low, -1, 1)[near_seam]
        # Near the contact edges the landing itself may be on the wrong lip (a mouth wider or
        # lower than the reference's): there the user's edges decide, from vertices further away.
        seam = (first.barycentrics * ref.seam_distance[tris[first.triangles]]).sum(axis=1)[piece == p]
        ambiguous[members[near_seam & ((np.abs(d_up - d_low) < SEAM_BAND * unit)
                                       | (seam < SEAM_ZONE * ref.eye_corner_distance))]] = True
    if openings is not None and len(openings.upper_lip_edge) and len(openings.lower_lip_edge):
        # The mouth's border is known: every vertex near the seam takes the side of the lip edge
        # it is nearer along the mesh's edges.
        ambiguous |= provisional != 0
        provisional[:] = 0
        provisional[openings.upper_lip_edge], provisional[openings.lower_lip_edge] = -1, 1
        ambiguous[openings.upper_lip_edge] = ambiguous[openings.lower_lip_edge] = False
    labels = seam_labels(vertices, triangles, provisional, ambiguous)
    # A piece of the mouth interior that mostly takes one side moves as one (a row of teeth).
    for p, parts in allowed.items():
        members = idx[piece == p]
        if parts is None or not len(members):
            continue
        for one_side in (-1, 1):
            if (labels[members] == one_side).mean() > 0.8:
                labels[members] = one_side
    if progress:
        progress(0.6, "Transferring the shapes")

    report = {"vertices_moved": 0, "seam_vertices": int(ambiguous.sum()),
              "upper_side_vertices": int((labels == -1).sum()), "lower_side_vertices": int((labels == 1).sum()),
              "mouth_interior_vertices": 0}
    confidence = np.zeros(len(vertices))
    groups: dict[tuple, list[int]] = {}
    for p, parts in allowed.items():
        members = idx[piece == p]
        for s_ in (-1, 0, 1):
            chosen = members[labels[members] == s_]
            if len(chosen):
                groups.setdefault((parts, s_), []).append(chosen)
        if parts is not None and ref.interior[np.isin(ref.part, parts)].any():
            report["mouth_interior_vertices"] += len(members)
    for (parts, s_), chunks in groups.items():
        chosen = np.concatenate(chunks)
        surface = landing.surface(parts, s_)
        hits = surface.closest(vertices[chosen], normals=normals[chosen], facing=FACING * unit)
        weight = 1.0 - _smoothstep((hits.distances / unit - NEAR) / (FAR - NEAR))
        confidence[chosen] = np.exp(-(hits.distances / (0.03 * unit)) ** 2) + 0.05
        for k in range(len(names)):
            out[k, chosen] = interpolate(ref_deltas[k], surface.triangles, hits.triangles, hits.barycentrics) * weight[:, None]
        report["vertices_moved"] += int((weight > 0).sum())
    confidence[ambiguous] *= 0.3
    # Inside the mouth the sides part the smoothing (upper gums and tongue); on the skin the
    # slit already does, and the lips' corners need their edges.
    inside = np.zeros(len(vertices), bool)
    for p, parts in allowed.items():
        if parts is not None:
            inside[idx[piece == p]] = True
    out = smooth_on_mesh(out, vertices, triangles, np.abs(out).max(axis=(0, 2)) > 0, confidence,
                         np.where(inside, labels, 0))
    if progress:
        progress(1.0, "Transferring the shapes")
    return out, report
