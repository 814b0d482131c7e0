"""face_plan: which mode a mesh gets from a model (before any generate), and a blendshape
model's weights on the character's own keys. No bpy."""
from __future__ import annotations

import numpy as np
import pytest

from wav2sem_lipsync.core import face_keys, face_plan, mapping, protocol

CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPress_L", "mouthPress_R", "browInnerUp_L")


def info(output="blendshapes", vertex_count=500, channels=CHANNELS, blendshapes="/b.npy"):
    return protocol.ModelInfo("tiny", 30.0, vertex_count, "/t.npy", output=output,
                              channels=channels if output == "blendshapes" else (),
                              blendshapes=blendshapes if output == "blendshapes" else None)


def deltas(vertex_count=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(CHANNELS), vertex_count, 3)).astype(np.float32)


def test_face_keys_win_over_the_template_topology():
    plan = face_plan.plan_take(info(), "'Head'", 500, ["jawOpen", "mouthFunnel"])
    assert plan.mode == face_plan.KEYS and plan.problem is None and plan.auto_matched
    assert [b.key for b in plan.bindings] == ["jawOpen", "mouthFunnel"]


def test_template_mesh_without_keys_gets_channel_keys():
    plan = face_plan.plan_take(info(), "'Head'", 500, ["Smile"])
    assert plan.mode == face_plan.CHANNELS and plan.problem is None


def test_neither_keys_nor_topology_is_refused_with_what_would_work():
    plan = face_plan.plan_take(info(vertex_count=26719), "'Suzanne'", 507, [])
    assert plan.problem is not None
    assert plan.problem.startswith("'Suzanne' has no ARKit-named face shape keys (jawOpen, mouthClose, ...)")
    assert "507 vertices where the model's template has 26719" in plan.problem
    assert "add ARKit shape keys" in plan.problem and "template mesh" in plan.problem


def test_only_brow_keys_at_strength_zero_are_refused_before_generate():
    plan = face_plan.plan_take(info(), "'Head'", 7, ["browInnerUp_L"])
    assert plan.mode == face_plan.KEYS and "strength is 0" in plan.problem


def test_stored_rows_beat_matching_and_missing_keys_fall_back():
    stored = [("jawOpen", "Jaw Drop"), ("mouthClose", "")]
    plan = face_plan.plan_take(info(), "'Head'", 7, ["Jaw Drop", "jawOpen"], stored)
    assert [(b.source, b.key) for b in plan.bindings] == [("jawOpen", "Jaw Drop")] and not plan.auto_matched
    plan = face_plan.plan_take(info(), "'Head'", 7, ["jawOpen"], [("jawOpen", "Gone")])
    assert [b.key for b in plan.bindings] == ["jawOpen"] and plan.auto_matched


def test_vertex_models_keep_the_old_sentence_and_mention_face_keys():
    plan = face_plan.plan_take(info("vertices", 400), "'Head'", 350, [])
    assert plan.mode == face_plan.OFFSETS and "'Head' has 350 vertices but the model's template has 400" in plan.problem
    plan = face_plan.plan_take(info("vertices", 400), "'Head'", 350, ["jawOpen"])
    assert "predicts vertex offsets, not ARKit weights" in plan.problem
    assert face_plan.plan_take(info("vertices", 400), "'Head'", 400, ["jawOpen"]).problem is None


def test_full_set_is_a_copy_resampled_and_brows_are_left_alone():
    weights = np.random.default_rng(1).uniform(-0.2, 1.2, size=(31, len(CHANNELS))).astype(np.float32)
    bindings = face_keys.find_face_keys(["Basis"] + [n + "" for n in CHANNELS])
    take = face_plan.prepare_key_take(weights, CHANNELS, 30.0, 24.0, bindings, deltas())
    assert take.keys == CHANNELS[:-1]                          # browInnerUp_L: upper face, strength 0
    expected = np.clip(mapping.resample(weights, 30.0, 24.0), 0, 1)[:, :-1]
    np.testing.assert_allclose(take.values, expected, atol=1e-6)
    assert take.kind == "full" and take.frames == 25


def test_partial_set_is_solved_and_strengths_scale():
    weights = np.zeros((4, len(CHANNELS)), np.float32)
    weights[:, 0] = 0.5                                        # jaw open ...
    weights[:, 1] = 0.3                                        # ... lips closing
    bindings = face_keys.find_face_keys(["JawOpen", "mouth_funnel"])
    take = face_plan.prepare_key_take(weights, CHANNELS, 30.0, 30.0, bindings, deltas(), intensity=1.0)
    assert take.keys == ("JawOpen", "mouth_funnel") and take.kind == "partial"
    assert take.values.shape == (4, 2) and np.all((take.values >= 0) & (take.values <= 1))
    half = face_plan.prepare_key_take(weights, CHANNELS, 30.0, 30.0, face_keys.find_face_keys(CHANNELS), deltas(),
                                      strengths={"jaw": 0.5, "lips": 1.0, "upper_face": 0.0})
    np.testing.assert_allclose(half.values[:, 0], 0.25, atol=1e-6)


def test_weights_of_the_wrong_shape_are_one_sentence():
    with pytest.raises(mapping.MappingError, match="weights of shape"):
        face_plan.prepare_key_take(np.zeros((3, 2), np.float32), CHANNELS, 30, 30,
                                   face_keys.find_face_keys(["jawOpen"]), deltas())


def test_a_character_without_mouthclose_seals_bilabials_with_the_landmarks():
    """The real ICT head: an m/b/p-like frame (jaw a little open, mouthClose sealing it) on a
    character lacking mouthClose keeps the lip gap near the full set's when the landmarks
    reach the solve."""
    from wav2sem import metrics
    from wav2sem.heads import ict_head

    head = ict_head()
    channels = head.blendshape_names
    weights = np.zeros((1, len(channels)), np.float32)
    for name, value in (("jawOpen", 0.3), ("mouthClose", 0.3)):
        weights[0, channels.index(name)] = value
    keys = [c for c in channels if c != "mouthClose"]
    bindings = face_keys.find_face_keys(keys)
    upper, lower = head.lip_centres

    def gap_mm(landmarks):
        take = face_plan.prepare_key_take(weights, channels, 30.0, 30.0, bindings, head.blendshape_deltas,
                                          lips=head.regions["lips"], landmarks=landmarks)
        values = np.zeros((1, len(channels)), np.float32)
        for key, value in zip(take.keys, take.values[0]):
            values[0, channels.index(key)] = value
        return float(metrics.lip_gap(head.offsets_from_weights(values), head.vertices, upper, lower)[0]) * 1000

    full = float(metrics.lip_gap(head.offsets_from_weights(weights), head.vertices, upper, lower)[0]) * 1000
    assert full < 0.5                                              # the full set seals (measured -1.1 mm)
    with_landmarks, without = gap_mm(head.landmarks), gap_mm(None)
    assert with_landmarks < 0.5                                    # measured -0.45 mm
    assert without > with_landmarks + 1.5                          # measured 2.1 mm: the lips part
