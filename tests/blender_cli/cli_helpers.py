"""Constants and helpers of the `blender -b` tests (imported by conftest and the tests)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
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


def run_in_window(blender_args: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    """Blender with a window under Xvfb (`xvfb-run`), as one process group: on a timeout the
    whole group is killed (xvfb-run alone would leave Blender and its backend running,
    taking the cores of every later test), then the timeout is raised."""
    command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", BLENDER, *blender_args]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
