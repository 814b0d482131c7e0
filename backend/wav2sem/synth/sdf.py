"""Signed distance functions for the procedural head (metres; negative inside).

Hand-written because no dependency offers composable SDF primitives with smooth blending
on plain numpy arrays; each function is a few lines of standard formulas.
"""
from __future__ import annotations

import numpy as np


def ellipsoid(p: np.ndarray, center, radii) -> np.ndarray:
    """Approximate (bound-corrected) distance from points `p` (N, 3) to an ellipsoid. -> (N,)"""
    q = (p - np.asarray(center, dtype=np.float64)) / np.asarray(radii, dtype=np.float64)
    r2 = np.asarray(radii, dtype=np.float64)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / r2, axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def vertical_capsule(p: np.ndarray, x: float, z: float, y0: float, y1: float, radius: float) -> np.ndarray:
    """Distance to a vertical capsule (a rounded cylinder) from y0 to y1 at (x, z). -> (N,)"""
    y = np.clip(p[:, 1], y0, y1)
    d = p - np.stack([np.full_like(y, x), y, np.full_like(y, z)], axis=-1)
    return np.linalg.norm(d, axis=-1) - radius


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: blends two shapes with a fillet of size `k` (metres)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def smooth_subtract(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Carve shape `b` out of shape `a` with a fillet of size `k`."""
    return -smooth_union(-a, b, k)
