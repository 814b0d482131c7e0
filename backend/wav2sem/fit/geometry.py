"""Mesh geometry the fit needs: polygons to triangles, normals, surface samples, closest
points on a triangle surface, and the similarity transform between point sets.

Closest points are written here rather than taken from trimesh's `ProximityQuery` because the
fit asks for millions of them restricted to part of a surface (one lip, the skin), and a
candidate search over KD-trees, vectorised in numpy, answers that in seconds where the
general R-tree query takes minutes. It is exact: a first guess bounds the distance, then
every triangle whose bounding sphere comes within that bound is checked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


def triangulate(loop_totals: np.ndarray, loop_vertices: np.ndarray) -> np.ndarray:
    """Polygons of any size (Blender's loop order) -> (F, 3) int64 fan triangles.
    Polygons with fewer than 3 corners are dropped."""
    totals = np.asarray(loop_totals, dtype=np.int64)
    loops = np.asarray(loop_vertices, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(totals)[:-1]]) if len(totals) else np.zeros(0, np.int64)
    n_tris = np.maximum(totals - 2, 0)
    poly = np.repeat(np.arange(len(totals)), n_tris)
    corner = np.arange(n_tris.sum()) - np.repeat(np.cumsum(n_tris) - n_tris, n_tris)
    first = starts[poly]
    return np.stack([loops[first], loops[first + corner + 1], loops[first + corner + 2]], axis=1)


def boundary_vertices(n_vertices: int, triangles: np.ndarray) -> np.ndarray:
    """(V,) bool: vertices on an edge that only one triangle uses (holes, cuts, the mouth slit)."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    mask = np.zeros(n_vertices, bool)
    mask[unique[counts == 1].ravel()] = True
    return mask


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ((0, 0, 0) for vertices in no triangle)."""
    v = vertices[triangles]
    face_n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def triangle_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v = vertices[triangles]
    return 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, count: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-uniform random points: (points (N, 3), triangle index (N,), barycentrics (N, 3))."""
    areas = triangle_areas(vertices, triangles)
    if len(triangles) == 0 or areas.sum() <= 0:
        return np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 3))
    tri = rng.choice(len(triangles), size=count, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    points = np.einsum("nk,nkd->nd", bary, vertices[triangles[tri]])
    return points, tri, bary


def farthest_points(points: np.ndarray, count: int, first: int = 0) -> np.ndarray:
    """Indices of `count` points spread evenly (greedy farthest-point sampling)."""
    count = min(count, len(points))
    chosen = np.empty(count, dtype=np.int64)
    chosen[0] = first
    distance = np.linalg.norm(points - points[first], axis=1)
    for i in range(1, count):
        chosen[i] = int(np.argmax(distance))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[i]], axis=1))
    return chosen


def similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama's least-squares similarity: target ~ scale * source @ R.T + t."""
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_t = w @ source, w @ target
    s, t = source - mu_s, target - mu_t
    cov = (t * w[:, None]).T @ s
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1
    rotation = u @ np.diag(d) @ vt
    variance = float(w @ (s ** 2).sum(axis=1))
    scale = float((sigma * d).sum() / variance) if variance > 0 else 1.0
    return scale, rotation, mu_t - scale * rotation @ mu_s


def closest_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Closest point on triangles (a, b, c) to `points` (all (..., 3), broadcast): (closest, barycentrics).
    Ericson, Real-Time Collision Detection 5.1.5, vectorised over its seven regions."""
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = points - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = points - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    safe = np.where(np.abs(denom) > 1e-30, denom, 1.0)
    v = vb / safe
    w = vc / safe
    u = 1 - v - w
    bary = np.stack([u, v, w], axis=-1)

    def region(mask, value):
        bary[mask] = value[mask] if value.ndim == bary.ndim else value

    ones = np.ones_like(d1)
    zeros = np.zeros_like(d1)
    # Edge regions, then vertex regions (the latter override).
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = np.clip(d1 / (d1 - d3), 0, 1)
        t_ac = np.clip(d2 / (d2 - d6), 0, 1)
        t_bc = np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)
    region((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t_ab, t_ab, zeros], -1))
    region((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t_ac, zeros, t_ac], -1))
    region((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), np.stack([zeros, 1 - t_bc, t_bc], -1))
    region((d1 <= 0) & (d2 <= 0), np.stack([ones, zeros, zeros], -1))
    region((d3 >= 0) & (d4 <= d3), np.stack([zeros, ones, zeros], -1))
    region((d6 >= 0) & (d5 <= d6), np.stack([zeros, zeros, ones], -1))
    bary = np.nan_to_num(bary, nan=1 / 3)
    closest = bary[..., :1] * a + bary[..., 1:2] * b + bary[..., 2:] * c
    return closest, bary


@dataclass
class SurfaceHit:
    points: np.ndarray        # (N, 3) closest points
    triangles: np.ndarray     # (N,) triangle index into the surface's triangles
    barycentrics: np.ndarray  # (N, 3)
    distances: np.ndarray     # (N,)


class Surface:
    """Exact closest-point queries on a triangle surface (optionally a subset of its triangles).

    A first guess (the triangles with the k nearest centroids and the nearest vertex's fan)
    gives each point a cost bound U; a triangle can only beat it if its bounding sphere (about
    its centroid, radius r) comes within U, i.e. |p - centroid| - r <= U. Triangles are kept
    in KD-trees by size class (radii within a factor of 2), each searched within U plus its
    largest radius, so small triangles beside large ones are neither missed nor swamped."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, k: int = 12, ring: int = 16):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.triangles = np.asarray(triangles, dtype=np.int64)
        corners = self.vertices[self.triangles]
        centroids = corners.mean(axis=1)
        self._centroid_tree = cKDTree(centroids)
        radii = np.linalg.norm(corners - centroids[:, None, :], axis=-1).max(axis=1)
        # size classes: log2 of the radius; each tree holds triangles of one class
        size_class = np.floor(np.log2(np.maximum(radii, 1e-300))).astype(np.int64)
        self._classes = []                              # (tree, triangle ids, largest radius)
        for value in np.unique(size_class):
            ids = np.nonzero(size_class == value)[0]
            self._classes.append((cKDTree(centroids[ids]), ids, float(radii[ids].max())))
        self.k = int(min(k, len(self.triangles)))
        used = np.unique(self.triangles)
        self._used = used
        self._vertex_tree = cKDTree(self.vertices[used])
        # vertex -> up to `ring` of its triangles (padded with -1): covers the nearest vertex's
        # fan, which the nearest centroids can miss beside long thin triangles.
        flat = self.triangles.ravel()
        order = np.argsort(flat, kind="stable")
        counts = np.bincount(flat, minlength=len(self.vertices))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(flat)) - np.repeat(starts, counts)
        keep = rank < ring
        fan = np.full((len(self.vertices), ring), -1, dtype=np.int64)
        fan[flat[order][keep], rank[keep]] = (order // 3)[keep]
        self._fan = fan

    def closest(self, points: np.ndarray, chunk: int = 20000, normals: np.ndarray | None = None,
                facing: float = 0.0) -> SurfaceHit:
        """Closest points; with `normals` (unit, per query point) each candidate also costs
        `facing` * (1 - |cos|) of the angle between its triangle and the query's normal, so a
        point lands on a surface that faces the way it does (the outside of a lip, not its
        inside) when both are about as near. The hit's `distances` stay true distances."""
        points = np.asarray(points, dtype=np.float64)
        n = len(points)
        out = SurfaceHit(np.zeros((n, 3)), np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros(n))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            p = points[lo:hi]
            _, near_tris = self._centroid_tree.query(p, k=self.k)
            _, near_vertex = self._vertex_tree.query(p)
            cand = np.concatenate([np.asarray(near_tris).reshape(len(p), -1),
                                   self._fan[self._used[near_vertex]]], axis=1)
            valid = cand >= 0
            cost, *_ = self._costs(p, np.where(valid, cand, 0), normals, lo, hi, facing)
            bound = np.where(valid, cost, np.inf).min(axis=1)                    # (n,) cost of the first guess
            rows, tris = self._within(p, bound)
            cost, dist, closest, bary = self._costs(p[rows], tris, normals, lo, hi, facing, rows)
            # per point, the cheapest candidate: sort by (point, cost), take each point's first
            order = np.lexsort((cost, rows))
            first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
            out.points[lo:hi] = closest[first]
            out.triangles[lo:hi] = tris[first]
            out.barycentrics[lo:hi] = bary[first]
            out.distances[lo:hi] = dist[first]
        return out

    def _within(self, p: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, triangles): every triangle whose bounding sphere is within `bound` of p[row]."""
        slack = 1e-9 * (1.0 + bound)                     # rounding of the bound itself
        rows, tris = [], []
        for tree, ids, radius in self._classes:
            found = tree.query_ball_point(p, bound + radius + slack)
            counts = np.fromiter((len(f) for f in found), np.int64, len(found))
            if counts.sum():
                rows.append(np.repeat(np.arange(len(p)), counts))
                tris.append(ids[np.concatenate([np.asarray(f, np.int64) for f in found])])
        return np.concatenate(rows), np.concatenate(tris)

    def _costs(self, p, tri_ids, normals, lo, hi, facing, rows=None):
        """Cost, distance, closest point and barycentrics of p on triangles `tri_ids` (p (n, 3)
        with tri_ids (n, m), or flat pairs p[i], tri_ids[i] when `rows` gives their points)."""
        tri = self.triangles[tri_ids]
        a, b, c = (self.vertices[tri[..., i]] for i in range(3))
        q = p if rows is not None else p[:, None, :]
        closest, bary = closest_on_triangles(q, a, b, c)
        dist = np.linalg.norm(closest - q, axis=-1)
        cost = dist
        if normals is not None and facing > 0:
            tri_n = np.cross(b - a, c - a)
            tri_n /= np.maximum(np.linalg.norm(tri_n, axis=-1, keepdims=True), 1e-30)
            query_n = normals[lo:hi][rows] if rows is not None else normals[lo:hi, None, :]
            cost = dist + facing * (1.0 - np.abs((tri_n * query_n).sum(-1)))
        return cost, dist, closest, bary


def interpolate(values: np.ndarray, triangles: np.ndarray, hit_triangles: np.ndarray,
                barycentrics: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, ...) at surface points given by triangle and barycentrics."""
    corners = triangles[hit_triangles]                       # (N, 3)
    gathered = values[corners]                               # (N, 3, ...)
    shape = barycentrics.shape + (1,) * (gathered.ndim - 2)
    return (barycentrics.reshape(shape) * gathered).sum(axis=1)
