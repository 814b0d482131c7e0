"""A character's own face keys in Blender 5.0 (bpy module): the ICT FaceKit head with its ARKit
keys, renamed, partial and viseme-only copies, the template without keys, and a mesh with
neither, driven by a tiny random blendshape model on the ICT head through a real backend."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bpy_helpers import (PACKAGE, assert_fully_same, bpy, cancel_as_the_result_arrives, curves_of, evaluated_coords,
                         full_snapshot, ict_builder, key_values)

SCENE_FPS = 30 / 1.001
MODEL_FPS = 30.0
SPEECH = ("jawOpen", "jawForward", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
          "mouthShrugLower", "mouthShrugUpper", "mouthPress_L", "mouthPress_R", "mouthStretch_L", "mouthStretch_R",
          "mouthSmile_L", "mouthSmile_R", "mouthUpperUp_L", "mouthUpperUp_R", "mouthLowerDown_L", "mouthLowerDown_R")
BROWS = ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R")


def addon_module(name: str):
    return sys.modules[f"{PACKAGE}.{name}"]


def fcurves(action):
    return addon_module("scene.versions").action_fcurves(action)


@pytest.fixture(scope="session")
def ict_bundle(workdir):
    from wav2sem.testing import write_tiny_ict_bundle
    return write_tiny_ict_bundle(workdir / "ict_bundle")


@pytest.fixture(scope="session")
def ict_weights(ict_bundle, speech, workdir) -> tuple[np.ndarray, tuple[str, ...]]:
    """The backend's own weights for the speech, from its command line (independent path)."""
    out = workdir / "ict_weights.npy"
    subprocess.run([sys.executable, "-m", "wav2sem", "infer", str(speech), "--model", str(ict_bundle),
                    "--no-offsets", "--weights-out", str(out)], check=True, capture_output=True)
    channels = tuple(json.loads(out.with_suffix(".json").read_text())["channels"])
    assert channels == SPEECH + BROWS or set(channels) == set(SPEECH + BROWS)
    return np.load(out).astype(np.float64), channels


@pytest.fixture
def ict(scene, addon, ict_bundle):
    """The ICT model selected; returns the head builder."""
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    previous, prefs.model = prefs.model, str(ict_bundle)
    yield ict_builder()
    prefs.model = previous


def at_scene_fps(weights: np.ndarray) -> np.ndarray:
    return addon_module("core.mapping").resample(weights.astype(np.float32), MODEL_FPS, SCENE_FPS).astype(np.float64)


def take_curves(take="LipSync_line") -> dict:
    return curves_of(bpy.data.actions[take], fcurves)


def path(key: str) -> str:
    return f'key_blocks["{key}"].value'


def generate(obj, speech, **kwargs):
    return bpy.ops.wav2sem.generate_lipsync(object=obj.name, audio_path=str(speech), **kwargs)


def test_full_arkit_head_drives_its_own_keys_and_adds_none(ict, speech, ict_weights):
    head = ict.build_ict_head(bpy, "ICT")
    keys = head.data.shape_keys
    keys.key_blocks["eyeBlink_L"].value = 0.4                 # the user's own setting on a key the take leaves
    before = key_values(head)
    assert generate(head, speech) == {"FINISHED"}

    after = key_values(head)
    assert list(after) == list(before)                         # no key added or removed
    assert [a.name for a in bpy.data.actions] == ["LipSync rest", "LipSync_line"]
    action = bpy.data.actions["LipSync_line"]
    assert action.get("wav2sem_drives_keys")
    # The take's track above the rest track, which holds the driven keys at the user's values.
    assert [t.name for t in keys.animation_data.nla_tracks] == ["LipSync rest values", "LipSync_line"]
    rest = curves_of(bpy.data.actions["LipSync rest"], fcurves)
    assert sorted(rest) == sorted(path(c) for c in SPEECH) and all(p[:, 1].tolist() == [0.0] for p in rest.values())
    curves = take_curves()
    assert sorted(curves) == sorted(path(c) for c in SPEECH)   # brows (upper face, strength 0) left alone
    for name, (value, low, high, mute, coords) in before.items():
        if path(name) not in curves:                           # a driven key's value is its animation's
            assert after[name][:4] == (value, low, high, mute), name
        assert after[name][1:4] == (low, high, mute)
        np.testing.assert_array_equal(after[name][4], coords)
    weights, channels = ict_weights
    expected = np.clip(at_scene_fps(weights), 0, 1)
    for c in SPEECH:
        points = curves[path(c)]
        assert points[0, 1] == 0 and points[-1, 1] == 0 and points[1, 0] == 1.0   # at the current frame
        np.testing.assert_allclose(points[1:-1, 1], expected[:, channels.index(c)], atol=1e-5)
    assert expected[:, channels.index("jawOpen")].max() > 0.05  # the keys really move

    # Blender evaluates the take: mesh = basis + sum(value * (key - basis)), eyeBlink_L still at 0.4.
    frame = 12
    basis = after["Basis"][4].reshape(-1, 3)
    mix = 0.4 * (after["eyeBlink_L"][4].reshape(-1, 3) - basis)
    for c in SPEECH:
        mix += expected[frame - 1, channels.index(c)] * (after[c][4].reshape(-1, 3) - basis)
    np.testing.assert_allclose(evaluated_coords(head, frame), basis + mix, atol=2e-5)
    # After the take: the rest shape with the user's own eyeBlink_L (no key left open).
    rest_shape = basis + 0.4 * (after["eyeBlink_L"][4].reshape(-1, 3) - basis)
    np.testing.assert_allclose(evaluated_coords(head, 100), rest_shape, atol=2e-5)
    assert keys.key_blocks["jawOpen"].value == 0.0
    # The match is kept with the object and shown in the panel's rows.
    rows = {row.source: row.key for row in head.wav2sem_face.rows}
    assert rows["jawOpen"] == "jawOpen" and rows["mouthPress_L"] == "mouthPress_L"


def test_regenerate_replaces_and_clear_keeps_the_users_keys(ict, speech):
    head = ict.build_ict_head(bpy, "ICT", only=SPEECH)
    before = full_snapshot(head, fcurves)
    for intensity in (1.0, 0.5):
        assert generate(head, speech, intensity=intensity) == {"FINISHED"}
    assert [a.name for a in bpy.data.actions] == ["LipSync rest", "LipSync_line"]
    assert len(head.data.shape_keys.animation_data.nla_tracks) == 2          # the rest track and the take
    assert bpy.ops.wav2sem.clear_lipsync(object=head.name) == {"FINISHED"}
    head.wav2sem_face.rows.clear()                             # the match the first take stored
    assert_fully_same(before, full_snapshot(head, fcurves))    # keys, values, no action, no animation data


def test_renamed_keys_in_another_style_are_driven_like_the_originals(ict, speech, ict_weights):
    head = ict.build_ict_head(bpy, "Maya", rename=ict.maya_style)   # blendShape1.mouthPressLeft
    assert generate(head, speech) == {"FINISHED"}
    curves = take_curves()
    weights, channels = ict_weights
    expected = np.clip(at_scene_fps(weights), 0, 1)
    assert sorted(curves) == sorted(path(ict.maya_style(c)) for c in SPEECH)
    np.testing.assert_allclose(curves[path("blendShape1.mouthPressLeft")][1:-1, 1],
                               expected[:, channels.index("mouthPress_L")], atol=1e-5)


@pytest.mark.parametrize("only", [tuple(c for c in SPEECH if c != "mouthClose"), ("jawOpen", "mouthFunnel")])
def test_a_partial_set_is_solved_onto_the_keys_it_has(ict, speech, only):
    head = ict.build_ict_head(bpy, "Partial", only=only)
    before = key_values(head)
    assert generate(head, speech) == {"FINISHED"}
    assert list(key_values(head)) == list(before)
    curves = take_curves()
    assert sorted(curves) == sorted(path(c) for c in only)
    values = np.concatenate([points[:, 1] for points in curves.values()])
    assert values.min() >= 0 and values.max() <= 1 and values.max() > 0.05


def test_viseme_only_head_drives_its_visemes(ict, speech):
    visemes = addon_module("core.visemes").VISEME_SHAPES
    oculus = {k: v for k, v in visemes.items() if k.startswith("viseme_")}
    head = ict.build_ict_head(bpy, "Visemes", keys="visemes", visemes=oculus)
    assert generate(head, speech) == {"FINISHED"}
    curves = take_curves()
    driven = {p.split('"')[1] for p in curves}
    assert driven <= set(oculus) and {"viseme_aa", "viseme_PP", "viseme_O"} <= driven
    values = np.concatenate([points[:, 1] for points in curves.values()])
    assert values.min() >= 0 and values.max() <= 1 and values.max() > 0.02
    assert [k.name for k in head.data.shape_keys.key_blocks] == ["Basis", *oculus]


def test_upper_face_strength_drives_the_brows(ict, speech, ict_weights):
    head = ict.build_ict_head(bpy, "ICT", only=SPEECH + BROWS)
    head.wav2sem_face.upper_face = 1.0
    head.wav2sem_face.jaw = 0.5
    assert generate(head, speech) == {"FINISHED"}
    curves = take_curves()
    assert path("browInnerUp_L") in curves
    weights, channels = ict_weights
    np.testing.assert_allclose(curves[path("jawOpen")][1:-1, 1],
                               np.clip(0.5 * at_scene_fps(weights)[:, channels.index("jawOpen")], 0, 1), atol=1e-5)


def test_edited_row_drives_the_key_the_user_chose(ict, speech, ict_weights):
    head = ict.build_ict_head(bpy, "Custom", only=SPEECH, rename=lambda c: "JawDrop" if c == "jawOpen" else c)
    scene = bpy.context.scene
    scene.wav2sem_lipsync.known_channels.clear()
    for c in SPEECH:
        scene.wav2sem_lipsync.known_channels.add().name = c
    bpy.context.view_layer.objects.active = head
    assert bpy.ops.wav2sem.match_face_keys(object=head.name) == {"FINISHED"}
    rows = {row.source: row for row in head.wav2sem_face.rows}
    assert rows["jawOpen"].key == ""                           # "JawDrop" is no ARKit name: solved onto others
    rows["jawOpen"].key = "JawDrop"
    assert generate(head, speech) == {"FINISHED"}
    weights, channels = ict_weights
    np.testing.assert_allclose(take_curves()[path("JawDrop")][1:-1, 1],
                               np.clip(at_scene_fps(weights)[:, channels.index("jawOpen")], 0, 1), atol=1e-5)


def test_template_head_without_keys_gets_one_key_per_channel(ict, speech, ict_weights):
    head = ict.build_ict_head(bpy, "Plain", keys=None)
    assert generate(head, speech) == {"FINISHED"}
    names = [k.name for k in head.data.shape_keys.key_blocks]
    assert names == ["Basis"] + [f"LipSync_line.{c}" for c in SPEECH]
    weights, channels = ict_weights
    resampled = at_scene_fps(weights)
    curves = take_curves()
    np.testing.assert_allclose(curves[path("LipSync_line.jawOpen")][1:-1, 1],
                               resampled[:, channels.index("jawOpen")], atol=1e-5)   # exact, not clipped
    arrays = ict.load_arrays()
    frame = 9
    expected = arrays["neutral"].astype(np.float64)
    names53 = list(arrays["expression_names"])
    for c in SPEECH:
        expected = expected + resampled[frame - 1, channels.index(c)] * arrays["expression_deltas"][names53.index(c)]
    np.testing.assert_allclose(evaluated_coords(head, frame), ict.to_blender(expected), atol=3e-5)
    assert bpy.ops.wav2sem.clear_lipsync(object=head.name) == {"FINISHED"}
    assert head.data.shape_keys is None and not bpy.data.actions


@pytest.fixture
def logging_python(tmp_path, monkeypatch):
    """The real backend behind `tee`: every request line the add-on sends is logged."""
    log = tmp_path / "requests.jsonl"
    wrapper = tmp_path / "logging-python"
    wrapper.write_text(f"#!/bin/sh\ntee {log} | exec {sys.executable} -m wav2sem serve\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("WAV2SEM_PYTHON", str(wrapper))
    addon_module("core.client").POOL.close()
    yield log
    addon_module("core.client").POOL.close()


def requests(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_a_mesh_without_face_keys_is_refused_before_generate(ict, speech, logging_python):
    bpy.ops.mesh.primitive_monkey_add()
    suzanne = bpy.context.active_object
    suzanne.name = "Suzanne"
    suzanne.shape_key_add(name="Basis", from_mix=False)
    suzanne.shape_key_add(name="Smile", from_mix=False)
    before = full_snapshot(suzanne, fcurves)
    with pytest.raises(RuntimeError, match=r"'Suzanne' has no ARKit-named face shape keys \(jawOpen, mouthClose, "
                                           r"\.\.\.\) or viseme keys .*and 507 vertices where the model's template "
                                           r"has 26719; add ARKit shape keys"):
        generate(suzanne, speech)
    ops = [r["op"] for r in requests(logging_python)]
    assert "model_info" in ops and "generate" not in ops, ops
    assert_fully_same(before, full_snapshot(suzanne, fcurves))


def test_only_weights_are_asked_for(ict, speech, logging_python):
    head = ict.build_ict_head(bpy, "ICT", only=("jawOpen",))
    assert generate(head, speech) == {"FINISHED"}
    params = next(r["params"] for r in requests(logging_python) if r["op"] == "generate")
    assert params["offsets"] is False and params["weights_output"].endswith("weights.npy")


class Props:
    """What the panel passes to the operator."""
    object, audio_path, strip, subject, intensity, output_mode = "ICT", "", "", "", 1.0, "COMPACT"


def test_cancel_and_failure_leave_keys_values_and_curves_as_they_were(ict, speech, monkeypatch):
    head = ict.build_ict_head(bpy, "ICT", only=SPEECH)
    assert generate(head, speech) == {"FINISHED"}             # an existing take on the keys
    head.data.shape_keys.key_blocks["mouthFunnel"].value = 0.25
    before = full_snapshot(head, fcurves)

    class Inputs(Props):
        audio_path = str(speech)
    outcome = cancel_as_the_result_arrives(Inputs)
    assert outcome.status == {"CANCELLED"}
    assert_fully_same(before, full_snapshot(head, fcurves))

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after the curves were added")
    monkeypatch.setattr(addon_module("scene.versions"), "add_nla_strip", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        generate(head, speech)
    assert_fully_same(before, full_snapshot(head, fcurves))


def test_backend_dying_mid_take_leaves_the_keys_as_they_were(ict, speech, fake_python, monkeypatch):
    monkeypatch.setenv("WAV2SEM_PYTHON", fake_python("--vertex-count", "26719", "--blendshapes", "10",
                                                     "--crash-after-progress", "2"))
    addon_module("core.client").POOL.close()
    head = ict.build_ict_head(bpy, "ICT", only=SPEECH)
    head.data.shape_keys.key_blocks["jawOpen"].value = 0.3
    before = full_snapshot(head, fcurves)
    try:
        with pytest.raises(RuntimeError, match=r"stopped unexpectedly \(exit code 3\)"):
            generate(head, speech)
    finally:
        addon_module("core.client").POOL.close()
    assert_fully_same(before, full_snapshot(head, fcurves))
    assert len(head.wav2sem_face.rows) == 0                     # no match stored by a failed take


def test_takes_at_other_frames_on_the_same_keys_both_play(ict, workdir, fake_python, monkeypatch):
    """A take that drives the user's keys does not hold its ends, so a lower take still plays."""
    from bpy_helpers import write_wav
    monkeypatch.setenv("WAV2SEM_PYTHON", fake_python("--vertex-count", "26719", "--blendshapes", "4"))
    addon_module("core.client").POOL.close()
    first, second = write_wav(workdir / "first.wav", 1.0), write_wav(workdir / "second.wav", 1.0)
    head = ict.build_ict_head(bpy, "ICT", only=("jawOpen", "mouthClose"))
    try:
        assert generate(head, first) == {"FINISHED"}            # frames 1-30
        bpy.context.scene.frame_set(60)
        assert generate(head, second) == {"FINISHED"}           # frames 60-89
    finally:
        addon_module("core.client").POOL.close()
    assert [t.name for t in head.data.shape_keys.animation_data.nla_tracks] == [
        "LipSync rest values", "LipSync_first", "LipSync_second"]
    jaw = head.data.shape_keys.key_blocks["jawOpen"]

    def jaw_at(frame):
        bpy.context.scene.frame_set(frame)
        return jaw.value

    def expected(offset):                                       # the fake's jawOpen: 0.5 + 0.45 sin(2 pi 3 t)
        return 0.5 + 0.45 * np.sin(2 * np.pi * 3.0 * offset / SCENE_FPS)
    assert jaw_at(0) == 0.0 and jaw_at(45) == 0.0 and jaw_at(200) == 0.0
    assert jaw_at(10) == pytest.approx(expected(9), abs=0.02)
    assert jaw_at(70) == pytest.approx(expected(10), abs=0.02)


@pytest.mark.parametrize("fails", ["rest track", "take track"])
def test_a_failing_first_take_leaves_no_animation_data(ict, speech, monkeypatch, fails):
    head = ict.build_ict_head(bpy, "ICT", only=("jawOpen", "mouthClose"))
    before = full_snapshot(head, fcurves)
    versions = addon_module("scene.versions")
    real = versions.add_nla_strip

    def broken(track, name, *args):
        if fails == "take track" and name == "LipSync rest values":
            return real(track, name, *args)
        raise RuntimeError("simulated failure while adding a strip")
    monkeypatch.setattr(versions, "add_nla_strip", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        generate(head, speech)
    assert head.data.shape_keys.animation_data is None
    assert_fully_same(before, full_snapshot(head, fcurves))


def test_ict_head_builder_keeps_the_kits_order_quads_and_parts(ict):
    arrays = ict.load_arrays()
    head = ict.build_ict_head(bpy, "ICT", keys="arkit", only=("jawOpen",), rename=ict.apple_style)
    mesh = head.data
    coords = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", coords)
    np.testing.assert_allclose(coords.reshape(-1, 3), ict.to_blender(arrays["neutral"]), atol=1e-6)
    assert len(mesh.vertices) == 26719 and mesh.validate() is False        # nothing to fix
    sizes = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("loop_total", sizes)
    assert set(sizes.tolist()) <= {3, 4} and (sizes == 4).sum() > 20000   # quads kept
    names = [m.name.split(".")[0] for m in mesh.materials]
    assert names[:13] == [f"ICT_{p}" for p in arrays["part_names"]] and names[13:] == ["ICT_iris", "ICT_pupil"]
    teeth = names.index("ICT_teeth")
    first = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("loop_start", first)
    loops = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    material = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("material_index", material)
    start, end = arrays["part_ranges"][list(arrays["part_names"]).index("teeth")]
    assert np.all((loops[first][material == teeth] >= start) & (loops[first][material == teeth] < end))
    assert [k.name for k in mesh.shape_keys.key_blocks] == ["Basis", "jawOpen"]
    assert ict.apple_style("mouthPress_L") == "mouthPressLeft" and ict.maya_style("jawOpen") == "blendShape1.jawOpen"
