"""Constants and helpers of the `blender -b` tests (imported by conftest and the tests)."""
from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BLENDER = shutil.which("blender")
VERTEX_COUNT = 300
SCENE_FPS = 25

MAKE_SCENE = """
import sys, bpy, numpy as np
argv = sys.argv[sys.argv.index("--") + 1:]
verts = np.load(argv[0]).astype(np.float64)
verts = verts @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T * 10.0 + [0.2, -0.1, 1.5]   # Y-up -> Z-up
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)
mesh = bpy.data.meshes.new("Head")
mesh.from_pydata(verts.tolist(), [], [])
obj = bpy.data.objects.new("Head", mesh)
bpy.context.scene.collection.objects.link(obj)
bpy.context.scene.render.fps = %d
bpy.ops.wm.save_as_mainfile(filepath=argv[1])
""" % SCENE_FPS


def write_wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000.0
    signal = np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((signal * 12000).astype("<i2").tobytes())
    return path
