"""Matrix tier "blender": the installed add-on in Blender 5.0 (bpy module) under bad input and
backend faults, driven only through its operators. Every case starts from a head that already
carries the user's work (a Basis, a sculpted key, an earlier take, an object action) and checks
that the operator fails with one sentence and leaves all of it exactly as it was."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from ci_policy import cannot_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blender"))   # bpy_helpers (sets HOME first)
try:
    from bpy_helpers import PACKAGE, REPO, VERTEX_COUNT, addon_utils, assert_same, bpy, make_head, snapshot
except ImportError as exc:       # as the bpy tier's conftest: a missing or broken bpy, said the same way
    cannot_run(f"the matrix's blender tier (tests/reliability/test_matrix_blender.py) cannot run: the bpy module "
               f"does not import ({type(exc).__name__}: {exc}; `make setup` installs it)")

from matrix_helpers import assert_one_sentence, speechlike, write_audio  # noqa: E402
from matrix_inputs import AUDIO_CASES, FAIL  # noqa: E402


def matrix(case: str, expected: str):
    return pytest.mark.matrix("blender", case, expected)


@pytest.fixture(scope="module")
def blender_bundle(matrix_dir) -> Path:
    from wav2sem.testing import write_tiny_bundle

    return Path(write_tiny_bundle(matrix_dir / "bundle400", vertex_count=VERTEX_COUNT))


@pytest.fixture(scope="module")
def template(blender_bundle) -> np.ndarray:
    from wav2sem.template import Template

    return Template.load(blender_bundle / "template.npz").vertices.astype(np.float64)


@pytest.fixture(scope="module")
def addon(blender_bundle, matrix_dir):
    """The built extension zip, installed and enabled (or the one tests/blender installed)."""
    installed_here = PACKAGE not in bpy.context.preferences.addons
    if installed_here:
        import subprocess

        dist = matrix_dir / "dist"
        subprocess.run([sys.executable, str(REPO / "build_addon.py"), "--dist", str(dist)], check=True,
                       capture_output=True)
        zip_path = next(dist.glob("wav2sem_lipsync-*-extension.zip"))
        assert bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                        enable_on_install=True) == {"FINISHED"}
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    saved_model, prefs.model = prefs.model, str(blender_bundle)
    saved_python = os.environ.get("WAV2SEM_PYTHON")
    os.environ["WAV2SEM_PYTHON"] = sys.executable
    yield sys.modules[PACKAGE]
    prefs.model = saved_model
    if saved_python is None:
        os.environ.pop("WAV2SEM_PYTHON", None)
    else:
        os.environ["WAV2SEM_PYTHON"] = saved_python
    if installed_here:
        addon_utils.disable(PACKAGE)


@pytest.fixture
def scene(addon):
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.actions, bpy.data.sounds):
        for item in list(collection):
            collection.remove(item)
    if bpy.context.scene.sequence_editor is not None:
        bpy.context.scene.sequence_editor_clear()
    bpy.context.scene.frame_set(1)
    return bpy.context.scene


@pytest.fixture(scope="module")
def speech(matrix_dir) -> Path:
    return write_audio(matrix_dir / "blender_line.wav", speechlike(1.2))


@pytest.fixture
def head(scene, template, speech):
    """The user's head: Basis, a sculpted key, an earlier take and an action of their own."""
    obj = make_head(template)
    obj.shape_key_add(name="Basis", from_mix=False)
    smile = obj.shape_key_add(name="Smile", from_mix=False)
    smile.data[0].co = (9.0, 9.0, 9.0)
    smile.value = 0.25
    assert bpy.ops.wav2sem.generate_lipsync(object=obj.name, audio_path=str(speech)) == {"FINISHED"}
    walk = bpy.data.actions.new("UserWalk")
    walk.use_fake_user = True
    obj.animation_data_create().action = walk
    return obj


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """Blender's and the backend's temporary folder, so what is left behind is visible."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def operator_error(call) -> str:
    """Run an operator that must fail; the report text the user sees (one sentence)."""
    with pytest.raises(RuntimeError) as info:
        call()
    text = str(info.value).strip()
    lines = [line.removeprefix("Error: ").strip() for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"{len(lines)} lines reported: {text!r}"
    return lines[0]


def fails_cleanly(obj, seen, call, *names: str) -> str:
    before = snapshot(obj)
    message = None
    try:
        message = seen(operator_error(call))
        assert_one_sentence(message, *names)
    finally:
        assert_same(before, snapshot(obj))
    return message


# ----- bad audio ----------------------------------------------------------------------------------
BAD_AUDIO = [c for c in AUDIO_CASES if c.expect == FAIL and not c.needs_permissions
             and c.name in ("missing file", "empty file (0 bytes)", "random bytes", "text named .wav", "0.05 s",
                            "float WAV with NaN")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=matrix(f"generate: audio {c.name}",
                                                                         "one sentence; mesh, keys, actions unchanged"))
                                  for c in BAD_AUDIO])
def test_bad_audio(case, head, tmp_path, temp_root, seen):
    audio = case.make(tmp_path)
    fails_cleanly(head, seen, lambda: bpy.ops.wav2sem.generate_lipsync(object=head.name, audio_path=str(audio)),
                  audio.name)
    assert not [p for p in temp_root.iterdir() if "wav2sem" in p.name], f"left in TMPDIR: {list(temp_root.iterdir())}"


# ----- the object -----------------------------------------------------------------------------------
@matrix("generate: mesh in Edit Mode", "one sentence; unchanged")
def test_mesh_in_edit_mode(head, speech, seen):
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == head)
    bpy.context.view_layer.objects.active = head
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        assert head.mode == "EDIT"
        before = snapshot(head)
        message = seen(operator_error(lambda: bpy.ops.wav2sem.generate_lipsync(object=head.name,
                                                                                audio_path=str(speech))))
        assert_one_sentence(message, head.name, "Object Mode")
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    assert_same(before, snapshot(head))


@matrix("generate: a non-mesh object (an empty)", "one sentence naming it")
def test_non_mesh(head, speech, seen):
    empty = bpy.data.objects.new("Rig", None)
    bpy.context.scene.collection.objects.link(empty)
    fails_cleanly(head, seen, lambda: bpy.ops.wav2sem.generate_lipsync(object="Rig", audio_path=str(speech)), "Rig")


# ----- the backend --------------------------------------------------------------------------------
@matrix("generate: backend Python missing (WAV2SEM_PYTHON points nowhere)", "one sentence naming it; unchanged")
def test_missing_backend_python(head, speech, tmp_path, monkeypatch, seen):
    nowhere = tmp_path / "no_env" / "bin" / "python3"
    monkeypatch.setenv("WAV2SEM_PYTHON", str(nowhere))
    fails_cleanly(head, seen, lambda: bpy.ops.wav2sem.generate_lipsync(object=head.name, audio_path=str(speech)),
                  str(nowhere))


@matrix("check backend: backend Python missing", "one sentence naming it")
def test_check_with_missing_backend_python(addon, tmp_path, monkeypatch, seen):
    nowhere = tmp_path / "gone" / "python3"
    monkeypatch.setenv("WAV2SEM_PYTHON", str(nowhere))
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    try:
        bpy.ops.wav2sem.check_backend()
        message = prefs.status
    except RuntimeError as exc:
        message = str(exc).strip().removeprefix("Error: ")
    seen(message)
    assert_one_sentence(message, str(nowhere))


def fake_python(tmp_path: Path, *switches: str) -> str:
    wrapper = tmp_path / "fake-python"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join([sys.executable, str(REPO / "tests" / "fake_backend.py"),
                                                        *switches]) + "\n")
    wrapper.chmod(0o755)
    return str(wrapper)


@matrix("generate: backend dies mid-take (exit 3 after a progress event)", "one sentence; unchanged; no temp left")
def test_backend_dies_mid_take(head, speech, tmp_path, temp_root, monkeypatch, template, seen):
    np.save(tmp_path / "template.npy", template.astype(np.float32))
    monkeypatch.setenv("WAV2SEM_PYTHON", fake_python(tmp_path, "--crash-after-progress", "1", "--template",
                                                     str(tmp_path / "template.npy")))
    fails_cleanly(head, seen, lambda: bpy.ops.wav2sem.generate_lipsync(object=head.name, audio_path=str(speech)),
                  "exit code 3")
    left = [p.name for p in temp_root.iterdir() if not p.name.startswith("fake_wav2sem_")]   # the fake's own
    assert not left, f"the add-on left {left} in TMPDIR"


@matrix("generate: wrong vertex count (slow backend)", "refused before inference, naming both counts")
def test_wrong_vertex_count_refused_before_inference(scene, template, speech, tmp_path, monkeypatch, seen):
    monkeypatch.setenv("WAV2SEM_PYTHON", fake_python(tmp_path, "--vertex-count", "200", "--slow", "15"))
    obj = make_head(template, vertex_count=150)
    obj.shape_key_add(name="Basis", from_mix=False)
    started = time.monotonic()
    fails_cleanly(obj, seen, lambda: bpy.ops.wav2sem.generate_lipsync(object=obj.name, audio_path=str(speech)),
                  "150", "200")
    assert time.monotonic() - started < 8, "refused only after the (15 s) inference"
