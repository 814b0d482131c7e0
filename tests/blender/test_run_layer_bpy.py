"""The run layer (addon/ops/run.py) as the operators use it: failures name their feature, a
start failure leaves the shared warm backend alone, Check asks for the Device the
preferences name, Ctrl+C during a take's write leaves the scene as it was, a packed sound
that vanished is a sentence."""
from __future__ import annotations

import sys

import pytest

from bpy_helpers import PACKAGE, add_sound_strip, assert_same, bpy, make_head, snapshot


def module(name: str):
    return sys.modules[f"{PACKAGE}.{name}"]


def prefs():
    return bpy.context.preferences.addons[PACKAGE].preferences


def test_a_fit_face_start_failure_names_fit_face(scene, addon, monkeypatch):
    bpy.ops.mesh.primitive_uv_sphere_add()
    head = bpy.context.active_object
    fit_run = module("ops.fit_run")

    def broken(*args, **kwargs):
        raise OSError("simulated: the scratch folder cannot be made")
    monkeypatch.setattr(fit_run.scratch, "make_run_folder", broken)
    with pytest.raises(RuntimeError, match=r"Fit Face failed unexpectedly: OSError\('simulated"):
        bpy.ops.wav2sem.fit_face(object=head.name)
    assert module("core.runs")._ACTIVE == []


def test_a_start_failure_keeps_the_warm_backend(scene, addon, template, speech, monkeypatch):
    """A failure while a take starts (here: its audio cannot be written out) must not stop the
    backend the prewarm and Check share."""
    client = module("core.client")
    prefs().keep_warm = True
    head = make_head(template)
    warm, _ = client.POOL.get(sys.executable)
    lipsync_run = module("ops.lipsync_run")

    def broken(audio, folder):
        raise OSError("simulated: the audio cannot be copied")
    monkeypatch.setattr(lipsync_run.audio_source, "file_for_backend", broken)
    try:
        with pytest.raises(RuntimeError, match="Lip sync failed unexpectedly"):
            bpy.ops.wav2sem.generate_lipsync(object=head.name, audio_path=str(speech))
        assert client.POOL.backend is warm and warm.alive
    finally:
        client.POOL.close()


def test_check_asks_for_the_device_the_preferences_name(scene, addon):
    """This machine has no CUDA GPU: a Check for 'cuda' must say so, as Generate would."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: 'cuda' is available here")
    prefs().device = "cuda"
    try:
        with pytest.raises(RuntimeError, match="CUDA was requested but no CUDA GPU is available"):
            bpy.ops.wav2sem.check_backend()
        assert "CUDA" in prefs().status
    finally:
        prefs().device = "auto"
        module("core.client").POOL.close()


def test_a_vanished_packed_sound_is_one_sentence(scene, addon, template, speech):
    head = make_head(template)
    strip = add_sound_strip(scene, speech, 1)
    strip.sound.pack()
    inputs = module("ops.lipsync_run")
    audio = module("scene.audio_source").find_audio(scene, "", strip.name)
    assert audio.packed_sound
    bpy.data.sounds.remove(strip.sound)
    with pytest.raises(module("core.errors").UserError, match="was removed from the file"):
        inputs.audio_source.file_for_backend(audio, str(speech.parent))
    assert head.data.shape_keys is None


def test_ctrl_c_during_the_write_leaves_the_scene_as_it_was(scene, addon, template, speech, monkeypatch):
    head = make_head(template)
    head.shape_key_add(name="Basis", from_mix=False)
    before = snapshot(head)
    takes = module("scene.takes")
    real = takes.animate_keys

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)              # half the take is in the scene ...
        raise KeyboardInterrupt            # ... when Ctrl+C arrives
    monkeypatch.setattr(takes, "animate_keys", interrupted)
    assert bpy.ops.wav2sem.generate_lipsync(object=head.name, audio_path=str(speech)) == {"CANCELLED"}
    assert_same(before, snapshot(head))
    assert not [a for a in bpy.data.actions if a.name.startswith("LipSync")]
    assert module("core.runs")._ACTIVE == []
    module("core.client").POOL.close()
