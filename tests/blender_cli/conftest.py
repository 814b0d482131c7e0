"""`blender -b` tier: Debian's Blender 3.4 with the legacy add-on zip, in a throw-away HOME."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    """Runs `blender -b ...` with HOME, the backend Python and the model set; returns the result."""
    if BLENDER is None:
        pytest.skip("Debian's blender is not installed (make system-deps)")
    work = tmp_path_factory.mktemp("blender_cli")
    from wav2sem.testing import write_tiny_bundle
    bundle = write_tiny_bundle(work / "bundle", vertex_count=VERTEX_COUNT)
    env = dict(os.environ, HOME=str(work / "home"), WAV2SEM_PYTHON=sys.executable, WAV2SEM_MODEL=str(bundle))
    (work / "home").mkdir()

    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        result = subprocess.run([BLENDER, "-b", *args], env=env, cwd=work, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"blender exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    subprocess.run([sys.executable, str(REPO / "build_addon.py")], check=True, capture_output=True)
    zip_path = next(p for p in (REPO / "dist").glob("wav2sem_lipsync-*.zip") if "extension" not in p.name)
    run("--python-expr", "import bpy, addon_utils; "
        f"bpy.ops.preferences.addon_install(filepath={str(zip_path)!r}); "
        "addon_utils.enable('wav2sem_lipsync', default_set=True); bpy.ops.wm.save_userpref()")
    installed = work / "home" / ".config" / "blender"
    addon_dir = next(installed.glob("*/scripts/addons/wav2sem_lipsync"))

    from wav2sem.template import Template
    template = Template.load(Path(bundle) / "template.npz").vertices
    np.save(work / "template.npy", template)
    (work / "make_scene.py").write_text(MAKE_SCENE)
    run("--factory-startup", "--python", str(work / "make_scene.py"), "--", str(work / "template.npy"),
        str(work / "scene.blend"))
    run.work, run.bundle, run.addon_dir, run.template = work, Path(bundle), addon_dir, template  # type: ignore[attr-defined]
    return run
