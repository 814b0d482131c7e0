"""Template -> mesh mapping, resampling and basis compression."""
from __future__ import annotations

import math

import numpy as np
import pytest

from wav2sem_lipsync.core import mapping


def rotation_about(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


@pytest.fixture
def template():
    rng = np.random.default_rng(1)
    return rng.normal(size=(300, 3)).astype(np.float32) * [0.08, 0.11, 0.09]


def test_fit_recovers_y_up_to_z_up_in_centimetres(template):
    # A template imported Y-up into Blender's Z-up world, in centimetres, shifted.
    rotation = rotation_about("x", 90)
    mesh = (100.0 * template @ rotation.T + [5.0, -2.0, 160.0]).astype(np.float32)
    fit = mapping.fit_similarity(template, mesh)
    assert fit.scale == pytest.approx(100.0, rel=1e-5)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-5)
    np.testing.assert_allclose(fit.apply(template), mesh, atol=1e-3)
    assert fit.relative_rms < 1e-5
    # An offset straight down in template space (-Y) is -Z on the mesh, 100 x longer.
    offset = np.array([[0.0, -0.01, 0.0]], np.float32)
    np.testing.assert_allclose(fit.apply_to_offsets(offset), [[0.0, 0.0, -1.0]], atol=1e-5)


def test_fit_never_reflects(template):
    mirrored = template * [-1.0, 1.0, 1.0]
    fit = mapping.fit_similarity(template, mirrored)
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)
    assert fit.relative_rms > 0.1   # a mirror image is not a similarity: reported as a poor fit


def test_vertex_count_mismatch_names_both_counts(template):
    with pytest.raises(mapping.MappingError, match=r"Head has 299 vertices .* template has 300"):
        mapping.prepare_take(template, template[:299], np.zeros((3, 300, 3), np.float32), 30, 30,
                             mesh_name="Head")


@pytest.mark.parametrize("fps, fps_base, expected", [(30, 1.0, 30.0), (30, 1.001, 29.97002997), (24, 1.0, 24.0)])
def test_scene_fps(fps, fps_base, expected):
    assert mapping.scene_fps(fps, fps_base) == pytest.approx(expected)


def test_resample_keeps_time_and_duration():
    # A ramp at 30 fps: value = time in seconds. Resampled values must still equal time.
    source = (np.arange(91, dtype=np.float32) / 30.0).reshape(-1, 1, 1)        # 3.0 s
    for target_fps in (24.0, 25.0, 30.0 / 1.001, 60.0):
        out = mapping.resample(source, 30.0, target_fps)
        times = np.arange(len(out)) / target_fps
        np.testing.assert_allclose(out[:, 0, 0], times, atol=1e-5)
        assert times[-1] <= 3.0 + 1e-9 < times[-1] + 1.0 / target_fps


def test_resample_same_rate_is_identity():
    data = np.random.default_rng(0).normal(size=(10, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(mapping.resample(data, 30.0, 30.0), data)


def low_rank_motion(frames: int, vertices: int, rank: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(frames, rank))
    fields = rng.normal(size=(rank, vertices * 3)) * 0.01
    data = weights @ fields + noise * rng.normal(size=(frames, vertices * 3)) * 0.01
    return data.reshape(frames, vertices, 3).astype(np.float32)


@pytest.mark.parametrize("frames, vertices", [(40, 50), (900, 2000)])   # exact and randomized SVD
def test_compress_round_trip_under_tolerance(frames, vertices):
    offsets = low_rank_motion(frames, vertices, rank=12, noise=0.02)
    for tolerance in (0.05, 0.01):
        take = mapping.compress(offsets, tolerance)
        error = np.linalg.norm(take.reconstruct() - offsets) / np.linalg.norm(offsets)
        assert error <= tolerance + 1e-4
        assert error == pytest.approx(take.relative_error, abs=1e-3)
        assert len(take.basis) <= mapping.MAX_BASIS_KEYS
        # Weights are scaled into the slider range [-1, 1] so Blender never clamps them.
        assert np.abs(take.weights).max() <= 1.0 + 1e-6


def test_compress_picks_the_true_rank_for_exact_low_rank_data():
    offsets = low_rank_motion(200, 400, rank=5)
    take = mapping.compress(offsets, 1e-3)   # float32 energy is exact to ~3e-4
    assert len(take.basis) == 5
    assert take.relative_error < 1e-3


def test_compress_needing_more_than_the_small_sketch():
    offsets = low_rank_motion(600, 1500, rank=50)          # randomized path, > 32 keys
    take = mapping.compress(offsets, 1e-3)
    assert len(take.basis) == 50 and take.relative_error < 1e-3
    error = np.linalg.norm(take.reconstruct() - offsets) / np.linalg.norm(offsets)
    assert error < 1e-3


def test_compress_caps_keys_and_reports_error():
    offsets = np.random.default_rng(0).normal(size=(120, 100, 3)).astype(np.float32)   # full rank
    take = mapping.compress(offsets, 0.001, max_keys=8)
    assert len(take.basis) == 8
    assert take.relative_error > 0.001
    prepared = mapping.prepare_take(np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32),
                                    np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32),
                                    offsets, 30, 30, tolerance=1e-6)
    assert any("tolerance" in w for w in prepared.warnings)


def test_compress_all_zero_offsets():
    take = mapping.compress(np.zeros((10, 20, 3), np.float32))
    assert take.relative_error == 0.0 and not take.reconstruct().any()


def test_prepare_take_maps_resamples_and_scales(template):
    rotation = rotation_about("x", 90)
    mesh = (template @ rotation.T * 2.0).astype(np.float32)
    offsets = low_rank_motion(61, len(template), rank=3)                 # 2 s at 30 fps
    expected = mapping.resample(offsets, 30.0, 24.0) @ (2.0 * rotation).T * 0.5
    compact = mapping.prepare_take(template, mesh, offsets, 30.0, 24.0, intensity=0.5, tolerance=1e-3)
    per_frame = mapping.prepare_take(template, mesh, offsets, 30.0, 24.0, intensity=0.5, mode="PER_FRAME")
    assert compact.frames == per_frame.frames == 49
    np.testing.assert_allclose(per_frame.mesh_offsets, expected, atol=1e-6)
    np.testing.assert_allclose(compact.compact.reconstruct(), expected, atol=1e-5)
    assert not compact.warnings


def test_prepare_take_rejects_unknown_mode(template):
    with pytest.raises(mapping.MappingError, match="output mode"):
        mapping.prepare_take(template, template, np.zeros((2, 300, 3), np.float32), 30, 30, mode="BONES")


@pytest.mark.parametrize("mode", ["COMPACT", "PER_FRAME"])
@pytest.mark.parametrize("broken", ["offsets", "template", "rest"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_prepare_take_refuses_non_finite_input(template, mode, broken, value):
    """NaN gave 'SVD did not converge' in COMPACT mode and garbage keys in PER_FRAME mode."""
    offsets = np.zeros((12, len(template), 3), np.float32)
    offsets[:, :10, 1] = 0.01
    arrays = {"offsets": offsets, "template": template.copy(), "rest": template * 10.0}
    arrays[broken][(3, slice(None), 1) if broken == "offsets" else (5, 1)] = value
    with pytest.raises(mapping.MappingError, match=r"^[^\n]*(not finite|NaN)[^\n]*\.$") as info:
        mapping.prepare_take(arrays["template"], arrays["rest"], arrays["offsets"], 30.0, 30.0, mode=mode,
                             mesh_name="'Head'")
    message = str(info.value)
    assert {"offsets": "backend", "template": "template", "rest": "'Head'"}[broken] in message


def test_channel_take_maps_each_channel_and_keeps_the_weights(template):
    rotation = rotation_about("x", 90)
    mesh = (template @ rotation.T * 2.0).astype(np.float32)
    rng = np.random.default_rng(3)
    deltas = rng.normal(scale=0.01, size=(3, len(template), 3)).astype(np.float32)
    weights = rng.uniform(-0.1, 1.2, size=(61, 3)).astype(np.float32)
    prepared = mapping.prepare_channel_take(template, mesh, deltas, weights, ("jawOpen", "mouthClose", "browInnerUp_L"),
                                            30.0, 24.0, np.array([1.0, 0.5, 0.0], np.float32))
    assert prepared.key_names == ("jawOpen", "mouthClose")             # gain 0: no key
    assert prepared.frames == 49 and prepared.compact.relative_error == 0.0
    np.testing.assert_allclose(prepared.compact.basis, deltas[:2] @ (2.0 * rotation).T, atol=1e-6)
    expected = mapping.resample(weights, 30.0, 24.0)[:, :2] * [1.0, 0.5]
    np.testing.assert_allclose(prepared.compact.weights, expected, atol=1e-6)   # not clipped
    with pytest.raises(mapping.MappingError, match="strength is 0"):
        mapping.prepare_channel_take(template, mesh, deltas, weights, ("a", "b", "c"), 30, 30, np.zeros(3))
    with pytest.raises(mapping.MappingError, match="weights of shape"):
        mapping.prepare_channel_take(template, mesh, deltas, weights[:, :2], ("a", "b", "c"), 30, 30, np.ones(3))


# --- takes from factors (a factored model's coefficients @ output basis) ---------------------

def factors(frames: int, vertices: int, rank: int, seed: int = 0, decay: float = 3.0):
    """(T, R) coefficients with a decaying spectrum and a last column of ones (the bias row,
    as the backend sends it), and an (R, V, 3) basis that is not orthogonal."""
    rng = np.random.default_rng(seed)
    coefficients = rng.normal(size=(frames, rank)) * np.logspace(0, -decay, rank)
    coefficients[:, -1] = 1.0
    basis = rng.normal(size=(rank, vertices, 3)) * 0.01 + rng.normal(size=(1, vertices, 3)) * 0.005
    return coefficients.astype(np.float32), basis.astype(np.float32)


def dense(coefficients: np.ndarray, basis: np.ndarray) -> np.ndarray:
    r, v, _ = basis.shape
    return (coefficients.astype(np.float64) @ basis.reshape(r, -1).astype(np.float64)).reshape(-1, v, 3)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("frames, vertices, rank", [(40, 50, 17), (900, 2000, 65)])
def test_compress_factors_is_the_exact_truncated_svd(frames, vertices, rank):
    coefficients, basis = factors(frames, vertices, rank)
    offsets = dense(coefficients, basis)
    flat = offsets.reshape(frames, -1)
    singular = np.linalg.svd(flat, compute_uv=False)
    for tolerance in (0.05, 0.01, 1e-3):
        take = mapping.compress_factors(coefficients, basis, tolerance)
        keys = len(take.basis)
        optimum = np.sqrt((singular[keys:] ** 2).sum() / (singular ** 2).sum())   # Eckart-Young
        error = relative(take.reconstruct(), offsets)
        assert error <= tolerance
        assert error == pytest.approx(optimum, rel=1e-3, abs=1e-6)
        assert take.relative_error == pytest.approx(error, rel=1e-3, abs=1e-6)
        fewer = np.sqrt((singular[keys - 1:] ** 2).sum() / (singular ** 2).sum())
        assert fewer > tolerance                             # the fewest keys that reach the tolerance
        assert np.abs(take.weights).max() == pytest.approx(1.0)


def test_compress_factors_matches_compress_on_the_dense_offsets():
    coefficients, basis = factors(300, 400, 17, seed=2)
    offsets = dense(coefficients, basis).astype(np.float32)
    old, new = mapping.compress(offsets, 0.01), mapping.compress_factors(coefficients, basis, 0.01)
    assert len(new.basis) == len(old.basis)
    assert relative(new.reconstruct(), offsets) == pytest.approx(relative(old.reconstruct(), offsets), rel=1e-3)


def test_compress_factors_full_rank_is_exact_and_caps_keys():
    coefficients, basis = factors(120, 100, 17, seed=3)
    offsets = dense(coefficients, basis)
    take = mapping.compress_factors(coefficients, basis, 0.0)
    assert len(take.basis) == 17 and relative(take.reconstruct(), offsets) < 1e-6
    capped = mapping.compress_factors(coefficients, basis, 0.0, max_keys=8)
    assert len(capped.basis) == 8 and capped.relative_error == pytest.approx(relative(capped.reconstruct(), offsets),
                                                                              rel=1e-4)


def test_compress_factors_with_a_rank_deficient_basis():
    """Repeated basis rows (a rank-deficient Gram matrix) lose nothing."""
    coefficients, basis = factors(80, 60, 8, seed=4)
    basis = np.concatenate([basis, basis[:3] * 2.0])
    coefficients = np.concatenate([coefficients, coefficients[:, :3]], axis=1)
    offsets = dense(coefficients, basis)
    take = mapping.compress_factors(coefficients, basis, 0.0)
    assert len(take.basis) <= 8 and relative(take.reconstruct(), offsets) < 1e-5


def test_compress_factors_all_zero():
    coefficients, basis = factors(10, 20, 5)
    take = mapping.compress_factors(np.zeros_like(coefficients), basis)
    assert take.relative_error == 0.0 and not take.reconstruct().any() and take.weights.shape == (10, 1)


@pytest.mark.parametrize("mode", ["COMPACT", "PER_FRAME"])
def test_factor_take_equals_the_dense_take(template, mode):
    """Resampling, intensity and the similarity act on the factors exactly as on the offsets."""
    rotation = rotation_about("x", 90)
    mesh = (template @ rotation.T * 2.0 + [0.0, 1.0, 2.0]).astype(np.float32)
    coefficients, basis = factors(61, len(template), 17, seed=5)
    offsets = dense(coefficients, basis).astype(np.float32)
    old = mapping.prepare_take(template, mesh, offsets, 30.0, 24.0, 0.5, mode, tolerance=1e-3)
    new = mapping.prepare_factor_take(template, mesh, coefficients, basis, 30.0, 24.0, 0.5, mode, tolerance=1e-3)
    assert new.frames == old.frames == 49 and new.warnings == old.warnings
    expected = mapping.resample(offsets, 30.0, 24.0) @ (2.0 * rotation).T * 0.5
    if mode == "PER_FRAME":
        np.testing.assert_allclose(new.mesh_offsets, expected, atol=1e-6)
    else:
        assert relative(new.compact.reconstruct(), expected) <= 1e-3
        assert len(new.compact.basis) <= len(old.compact.basis)


def test_factor_take_refuses_bad_shapes_and_values(template):
    coefficients, basis = factors(12, len(template), 5)
    with pytest.raises(mapping.MappingError, match=r"output basis has shape \(5, 299, 3\)"):
        mapping.prepare_factor_take(template, template, coefficients, basis[:, :299], 30, 30)
    with pytest.raises(mapping.MappingError, match=r"coefficients of shape \(12, 4\), expected \(frames, 5\)"):
        mapping.prepare_factor_take(template, template, coefficients[:, :4], basis, 30, 30)
    broken = coefficients.copy()
    broken[3, 1] = np.nan
    with pytest.raises(mapping.MappingError, match="coefficients contain values that are not finite"):
        mapping.prepare_factor_take(template, template, broken, basis, 30, 30)
    with pytest.raises(mapping.MappingError, match="output mode"):
        mapping.prepare_factor_take(template, template, coefficients, basis, 30, 30, mode="BONES")


# --- inputs are never changed ----------------------------------------------------------------

def test_resample_returns_a_new_array_even_at_the_same_rate():
    data = np.ones((4, 2, 3), np.float32)
    assert not np.shares_memory(mapping.resample(data, 30.0, 30.0), data)
    assert not np.shares_memory(mapping.resample(data[:0], 30.0, 24.0), data)


def prepare_calls(template):
    """Each prepare_* with its array inputs by name: (name, call(arrays), arrays)."""
    rng = np.random.default_rng(4)
    mesh = (template @ rotation_about("z", 30).T * 1.5).astype(np.float32)
    coefficients, basis = factors(20, len(template), 4, seed=2)
    return [
        ("prepare_take", lambda a, fps, mode: mapping.prepare_take(
            a["template"], a["mesh"], a["offsets"], 30.0, fps, intensity=0.5, mode=mode),
         {"template": template, "mesh": mesh,
          "offsets": rng.normal(scale=0.01, size=(20, len(template), 3)).astype(np.float32)}),
        ("prepare_factor_take", lambda a, fps, mode: mapping.prepare_factor_take(
            a["template"], a["mesh"], a["coefficients"], a["basis"], 30.0, fps, intensity=0.5, mode=mode),
         {"template": template, "mesh": mesh, "coefficients": coefficients, "basis": basis}),
        ("prepare_channel_take", lambda a, fps, mode: mapping.prepare_channel_take(
            a["template"], a["mesh"], a["blendshapes"], a["weights"], ("jawOpen", "mouthClose"), 30.0, fps,
            a["gains"]),
         {"template": template, "mesh": mesh,
          "blendshapes": rng.normal(scale=0.01, size=(2, len(template), 3)).astype(np.float32),
          "weights": rng.uniform(0.0, 1.0, size=(20, 2)).astype(np.float32),
          "gains": np.array([0.5, 2.0], np.float32)}),
    ]


@pytest.mark.parametrize("target_fps", [30.0, 24.0], ids=["same-rate", "resampled"])
@pytest.mark.parametrize("mode", ["COMPACT", "PER_FRAME"])
def test_prepare_functions_leave_the_callers_arrays_unchanged(template, target_fps, mode):
    for name, call, arrays in prepare_calls(template):
        before = {key: array.copy() for key, array in arrays.items()}
        prepared = call(arrays, target_fps, mode)
        assert prepared.frames > 0
        for key, array in arrays.items():
            np.testing.assert_array_equal(array, before[key], err_msg=f"{name} changed the caller's {key}")
