"""Solving the model's ARKit weights onto the keys a character has, on the real ICT head."""
from __future__ import annotations

import time

import numpy as np
import pytest

from wav2sem_lipsync.core import face_keys as fk
from wav2sem_lipsync.core import key_solve as ks
from wav2sem_lipsync.core.face_keys import viseme_row as viseme_weights
from wav2sem_lipsync.core.visemes import VISEME_SHAPES
from wav2sem.heads import SPEECH_CHANNELS, ict_head

CHANNELS = list(SPEECH_CHANNELS)
K = len(CHANNELS)


@pytest.fixture(scope="module")
def head():
    return ict_head()


@pytest.fixture(scope="module")
def gram(head):
    weights = ks.default_vertex_weights(head.blendshape_deltas, CHANNELS, head.regions)
    return ks.channel_gram(head.blendshape_deltas, weights)


def frame(**values: float) -> np.ndarray:
    """One (K,) weight frame; side-less names set both sides."""
    w = np.zeros(K, dtype=np.float32)
    for name, value in values.items():
        for i, c in enumerate(CHANNELS):
            if c == name or c in (name + "_L", name + "_R"):
                w[i] = value
    return w


def lip_gap(head, channel_weights: np.ndarray) -> float:
    """Upper minus lower lip-centre height (m) on the ICT head for channel weights (K,)."""
    upper, lower = head.lip_centres or (5532, 5519)
    offsets = head.offsets_from_weights(np.asarray(channel_weights, dtype=np.float32)[None])[0]
    return float((head.vertices[upper] + offsets[upper])[1] - (head.vertices[lower] + offsets[lower])[1])


def solve(keys, weights, gram, sparsity=0.0):
    bindings = fk.find_face_keys(keys)
    targets = ks.key_targets(bindings, CHANNELS)
    return bindings, targets, ks.solve_key_values(np.atleast_2d(weights), targets, gram, sparsity)


def smooth_weights(t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((t + 20, K))
    kernel = np.hanning(9) / np.hanning(9).sum()
    smooth = np.stack([np.convolve(noise[:, i], kernel, "same") for i in range(K)], axis=1)[10:-10]
    return np.clip(smooth * 0.8 - 0.1, 0.0, 1.0).astype(np.float32)


def test_lip_centres_are_upper_and_lower(head):
    assert abs(lip_gap(head, np.zeros(K))) < 0.002                 # closed at rest
    assert lip_gap(head, frame(jawOpen=0.5)) > 0.01                 # the jaw opens them
    assert lip_gap(head, frame(jawOpen=0.3, mouthClose=0.3)) < 0.001  # mouthClose seals them


def test_full_set_is_the_identity(gram):
    rng = np.random.default_rng(3)
    w = (rng.random((50, K)) * 1.4 - 0.2).astype(np.float32)        # also outside 0..1
    order = rng.permutation(K)
    keys = [CHANNELS[i] for i in order]
    _, targets, values = solve(keys, w, gram)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.clip(w[:, order], 0, 1))


def test_full_set_apple_spelling_without_brows_is_the_identity(head):
    keys = [c.replace("_L", "Left").replace("_R", "Right") for c in CHANNELS if not c.startswith("brow")]
    keys += ["browInnerUp", "browOuterUpLeft", "browOuterUpRight", "eyeBlinkLeft"]
    w = smooth_weights(30)
    solution = ks.solve_keys(w, CHANNELS, fk.find_face_keys(keys), head.blendshape_deltas)
    assert not any(k.startswith(("brow", "eye")) for k in solution.keys)   # upper face left alone
    lips_jaw = [i for i, c in enumerate(CHANNELS) if not c.startswith("brow")]
    np.testing.assert_array_equal(solution.values, np.clip(w[:, lips_jaw], 0, 1))


def test_partial_without_mouth_close_keeps_the_lips_sealed(head, gram):
    keys = [c for c in CHANNELS if c != "mouthClose"]
    w = frame(jawOpen=0.3, mouthClose=0.3)
    bindings, targets, values = solve(keys, w, gram)
    solved_gap = lip_gap(head, values[0] @ targets)
    dropped_gap = lip_gap(head, frame(jawOpen=0.3))                 # just leaving mouthClose out
    assert dropped_gap > 0.008
    assert solved_gap < 0.3 * dropped_gap and solved_gap < 0.003
    # and open vowels stay open
    w_open = frame(jawOpen=0.5, mouthLowerDown=0.3)
    _, _, open_values = solve(keys, w_open, gram)
    assert lip_gap(head, open_values[0] @ targets) > 0.9 * lip_gap(head, w_open)


def test_only_jaw_and_funnel_jaw_follows(gram):
    w = smooth_weights(300, seed=1)
    bindings, targets, values = solve(["Basis", "jawOpen", "mouthFunnel"], w, gram)
    jaw = values[:, [b.key for b in bindings].index("jawOpen")]
    assert np.corrcoef(jaw, w[:, CHANNELS.index("jawOpen")])[0, 1] > 0.9
    _, _, open_values = solve(["jawOpen", "mouthFunnel"], frame(jawOpen=0.5, mouthLowerDown=0.2), gram)
    assert 0.4 < open_values[0, 0] < 0.7
    _, _, round_values = solve(["jawOpen", "mouthFunnel"], frame(jawOpen=0.2, mouthFunnel=0.6), gram)
    assert round_values[0, 1] > 0.4


def viseme_solution(head, w):
    bindings = fk.find_face_keys(list(fk.OCULUS_VISEMES))
    solution = ks.solve_keys(np.atleast_2d(w), CHANNELS, bindings, head.blendshape_deltas)
    return dict(zip(solution.sources, solution.values[0]))


@pytest.mark.parametrize("w, expected", [
    (frame(jawOpen=0.5, mouthLowerDown=0.3), {"viseme_aa"}),
    (frame(jawOpen=0.6), {"viseme_aa"}),
    (frame(jawOpen=0.4, mouthFunnel=0.5), {"viseme_O"}),
    (frame(jawOpen=0.1, mouthClose=0.1, mouthPress=0.5), {"viseme_PP"}),
    (frame(jawOpen=0.15, mouthPucker=0.6, mouthFunnel=0.3), {"viseme_U"}),
    (frame(jawOpen=0.05, mouthRollLower=0.5), {"viseme_FF"}),
    (frame(jawOpen=0.1, mouthSmile=0.4, mouthStretch=0.3), {"viseme_I"}),
])
def test_viseme_only_picks_the_viseme(head, w, expected):
    values = viseme_solution(head, w)
    best = max(values, key=lambda k: values[k])
    assert best in expected, values
    assert values[best] > 0.5


def test_viseme_only_rest_is_rest(head):
    values = viseme_solution(head, np.zeros(K, dtype=np.float32))
    assert max(values.values()) == 0.0


def test_vrm_vowels_open_and_round(head):
    bindings = fk.find_face_keys(["A", "I", "U", "E", "O"])
    w = np.stack([frame(jawOpen=0.55, mouthLowerDown=0.2), frame(jawOpen=0.15, mouthPucker=0.6, mouthFunnel=0.3)])
    solution = ks.solve_keys(w, CHANNELS, bindings, head.blendshape_deltas)
    assert solution.keys[int(np.argmax(solution.values[0]))] == "A"
    assert solution.keys[int(np.argmax(solution.values[1]))] == "U"


def test_duplicate_keys_split_evenly(gram):
    keys = [c for c in CHANNELS if c != "mouthClose"] + ["JawOpen"]
    w = frame(jawOpen=0.6, mouthFunnel=0.2)
    bindings, targets, values = solve(keys, w, gram)
    names = [b.key for b in bindings]
    a, b = values[0, names.index("jawOpen")], values[0, names.index("JawOpen")]
    assert a == pytest.approx(b, abs=1e-6)
    assert a + b == pytest.approx(0.6, abs=0.02)
    # duplicates of a full set: each key takes half, together the weight
    _, _, dup = solve(CHANNELS + ["JawOpen"], w, gram)
    assert dup[0, CHANNELS.index("jawOpen")] == pytest.approx(0.3, abs=1e-3)
    assert dup[0, -1] == pytest.approx(0.3, abs=1e-3)


def test_degenerate_inputs(gram):
    w = smooth_weights(20)
    # viseme_sil moves nothing: always 0
    bindings, targets, values = solve(["viseme_sil", "viseme_aa"], w, gram)
    assert np.all(values[:, 0] == 0)
    assert not np.any(np.isnan(values))
    # a singular (all-zero) Gram: nothing can be told apart, all keys 0
    zero = ks.solve_key_values(w, ks.key_targets(fk.find_face_keys(["jawOpen", "mouthFunnel"]), CHANNELS),
                               np.zeros((K, K)))
    assert zero.shape == (20, 2) and np.all(zero == 0)
    # a rank-one Gram (only jawOpen moves anything)
    rank_one = np.zeros((K, K))
    rank_one[CHANNELS.index("jawOpen"), CHANNELS.index("jawOpen")] = 1.0
    _, _, values = solve(["jawOpen", "mouthFunnel"], w, rank_one)
    np.testing.assert_allclose(values[:, 0], np.clip(w[:, CHANNELS.index("jawOpen")], 0, 1) / (1 + ks.RIDGE), atol=1e-4)
    assert np.all(values[:, 1] == 0)
    # no keys, no frames, one frame as a vector
    assert ks.solve_key_values(w, np.zeros((0, K)), gram).shape == (20, 0)
    assert ks.solve_key_values(w[:0], ks.key_targets(bindings, CHANNELS), gram).shape == (0, 2)
    assert ks.solve_key_values(w[0], ks.key_targets(bindings, CHANNELS), gram).shape == (2,)
    # a key outside the channels gets a zero target
    assert not ks.key_targets(fk.find_face_keys(["eyeBlinkLeft"]), CHANNELS).any()
    with pytest.raises(ValueError):
        ks.solve_key_values(w, np.zeros((2, K - 1)), gram)


def test_solution_is_the_constrained_minimum(gram):
    rng = np.random.default_rng(5)
    w = np.clip(rng.random((200, K)) * 0.7 - 0.1, 0, 1)
    keys = ([c for c in CHANNELS if c not in ("mouthClose", "mouthPress_L")] + list(fk.OCULUS_VISEMES)
            + ["browInnerUp", "mouthSmile"])
    bindings, targets, values = solve(keys, w, gram)
    assert values.min() >= 0 and values.max() <= 1
    assert ks.kkt_residual(w, targets, gram, values) < 1e-3
    # and no other box point does better: compare with random feasible perturbations
    def cost(u):
        r = u @ targets - w
        h = targets @ gram @ targets.T
        return np.einsum("tk,kl,tl->t", r, gram, r) + ks.RIDGE * np.sum(u * u * np.diag(h), axis=1)
    base = cost(values.astype(np.float64))
    for _ in range(5):
        other = np.clip(values + rng.normal(0, 0.02, values.shape), 0, 1)
        assert np.all(cost(other) >= base - 1e-9 * np.abs(base).max())


def test_speed_1800_frames(gram):
    w = smooth_weights(1800, seed=2)
    sets = {
        "visemes": list(fk.OCULUS_VISEMES),
        "no mouthClose": [c for c in CHANNELS if c != "mouthClose"],
        "60 keys": (CHANNELS + list(fk.OCULUS_VISEMES) + list(fk.VRM_VOWELS)
                    + ["JawOpen", "mouth_close", "MouthFunnel", "BS.mouthPucker", "mouthPressLeft", "mouthPressRight",
                       "MouthSmileLeft", "mouthSmileRight", "mouthSmile", "mouthStretch", "mouthUpperUp", "browInnerUp",
                       "mouthLowerDown", "mouthShrug_Lower", "Mouth_Roll_Upper", "jaw_forward", "mouthRollLower"]),
    }
    for name, keys in sets.items():
        bindings = fk.find_face_keys(keys)
        targets = ks.key_targets(bindings, CHANNELS)
        start = time.perf_counter()
        values = ks.solve_key_values(w, targets, gram)
        elapsed = time.perf_counter() - start
        assert values.shape == (1800, len(bindings))
        assert ks.kkt_residual(w, targets, gram, values) < 1e-3
        assert elapsed < 2.0, f"{name}: {elapsed:.2f} s"     # ~0.05-0.5 s here; CPUs are shared
    assert len(sets["60 keys"]) == 60


def test_strengths(head):
    w = np.ones((4, K), dtype=np.float32) * 0.5
    out = ks.apply_strengths(w, CHANNELS)
    assert out.dtype == np.float32
    for i, c in enumerate(CHANNELS):
        assert out[0, i] == (0.0 if c.startswith("brow") else 0.5)
    out = ks.apply_strengths(w, CHANNELS, {"jaw": 2.0, "upper_face": 0.5})
    assert out[0, CHANNELS.index("jawOpen")] == 1.0
    assert out[0, CHANNELS.index("mouthClose")] == 0.5
    assert out[0, CHANNELS.index("browInnerUp_L")] == 0.25
    with pytest.raises(ValueError):
        ks.apply_strengths(w, CHANNELS, {"eyes": 1.0})
    keys = fk.find_face_keys(CHANNELS + ["eyeBlink_L"])
    assert not any(b.key.startswith("brow") for b in ks.driven_bindings(CHANNELS, keys))
    driven = ks.driven_bindings(CHANNELS, keys, {"upper_face": 1.0})
    assert {b.key for b in driven} == set(CHANNELS)                 # eyeBlink is no channel: never
    lips_off = ks.solve_keys(w, CHANNELS, keys, head.blendshape_deltas, strengths={"lips": 0.0})
    assert lips_off.keys == ("jawForward", "jawOpen") or set(lips_off.keys) == {"jawOpen", "jawForward"}


def test_viseme_table_is_plausible():
    assert viseme_weights("viseme_sil", CHANNELS).sum() == 0
    for viseme, shape in VISEME_SHAPES.items():
        row = viseme_weights(viseme, CHANNELS)
        assert row.min() >= 0 and row.max() <= 1
        assert all(name in CHANNELS or name + "_L" in CHANNELS for name in shape), viseme
    jaw = CHANNELS.index("jawOpen")
    assert viseme_weights("viseme_aa", CHANNELS)[jaw] > viseme_weights("viseme_E", CHANNELS)[jaw] > viseme_weights("viseme_I", CHANNELS)[jaw]
    assert viseme_weights("viseme_PP", CHANNELS)[CHANNELS.index("mouthClose")] > 0
    assert viseme_weights("viseme_U", CHANNELS)[CHANNELS.index("mouthPucker")] >= 0.5


def test_default_vertex_weights(head):
    d = head.blendshape_deltas
    weights = ks.default_vertex_weights(d, CHANNELS)
    assert weights.shape == (head.vertex_count,) and weights.min() == 1.0
    upper, lower = head.lip_centres or (5532, 5519)
    assert weights[upper] > 5 and weights[lower] > 5                 # the lips count most
    lips = np.array([upper, lower])
    region = ks.default_vertex_weights(d, CHANNELS, {"lips": lips})
    assert region[upper] == 1 + ks.LIPS_BOOST and region.sum() == head.vertex_count + 2 * ks.LIPS_BOOST
    assert ks.channel_gram(d).shape == (K, K)
    with pytest.raises(ValueError):
        ks.channel_gram(d, np.ones(3))


def test_half_keys_take_the_channel_value(gram):
    keys = [c for c in CHANNELS if c != "mouthRollLower"] + ["mouthRollLower_L", "mouthRollLower_R"]
    w = frame(jawOpen=0.1, mouthRollLower=0.6, mouthUpperUp=0.2)
    bindings, targets, values = solve(keys, w, gram)
    names = [b.key for b in bindings]
    for half in ("mouthRollLower_L", "mouthRollLower_R"):
        assert values[0, names.index(half)] == pytest.approx(0.6, abs=0.01)
    assert values[0, names.index("jawOpen")] == pytest.approx(0.1, abs=0.01)


def test_apple_spelled_model_channels_solve_like_ict(head, gram):
    apple = [c.replace("_L", "Left").replace("_R", "Right") for c in CHANNELS]
    keys = fk.find_face_keys([c for c in CHANNELS if c != "mouthClose"])
    w = smooth_weights(40, seed=4)
    ict = ks.solve_key_values(w, ks.key_targets(keys, CHANNELS), gram)
    other = ks.solve_key_values(w, ks.key_targets(keys, apple), gram)
    np.testing.assert_array_equal(ict, other)
    vis = fk.find_face_keys(list(fk.OCULUS_VISEMES))
    np.testing.assert_array_equal(ks.key_targets(vis, CHANNELS), ks.key_targets(vis, apple))


def test_one_key_bound_to_two_channels_is_one_column(head):
    keys = [c for c in CHANNELS if not c.startswith("mouthPress")]
    bindings = fk.find_face_keys(keys + ["PressBoth"])
    bindings = fk.apply_overrides(bindings, {"mouthPress_L": "PressBoth"})
    bindings.append(fk.KeyBinding("PressBoth", "mouthPress_R"))
    w = np.stack([frame(mouthPress=0.7, jawOpen=0.2)])
    solution = ks.solve_keys(w, CHANNELS, bindings, head.blendshape_deltas)
    assert solution.keys.count("PressBoth") == 1
    i = solution.keys.index("PressBoth")
    assert solution.sources[i] == "mouthPress_L+mouthPress_R"
    assert solution.values[0, i] == pytest.approx(0.7, abs=0.02)


def test_lip_gap_term_seals_without_mouth_close(head):
    """With the template's lip-centre landmarks the solve keeps the lips' opening: a
    character without mouthClose seals on m/b/p (under 0.3 mm), vowels stay open."""
    keys = fk.find_face_keys([c for c in CHANNELS if c != "mouthClose"])
    w = np.stack([frame(jawOpen=0.3, mouthClose=0.3), frame(jawOpen=0.15, mouthClose=0.15, mouthPress=0.3),
                  frame(jawOpen=0.5, mouthLowerDown=0.3)])
    landmarks = {"upper_lip_center": head.lip_centres[0], "lower_lip_center": head.lip_centres[1]} \
        if head.lip_centres else {"upper_lip_center": 5532, "lower_lip_center": 5519}
    sealed = ks.solve_keys(w, CHANNELS, keys, head.blendshape_deltas, regions=head.regions, landmarks=landmarks)
    loose = ks.solve_keys(w, CHANNELS, keys, head.blendshape_deltas, regions=head.regions)
    targets = ks.key_targets([fk.KeyBinding(k, s) for k, s in zip(sealed.keys, sealed.sources)], CHANNELS)
    gaps = [lip_gap(head, sealed.values[i] @ targets) for i in range(3)]
    loose_gaps = [lip_gap(head, loose.values[i] @ targets) for i in range(3)]
    assert gaps[0] < 0.0003 and gaps[1] < 0.0003
    assert gaps[0] <= loose_gaps[0] + 1e-6
    assert gaps[2] > 0.9 * lip_gap(head, w[2])
    gap_gram = ks.lip_gap_gram(head.blendshape_deltas, *landmarks.values())
    assert gap_gram.shape == (K, K) and np.allclose(gap_gram, gap_gram.T)


def test_non_finite_weights_are_refused(gram):
    w = smooth_weights(5)
    w[2, 0] = np.nan
    with pytest.raises(ValueError):
        ks.solve_key_values(w, ks.key_targets(fk.find_face_keys(["jawOpen", "mouthFunnel"]), CHANNELS), gram)
