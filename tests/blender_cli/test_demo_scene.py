"""The example scene opens in every supported Blender: Debian's 3.4 (`blender -b`) and the
bpy 5.0 module, with its Head mesh and the speech strip whose file is found."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli_helpers import BLENDER, REPO

DEMO = REPO / "blend_examples" / "demo.blend"
INSPECT = """
import bpy, json, os
scene = bpy.context.scene
editor = scene.sequence_editor
strips = list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all) if editor else []
head = bpy.data.objects.get("Head")
print("DEMO " + json.dumps({
    "version": list(bpy.app.version[:2]),
    "file_version": list(bpy.data.version[:2]),
    "head_vertices": len(head.data.vertices) if head is not None and head.type == "MESH" else 0,
    "sounds": [(s.type, os.path.isfile(bpy.path.abspath(s.sound.filepath))) for s in strips if s.type == "SOUND"],
    "camera": scene.camera.name if scene.camera else None,
    "fps": scene.render.fps,
}))
"""


def inspect(command: list[str], tmp_path) -> dict:
    env = dict(os.environ, HOME=str(tmp_path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if line.startswith("DEMO ")]
    assert result.returncode == 0 and lines, \
        f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][5:])


def check(scene: dict) -> None:
    assert scene["head_vertices"] > 1000
    assert scene["sounds"] == [["SOUND", True]]          # one speech strip, its demo.wav found
    assert scene["camera"] == "Camera" and scene["fps"] == 30


def test_demo_blend_opens_in_blender_3_4(tmp_path):
    if BLENDER is None:
        pytest.skip("Debian's blender is not installed (make system-deps)")
    scene = inspect([BLENDER, "-b", "--factory-startup", str(DEMO), "--python-expr", INSPECT], tmp_path)
    assert scene["version"] == [3, 4]
    assert scene["file_version"] <= scene["version"]     # not a file from a newer Blender
    check(scene)


def test_demo_blend_opens_in_the_bpy_module(tmp_path):
    pytest.importorskip("bpy", reason="the bpy module is not installed (pip install -e '.[test]' installs it)")
    script = f"import bpy\nbpy.ops.wm.open_mainfile(filepath={str(DEMO)!r})\n{INSPECT}"
    check(inspect([sys.executable, "-c", script], tmp_path))
