"""bpy-module tier (Blender 5.0 from PyPI): the built extension zip installed into a
throw-away HOME, driven with a real backend subprocess (`python -m wav2sem serve`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ci_policy import tier_cannot_run

try:
    # Sets HOME, then imports bpy.
    from bpy_helpers import _HOME, PACKAGE, REPO, VERTEX_COUNT, addon_utils, bpy, write_wav
except ImportError as exc:
    pytest_pycollect_makemodule = tier_cannot_run(
        f"the bpy tier (tests/blender) cannot run: the bpy module does not import "
        f"({type(exc).__name__}: {exc}; `make setup` installs it)")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("blender")


@pytest.fixture(scope="session")
def bundle(workdir) -> Path:
    from wav2sem.testing import write_tiny_bundle
    return Path(write_tiny_bundle(workdir / "bundle", vertex_count=VERTEX_COUNT))


@pytest.fixture(scope="session")
def template(bundle) -> np.ndarray:
    from wav2sem.template import Template
    return Template.load(bundle / "template.npz").vertices.astype(np.float64)


@pytest.fixture(scope="session")
def speech(workdir) -> Path:
    return write_wav(workdir / "line.wav", 1.6)


@pytest.fixture(scope="session")
def addon(bundle, workdir):
    """Build the zips, install the 4.2+ extension zip and enable it; the real backend."""
    dist = workdir / "dist"
    subprocess.run([sys.executable, str(REPO / "build_addon.py"), "--dist", str(dist)], check=True,
                   capture_output=True)
    zip_path = next(dist.glob("wav2sem_lipsync-*-extension.zip"))
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}
    assert PACKAGE in bpy.context.preferences.addons
    module = sys.modules[PACKAGE]
    assert Path(module.__file__).is_relative_to(_HOME), "the add-on must come from the installed zip"
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.model = str(bundle)
    previous = os.environ.get("WAV2SEM_PYTHON")
    os.environ["WAV2SEM_PYTHON"] = sys.executable   # .venv python with the editable backend
    yield module
    addon_utils.disable(PACKAGE)
    if previous is None:
        os.environ.pop("WAV2SEM_PYTHON", None)
    else:
        os.environ["WAV2SEM_PYTHON"] = previous


@pytest.fixture
def scene(addon):
    """An empty scene at 29.97 fps (fps_base exercised)."""
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.actions, bpy.data.sounds):
        for item in list(collection):
            collection.remove(item)
    scene = bpy.context.scene
    if scene.sequence_editor is not None:
        scene.sequence_editor_clear()
    scene.render.fps, scene.render.fps_base = 30, 1.001
    scene.frame_set(1)
    return scene
@pytest.fixture
def fake_python(tmp_path):
    """A 'Python' that runs tests/fake_backend.py with switches (for crash/cancel tests)."""
    def make(*switches: str) -> str:
        wrapper = tmp_path / "fake-python"
        args = " ".join([sys.executable, str(REPO / "tests" / "fake_backend.py"), *switches])
        wrapper.write_text(f"#!/bin/sh\nexec {args}\n")
        wrapper.chmod(0o755)
        return str(wrapper)
    return make

