"""From backend offsets to what the add-on writes: template -> mesh mapping, resampling to
the scene frame rate, and compression into a small shape-key basis. No bpy; pure numpy,
any thread.

Shapes: T model frames, N scene frames, V vertices, K basis keys, R factors. Offsets are
(T, V, 3) float32 displacements in template space; mesh-space arrays are in object local
units. A factored model sends offsets as (T, R) coefficients times an (R, V, 3) basis; the
take is then made from those factors (`prepare_factor_take`), exactly and without ever
forming the (N, V, 3) array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_BASIS_KEYS = 64
DEFAULT_TOLERANCE = 0.01        # relative RMS reconstruction error of COMPACT mode
FIT_WARN_RELATIVE_RMS = 0.05    # rest-shape mismatch above which the user is warned
_RANDOMIZED_OVERSAMPLE = 16
# Randomized SVD attempts, cheapest first: (most keys, power iterations). Model output has
# rank <= its feature size, so a sketch larger than that is exact without power
# iterations; most takes need fewer than 32 keys, which halves the cost.
_SVD_TRIES = ((32, 0), (MAX_BASIS_KEYS, 0), (MAX_BASIS_KEYS, 2))
# Factored takes: directions of the basis whose Gram eigenvalue is below this share of the
# largest (singular value below 1e-6 of the largest) are left out of the SVD; the error they
# leave is still counted exactly.
_GRAM_RANK_RTOL = 1e-12


class MappingError(ValueError):
    """The mesh cannot take this animation; the message says why and what to do."""


# --- template -> mesh -----------------------------------------------------------------

@dataclass(frozen=True)
class Similarity:
    """mesh ~= scale * rotation @ template + translation."""
    scale: float
    rotation: np.ndarray      # (3, 3), det +1
    translation: np.ndarray   # (3,)
    relative_rms: float       # residual RMS / RMS size of the mesh

    @property
    def linear(self) -> np.ndarray:
        return (self.scale * self.rotation).astype(np.float32)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points @ self.linear.T + self.translation.astype(np.float32)

    def apply_to_offsets(self, offsets: np.ndarray) -> np.ndarray:
        """Offsets are directions: rotate and scale, never translate. (..., 3) -> (..., 3)."""
        return np.ascontiguousarray(offsets @ self.linear.T, dtype=np.float32)


def vertex_count_problem(template_count: int, mesh_count: int, mesh_name: str = "The mesh") -> str | None:
    """The sentence refusing a mesh whose vertex count differs from the template's, or None."""
    if template_count == mesh_count:
        return None
    return (f"{mesh_name} has {mesh_count} vertices but the model's template has {template_count}; "
            "use a mesh with the template's topology (retargeting is not supported yet).")


def check_vertex_count(template_count: int, mesh_count: int, mesh_name: str = "The mesh") -> None:
    problem = vertex_count_problem(template_count, mesh_count, mesh_name)
    if problem:
        raise MappingError(problem)


def check_finite(array: np.ndarray, what: str, remedy: str) -> None:
    """NaN or infinite coordinates would break the SVD (COMPACT) or write garbage keys."""
    if not np.isfinite(array).all():
        raise MappingError(f"{what} contain values that are not finite (NaN or infinity); {remedy}.")


def fit_similarity(template: np.ndarray, mesh: np.ndarray) -> Similarity:
    """Least-squares rotation, uniform scale and translation (Umeyama 1991) from template
    (V, 3) to mesh (V, 3) rest positions with the same vertex order."""
    check_vertex_count(len(template), len(mesh))
    src = np.asarray(template, dtype=np.float64)
    dst = np.asarray(mesh, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float((src_c ** 2).sum() / len(src))
    if src_var <= 0.0:
        raise MappingError("The model's template has all vertices at one point; the model bundle is broken.")
    covariance = dst_c.T @ src_c / len(src)                  # (3, 3)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0                                        # no reflections
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum() / src_var)
    translation = dst_mean - scale * rotation @ src_mean
    residual = dst_c - scale * src_c @ rotation.T
    size = math.sqrt(float((dst_c ** 2).sum() / len(dst))) or 1.0
    relative = math.sqrt(float((residual ** 2).sum() / len(dst))) / size
    return Similarity(scale, rotation, translation, relative)


# --- timing -----------------------------------------------------------------------------

def scene_fps(fps: int, fps_base: float) -> float:
    """Blender's real frame rate, e.g. 30 / 1.001 = 29.97."""
    return float(fps) / float(fps_base or 1.0)


def resample(offsets: np.ndarray, source_fps: float, target_fps: float) -> np.ndarray:
    """Linear resampling in time: (T, ...) at source_fps -> (N, ...) at target_fps, frame 0
    of both at time 0, N covering the same duration. Always a new float32 array (callers
    scale it in place), never `offsets` itself."""
    count = len(offsets)
    if count == 0 or abs(source_fps - target_fps) < 1e-9:
        return np.array(offsets, dtype=np.float32, order="C")     # a copy, even at the same rate
    n_out = int(math.floor((count - 1) * target_fps / source_fps + 1e-6)) + 1
    position = np.arange(n_out, dtype=np.float64) * (source_fps / target_fps)
    lower = np.minimum(np.floor(position).astype(np.int64), count - 1)
    upper = np.minimum(lower + 1, count - 1)
    frac = (position - lower).astype(np.float32).reshape((-1,) + (1,) * (offsets.ndim - 1))
    return np.ascontiguousarray(offsets[lower] * (1.0 - frac) + offsets[upper] * frac, dtype=np.float32)


# --- compression ------------------------------------------------------------------------

@dataclass(frozen=True)
class CompactTake:
    basis: np.ndarray        # (K, V, 3) float32 mesh-space offsets of each basis key
    weights: np.ndarray      # (N, K) float32, each column scaled to max |w| = 1
    relative_error: float    # achieved ||D - W B|| / ||D||

    def reconstruct(self) -> np.ndarray:
        k, v, _ = self.basis.shape
        return (self.weights @ self.basis.reshape(k, -1)).reshape(len(self.weights), v, 3)


def _top_singular(matrix: np.ndarray, rank: int, power_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leading `rank` singular triplets of an (N, M) matrix: exact when small, otherwise a
    randomized range finder with power iterations (Halko et al. 2011)."""
    n, m = matrix.shape
    sketch = rank + _RANDOMIZED_OVERSAMPLE
    if sketch >= min(n, m) // 2:
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    rng = np.random.default_rng(0)
    y = matrix @ rng.standard_normal((m, sketch)).astype(matrix.dtype)     # (N, l)
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(y)
        z, _ = np.linalg.qr(matrix.T @ q)                                 # (M, l)
        y = matrix @ z
    q, _ = np.linalg.qr(y)                                                # (N, l)
    u_small, s, vt = np.linalg.svd(q.T @ matrix, full_matrices=False)    # (l, M)
    return (q @ u_small)[:, :rank], s[:rank], vt[:rank]


def compress(offsets: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
             max_keys: int = MAX_BASIS_KEYS) -> CompactTake:
    """Truncated SVD of (N, V, 3) offsets with the fewest keys (<= max_keys) whose relative
    RMS reconstruction error is <= tolerance (or the best max_keys can do)."""
    n, v, _ = offsets.shape
    flat = np.ascontiguousarray(offsets.reshape(n, v * 3), dtype=np.float32)
    total = float(np.einsum("ij,ij->", flat, flat, dtype=np.float64))
    if n == 0 or total == 0.0:
        return CompactTake(np.zeros((1, v, 3), np.float32), np.zeros((n, 1), np.float32), 0.0)
    for try_keys, power_iterations in _SVD_TRIES:
        # The residual energy of the found subspace is exact, whatever its quality.
        rank = max(1, min(try_keys, max_keys, n, v * 3))
        u, s, vt = _top_singular(flat, rank, power_iterations)
        captured = np.cumsum(s.astype(np.float64) ** 2)
        errors = np.sqrt(np.clip(total - captured, 0.0, None) / total)
        within = np.nonzero(errors <= tolerance)[0]
        if len(within):
            break
    keys = int(within[0]) + 1 if len(within) else rank
    weights = (u[:, :keys] * s[:keys]).astype(np.float32)                    # (N, K)
    scale = np.abs(weights).max(axis=0)
    scale[scale == 0] = 1.0
    weights /= scale
    basis = (vt[:keys] * scale[:, None]).astype(np.float32).reshape(keys, v, 3)
    return CompactTake(basis, weights, float(errors[keys - 1]))


def compress_factors(coefficients: np.ndarray, basis: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
                     max_keys: int = MAX_BASIS_KEYS) -> CompactTake:
    """`compress(coefficients @ basis)` from the factors: (N, R) coefficients and an (R, V, 3)
    basis, R small. An exact truncated SVD (no sketch), in float64, that never forms the
    (N, V*3) product: the basis's R x R Gram matrix gives an orthonormal frame, the SVD runs on
    the (N, R) coefficients in it, and only the K kept keys are formed (cost ~ R^2 V + N R^2 +
    K R V, against N R V for just forming the product)."""
    n, r = coefficients.shape
    v = basis.shape[1]
    flat = basis.reshape(r, v * 3).astype(np.float64)
    weights64 = coefficients.astype(np.float64)
    eigenvalues, frame = np.linalg.eigh(flat @ flat.T)                     # Gram = frame diag(ev) frame^T
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    in_frame = weights64 @ frame                                            # (N, R)
    total = float(np.sum(in_frame ** 2 * eigenvalues))                      # ||C B||^2, exactly
    if n == 0 or total <= 0.0:
        return CompactTake(np.zeros((1, v, 3), np.float32), np.zeros((n, 1), np.float32), 0.0)
    kept = eigenvalues > eigenvalues.max() * _GRAM_RANK_RTOL
    # C B = (in_frame * sqrt(ev)) @ Q with Q = diag(1/sqrt(ev)) frame^T B orthonormal: its SVD is C B's
    u, s, _ = np.linalg.svd(in_frame[:, kept] * np.sqrt(eigenvalues[kept]), full_matrices=False)
    errors = np.sqrt(np.clip(total - np.cumsum(s ** 2), 0.0, None) / total)
    limit = max(1, min(max_keys, len(s)))
    within = np.nonzero(errors[:limit] <= tolerance)[0]
    keys = int(within[0]) + 1 if len(within) else limit
    weights = u[:, :keys] * s[:keys]                                        # (N, K)
    scale = np.abs(weights).max(axis=0)
    scale[scale == 0] = 1.0
    # key k = u_k^T C B / s_k (the data projected on u_k), times its weight column's scale
    mix = (u[:, :keys].T @ weights64) * (scale / s[:keys])[:, None]         # (K, R)
    keys_basis = (mix @ flat).astype(np.float32).reshape(keys, v, 3)
    return CompactTake(keys_basis, (weights / scale).astype(np.float32), float(errors[keys - 1]))


# --- everything the writer needs ---------------------------------------------------------

@dataclass(frozen=True)
class PreparedTake:
    """Mesh-space animation ready for takes.py; frame i plays at scene frame start + i."""
    mesh_offsets: np.ndarray | None     # (N, V, 3) PER_FRAME only
    compact: CompactTake | None         # COMPACT only
    frames: int
    fit: Similarity
    warnings: tuple[str, ...] = ()
    key_names: tuple[str, ...] = ()     # channel takes: each key's channel (`<take>.<channel>`)


def _checked_fit(template: np.ndarray, mesh_rest: np.ndarray, mesh_name: str) -> tuple[Similarity, list[str]]:
    check_vertex_count(len(template), len(mesh_rest), mesh_name)
    check_finite(template, "The model's template coordinates", "the model bundle is broken, choose another model")
    check_finite(mesh_rest, f"The rest shape of {mesh_name}", "fix the mesh's vertices (or its Basis shape key)")
    fit = fit_similarity(template, mesh_rest)
    warnings = []
    if fit.relative_rms > FIT_WARN_RELATIVE_RMS:
        warnings.append(f"{mesh_name} differs from the model's template by {fit.relative_rms:.0%} after "
                        "alignment; the animation may look wrong.")
    return fit, warnings


def prepare_channel_take(template: np.ndarray, mesh_rest: np.ndarray, blendshapes: np.ndarray, weights: np.ndarray,
                         channels: tuple[str, ...], model_fps: float, target_fps: float, gains: np.ndarray,
                         mesh_name: str = "The mesh") -> PreparedTake:
    """A blendshape model on a mesh with its template's topology and no face keys: one key
    per channel (its displacement mapped into mesh space), curves = the weights at scene fps
    times each channel's gain. Channels with gain 0 get no key. Exact and cheap."""
    fit, warnings = _checked_fit(template, mesh_rest, mesh_name)
    count = len(channels)
    if blendshapes.shape != (count, len(template), 3):
        raise MappingError(f"The model's blendshapes have shape {blendshapes.shape}, expected ({count}, "
                           f"{len(template)}, 3); the model bundle is broken, choose another model.")
    check_weights(weights, count)
    check_finite(blendshapes, "The model's blendshapes", "the model bundle is broken, choose another model")
    keep = np.nonzero(np.asarray(gains, dtype=np.float32) != 0)[0]
    if not len(keep):
        raise MappingError("Every channel of the model is in a group whose strength is 0; raise the Jaw, Lips or "
                           "Upper Face strength in the Lip Sync panel.")
    resampled = resample(weights, model_fps, target_fps) * np.asarray(gains, dtype=np.float32)[None, :]
    basis = fit.apply_to_offsets(blendshapes[keep])
    compact = CompactTake(basis, np.ascontiguousarray(resampled[:, keep], dtype=np.float32), 0.0)
    return PreparedTake(None, compact, len(resampled), fit, tuple(warnings), tuple(channels[i] for i in keep))


def check_weights(weights: np.ndarray, channels: int) -> None:
    if weights.ndim != 2 or weights.shape[1] != channels:
        raise MappingError(f"The backend returned weights of shape {weights.shape}, expected (frames, "
                           f"{channels}); reinstall the backend.")
    check_finite(weights, "The backend's weights", "try other audio or another model, and report it if it persists")


def prepare_take(template: np.ndarray, mesh_rest: np.ndarray, offsets: np.ndarray, model_fps: float,
                 target_fps: float, intensity: float = 1.0, mode: str = "COMPACT",
                 tolerance: float = DEFAULT_TOLERANCE, mesh_name: str = "The mesh") -> PreparedTake:
    """Template-space offsets at model fps -> mesh-space animation at scene fps."""
    check_vertex_count(len(template), len(mesh_rest), mesh_name)
    if offsets.ndim != 3 or offsets.shape[1:] != (len(template), 3):
        raise MappingError(f"The backend returned offsets of shape {offsets.shape}, expected (frames, "
                           f"{len(template)}, 3); reinstall the backend.")
    check_finite(offsets, "The backend's offsets", "try other audio or another model, and report it if it persists")
    check_mode(mode)
    fit, warnings = _checked_fit(template, mesh_rest, mesh_name)
    mapped = fit.apply_to_offsets(resample(offsets, model_fps, target_fps))
    if intensity != 1.0:
        mapped *= np.float32(intensity)
    if mode == "PER_FRAME":
        return PreparedTake(mapped, None, len(mapped), fit, tuple(warnings))
    return _compact_take(compress(mapped, tolerance), len(mapped), fit, warnings, tolerance)


def prepare_factor_take(template: np.ndarray, mesh_rest: np.ndarray, coefficients: np.ndarray, basis: np.ndarray,
                        model_fps: float, target_fps: float, intensity: float = 1.0, mode: str = "COMPACT",
                        tolerance: float = DEFAULT_TOLERANCE, mesh_name: str = "The mesh") -> PreparedTake:
    """`prepare_take` for offsets sent as factors, offsets = coefficients (T, R) @ basis
    (R, V, 3), with the same result up to rounding. Resampling in time, intensity and the
    similarity are linear, so they act on the small factors: the coefficients are resampled
    and scaled, the basis is mapped, and COMPACT's SVD is exact (`compress_factors`)."""
    check_vertex_count(len(template), len(mesh_rest), mesh_name)
    r = len(basis)
    if basis.ndim != 3 or basis.shape[1:] != (len(template), 3) or r == 0:
        raise MappingError(f"The model's output basis has shape {basis.shape}, expected (factors, {len(template)}, "
                           "3); the model bundle is broken, choose another model.")
    if coefficients.ndim != 2 or coefficients.shape[1] != r:
        raise MappingError(f"The backend returned coefficients of shape {coefficients.shape}, expected (frames, "
                           f"{r}); reinstall the backend.")
    check_finite(basis, "The model's output basis", "the model bundle is broken, choose another model")
    check_finite(coefficients, "The backend's coefficients",
                 "try other audio or another model, and report it if it persists")
    check_mode(mode)
    fit, warnings = _checked_fit(template, mesh_rest, mesh_name)
    resampled = resample(coefficients, model_fps, target_fps)
    if intensity != 1.0:
        resampled *= np.float32(intensity)
    mapped_basis = fit.apply_to_offsets(basis)                                # (R, V, 3) mesh space
    if mode == "PER_FRAME":
        dense = (resampled @ mapped_basis.reshape(r, -1)).reshape(len(resampled), len(template), 3)
        return PreparedTake(np.ascontiguousarray(dense, np.float32), None, len(resampled), fit, tuple(warnings))
    return _compact_take(compress_factors(resampled, mapped_basis, tolerance), len(resampled), fit, warnings,
                         tolerance)


def check_mode(mode: str) -> None:
    if mode not in ("COMPACT", "PER_FRAME"):
        raise MappingError(f"Unknown output mode {mode!r}; use 'COMPACT' or 'PER_FRAME'.")


def _compact_take(compact: CompactTake, frames: int, fit: Similarity, warnings: list[str],
                  tolerance: float) -> PreparedTake:
    if compact.relative_error > tolerance:
        warnings.append(f"{MAX_BASIS_KEYS} keys reach {compact.relative_error:.1%} error, more than the "
                        f"{tolerance:.1%} tolerance; use PER_FRAME for an exact result.")
    return PreparedTake(None, compact, frames, fit, tuple(warnings))
