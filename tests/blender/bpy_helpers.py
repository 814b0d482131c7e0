"""Shared helpers of the bpy-module tests. Importing this sets HOME to a temporary folder
before bpy is imported (Blender reads HOME at import)."""
from __future__ import annotations

import os
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Blender reads HOME when bpy is imported: point it somewhere temporary first.
_HOME = tempfile.mkdtemp(prefix="wav2sem_blender_home_")
os.environ["HOME"] = _HOME

import bpy  # noqa: E402
import addon_utils  # noqa: E402  (comes with bpy)

PACKAGE = "bl_ext.user_default.wav2sem_lipsync"
VERTEX_COUNT = 400
MESH_SCALE = 10.0
# Template Y-up (FLAME) -> Blender Z-up, then scaled and moved: what an importer produces.
Y_UP_TO_Z_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
MESH_OFFSET = np.array([0.2, -0.1, 1.5])


def write_wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000.0
    signal = np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((signal * 12000).astype("<i2").tobytes())
    return path




def make_head(template: np.ndarray, name: str = "Head", vertex_count: int | None = None):
    verts = template @ Y_UP_TO_Z_UP.T * MESH_SCALE + MESH_OFFSET
    if vertex_count is not None:
        verts = verts[:vertex_count]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], [])
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def add_sound_strip(scene, path: Path, frame: int):
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    strip = strips.new_sound("line", str(path), 1, frame)
    editor.active_strip = strip
    return strip


def snapshot(obj) -> dict:
    """Everything about the mesh's shape keys and animation that must survive a failure."""
    mesh = obj.data
    coords = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", coords)
    state: dict = {"mesh": coords.copy(), "actions": sorted(a.name for a in bpy.data.actions)}
    key = mesh.shape_keys
    state["keys"] = None
    if key is not None:
        state["keys"] = []
        for block in key.key_blocks:
            block.data.foreach_get("co", coords)
            state["keys"].append((block.name, block.value, block.slider_min, block.slider_max,
                                  block.relative_key.name, coords.copy()))
        anim = key.animation_data
        state["anim"] = None if anim is None else ([t.name for t in anim.nla_tracks], anim.action)
    return state


def assert_same(before: dict, after: dict) -> None:
    assert before["actions"] == after["actions"]
    np.testing.assert_array_equal(before["mesh"], after["mesh"])
    assert (before["keys"] is None) == (after["keys"] is None)
    if before["keys"] is not None:
        assert [k[:5] for k in before["keys"]] == [k[:5] for k in after["keys"]]
        for a, b in zip(before["keys"], after["keys"]):
            np.testing.assert_array_equal(a[5], b[5])
        assert before["anim"] == after["anim"]


def evaluated_coords(obj, frame: int) -> np.ndarray:
    bpy.context.scene.frame_set(frame)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    coords = np.empty(len(evaluated.data.vertices) * 3, np.float32)
    evaluated.data.vertices.foreach_get("co", coords)
    return coords.reshape(-1, 3).astype(np.float64)




def ict_builder():
    """blend_examples/ict_head.py (imported from the repository, as the demo does)."""
    folder = str(REPO / "blend_examples")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import ict_head
    return ict_head


def key_values(obj) -> dict:
    """Each shape key's name -> (value, slider range, mute, its coordinates)."""
    key = obj.data.shape_keys
    out = {}
    for block in key.key_blocks:
        coords = np.empty(len(block.data) * 3, np.float32)
        block.data.foreach_get("co", coords)
        out[block.name] = (block.value, block.slider_min, block.slider_max, block.mute, coords)
    return out


def curves_of(action, fcurves) -> dict:
    """data path -> (N, 2) keyframe (frame, value) array of every F-curve of an action."""
    out = {}
    for curve in fcurves(action):
        points = np.empty(len(curve.keyframe_points) * 2, np.float32)
        curve.keyframe_points.foreach_get("co", points)
        out[curve.data_path] = points.reshape(-1, 2)
    return out


def full_snapshot(obj, fcurves) -> dict:
    """snapshot() plus every key's value and range and every action's curves."""
    state = snapshot(obj)
    state["values"] = {n: v[:4] for n, v in key_values(obj).items()} if obj.data.shape_keys else None
    state["curves"] = {a.name: curves_of(a, fcurves) for a in bpy.data.actions}
    key = obj.data.shape_keys
    state["strips"] = None
    if key is not None and key.animation_data is not None:
        state["strips"] = [(t.name, [(s.name, s.frame_start, s.frame_end, s.action.name if s.action else None)
                                     for s in t.strips]) for t in key.animation_data.nla_tracks]
    return state


def assert_fully_same(before: dict, after: dict) -> None:
    assert_same(before, after)
    assert before["values"] == after["values"]
    assert before["strips"] == after["strips"]
    assert before["curves"].keys() == after["curves"].keys()
    for name, curves in before["curves"].items():
        assert curves.keys() == after["curves"][name].keys()
        for path, points in curves.items():
            np.testing.assert_array_equal(points, after["curves"][name][path])


def cancel_as_the_result_arrives(inputs):
    """Run one take from `inputs` (an operator-like object) up to the backend's result, then
    press Esc before the write: the outcome of LipSyncRun.finish."""
    lipsync = sys.modules[f"{PACKAGE}.ops.lipsync_run"]
    run = lipsync.LipSyncRun(lipsync.gather(bpy.context, inputs))
    try:
        while not run.job.poll(0.1):
            pass
        assert run.job.error is None and run.job.result is not None    # the result is here ...
        run.cancel_requested = True                                     # ... and so is Esc
        return run.finish(bpy.context)
    finally:
        run.close()
