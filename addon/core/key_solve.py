"""From the model's ARKit weights to values for the face keys a character has. No bpy; numpy
only (Blender's Python has no scipy), any thread.

Shapes: T frames, K model channels (model_info `channels`), M keys driven, V vertices of the
model's reference head. `blendshapes` is model_info's (K, V, 3) displacement per channel at
weight 1; `bindings` come from addon/face_keys.py.

The model predicts w (T, K). A key's displacement is pictured as channel weights: row a_m of
A = key_targets(...) (M, K), so key values u (T, M) make the head move by u A D. The values are
    u_t = argmin over u in [0, 1]^M of  (u A - w_t) G (u A - w_t)^T + ridge |u|^2,
    G = channel_gram(D, vertex_weights) = sum_v vw_v D_v D_v^T   (K, K),
i.e. the keys' motion nearest the predicted motion on the reference head, measured where
vertex_weights says (the lips first). A character with every channel on its own key gets
clip(w, 0, 1) exactly; one without mouthClose gets the jaw and lip keys that best keep the
lips sealed on m/b/p; a viseme-only one gets the mix of visemes nearest each frame.

Public API
    DEFAULT_STRENGTHS = {"jaw": 1.0, "lips": 1.0, "upper_face": 0.0}
    apply_strengths(weights (T,K), channels, strengths) -> (T,K)
        each channel's column times its group's strength (face_keys.group_of; groups missing
        from `strengths` take DEFAULT_STRENGTHS). Not clipped; same dtype.
    key_targets(bindings, channels) -> (M, K) float64
        ARKit key -> one-hot (a side-less key such as browInnerUp -> both sides; a half key
        such as mouthRollLower_L -> 0.5, face_keys.coverage); viseme key -> its
        face_keys.viseme_row; a key covering none of the channels -> zeros.
    channel_gram(blendshapes (K,V,3), vertex_weights (V,) | None) -> (K, K) float64
    default_vertex_weights(blendshapes, channels, regions=None) -> (V,) float64
        1 everywhere plus LIPS_BOOST on regions["lips"] when given, else plus LIPS_BOOST
        times how far the mouth* channels move each vertex, relative to the 90th percentile
        of the moving vertices and capped at 1 (so the lips, which they move, count most).
    solve_key_values(weights (T,K), targets (M,K), gram (K,K), sparsity=0.0) -> (T, M) in [0, 1]
        float32 for float32 weights, else float64. Identity/permutation targets (each channel
        its own key; also a subset of such keys when the other channels are all 0, as
        strength 0 makes them): clip(w, 0, 1) exactly. Zero targets (viseme_sil, keys outside the
        channels) get 0; duplicate keys share the weight evenly (the ridge).
    driven_bindings(channels, bindings, strengths=None) -> list[KeyBinding]
        face_keys.select_bindings minus keys whose channels are all in groups of strength 0
        (so eyes and brows are not keyed at all by default: they keep their values/curves).
    lip_gap_gram(blendshapes, upper, lower) -> (K, K) float64
        the Gram of the upper lip centre's motion relative to the lower one.
    solve_keys(weights, channels, bindings, blendshapes, *, strengths=None,
               vertex_weights=None, regions=None, landmarks=None) -> KeySolution
        all of the above in one call: strengths -> driven keys -> targets, Gram, solve
        (VISEME_SPARSITY on viseme keys). Pass model_info's `landmarks`: with
        upper_lip_center and lower_lip_center the Gram also gets lip_gap_gram, weighted as
        LIP_GAP_WEIGHT of all the weighted vertices, so that a character without mouthClose
        still seals on m/b/p (synthetic ICT corpus, 104 clips: 319/319 bilabials under
        0.3 mm with it, 101/319 without; open vowels unchanged). Cost on this project's
        2 shared CPU cores, 1800 frames: the Gram ~30-70 ms (26,719 vertices); the solve
        0 ms for a full set, ~20-110 ms for a partial ARKit set, ~0.1-0.2 s for 15
        visemes, ~0.3-0.7 s for 60 keys.
        KeySolution.keys (M,) key names in column order (each key once: a key bound to
        several sources moves them all, its .sources entry joins them with "+"), .sources,
        .values (T, M) float32.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .face_keys import GROUPS, KeyBinding, coverage, group_of, is_viseme, select_bindings, viseme_row

DEFAULT_STRENGTHS: dict[str, float] = {"jaw": 1.0, "lips": 1.0, "upper_face": 0.0}
LIP_GAP_WEIGHT = 0.5  # the lip-centre gap's share of the fit (solve_keys with landmarks)
LIPS_BOOST = 10.0     # lip vertices count this much more than the rest of the face
RIDGE = 1e-3          # each key's, relative to its own a G a^T (see solve_key_values)
MAX_ITERATIONS = 3000
CHECK_EVERY = 10
VISEME_SPARSITY = 0.01  # see solve_key_values
TOLERANCE = 1e-5      # largest projected-gradient step (in key value) accepted as converged


def apply_strengths(weights: np.ndarray, channels: Sequence[str],
                    strengths: Mapping[str, float] | None = None) -> np.ndarray:
    """Each channel's weights times its group's strength."""
    w = np.asarray(weights)
    factors = strength_factors(channels, strengths)
    dtype = w.dtype if np.issubdtype(w.dtype, np.floating) else np.float64
    return (w * factors.astype(dtype)).astype(dtype, copy=False)


def strength_factors(channels: Sequence[str], strengths: Mapping[str, float] | None = None) -> np.ndarray:
    """(K,) multiplier per channel from per-group strengths."""
    table = dict(DEFAULT_STRENGTHS)
    if strengths:
        unknown = set(strengths) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown strength group {sorted(unknown)[0]!r}; groups are {', '.join(GROUPS)}")
        table.update({k: float(v) for k, v in strengths.items()})
    return np.array([table[group_of(c)] for c in channels], dtype=np.float64)


def key_targets(bindings: Sequence[KeyBinding], channels: Sequence[str]) -> np.ndarray:
    """(M, K) float64: each key's displacement as channel weights."""
    out = np.zeros((len(bindings), len(channels)), dtype=np.float64)
    for m, b in enumerate(bindings):
        if is_viseme(b.source):
            out[m] = viseme_row(b.source, channels)
        else:
            out[m] = [coverage(b.source, c) for c in channels]
    return out


def channel_gram(blendshapes: np.ndarray, vertex_weights: np.ndarray | None = None) -> np.ndarray:
    """(K, K) float64: sum_v vw_v D_v D_v^T, D_v the (K, 3) displacements of vertex v."""
    d = np.asarray(blendshapes)
    if d.ndim != 3 or d.shape[2] != 3:
        raise ValueError(f"blendshapes must be (K, V, 3), not {d.shape}")
    k, v = d.shape[0], d.shape[1]
    flat = d.reshape(k, v * 3).astype(np.float64)
    if vertex_weights is None:
        return flat @ flat.T
    vw = np.asarray(vertex_weights, dtype=np.float64).reshape(-1)
    if vw.shape[0] != v:
        raise ValueError(f"vertex_weights has {vw.shape[0]} entries for {v} vertices")
    return (flat * np.repeat(vw, 3)) @ flat.T


def lip_gap_gram(blendshapes: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """(K, K) float64: the Gram of how each channel moves the upper lip centre relative to the
    lower one, sum over xyz of (D_upper - D_lower)(D_upper - D_lower)^T: adding it to
    channel_gram's makes the solve keep the lips' opening (sealed on m/b/p, open on vowels)."""
    d = np.asarray(blendshapes, dtype=np.float64)
    rel = d[:, upper, :] - d[:, lower, :]                     # (K, 3)
    return rel @ rel.T


def default_vertex_weights(blendshapes: np.ndarray, channels: Sequence[str],
                           regions: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """(V,) float64: the lips count LIPS_BOOST + 1 times the rest (see module doc)."""
    # Without a lips region the mouth channels' motion stands in for it.
    d = np.asarray(blendshapes)
    v = d.shape[1]
    weights = np.ones(v, dtype=np.float64)
    lips = None if regions is None else regions.get("lips")
    if lips is not None and len(lips):
        weights[np.asarray(lips, dtype=np.int64)] += LIPS_BOOST
        return weights
    mouth = [i for i, c in enumerate(channels) if group_of(c) == "lips"]
    if mouth:
        motion = np.sqrt((d[mouth].astype(np.float64) ** 2).sum(axis=2)).max(axis=0)
        moving = motion[motion > 0.01 * motion.max()] if motion.max() > 0 else motion[:0]
        if moving.size:
            reference = float(np.percentile(moving, 90))   # the lips, not only the most moved vertex
            weights += LIPS_BOOST * np.minimum(motion / reference, 1.0)
    return weights


def _direct_columns(targets: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Column index per key when every key is its own channel (distinct one-hot rows) and the
    channels no key has are all zero in `weights`: the keys then take the weights as they are.
    None otherwise."""
    m, k = targets.shape
    if m == 0 or m > k:
        return None
    if not np.all((targets == 0.0) | (targets == 1.0)) or not np.all(targets.sum(axis=1) == 1.0):
        return None
    cols = targets.argmax(axis=1)
    if len(set(cols.tolist())) != m:
        return None
    others = np.setdiff1d(np.arange(k), cols)
    if others.size and np.any(weights[:, others] != 0):
        return None
    return cols


def solve_key_values(weights: np.ndarray, targets: np.ndarray, gram: np.ndarray,
                     sparsity: float | np.ndarray = 0.0) -> np.ndarray:
    """(T, M) key values in [0, 1] (see module doc). weights (T, K) or (K,) (then (M,) back),
    finite (ValueError otherwise, and for shapes that do not agree).

    sparsity (scalar or (M,)): adds 2 sparsity_i * mean_j(a_j G a_j^T) * u_i to the cost (an
    L1 penalty on the values, in units of a typical key's motion), so that one key at 0.8
    beats three at 0.4 when both fit about as well; solve_keys uses
    VISEME_SPARSITY on viseme keys, which overlap (every vowel opens the jaw) and would
    otherwise be mixed several at a time.

    Ridge: each key adds RIDGE * (its own a G a^T) * u^2, which shrinks a lone key's value by
    a factor 1 / (1 + RIDGE) at most and makes every problem strictly convex: keys with the
    same target split the weight evenly. Such duplicates are merged into one variable first
    (bounds [0, n], its ridge / n: the same problem exactly), keys that move nothing (zero
    target, or no displacement where vertex_weights look) get 0.

    Method: accelerated projected gradient (FISTA with per-frame adaptive restart) on the
    Jacobi-scaled problem, all frames at once as (T, M) x (M, M) matrix products, warm-started
    from the clipped unconstrained solution, run until no frame's projected-gradient step
    exceeds TOLERANCE. It needs only matrix products and clipping, so it vectorises over
    frames and cannot fail on a singular Gram. Exact active-set methods solve one small
    system per frame and active set: tried, they were slower here, because numpy's batched
    LAPACK solves of many small systems run badly under multi-threaded OpenBLAS (as in
    Blender). scipy's lsq_linear would do this, but Blender has no scipy.
    """
    w = np.asarray(weights)
    out_dtype = w.dtype if np.issubdtype(w.dtype, np.floating) else np.dtype(np.float64)
    w2 = w.reshape(1, -1) if w.ndim == 1 else w
    a = np.asarray(targets, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float64)
    t, k = w2.shape
    m = a.shape[0]
    if a.ndim != 2 or a.shape[1] != k or g.shape != (k, k):
        raise ValueError(f"shapes do not agree: weights {w2.shape}, targets {a.shape}, gram {g.shape}")
    if not np.all(np.isfinite(w2)):
        raise ValueError("weights must be finite")

    def shaped(values: np.ndarray) -> np.ndarray:
        values = values.astype(out_dtype, copy=False)
        return values.reshape(m) if w.ndim == 1 else values

    cols = _direct_columns(a, w2)
    if cols is not None:
        return shaped(np.clip(w2[:, cols], 0.0, 1.0))
    out = np.zeros((t, m), dtype=np.float64)
    if m == 0 or t == 0:
        return shaped(out)
    mu = np.broadcast_to(np.asarray(sparsity, dtype=np.float64), (m,))
    g = 0.5 * (g + g.T)
    moving = np.einsum("mk,kl,ml->m", a, g, a) > 0
    if not moving.any() or not np.all(np.isfinite(g)):
        return shaped(out)
    unique, inverse = np.unique(a[moving], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse).astype(np.float64)          # keys per merged variable
    wf = w2.astype(np.float64)
    merged_mu = np.bincount(inverse, weights=mu[moving]) / counts
    cols = _direct_columns(unique, w2)
    if cols is not None and not merged_mu.any():
        merged = np.clip(wf[:, cols], 0.0, counts)
    else:
        merged = _box_least_squares(unique, g, wf, counts, merged_mu)
    out[:, moving] = merged[:, inverse] / counts[inverse]
    return shaped(np.clip(out, 0.0, 1.0))


def _box_least_squares(a: np.ndarray, g: np.ndarray, w: np.ndarray, upper: np.ndarray,
                       mu: np.ndarray) -> np.ndarray:
    """min over s in [0, upper] of (s a - w) G (s a - w)^T + sum RIDGE h_ii s_i^2 / upper_i
    + sum 2 mu_i mean(h_jj) s_i, for each row of w (see solve_key_values)."""
    ag = a @ g
    h = ag @ a.T
    h = 0.5 * (h + h.T)
    b = w @ ag.T - mu * float(np.diag(h).mean())
    h = h + np.diag(RIDGE * np.diag(h) / upper)
    d = np.sqrt(np.diag(h))
    hs = h / d[:, None] / d[None, :]                             # Jacobi scaling
    bs = b / d
    ub = upper * d
    try:
        z = np.clip(np.linalg.solve(hs, bs.T).T, 0.0, ub)
    except np.linalg.LinAlgError:          # cannot happen with the ridge; be safe anyway
        z = np.zeros_like(bs)
    z = _fista(hs, bs, ub, z, TOLERANCE * d)
    return z / d


def kkt_residual(weights: np.ndarray, targets: np.ndarray, gram: np.ndarray, values: np.ndarray,
                 sparsity: float | np.ndarray = 0.0) -> float:
    """How far `values` (T, M) are from solve_key_values's minimum: the largest projected
    Newton-diagonal step max |u - clip(u - grad_i / h_ii)| in key-value units (0 at the
    solution; keys that move nothing must be 0). For tests and diagnostics."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    a = np.asarray(targets, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float64)
    u = np.atleast_2d(np.asarray(values, dtype=np.float64))
    ag = a @ g
    h = ag @ a.T
    h = 0.5 * (h + h.T)
    diag = np.diag(h)
    moving = diag > 0
    worst = float(np.abs(u[:, ~moving]).max()) if (~moving).any() and u.size else 0.0
    if not moving.any():
        return worst
    hr = h + np.diag(RIDGE * diag)
    mu = np.broadcast_to(np.asarray(sparsity, dtype=np.float64), (a.shape[0],))
    grad = u @ hr - w @ ag.T + mu * float(diag[moving].mean())
    um, gm = u[:, moving], grad[:, moving]
    step = um - np.clip(um - gm / np.diag(hr)[moving], 0.0, 1.0)
    return max(worst, float(np.abs(step).max()))


def _fista(h: np.ndarray, b: np.ndarray, upper: np.ndarray, u: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """min 0.5 u h u^T - u b^T per row of b, 0 <= u <= upper: accelerated projected gradient
    with adaptive (gradient) restart per row, until no projected-gradient step exceeds
    `tolerance` (per column). Every CHECK_EVERY iterations the rows that have converged are
    set aside, so the work shrinks as frames finish (silence and simple frames first)."""
    lipschitz = float(np.linalg.eigvalsh(h)[-1])
    step = 1.0 / lipschitz
    out = np.clip(u, 0.0, upper)
    rows = np.arange(b.shape[0])
    u, bb = out.copy(), b
    y = u.copy()
    theta = np.ones((len(rows), 1))
    for i in range(MAX_ITERATIONS):
        grad = y @ h - bb
        u_next = np.clip(y - step * grad, 0.0, upper)
        move = u_next - u
        restart = (np.einsum("ij,ij->i", grad, move) > 0)[:, None]
        theta_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * theta * theta))
        y = u_next + np.where(restart, 0.0, (theta - 1.0) / theta_next) * move
        theta = np.where(restart, 1.0, theta_next)
        u = u_next
        if i % CHECK_EVERY == CHECK_EVERY - 1 or i == MAX_ITERATIONS - 1:
            done = np.all(np.abs(u - np.clip(u - step * (u @ h - bb), 0.0, upper)) < tolerance, axis=1)
            if done.any():
                out[rows[done]] = u[done]
                keep = ~done
                rows, u, y, bb, theta = rows[keep], u[keep], y[keep], bb[keep], theta[keep]
                if rows.size == 0:
                    break
    out[rows] = u
    return out


def driven_bindings(channels: Sequence[str], bindings: Sequence[KeyBinding],
                    strengths: Mapping[str, float] | None = None) -> list[KeyBinding]:
    """The keys a take writes: select_bindings minus those whose channels all have strength 0."""
    factors = strength_factors(channels, strengths)
    selected = select_bindings(channels, bindings)
    targets = key_targets(selected, channels)
    return [b for b, row in zip(selected, targets) if np.any((row != 0) & (factors != 0))]


@dataclass(frozen=True)
class KeySolution:
    keys: tuple[str, ...]       # shape key names, one per column of values
    sources: tuple[str, ...]    # what each key stands for (face_keys.KeyBinding.source)
    values: np.ndarray          # (T, M) in [0, 1]


def solve_keys(weights: np.ndarray, channels: Sequence[str], bindings: Sequence[KeyBinding],
               blendshapes: np.ndarray, *, strengths: Mapping[str, float] | None = None,
               vertex_weights: np.ndarray | None = None,
               regions: Mapping[str, np.ndarray] | None = None,
               landmarks: Mapping[str, int] | None = None) -> KeySolution:
    """Key values for a character from the model's weights, in one call (see module doc)."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != len(channels):
        raise ValueError(f"weights {w.shape} do not match {len(channels)} channels")
    scaled = apply_strengths(w, channels, strengths)
    driven = driven_bindings(channels, bindings, strengths)
    # One column per key: a key bound to several sources (the user gave one mouthPress key
    # both mouthPress_L and mouthPress_R) moves all of them.
    keys: dict[str, list[KeyBinding]] = {}
    for b in driven:
        keys.setdefault(b.key, []).append(b)
    rows = key_targets(driven, channels)
    targets = np.zeros((len(keys), len(channels)), dtype=np.float64)
    sparsity = np.zeros(len(keys))
    row_of = {id(b): m for m, b in enumerate(driven)}
    for i, (key, group) in enumerate(keys.items()):
        for b in group:
            targets[i] = np.maximum(targets[i], rows[row_of[id(b)]])
        sparsity[i] = VISEME_SPARSITY if all(is_viseme(b.source) for b in group) else 0.0
    if _direct_columns(targets, scaled) is not None:
        # a key per channel: a copy, whatever the Gram (skip its pass over every vertex)
        gram = np.zeros((len(channels), len(channels)))
    else:
        if vertex_weights is None:
            vertex_weights = default_vertex_weights(blendshapes, channels, regions)
        gram = channel_gram(blendshapes, vertex_weights)
        if landmarks and {"upper_lip_center", "lower_lip_center"} <= set(landmarks) and LIP_GAP_WEIGHT > 0:
            # the lip-centre pair counts as LIP_GAP_WEIGHT of all the (weighted) vertices
            gap = lip_gap_gram(blendshapes, int(landmarks["upper_lip_center"]), int(landmarks["lower_lip_center"]))
            gram = gram + LIP_GAP_WEIGHT * float(np.sum(vertex_weights)) * gap
    values = solve_key_values(scaled, targets, gram, sparsity)
    sources = tuple("+".join(dict.fromkeys(b.source for b in group)) for group in keys.values())
    return KeySolution(tuple(keys), sources, values)
