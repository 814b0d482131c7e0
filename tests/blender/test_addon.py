"""The installed add-on in Blender 5.0 (bpy module) with a real backend subprocess."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bpy_helpers import (MESH_OFFSET, MESH_SCALE, PACKAGE, Y_UP_TO_Z_UP, add_sound_strip, assert_same, bpy,
                       evaluated_coords, make_head, snapshot, write_wav)

STRIP_FRAME = 10
SCENE_FPS = 30 / 1.001


@pytest.fixture(scope="session")
def reference_offsets(bundle, speech, workdir) -> np.ndarray:
    """The backend's own answer for the same audio, from its command line (independent path)."""
    out = workdir / "reference.npy"
    subprocess.run([sys.executable, "-m", "wav2sem", "infer", str(speech), "-o", str(out), "--model", str(bundle)],
                   check=True, capture_output=True)
    return np.load(out).astype(np.float64)


def expected_mesh(template, offsets, scene_frame, start=STRIP_FRAME, intensity=1.0, model_fps=30.0):
    """Rest mesh plus the offsets linearly interpolated at this frame's time, in mesh space."""
    position = (scene_frame - start) / SCENE_FPS * model_fps
    lower = int(np.floor(position))
    frac = position - lower
    upper = min(lower + 1, len(offsets) - 1)
    offset = offsets[lower] * (1 - frac) + offsets[upper] * frac
    return (template + intensity * offset) @ Y_UP_TO_Z_UP.T * MESH_SCALE + MESH_OFFSET


def take_frames(offsets, model_fps=30.0):
    return int(np.floor((len(offsets) - 1) / model_fps * SCENE_FPS + 1e-6)) + 1


def test_installed_addon_registers_everything(addon):
    for op in ("generate_lipsync", "clear_lipsync", "install_backend", "check_backend", "cancel_lipsync"):
        assert hasattr(bpy.ops.wav2sem, op)
    assert hasattr(bpy.types, "WAV2SEM_PT_lipsync")
    assert hasattr(bpy.types.Scene, "wav2sem_lipsync")
    assert bpy.context.preferences.addons[PACKAGE].preferences.keep_warm


def test_compact_take_follows_backend_offsets(scene, template, speech, reference_offsets, addon):
    head = make_head(template)
    head.shape_key_add(name="Basis", from_mix=False)
    smile = head.shape_key_add(name="Smile", from_mix=False)
    smile.data[0].co = (9.0, 9.0, 9.0)          # a user key with its own data, switched off
    smile.value = 0.0
    add_sound_strip(scene, speech, STRIP_FRAME)
    before = snapshot(head)

    result = bpy.ops.wav2sem.generate_lipsync(object="Head")      # audio: the active sound strip
    assert result == {"FINISHED"}

    key = head.data.shape_keys
    names = [b.name for b in key.key_blocks]
    assert names[:2] == ["Basis", "Smile"]
    take_keys = names[2:]
    assert 1 <= len(take_keys) <= 64 and all(n.startswith("LipSync_line.") for n in take_keys)
    # Basis and the user's key are untouched.
    after = snapshot(head)
    for old, new in zip(before["keys"], after["keys"][:2]):
        assert old[:5] == new[:5]
        np.testing.assert_array_equal(old[5], new[5])
    # One action on one NLA track, named after the take.
    assert [a.name for a in bpy.data.actions] == ["LipSync_line"]
    assert [t.name for t in key.animation_data.nla_tracks] == ["LipSync_line"]

    frames = take_frames(reference_offsets)
    # One weight curve per basis key, keyed on every frame plus a zero before and after;
    # sliders opened to [-1, 1] so no weight is clamped.
    curves = sys.modules[PACKAGE + ".scene.versions"].action_fcurves(bpy.data.actions["LipSync_line"])
    assert sorted(c.data_path for c in curves) == sorted(f'key_blocks["{n}"].value' for n in take_keys)
    for curve in curves:
        assert len(curve.keyframe_points) == frames + 2
        assert curve.keyframe_points[0].co[1] == 0.0 and curve.keyframe_points[-1].co[1] == 0.0
        assert max(abs(k.co[1]) for k in curve.keyframe_points) <= 1.0
    assert all((key.key_blocks[n].slider_min, key.key_blocks[n].slider_max) == (-1.0, 1.0) for n in take_keys)
    tolerance = bpy.context.preferences.addons[PACKAGE].preferences.tolerance
    errors, norms = [], []
    for frame in range(STRIP_FRAME, STRIP_FRAME + frames):
        expected = expected_mesh(template, reference_offsets, frame)
        rest = expected_mesh(template, np.zeros_like(reference_offsets), frame)
        errors.append(np.sum((evaluated_coords(head, frame) - expected) ** 2))
        norms.append(np.sum((expected - rest) ** 2))
    relative = np.sqrt(sum(errors) / sum(norms))
    assert relative <= tolerance + 1e-3, relative
    assert sum(norms) > 0  # the tiny model really moves the face
    # Silent outside the take: the rest shape before it starts and after it ends.
    rest = expected_mesh(template, np.zeros_like(reference_offsets), STRIP_FRAME)
    np.testing.assert_allclose(evaluated_coords(head, STRIP_FRAME - 1), rest, atol=1e-5)
    np.testing.assert_allclose(evaluated_coords(head, STRIP_FRAME + frames + 1), rest, atol=1e-5)


@pytest.mark.parametrize("factored", [True, False], ids=["factors", "older-backend-dense"])
def test_vertex_take_from_factors_or_dense_offsets(scene, template, speech, reference_offsets, addon, monkeypatch,
                                                   factored):
    """The tiny FaceFormer is factored: the add-on asks for its coefficients and builds the
    take from them; a backend that names no output_basis (older) still gets the dense path.
    Both give the backend's own offsets (from `wav2sem infer`) within the tolerance."""
    mapping, jobs = sys.modules[PACKAGE + ".core.mapping"], sys.modules[PACKAGE + ".core.jobs"]
    calls = []
    for name in ("prepare_take", "prepare_factor_take"):
        original = getattr(mapping, name)
        monkeypatch.setattr(mapping, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    if not factored:
        parse = jobs.parse_model_info
        monkeypatch.setattr(jobs, "parse_model_info",
                            lambda data: parse({k: v for k, v in data.items() if k != "output_basis"}))
    head = make_head(template)
    assert bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech)) == {"FINISHED"}
    assert calls == ["prepare_factor_take" if factored else "prepare_take"]
    frames = take_frames(reference_offsets)
    errors, norms = [], []
    for frame in range(1, 1 + frames, 7):
        expected = expected_mesh(template, reference_offsets, frame, start=1)
        rest = expected_mesh(template, np.zeros_like(reference_offsets), frame, start=1)
        errors.append(np.sum((evaluated_coords(head, frame) - expected) ** 2))
        norms.append(np.sum((expected - rest) ** 2))
    tolerance = bpy.context.preferences.addons[PACKAGE].preferences.tolerance
    assert np.sqrt(sum(errors) / sum(norms)) <= tolerance + 1e-3


def test_per_frame_take_is_exact_and_regenerating_replaces(scene, template, speech, reference_offsets, addon):
    head = make_head(template)
    bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))       # COMPACT, at frame 1
    result = bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech), output_mode="PER_FRAME",
                                              intensity=0.5)
    assert result == {"FINISHED"}
    frames = take_frames(reference_offsets)
    key = head.data.shape_keys
    assert len(key.key_blocks) == 1 + frames                 # Basis + one key per frame, old take gone
    assert [a.name for a in bpy.data.actions] == ["LipSync_line"]
    assert len(key.animation_data.nla_tracks) == 1
    for frame in (1, 2, frames // 2, frames):
        np.testing.assert_allclose(evaluated_coords(head, frame),
                                   expected_mesh(template, reference_offsets, frame, start=1, intensity=0.5),
                                   atol=2e-5)

    assert bpy.ops.wav2sem.clear_lipsync(object="Head") == {"FINISHED"}
    assert head.data.shape_keys is None                      # the add-on made the Basis: gone too
    assert not bpy.data.actions


def test_vertex_count_mismatch_names_both_counts_and_changes_nothing(scene, template, speech, addon):
    head = make_head(template, vertex_count=350)
    before = snapshot(head)
    with pytest.raises(RuntimeError, match=r"'Head' has 350 vertices but the model's template has 400"):
        bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))
    assert_same(before, snapshot(head))


def test_missing_audio_and_object_are_clear_errors(scene, template, addon):
    make_head(template)
    with pytest.raises(RuntimeError, match="No audio: select a sound strip"):
        bpy.ops.wav2sem.generate_lipsync(object="Head")
    with pytest.raises(RuntimeError, match="no object named 'Nose'"):
        bpy.ops.wav2sem.generate_lipsync(object="Nose", audio_path="x.wav")


def test_failure_while_writing_rolls_back(scene, template, speech, addon, monkeypatch):
    head = make_head(template)
    head.shape_key_add(name="Basis", from_mix=False)
    bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))     # an existing take
    before = snapshot(head)
    versions = sys.modules[PACKAGE + ".scene.versions"]

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after the keys were added")
    monkeypatch.setattr(versions, "add_nla_strip", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech), output_mode="PER_FRAME")
    assert_same(before, snapshot(head))


def test_backend_crash_leaves_mesh_unchanged_and_shows_stderr(scene, template, speech, addon, fake_python,
                                                              monkeypatch):
    head = make_head(template)
    before = snapshot(head)
    monkeypatch.setenv("WAV2SEM_PYTHON", fake_python("--vertex-count", "400", "--crash-after-progress", "1"))
    with pytest.raises(RuntimeError, match=r"stopped unexpectedly \(exit code 3\).*crashed on purpose"):
        bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))
    assert_same(before, snapshot(head))
    assert sys.modules[PACKAGE + ".core.runs"]._ACTIVE == []


def test_cancel_leaves_mesh_unchanged(scene, template, addon, workdir):
    """The modal path's steps (start, poll, cancel, complete) with the real backend on a
    300 s clip (several seconds of decoding even on an idle machine), cancelled at the first
    decoding progress."""
    long_speech = write_wav(workdir / "long.wav", 300.0)
    head = make_head(template)
    head.shape_key_add(name="Basis", from_mix=False)
    before = snapshot(head)
    operators = sys.modules[PACKAGE + ".ops.generate"]

    class Props:  # what the panel passes to the operator
        object, audio_path, strip, subject, intensity, output_mode = "Head", str(long_speech), "", "", 1.0, "COMPACT"
    run = operators.LipSyncRun(operators.gather(bpy.context, Props))
    try:
        while run.job.fraction <= 0.3:          # decoding has started
            assert not run.job.poll(0.1), run.job.error
        run.cancel_requested = True
        run.job.cancel()
        while not run.job.poll(0.2):
            pass
        assert run.job.error.code == "CANCELLED" and run.job.result is None
    finally:
        run.close()
    assert_same(before, snapshot(head))
    assert sys.modules[PACKAGE + ".core.client"].POOL.get(sys.executable)[0].alive   # still warm after a cancel


def test_check_backend_reports_versions_devices_and_model(scene, addon):
    assert bpy.ops.wav2sem.check_backend() == {"FINISHED"}
    status = bpy.context.preferences.addons[PACKAGE].preferences.status
    assert "wav2sem 0.1.0" in status and "devices: cpu" in status
    assert "400 vertices" in status and "Python: " + sys.executable + " (environment)" in status
    assert [s.name for s in scene.wav2sem_lipsync.known_subjects]      # speaking styles offered in the panel


def test_install_backend_refuses_an_old_python(scene, addon, tmp_path):
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 3 8\n")
    old.chmod(0o755)
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.install_python = str(old)
    try:
        with pytest.raises(RuntimeError, match=r"is Python 3\.8; the backend needs 3\.10 or newer"):
            bpy.ops.wav2sem.install_backend()
        assert "3.10 or newer" in prefs.status
    finally:
        prefs.install_python = ""


def test_packed_sound_strip_is_used_when_its_file_is_gone(scene, template, speech, addon, tmp_path):
    import shutil
    copy = tmp_path / "packed_line.wav"
    shutil.copy(speech, copy)
    head = make_head(template)
    strip = add_sound_strip(scene, copy, 3)
    strip.sound.pack()
    copy.unlink()
    assert bpy.ops.wav2sem.generate_lipsync(object="Head") == {"FINISHED"}
    assert [a.name for a in bpy.data.actions] == ["LipSync_line"]   # named after the strip
    assert len(head.data.shape_keys.key_blocks) > 1


def test_managed_environment_lives_in_the_extension_user_folder(addon):
    from bpy_helpers import _HOME
    venv = sys.modules[PACKAGE + ".ui.preferences"].managed_venv_dir()
    assert venv.name == "venv" and str(venv).startswith(_HOME) and "wav2sem_lipsync" in str(venv)


def test_backend_stays_warm_and_ends_when_the_addon_is_disabled(scene, template, speech, addon, bundle):
    """Runs last in this file: it disables and re-enables the add-on."""
    import os

    import addon_utils
    make_head(template)
    bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))
    pool = sys.modules[PACKAGE + ".core.client"].POOL
    backend, is_new = pool.get(sys.executable)
    assert not is_new and backend.alive            # kept warm between clicks
    pid = backend.pid
    addon_utils.disable(PACKAGE)
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        addon_utils.enable(PACKAGE)
        bpy.context.preferences.addons[PACKAGE].preferences.model = str(bundle)


def test_batch_preview_movie_renders_with_sound_on_blender_5(scene, template, speech, addon, tmp_path):
    """Blender 5.0 picks a movie through image_settings.media_type (FFMPEG is no longer an
    image format); the preview must still come out as a movie with an audio track."""
    import importlib

    obj = make_head(template)
    add_sound_strip(scene, speech, 1)
    scene.frame_start, scene.frame_end = 1, 4
    batch = importlib.import_module(addon.__name__ + ".batch")
    movie = tmp_path / "preview.mp4"
    batch.render_preview(scene, obj, str(movie), 10)
    data = movie.read_bytes()
    assert len(data) > 1000 and data[4:8] == b"ftyp"          # an MP4 container
    assert b"mp4a" in data and b"avc1" in data                 # AAC sound and H.264 video
