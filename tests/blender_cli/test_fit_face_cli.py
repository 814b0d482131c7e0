"""Fit Face in Debian's Blender 3.4 (the legacy zip): headless (`blender -b`) with the real
backend (the ICT head without its keys fitted, then Generate Lip Sync with the default model;
a cube refused), and against tests/fake_fit_backend.py, whose shapes are exactly known:
headless, and in a real window under Xvfb (modal progress, Esc, the Cancel button, one-step
undo)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cli_helpers import BLENDER, REPO, run_in_window

pytestmark = pytest.mark.blender_cli
FAKE_FIT = REPO / "tests" / "fake_fit_backend.py"
DROP_M = 0.01                      # the fake's jawOpen moves the lower half and the extras down this far


DEFAULT_MODEL = REPO / "backend" / "wav2sem" / "assets" / "default"
DEMO = REPO / "blend_examples" / "demo.wav"

REAL = """
import bpy, json, sys
import numpy as np
sys.path.insert(0, %r)
import ict_head
out = sys.argv[sys.argv.index("--") + 1]
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
arrays = ict_head.load_arrays()
names = [str(n) for n in arrays["part_names"].tolist()]
part_of = np.searchsorted(np.asarray(arrays["part_ranges"])[:, 0], np.arange(len(arrays["neutral"])), side="right") - 1

def part_mesh(name, parts):
    keep = np.isin(part_of, [names.index(p) for p in parts])
    index = np.cumsum(keep) - 1
    faces = np.asarray(arrays["faces"])
    polygons = [[int(index[v]) for v in f if v >= 0] for f in faces if keep[f[0]]]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(ict_head.to_blender(arrays["neutral"][keep]).tolist(), [], polygons)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj

interior = ("teeth", "gums_and_tongue")
head = part_mesh("Head", [n for n in names if n not in interior + ict_head.OVERLAY_PARTS])
teeth = part_mesh("Teeth", ["teeth", "gums_and_tongue"])
teeth.parent = head
head.location, head.rotation_euler = (0.0, 0.3, 1.5), (0.0, 0.0, -0.3)
bpy.context.view_layer.update()

def world(obj, evaluated=None):
    source = (evaluated or obj).data.vertices
    return np.array([obj.matrix_world @ v.co for v in source])

result = {"fit": sorted(bpy.ops.wav2sem.fit_face(object="Head"))}
key = head.data.shape_keys
result["fitted"] = list(key["wav2sem_fitted"])
result["teeth_keys"] = len(teeth.data.shape_keys.key_blocks) if teeth.data.shape_keys else 0
lip = np.array(bpy.data.objects["W2S_lower_lip_center"].matrix_world.translation)
rest, teeth_rest = world(head), world(teeth)
lips = np.nonzero(np.linalg.norm(rest - lip, axis=1) < 0.006)[0]
low = np.nonzero(teeth_rest[:, 2] < np.median(teeth_rest[:, 2]))[0]
result["generate"] = sorted(bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=%r))
motion, teeth_motion = [], []
for frame in range(1, 200, 8):
    bpy.context.scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    motion.append(float(np.linalg.norm(world(head, head.evaluated_get(depsgraph))[lips] - rest[lips], axis=1).max()))
    moved = world(teeth, teeth.evaluated_get(depsgraph))
    teeth_motion.append(float(np.linalg.norm(moved[low] - teeth_rest[low], axis=1).max()))
result["lip_mm"], result["teeth_mm"] = max(motion) * 1000, max(teeth_motion) * 1000
result["keys_after_generate"] = [b.name for b in key.key_blocks]
bpy.ops.mesh.primitive_cube_add(size=0.25, location=(1.0, 0.0, 1.6))
try:
    bpy.ops.wav2sem.fit_face(object="Cube")
    result["cube"] = "fitted"
except RuntimeError as exc:
    result["cube"] = str(exc)
cube = bpy.data.objects["Cube"]
result["cube_keys"] = cube.data.shape_keys is not None
result["cube_empties"] = sorted(o["wav2sem_landmark"] for o in cube.children if "wav2sem_landmark" in o)
print("RESULT " + json.dumps(result))
""" % (str(REPO / "blend_examples"), str(DEMO))


def test_headless_fit_then_generate_with_the_real_backend(cli, tmp_path):
    script = tmp_path / "real_fit.py"
    script.write_text(REAL)
    result = run_script(cli, dict(cli.env, WAV2SEM_MODEL=str(DEFAULT_MODEL)), script, tmp_path / "out.blend",
                        timeout=600)
    assert result["fit"] == ["FINISHED"] and "jawOpen" in result["fitted"] and "mouthClose" in result["fitted"]
    assert result["teeth_keys"] == len(result["fitted"]) + 1          # the Basis and the head's keys, driven
    assert result["generate"] == ["FINISHED"]
    assert result["keys_after_generate"] == ["Basis", *result["fitted"]]   # the take added no key
    assert result["lip_mm"] > 1.0 and result["teeth_mm"] > 0.5           # the lips move; the lower teeth follow
    assert result["cube"].startswith("Error: No face found on 'Cube': move the W2S_ empties onto the face")
    assert result["cube_keys"] is False and len(result["cube_empties"]) == 10


def fake_env(cli, tmp_path, mode="ok"):
    """The cli environment with the fake fit backend (its mode switchable through a file)."""
    mode_file = tmp_path / "mode.txt"
    wrapper = tmp_path / "fake-fit-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_FIT} {mode} --mode-file {mode_file}\n")
    wrapper.chmod(0o755)
    return dict(cli.env, WAV2SEM_PYTHON=str(wrapper)), mode_file


HEADLESS = """
import bpy, json, sys
import numpy as np
out = sys.argv[sys.argv.index("--") + 1]
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)

def sheet(name, size, z0, parent=None):
    xs, zs = np.meshgrid(np.linspace(-0.1, 0.1, size), np.linspace(z0, z0 + 0.25, size))
    verts = np.column_stack([xs.ravel(), np.zeros(xs.size), zs.ravel()])
    faces = [(r * size + c, r * size + c + 1, (r + 1) * size + c + 1, (r + 1) * size + c)
             for r in range(size - 1) for c in range(size - 1)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.parent = parent
    return obj

head = sheet("Head", 6, 1.4)
head.rotation_euler = (0.0, 0.0, 0.5)
teeth = sheet("LowerTeeth", 3, 1.45, parent=head)
bpy.context.view_layer.update()
result = {"fit": sorted(bpy.ops.wav2sem.fit_face(object="Head"))}
key = head.data.shape_keys
result["keys"] = [b.name for b in key.key_blocks]
result["fitted"] = list(key["wav2sem_fitted"])
result["teeth_keys"] = [b.name for b in teeth.data.shape_keys.key_blocks]
result["empties"] = sorted(o["wav2sem_landmark"] for o in head.children if "wav2sem_landmark" in o)
key.key_blocks["jawOpen"].value = 1.0
depsgraph = bpy.context.evaluated_depsgraph_get()
depsgraph.update()
evaluated = teeth.evaluated_get(depsgraph)
rest = np.array([teeth.matrix_world @ v.co for v in teeth.data.vertices])
moved = np.array([teeth.matrix_world @ v.co for v in evaluated.data.vertices])
result["teeth_drop"] = (moved - rest).tolist()
result["refit"] = sorted(bpy.ops.wav2sem.fit_face(object="Head", use_existing_landmarks=True, include_eyes=True))
result["keys_after_refit"] = [b.name for b in key.key_blocks]
bpy.ops.wm.save_as_mainfile(filepath=out)
print("RESULT " + json.dumps(result))
"""

REOPEN = """
import bpy, json
key = bpy.data.objects["Head"].data.shape_keys
print("RESULT " + json.dumps({"fitted": list(key["wav2sem_fitted"])}))
"""


def run_script(cli, env, script, *args, blend=None, timeout=180):
    result = subprocess.run([BLENDER, "-b", *([str(blend)] if blend else []), "--python-exit-code", "1",
                             "--python", str(script), "--", *map(str, args)],
                            env=env, cwd=cli.work, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])


def test_headless_fit_writes_keys_drivers_and_empties_in_blender_3_4(cli, tmp_path):
    env, _ = fake_env(cli, tmp_path)
    script = tmp_path / "fit.py"
    script.write_text(HEADLESS)
    blend = tmp_path / "fitted.blend"
    result = run_script(cli, env, script, blend)
    assert result["fit"] == ["FINISHED"] and result["refit"] == ["FINISHED"]
    assert result["keys"] == ["Basis", "jawOpen", "mouthClose", "mouthFunnel"]
    assert result["fitted"] == ["jawOpen", "mouthClose", "mouthFunnel"]
    assert result["teeth_keys"] == result["keys"]
    assert len(result["empties"]) == 10
    for drop in result["teeth_drop"]:          # the lower teeth follow the head's jawOpen (a driver)
        assert drop == pytest.approx([0.0, 0.0, -DROP_M], abs=1e-6)
    assert result["keys_after_refit"] == result["keys"] + ["eyeBlink_L"]
    reopen = tmp_path / "reopen.py"
    reopen.write_text(REOPEN)
    assert run_script(cli, env, reopen, blend=blend)["fitted"] == result["fitted"] + ["eyeBlink_L"]


def test_modal_fit_face_with_progress_esc_cancel_and_one_step_undo(cli, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (Debian package xvfb)")
    env, mode_file = fake_env(cli, tmp_path)
    out = tmp_path / "fit_gui.json"
    result = run_in_window(["--enable-event-simulate", "--python", str(REPO / "tests" / "blender_cli" / "fit_gui_session.py"),
                            "--", str(mode_file), str(out)], env)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not report["errors"], report["errors"]
    assert report["poll"] is True
    assert report["draws"]["main"] > 0 and report["draws"]["face"] > report["draws_before_refresh"]["face"]
    before, after = report["before"], report["after_fit"]
    assert before["keys"] is None and before["empties"] == {}
    assert report["invoke"] == ["RUNNING_MODAL"]
    shown = report["first_shown"]
    assert shown == sorted(shown) and shown[-1] == 1.0            # forward only, to the end
    assert after["keys"] == ["Basis", "jawOpen", "mouthClose", "mouthFunnel"] and after["teeth_keys"] == after["keys"]
    assert len(after["empties"]) == 10
    assert report["after_undo"] == before                 # one undo step: keys, teeth keys and empties gone
    assert report["after_redo"] == after
    assert report["invoke_slow"] == ["RUNNING_MODAL"] and report["running_before_esc"] is True
    assert report["after_esc"] == after                   # Esc: nothing changed
    assert report["cancel_poll"] is True and report["after_button"] == after
    moved = report["before_no_face"]
    assert report["after_no_face"]["keys"] == after["keys"]                    # NO_FACE: the keys stay ...
    assert report["after_no_face"]["empties"]["W2S_chin"] != moved["empties"]["W2S_chin"]   # ... the guess is placed
    assert report["after_no_face_undo"] == moved          # and is an undo step of its own
