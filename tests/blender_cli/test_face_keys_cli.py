"""A character's own face keys in Debian's Blender 3.4 (legacy actions, the legacy zip): the
ICT head built by blend_examples/ict_head.py with renamed, partial and viseme keys, a mesh
without face keys, the documented headless command with no other argument, Clear, and two
batch shots on the same keys. A tiny random blendshape model on the ICT head, real backend."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import REPO, SCENE_FPS, run_in_window, write_wav

pytestmark = pytest.mark.blender_cli
ICT_HEAD = REPO / "blend_examples" / "ict_head.py"
SPEECH = ("jawOpen", "jawForward", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
          "mouthShrugLower", "mouthShrugUpper", "mouthPress_L", "mouthPress_R", "mouthStretch_L", "mouthStretch_R",
          "mouthSmile_L", "mouthSmile_R", "mouthUpperUp_L", "mouthUpperUp_R", "mouthLowerDown_L", "mouthLowerDown_R")


@pytest.fixture(scope="session")
def ict(cli):
    """The ICT bundle, the speech, the backend's own weights for it, and a scene with the
    ICT head (53 ARKit keys, object 'Head') made by ict_head.py's command line."""
    from wav2sem.testing import write_tiny_ict_bundle
    bundle = write_tiny_ict_bundle(cli.work / "ict_bundle")
    audio = write_wav(cli.work / "speech.wav", 1.2)
    weights_file = cli.work / "ict_weights.npy"
    subprocess.run([sys.executable, "-m", "wav2sem", "infer", str(audio), "--model", str(bundle), "--no-offsets",
                    "--weights-out", str(weights_file)], check=True, capture_output=True)
    channels = json.loads(weights_file.with_suffix(".json").read_text())["channels"]
    scene = cli.work / "ict.blend"
    cli("--factory-startup", "--python", str(ICT_HEAD), "--", "--output", str(scene), "--name", "Head")
    cli.ict_bundle, cli.speech, cli.ict_scene = str(bundle), audio, scene  # type: ignore[attr-defined]
    cli.weights, cli.channels = np.load(weights_file).astype(np.float64), channels  # type: ignore[attr-defined]
    return cli


def expected_values(cli, channel: str, frames: int, fps: float = SCENE_FPS) -> np.ndarray:
    """clip(weights) at the scene's fps, one per frame (model at 30 fps)."""
    column = cli.weights[:, cli.channels.index(channel)]
    times = np.arange(frames) / fps * 30.0
    return np.clip(np.interp(times, np.arange(len(column)), column), 0, 1)


READ = """
import bpy, json
out = {}
for obj in bpy.data.objects:
    key = obj.data.shape_keys if obj.type == "MESH" else None
    if key is None:
        out[obj.name] = None
        continue
    tracks = key.animation_data.nla_tracks if key.animation_data else []
    curves = {}
    for track in tracks:
        for strip in track.strips:
            for curve in strip.action.fcurves:
                curves.setdefault(track.name, {})[curve.data_path] = [list(k.co) for k in curve.keyframe_points]
    out[obj.name] = {"keys": [b.name for b in key.key_blocks], "values": {b.name: b.value for b in key.key_blocks},
                     "tracks": [t.name for t in tracks], "curves": curves,
                     "rows": [[r.source, r.key] for r in obj.wav2sem_face.rows]}
out["actions"] = sorted(a.name for a in bpy.data.actions)
print("RESULT " + json.dumps(out))
"""


def read(cli, blend):
    script = cli.work / "read_faces.py"
    script.write_text(READ)
    result = cli(str(blend), "--python", str(script), model=cli.ict_bundle)
    return json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])


def test_documented_headless_command_drives_the_ict_heads_own_keys(ict):
    out = ict.work / "ict_out.blend"
    result = ict(str(ict.ict_scene), "--python-exit-code", "1", "--python-expr",
                 f"import bpy; bpy.ops.wav2sem.generate_lipsync(object='Head', audio_path={str(ict.speech)!r}); "
                 f"bpy.ops.wm.save_as_mainfile(filepath={str(out)!r})", model=ict.ict_bundle)
    assert "19 face keys" in result.stdout and "copied from the model's channels" in result.stdout, result.stdout
    state = read(ict, out)["Head"]
    assert len(state["keys"]) == 54 and state["keys"][0] == "Basis"            # no key added
    curves = state["curves"]["LipSync_line"] if "LipSync_line" in state["curves"] else state["curves"]["LipSync_speech"]
    assert sorted(curves) == sorted(f'key_blocks["{c}"].value' for c in SPEECH)
    points = np.array(curves['key_blocks["jawOpen"].value'])
    assert points[0, 1] == 0 and points[-1, 1] == 0
    np.testing.assert_allclose(points[1:-1, 1], expected_values(ict, "jawOpen", len(points) - 2, fps=24),
                               atol=1e-4)                                       # ict_head.py's scene: 24 fps
    assert ["jawOpen", "jawOpen"] in state["rows"]                               # the match is kept


SCRIPT = """
import sys, json, bpy
sys.path.insert(0, %(examples)r)
import ict_head
from wav2sem_lipsync.core import visemes
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)
bpy.context.scene.render.fps = %(fps)d
ict_head.build_ict_head(bpy, "Maya", rename=ict_head.maya_style)
ict_head.build_ict_head(bpy, "Partial", only=("jawOpen", "mouthFunnel"))
ict_head.build_ict_head(bpy, "Visemes", keys="visemes",
                        visemes={k: v for k, v in visemes.VISEME_SHAPES.items() if k.startswith("viseme_")})
bpy.ops.mesh.primitive_monkey_add()
bpy.context.active_object.name = "Suzanne"
bpy.context.active_object.shape_key_add(name="Basis")
bpy.context.active_object.shape_key_add(name="Smile")
original = {b.name: b.value for b in bpy.data.objects["Partial"].data.shape_keys.key_blocks}
print("ORIGINAL " + json.dumps(original))
for name in ("Maya", "Partial", "Visemes", "Suzanne"):
    try:
        bpy.ops.wav2sem.generate_lipsync(object=name, audio_path=%(audio)r)
    except RuntimeError as exc:
        print("REFUSED " + name + ": " + str(exc).replace("\\n", " "))
bpy.context.scene.frame_set(8)
bpy.ops.wav2sem.generate_lipsync(object="Partial", audio_path=%(audio)r)    # regenerate replaces
partial = bpy.data.objects["Partial"].data.shape_keys
before = {b.name: b.value for b in partial.key_blocks}
bpy.ops.wav2sem.clear_lipsync(object="Partial")
print("CLEARED " + json.dumps({b.name: b.value for b in partial.key_blocks}) + " " +
      json.dumps(partial.animation_data is None))
bpy.ops.wm.save_as_mainfile(filepath=%(out)r)
"""


def test_renamed_partial_viseme_and_keyless_meshes(ict):
    out = ict.work / "faces.blend"
    script = ict.work / "faces.py"
    script.write_text(SCRIPT % {"examples": str(REPO / "blend_examples"), "fps": SCENE_FPS, "audio": str(ict.speech),
                                "out": str(out)})
    result = ict("--python-exit-code", "1", "--python", str(script), model=ict.ict_bundle,
                 timeout=300)
    refused = [l for l in result.stdout.splitlines() if l.startswith("REFUSED ")]
    assert len(refused) == 1 and refused[0].startswith("REFUSED Suzanne: "), result.stdout[-3000:]
    assert "'Suzanne' has no ARKit-named face shape keys (jawOpen, mouthClose, ...)" in refused[0]
    assert "507 vertices where the model's template has 26719" in refused[0]
    cleared = next(l for l in result.stdout.splitlines() if l.startswith("CLEARED "))
    values, no_animation = cleared[len("CLEARED "):].rsplit(" ", 1)
    original = next(l for l in result.stdout.splitlines() if l.startswith("ORIGINAL "))[len("ORIGINAL "):]
    assert json.loads(values) == json.loads(original)            # the keys and their values as they were
    assert json.loads(no_animation) is True

    state = read(ict, out)
    maya = state["Maya"]
    assert len(maya["keys"]) == 54
    curves = maya["curves"]["LipSync_speech"]
    assert 'key_blocks["blendShape1.mouthPressLeft"].value' in curves and len(curves) == 19
    points = np.array(curves['key_blocks["blendShape1.mouthPressLeft"].value'])
    np.testing.assert_allclose(points[1:-1, 1], expected_values(ict, "mouthPress_L", len(points) - 2), atol=1e-4)
    assert state["Partial"]["tracks"] == [] and state["Partial"]["keys"] == ["Basis", "jawOpen", "mouthFunnel"]
    visemes = state["Visemes"]
    driven = {p.split('"')[1] for p in visemes["curves"]["LipSync_speech"]}
    assert {"viseme_aa", "viseme_PP"} <= driven <= set(visemes["keys"])
    values = np.concatenate([np.array(c)[:, 1] for c in visemes["curves"]["LipSync_speech"].values()])
    assert 0 <= values.min() and values.max() <= 1 and values.max() > 0.02
    assert state["Suzanne"]["keys"] == ["Basis", "Smile"] and state["Suzanne"]["tracks"] == []
    assert len(state["actions"]) == 4      # Maya's and Visemes' takes and rest tracks (Partial's were cleared)


def test_two_batch_shots_on_the_same_keys_both_play(ict):
    audios = [write_wav(ict.work / name, seconds) for name, seconds in (("one.wav", 0.8), ("two.wav", 0.8))]
    out = ict.work / "face_batch.blend"
    result = ict(str(ict.ict_scene), "--python", str(ict.addon_dir / "batch.py"), "--", "--object", "Head",
                 "--audio", str(audios[0]), "--audio", str(audios[1]), "--output", str(out), check=False,
                 timeout=300, model=ict.ict_bundle)
    assert "summary: 2 of 2 shots animated, 0 failed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    script = ict.work / "eval_batch.py"
    script.write_text("""
import bpy, json
key = bpy.data.objects["Head"].data.shape_keys
out = {}
for frame in (0, 8, 40, 200):
    bpy.context.scene.frame_set(frame)
    out[frame] = key.key_blocks["jawOpen"].value
tracks = {t.name: round(t.strips[0].frame_start) + 1 for t in key.animation_data.nla_tracks
          if t.name.startswith("LipSync_")}
print("EVAL " + json.dumps({"jaw": out, "tracks": tracks}))
""")
    state = json.loads(next(l for l in ict(str(out), "--python", str(script)).stdout.splitlines()
                            if l.startswith("EVAL "))[len("EVAL "):])
    starts = state["tracks"]
    assert sorted(starts) == ["LipSync_one", "LipSync_two"] and starts["LipSync_one"] == 1
    second = starts["LipSync_two"]
    jaw = {int(k): v for k, v in state["jaw"].items()}
    assert jaw[0] == 0.0 and jaw[200] == 0.0                                      # silent outside the takes
    assert jaw[8] > 0                                                             # the first (lower) take plays
    bpy_frame = 40
    assert second <= bpy_frame < second + 20 and jaw[bpy_frame] > 0               # and so does the second


def test_face_keys_panel_modal_generate_and_one_step_undo(ict, tmp_path):
    import shutil
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (Debian package xvfb)")

    out = tmp_path / "face_gui.json"
    env = dict(ict.env, WAV2SEM_MODEL=ict.ict_bundle)
    result = run_in_window([str(ict.ict_scene), "--enable-event-simulate", "--python",
                            str(REPO / "tests" / "blender_cli" / "face_gui_session.py"), "--", str(ict.speech), str(out)],
                           env)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not report["errors"], report["errors"]
    assert report["panel_draws"] > 0 and report["rows_drawn"] > 0        # the Face Keys panel and its rows
    before, after = report["before"], report["after_generate"]
    assert report["invoke"] == ["RUNNING_MODAL"]
    assert after["keys"] == before["keys"] and len(after["keys"]) == 54  # no key added
    assert after["tracks"] == ["LipSync rest values", "LipSync_speech"] and after["rows"] > 0
    assert report["after_undo"] == before                                # one undo step: take and match gone
    assert report["after_redo"] == after
