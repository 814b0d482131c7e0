"""The generate path under faults (issue 9): long non-ASCII take names, a cancel that
arrives with the result, a mesh the model cannot drive, a failing close, a backend that
dies mid-take. Blender 5.0 (bpy module), real backend processes."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time

import pytest

from bpy_helpers import PACKAGE, assert_same, bpy, cancel_as_the_result_arrives, make_head, snapshot


def addon_module(name: str):
    return sys.modules[f"{PACKAGE}.{name}"]


class Props:
    """What the panel passes to the operator."""
    object, audio_path, strip, subject, intensity, output_mode = "Head", "", "", "", 1.0, "COMPACT"


def test_long_non_ascii_name_regenerates_one_take_and_clears_everything(scene, template, speech, addon, tmp_path):
    audio = tmp_path / (("ä日" * 30) + ".wav")          # 60 characters, 150 bytes
    shutil.copy(speech, audio)
    head = make_head(template)
    for mode in ("COMPACT", "PER_FRAME"):
        assert bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(audio), output_mode=mode) == {"FINISHED"}
    apply = addon_module("scene.takes")
    takes = apply.list_takes(head)
    assert len(takes) == 1 and len(takes[0].encode()) <= 63
    key = head.data.shape_keys
    assert len(key.animation_data.nla_tracks) == 1 and len(bpy.data.actions) == 1
    assert all(block.name.startswith(takes[0] + ".") for block in key.key_blocks[1:])

    assert bpy.ops.wav2sem.clear_lipsync(object="Head") == {"FINISHED"}
    assert head.data.shape_keys is None and not bpy.data.actions
    # Two long labels that differ only past the cut still name two takes.
    names = {apply.take_name_for(audio.stem + ending) for ending in ("a", "b")}
    assert len(names) == 2 and all(len(n.encode()) <= apply.TAKE_NAME_BYTES for n in names)


def test_cancel_after_the_result_arrived_writes_nothing(scene, template, speech, addon):
    head = make_head(template)
    head.shape_key_add(name="Basis", from_mix=False)
    before = snapshot(head)

    class Inputs(Props):
        audio_path = str(speech)
    outcome = cancel_as_the_result_arrives(Inputs)
    assert outcome.status == {"CANCELLED"}
    assert any("cancelled" in message for _, message in outcome.reports)
    assert_same(before, snapshot(head))


@pytest.fixture
def logging_python(tmp_path):
    """The real backend behind `tee`: every request line the add-on sends is logged."""
    log = tmp_path / "requests.jsonl"
    wrapper = tmp_path / "logging-python"
    wrapper.write_text(f"#!/bin/sh\ntee {log} | exec {sys.executable} -m wav2sem serve\n")
    wrapper.chmod(0o755)
    return wrapper, log


def test_wrong_vertex_count_is_refused_before_any_inference(scene, speech, addon, logging_python, monkeypatch):
    wrapper, log = logging_python
    monkeypatch.setenv("WAV2SEM_PYTHON", str(wrapper))
    bpy.ops.mesh.primitive_monkey_add()
    bpy.context.active_object.name = "Suzanne"
    before = snapshot(bpy.context.active_object)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Error: 'Suzanne' has 507 vertices but the model's template has 400; "):
        bpy.ops.wav2sem.generate_lipsync(object="Suzanne", audio_path=str(speech))
    assert time.monotonic() - started < 30
    ops = [json.loads(line)["op"] for line in log.read_text().splitlines() if line.strip()]
    assert "model_info" in ops and "generate" not in ops, ops
    assert_same(before, snapshot(bpy.data.objects["Suzanne"]))
    addon_module("core.client").POOL.close()


def test_a_failing_close_never_leaves_a_lip_sync_running(scene, template, speech, addon, monkeypatch):
    head = make_head(template)
    pool = addon_module("core.client").POOL

    def broken_release(keep_warm):
        raise BrokenPipeError("simulated failure while closing the backend")
    monkeypatch.setattr(pool, "release", broken_release)
    try:
        bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))
    except RuntimeError:
        pass                                   # whether it reports the close or not: no state may stick
    assert addon_module("core.runs")._ACTIVE == []
    assert not scene.wav2sem_lipsync.running and scene.wav2sem_lipsync.status == ""
    monkeypatch.undo()
    assert bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech)) == {"FINISHED"}
    assert addon_module("scene.takes").list_takes(head) == ["LipSync_line"]


def test_backend_dying_mid_take_leaves_no_temporary_folder(scene, template, speech, addon, fake_python, tmp_path,
                                                           monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("WAV2SEM_PYTHON", fake_python("--vertex-count", "400", "--crash-after-progress", "2"))
    head = make_head(template)
    before = snapshot(head)
    with pytest.raises(RuntimeError, match=r"stopped unexpectedly \(exit code 3\)"):
        bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech))
    assert_same(before, snapshot(head))
    assert [p.name for p in temp.iterdir() if p.name.startswith("wav2sem_lipsync_")] == []


def test_a_run_folder_left_by_a_killed_blender_is_removed_by_the_next_take(scene, template, speech, addon, tmp_path,
                                                                          monkeypatch):
    import os
    import subprocess
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = temp / f"wav2sem_lipsync_{ended.pid}_x1"           # its Blender was killed mid-take
    live = temp / f"wav2sem_lipsync_{os.getppid()}_x2"         # another Blender, still running
    for folder in (stale, live):
        folder.mkdir()
        (folder / "offsets.npy").write_bytes(b"partial")
    make_head(template)
    assert bpy.ops.wav2sem.generate_lipsync(object="Head", audio_path=str(speech)) == {"FINISHED"}
    assert sorted(p.name for p in temp.iterdir()) == [live.name]
