"""The Check operator with a lip sync running on the same backend (bpy as a module: the
operator runs synchronously, like in `blender -b`)."""
from __future__ import annotations

import sys
import time

import pytest

from bpy_helpers import PACKAGE, bpy


def test_check_during_a_take_reports_and_leaves_the_take_its_result(scene, addon, speech, fake_python, monkeypatch):
    client = sys.modules[PACKAGE + ".core.client"]
    python = fake_python("--slow", "3")
    monkeypatch.setenv("WAV2SEM_PYTHON", python)
    client.POOL.close()
    try:
        backend, _ = client.POOL.get(python)
        take = client.GenerateJob(backend, client.GenerateRequest(str(speech)))
        deadline = time.monotonic() + 20
        while take.fraction == 0.0 and not take.poll(0.05):
            assert time.monotonic() < deadline
        assert bpy.ops.wav2sem.check_backend() == {"FINISHED"}
        status = bpy.context.preferences.addons[PACKAGE].preferences.status
        assert "wav2sem 0.0-fake" in status and "200 vertices" in status and "(environment)" in status
        take.wait(timeout=30)
        assert take.error is None and take.result is not None and take.result.vertex_count == 200
        assert backend.alive     # the Check did not stop the backend the take was using
    finally:
        client.POOL.close()


def test_check_reports_a_missing_backend_python_in_one_sentence(scene, addon, monkeypatch, tmp_path):
    monkeypatch.setenv("WAV2SEM_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(RuntimeError, match="which is not a file"):   # an ERROR report, as the UI shows it
        bpy.ops.wav2sem.check_backend()
    status = bpy.context.preferences.addons[PACKAGE].preferences.status
    assert status.startswith("WAV2SEM_PYTHON points to") and status.count(".") <= 3
