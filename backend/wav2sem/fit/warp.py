"""Non-rigid registration: a smooth space warp that takes the placed reference head onto the
user's surface.

The warp is a displacement field d(x) = A x + b + sum over layers s of Gaussian radial basis
functions of width sigma_s at centres spread over the reference, fitted coarse to fine: each
layer is solved in closed form (regularised least squares, its RKHS norm as the penalty) to
the closest-point pairs of a few ICP rounds, both ways (reference samples onto the user's
surface, the user's samples onto the warped reference), landmark pairs weighted heavily when
the user placed them. Pairs whose closest point lies on a border (the eye holes, the neck's
cut, a mouth slit) are dropped (Turk and Levoy's rule): there the nearest point is not the
corresponding one, and many of them pulling on one border tears it. A field rather than per-vertex offsets (Amberg's non-rigid ICP, as in
trimesh.registration.nricp_amberg) because the transfer needs the warp's Jacobian anywhere
in the mouth, teeth and tongue included, and a field of a few hundred centres is solved in
milliseconds whatever the user's vertex count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .geometry import Surface, boundary_vertices, farthest_points, sample_surface

# Layers: (width as a fraction of the eye-corner distance, number of centres, penalty, rounds)
LAYERS = ((1.2, 40, 1e-2, 3), (0.6, 120, 3e-3, 3), (0.3, 360, 1e-3, 4), (0.15, 900, 1e-3, 4))
AFFINE_ROUNDS = 3


@dataclass
class Layer:
    centres: np.ndarray       # (C, 3)
    sigma: float
    coefficients: np.ndarray  # (C, 3)

    def kernel(self, x: np.ndarray) -> np.ndarray:
        # |x - c|^2 expanded, so the (N, C) work is one matrix product.
        d2 = (x * x).sum(1)[:, None] + (self.centres * self.centres).sum(1)[None, :] - 2.0 * x @ self.centres.T
        return np.exp(-np.maximum(d2, 0.0) / (2 * self.sigma ** 2))


@dataclass
class Warp:
    """x -> x + d(x), in the user's space."""
    affine: np.ndarray = field(default_factory=lambda: np.zeros((3, 4)))
    layers: list[Layer] = field(default_factory=list)

    def displacement(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        out = x @ self.affine[:, :3].T + self.affine[:, 3]
        for layer in self.layers:
            for lo in range(0, len(x), chunk):
                out[lo:lo + chunk] += layer.kernel(x[lo:lo + chunk]) @ layer.coefficients
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x + self.displacement(x)

    def jacobian(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """(N, 3, 3) derivative of the warp at x (identity plus the field's gradient)."""
        jac = np.broadcast_to(np.eye(3) + self.affine[:, :3], (len(x), 3, 3)).copy()
        for layer in self.layers:
            # d/dx_j exp(-|x-c|^2 / 2s^2) = -(x_j - c_j) / s^2 k, summed against the coefficients.
            outer = (layer.coefficients[:, :, None] * layer.centres[:, None, :]).reshape(len(layer.centres), 9)
            for lo in range(0, len(x), chunk):
                p = x[lo:lo + chunk]
                k = layer.kernel(p)                                        # (n, C)
                weighted = k @ layer.coefficients                          # (n, 3)
                jac[lo:lo + chunk] -= (weighted[:, :, None] * p[:, None, :] - (k @ outer).reshape(-1, 3, 3)) / layer.sigma ** 2
        return jac


def _solve_layer(layer_centres: np.ndarray, sigma: float, penalty: float, x: np.ndarray, residual: np.ndarray,
                 weights: np.ndarray) -> np.ndarray:
    probe = Layer(layer_centres, sigma, np.zeros((len(layer_centres), 3)))
    phi = probe.kernel(x)                                                  # (N, C)
    gram = probe.kernel(layer_centres)                                     # (C, C)
    wphi = phi * weights[:, None]
    lhs = phi.T @ wphi + penalty * weights.sum() / len(layer_centres) * (gram + 1e-6 * np.eye(len(gram)))
    rhs = wphi.T @ residual
    return np.linalg.solve(lhs, rhs)


def _solve_affine(x: np.ndarray, residual: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares affine map of x onto x + residual, as a (3, 4) displacement."""
    q = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    wq = q * weights[:, None]
    lhs = q.T @ wq
    lhs += 1e-9 * np.trace(lhs) * np.eye(4)
    return np.linalg.solve(lhs, wq.T @ residual).T


@dataclass
class Pairs:
    source: np.ndarray        # (N, 3) placed reference points
    target: np.ndarray        # (N, 3) user points
    weights: np.ndarray       # (N,)


def register(ref_vertices: np.ndarray, ref_landing_triangles: np.ndarray, ref_skin_triangles: np.ndarray,
             user_surface: Surface, user_points: np.ndarray, unit: float,
             landmark_pairs: Pairs | None = None, progress: Callable[[float, str], None] | None = None,
             rng: np.random.Generator | None = None, layers=LAYERS) -> Warp:
    """Fit the warp that takes `ref_vertices` (the placed reference, user space) onto the
    user's surface. `unit` is the head's eye-corner distance in user units. The reference's
    skin is pulled onto the user's surface; the user's points pull on the reference where they
    land on its skin (`ref_landing_triangles` also holds the mouth interior, so that the
    user's own mouth bag lands there and pulls on nothing)."""
    rng = rng or np.random.default_rng(2)
    warp = Warp()
    samples, s_tri, s_bary = sample_surface(ref_vertices, ref_skin_triangles, 4000, rng)
    skin_vertices = np.unique(ref_skin_triangles)
    user_border = boundary_vertices(len(user_surface.vertices), user_surface.triangles)
    skin_border = boundary_vertices(len(ref_vertices), ref_skin_triangles)
    # Surface of the warped reference skin, rebuilt each round (indices into ref_vertices).
    rounds = AFFINE_ROUNDS + sum(layer[3] for layer in layers)
    done = 0

    def pairs_within(max_distance: float) -> Pairs:
        pairs = _closest_pairs(warp, samples, ref_vertices, ref_landing_triangles, ref_skin_triangles, user_surface,
                               user_points, max_distance, user_border, skin_border)
        if landmark_pairs is None:
            return pairs
        weight = landmark_pairs.weights * max(pairs.weights.sum(), 1.0) / 100
        return Pairs(np.concatenate([pairs.source, landmark_pairs.source]),
                     np.concatenate([pairs.target, landmark_pairs.target]), np.concatenate([pairs.weights, weight]))

    # An affine part first (a wider, taller or deeper head than the reference), then the layers.
    for _ in range(AFFINE_ROUNDS):
        pairs = pairs_within(0.5 * unit)
        warp.affine = _solve_affine(pairs.source, pairs.target - pairs.source, pairs.weights)
        done += 1
        if progress:
            progress(done / rounds, "Fitting the reference head")
    for width, n_centres, penalty, n_rounds in layers:
        sigma = width * unit
        centres_idx = farthest_points(ref_vertices[skin_vertices], n_centres,
                                      first=int(rng.integers(len(skin_vertices))))
        centres = ref_vertices[skin_vertices[centres_idx]]
        if landmark_pairs is not None:
            centres = np.concatenate([centres, landmark_pairs.source])
        layer = Layer(centres, sigma, np.zeros((len(centres), 3)))
        warp.layers.append(layer)
        for _ in range(n_rounds):
            pairs = pairs_within(max(0.5 * sigma, 0.05 * unit))
            residual = pairs.target - warp(pairs.source)
            layer.coefficients = layer.coefficients + _solve_layer(centres, sigma, penalty, pairs.source, residual,
                                                                   pairs.weights)
            done += 1
            if progress:
                progress(done / rounds, "Fitting the reference head")
    return warp


def _closest_pairs(warp: Warp, samples: np.ndarray, ref_vertices: np.ndarray, landing_triangles: np.ndarray,
                   skin_triangles: np.ndarray, user_surface: Surface, user_points: np.ndarray,
                   max_distance: float, user_border: np.ndarray, skin_border: np.ndarray) -> Pairs:
    warped_samples = warp(samples)
    fwd = user_surface.closest(warped_samples)
    keep_f = (fwd.distances < max_distance) & ~user_border[user_surface.triangles[fwd.triangles]].any(axis=1)
    warped = ref_vertices.copy()
    used = np.unique(landing_triangles)
    warped[used] = warp(ref_vertices[used])
    back = Surface(warped, landing_triangles).closest(user_points)
    corners = landing_triangles[back.triangles]
    on_skin = _rows_in(corners, skin_triangles)
    keep_b = (back.distances < max_distance) & on_skin & ~skin_border[corners].any(axis=1)
    back_source = np.einsum("nk,nkd->nd", back.barycentrics[keep_b], ref_vertices[corners[keep_b]])
    source = np.concatenate([samples[keep_f], back_source])
    target = np.concatenate([fwd.points[keep_f], user_points[keep_b]])
    return Pairs(source, target, np.ones(len(source)))


def _rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Which of `rows` (N, 3) are rows of `table` (M, 3)."""
    view = lambda a: np.ascontiguousarray(a).view([("", a.dtype)] * a.shape[1]).ravel()  # noqa: E731
    return np.isin(view(rows), view(table))
