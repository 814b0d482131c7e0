"""Face-animation metrics as the reference evaluation code computes them (REFERENCE.md).

All take vertex positions or offsets of one sequence, shape (T, V, 3), in the same units;
averaging over sequences is the caller's (mean of per-sequence values, as the reference).
`Motion` holds one sequence either as offsets or as blendshape weights (T, K) with their
deltas (K, V, 3), and gives the offsets of just the vertices a metric needs (lips, upper
face, two landmarks), so that a 26,719-vertex head is never built whole for a split.
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


UP_AXIS = 1        # templates are Y up (docs/DESIGN.md)


def lip_gap(offsets: np.ndarray, template_vertices: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """The lip gap, the project's one definition: per frame, how far the upper lip-centre
    landmark is above the lower one along the template's up axis (template units; negative
    when the lips press past each other). Vertical, not the 3-D distance: on a head whose
    two landmarks sit at different depths (the ICT head: 0.7 mm apart front to back) sealed
    lips would otherwise still read as about 1 mm open. `offsets` (T, V, 3) are displacements
    from `template_vertices` (V, 3)."""
    up = template_vertices[upper, UP_AXIS] + offsets[:, upper, UP_AXIS]
    lo = template_vertices[lower, UP_AXIS] + offsets[:, lower, UP_AXIS]
    return up - lo


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


# --- one sequence as offsets or as blendshape weights -------------------------------------------
class Motion:
    """One clip's face motion: offsets (T, V, 3), or weights (T, K) and the deltas (K, V, 3)
    that make them offsets (`weights @ deltas`). Offsets of a vertex subset come from the
    deltas of those vertices only."""

    def __init__(self, offsets: np.ndarray | None = None, weights: np.ndarray | None = None,
                 deltas: np.ndarray | None = None):
        if (offsets is None) == (weights is None) or (weights is not None and deltas is None):
            raise ValueError("a Motion is offsets, or weights with their deltas")
        self.offsets = None if offsets is None else np.asarray(offsets, np.float32)
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        self.deltas = deltas

    @property
    def frames(self) -> int:
        return len(self.weights if self.weights is not None else self.offsets)

    def take(self, frames) -> "Motion":
        """The same motion at some frames (a slice or an index array)."""
        if self.weights is not None:
            return Motion(weights=self.weights[frames], deltas=self.deltas)
        return Motion(offsets=self.offsets[frames])

    def at(self, indices: np.ndarray | None = None) -> np.ndarray:
        """Offsets of the given vertices (all for None). -> (T, n, 3) float32"""
        if self.weights is None:
            return self.offsets if indices is None else self.offsets[:, indices]
        deltas = self.deltas if indices is None else self.deltas[:, indices]
        k = deltas.shape[0]
        return (self.weights @ deltas.reshape(k, -1)).reshape((self.frames,) + deltas.shape[1:])


def motion_mean_vertex_error(pred: Motion, gt: Motion, chunk: int = 64) -> float:
    """MVE of two motions, a few frames at a time (the same value as mean_vertex_error on the
    full offsets). Weights on the same deltas: the error is the weight difference's offsets."""
    n = min(pred.frames, gt.frames)
    if n == 0:
        return float("nan")
    same_basis = pred.weights is not None and gt.weights is not None and (
        pred.deltas is gt.deltas or (pred.deltas.shape == gt.deltas.shape and np.array_equal(pred.deltas, gt.deltas)))
    total = 0.0
    for start in range(0, n, chunk):
        frames = slice(start, min(start + chunk, n))
        if same_basis:
            error = Motion(weights=pred.weights[frames] - gt.weights[frames], deltas=pred.deltas).at()
        else:
            error = pred.take(frames).at() - gt.take(frames).at()
        total += float(np.linalg.norm(error, axis=2).sum(dtype=np.float64))
    vertices = pred.deltas.shape[1] if pred.weights is not None else pred.offsets.shape[1]
    return total / (n * vertices)


def motion_lip_gap(motion: Motion, template_vertices: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """lip_gap of a Motion, from the two landmark vertices only. -> (T,)"""
    pair = motion.at(np.array([upper, lower]))
    return lip_gap(pair, template_vertices[[upper, lower]], 0, 1)
