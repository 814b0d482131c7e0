"""Face-animation metrics as the reference evaluation code computes them (REFERENCE.md).

All take vertex positions or offsets of one sequence, shape (T, V, 3), in the same units;
averaging over sequences is the caller's (mean of per-sequence values, as the reference).
"""
from __future__ import annotations

import numpy as np


def _aligned(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(pred.shape[0], gt.shape[0])   # the reference cuts both to the shorter sequence
    return pred[:n], gt[:n]


def lip_vertex_error(pred: np.ndarray, gt: np.ndarray, lip_indices: np.ndarray) -> float:
    """LVE: per frame, the maximum over lip vertices of the squared L2 distance; mean over frames."""
    pred, gt = _aligned(pred, gt)
    squared = np.sum((pred[:, lip_indices] - gt[:, lip_indices]) ** 2, axis=2)    # (T, L)
    return float(np.mean(np.max(squared, axis=1)))


def upper_face_dynamics(offsets: np.ndarray, upper_indices: np.ndarray) -> float:
    """Mean over upper-face vertices of the std over time of the squared displacement
    from the template. `offsets` are displacements (vertices - template), (T, V, 3)."""
    squared = np.sum(offsets[:, upper_indices] ** 2, axis=2)                      # (T, U)
    return float(np.mean(np.std(squared, axis=0)))


def face_dynamics_deviation(pred_offsets: np.ndarray, gt_offsets: np.ndarray, upper_indices: np.ndarray) -> float:
    """FDD: upper-face dynamics of the ground truth minus those of the prediction."""
    pred_offsets, gt_offsets = _aligned(pred_offsets, gt_offsets)
    return upper_face_dynamics(gt_offsets, upper_indices) - upper_face_dynamics(pred_offsets, upper_indices)


def mean_vertex_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """MVE: mean over vertices and frames of the L2 distance."""
    pred, gt = _aligned(pred, gt)
    return float(np.mean(np.linalg.norm(pred - gt, axis=2)))


# --- lip closure (ours; not in the reference evaluation) -------------------------------------------
BILABIALS = ("M", "B", "P")
OPEN_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY")
CLOSED_MM = 1.0   # a predicted lip gap below this counts as a closure


def lip_gap(offsets: np.ndarray, template_vertices: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """Distance per frame between the upper and lower lip centre vertices, in template units.
    `offsets` (T, V, 3) are displacements from `template_vertices` (V, 3)."""
    up = template_vertices[upper] + offsets[:, upper]
    lo = template_vertices[lower] + offsets[:, lower]
    return np.linalg.norm(up - lo, axis=1)


def phone_gap_extrema(gap: np.ndarray, phonemes, fps: float, classes: tuple[str, ...], use_min: bool,
                      slack: int = 1) -> list[float]:
    """For every phone of `classes`, the smallest (`use_min`) or largest lip gap over its frames
    widened by `slack` frames each side (a closure may land a frame early or late)."""
    out = []
    for seg in phonemes or []:
        if seg.arpabet not in classes:
            continue
        first = max(int(np.floor(seg.start * fps)) - slack, 0)
        last = min(int(np.ceil(seg.end * fps)) + slack, len(gap))
        if last > first:
            window = gap[first:last]
            out.append(float(window.min() if use_min else window.max()))
    return out
