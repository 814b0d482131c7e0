"""The interactive path in a real Blender 3.4 window under Xvfb: the prewarm, the modal
operator with progress, Esc, the Cancel button, Check during a take, why the button is
disabled, one-step undo, and a file load in the middle of a run."""
from __future__ import annotations

import json
import shutil

import pytest
from cli_helpers import REPO, run_in_window, write_wav

pytestmark = pytest.mark.blender_cli


def test_modal_generate_cancel_and_undo(cli, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (Debian package xvfb)")
    audio = write_wav(tmp_path / "line.wav", 1.2)
    long_audio = write_wav(tmp_path / "long.wav", 300.0)   # long enough to be caught while decoding
    out = tmp_path / "report.json"
    result = run_in_window([str(cli.work / "scene.blend"), "--enable-event-simulate", "--python",
                            str(REPO / "tests" / "blender_cli" / "gui_session.py"), "--", str(audio), str(long_audio),
                            str(out)], cli.env)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not report["errors"], report["errors"]
    # Disabled with a reason until there is audio.
    assert report["no_audio_poll"] is False and report["no_audio_reason"].startswith("No audio")
    assert report["with_audio_poll"] is True
    # The panel's prewarm, run by Blender's event loop: backend started and greeted, the Style
    # list filled, and the first Generate runs on that very process.
    assert report["prewarm_error"] is None and report["prewarm_pid"] is not None, report
    assert report["styles_after_prewarm"], report
    assert report["generate_pid"] == report["prewarm_pid"]
    # Modal: returns at once, shows progress, then writes the take.
    assert report["invoke"] == ["RUNNING_MODAL"]
    fractions = report["first_shown"]
    assert len(fractions) >= 2 and fractions[-1] > 0 and fractions == sorted(fractions)   # forward only
    assert report["before"] is None
    assert report["after_generate"][0] == "Basis" and len(report["after_generate"]) > 1
    assert report["actions"] == ["LipSync_line"]
    # One undo step removes the whole take; redo brings it back.
    assert report["after_undo"] is None and report["actions_after_undo"] == []
    assert report["after_redo"] == report["after_generate"]
    # Esc and the Cancel button stop a running generation and leave the mesh as it was.
    assert report["esc_running"] is True
    # Check during the take returns at once, the take runs on, and Check reports afterwards.
    assert report["check_invoke"] == ["RUNNING_MODAL"] and report["check_invoke_s"] < 1.0, report
    assert report["running_after_check"] is True
    assert "Model:" in report["check_status"], report["check_status"]
    assert report["after_esc"] == report["before_cancel"] == report["after_generate"]
    assert report["cancel_poll"] is True
    assert report["after_button"] == report["after_generate"]
    # Loading a file mid-run ends the job; nothing is left "running".
    assert report["active_after_load"] == 0 and report["running_after_load"] is False
