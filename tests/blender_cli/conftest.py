"""`blender -b` tier: Debian's Blender 3.4 with the legacy add-on zip, in a throw-away HOME."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ci_policy import cannot_run, tier_cannot_run
from cli_helpers import BLENDER, MAKE_SCENE, REPO, VERTEX_COUNT

if BLENDER is None:
    pytest_pycollect_makemodule = tier_cannot_run(
        "the blender_cli tier (tests/blender_cli) cannot run: Debian's blender is not on PATH "
        "(make system-deps installs it)")


def blender_starts(env: dict) -> None:
    """Stops the tier, saying why, when `blender -b` does not start with its Python (a broken install)."""
    command = [BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr", "import bpy"]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        cannot_run(f"the blender_cli tier (tests/blender_cli) cannot run: {BLENDER} failed to start ({exc})")
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-300:]
        cannot_run(f"the blender_cli tier (tests/blender_cli) cannot run: `{BLENDER} -b` failed to start "
                   f"(exit status {result.returncode}: {tail})")


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    """Runs `blender -b ...` with HOME, the backend Python and the model set; returns the result."""
    work = tmp_path_factory.mktemp("blender_cli")
    (work / "home").mkdir()
    blender_starts(dict(os.environ, HOME=str(work / "home")))
    from wav2sem.testing import write_tiny_bundle
    bundle = write_tiny_bundle(work / "bundle", vertex_count=VERTEX_COUNT)
    env = dict(os.environ, HOME=str(work / "home"), WAV2SEM_PYTHON=sys.executable, WAV2SEM_MODEL=str(bundle))

    def run(*args: str, check: bool = True, timeout: float = 180, model: str | None = None) -> subprocess.CompletedProcess:
        """`model`: another bundle for this run (WAV2SEM_MODEL)."""
        run_env = env if model is None else dict(env, WAV2SEM_MODEL=model)
        result = subprocess.run([BLENDER, "-b", *args], env=run_env, cwd=work, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"blender exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    subprocess.run([sys.executable, str(REPO / "build_addon.py"), "--dist", str(work / "dist")], check=True,
                   capture_output=True)
    zip_path = next(p for p in (work / "dist").glob("wav2sem_lipsync-*.zip") if "extension" not in p.name)
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
    run.env = env  # type: ignore[attr-defined]
    return run
