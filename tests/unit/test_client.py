"""The backend client against a real subprocess: the fake backend (tests/fake_backend.py).

Item-specific cases live beside it: test_backend_process.py (routing, close, encoding) and
test_jobs.py (Check during a take, cancel, mesh check, watchdog)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from wav2sem_lipsync.core import client, jobs, protocol
from wav2sem_lipsync.core.client import BackendError, BackendProcess, CheckJob, GenerateJob, GenerateRequest


def test_hello_model_info_and_generate(start_fake, wav_file, tmp_path):
    backend = start_fake("--slow", "1.5")   # progress spread over 1.5 s: several polls see it move
    check = CheckJob(backend)
    check.wait(timeout=20)
    assert check.error is None and check.hello.devices == ("cpu",) and check.model_info.vertex_count == 200
    job = GenerateJob(backend, GenerateRequest(str(wav_file(2.0)), output=str(tmp_path / "out.npy")))
    seen = []
    job.wait(timeout=30, on_progress=lambda j: seen.append(j.fraction))
    assert job.error is None, job.error
    assert job.model_info.vertex_count == 200 and job.model_info.fps == 30.0
    assert job.result.frames == 60 and job.result.offsets == str(tmp_path / "out.npy")
    assert np.load(job.result.offsets).shape == (60, 200, 3)
    assert len(seen) >= 2 and job.fraction == 1.0


def test_progress_over_stages_only_moves_forward():
    fraction = 0.0
    seen = []
    for stage, value in (("load", 0.5), ("encode", 1.0), ("encode", 0.8), ("decode", 0.0), ("decode", 0.6),
                         ("decode", 1.0)):
        fraction = client.overall_fraction(stage, value, fraction)
        seen.append(fraction)
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.05) and seen[-1] == 1.0
    assert seen[4] == pytest.approx(0.3 + 0.7 * 0.6)


def test_domain_error_is_reported_and_backend_keeps_serving(start_fake, tmp_path):
    backend = start_fake()
    job = GenerateJob(backend, GenerateRequest(str(tmp_path / "missing.wav")), say_hello=True)
    job.wait(timeout=30)
    assert job.hello is not None
    assert job.error.code == "AUDIO_NOT_FOUND" and "missing.wav" in job.error.message
    assert backend.alive
    check = CheckJob(backend)
    check.wait(timeout=10)
    assert check.error is None and check.hello.protocol == 1


def test_cancel_ends_job_with_cancelled(start_fake, wav_file):
    backend = start_fake("--slow", "20")
    job = GenerateJob(backend, GenerateRequest(str(wav_file())))
    while job.fraction == 0.0 and not job.poll(0.1):
        pass
    started = time.monotonic()
    job.cancel()
    job.wait(timeout=30)
    assert job.error.code == protocol.CANCELLED and job.result is None
    assert time.monotonic() - started < 10
    assert backend.alive   # a cancel does not cost the warm backend


def test_backend_that_ignores_cancel_is_killed(start_fake, wav_file, monkeypatch):
    monkeypatch.setattr(jobs, "CANCEL_GRACE_S", 0.5)
    backend = start_fake("--slow", "60", "--ignore-cancel")
    job = GenerateJob(backend, GenerateRequest(str(wav_file())))
    job.poll(1.0)
    job.cancel()
    job.wait(timeout=20)
    assert job.error.code == protocol.CANCELLED
    assert not backend.alive


def test_crash_mid_generate_reports_stderr_tail(start_fake, wav_file):
    backend = start_fake("--crash-after-progress", "1")
    job = GenerateJob(backend, GenerateRequest(str(wav_file())))
    job.wait(timeout=30)
    assert job.error.code == protocol.BACKEND_DIED
    assert "exit code 3" in job.error.message
    message = job.error.user_message()
    assert "crashed on purpose" in message and "Traceback" not in message and "File " not in message
    assert "Traceback" in job.error.stderr_tail      # the whole tail stays for the console
    assert not backend.alive


def test_last_error_line_skips_traceback_frames():
    from wav2sem_lipsync.core.client import last_error_line
    tail = ("INFO wav2sem.serve: serving\nTraceback (most recent call last):\n  File \"x.py\", line 3, in f\n"
            "    raise RuntimeError('boom')\n    ^^^^^^^^^^^^^^^^\nRuntimeError: boom\n")
    assert last_error_line(tail) == "RuntimeError: boom"
    assert last_error_line("") == ""
    assert last_error_line("just one line") == "just one line"


def test_junk_on_stdout_is_skipped(start_fake, wav_file):
    backend = start_fake("--junk-stdout")
    job = GenerateJob(backend, GenerateRequest(str(wav_file(0.5))))
    job.wait(timeout=30)
    assert job.error is None and job.result.frames == 15


def test_result_warnings_reach_the_job(start_fake, wav_file):
    backend = start_fake("--warning", "The audio is nearly silent.")
    job = GenerateJob(backend, GenerateRequest(str(wav_file(0.5))))
    job.wait(timeout=30)
    assert job.result.warnings == ("The audio is nearly silent.",)


def test_protocol_mismatch_is_a_clear_error(start_fake):
    backend = start_fake("--protocol", "2")
    check = CheckJob(backend)
    check.wait(timeout=20)
    assert check.error.code == protocol.PROTOCOL_MISMATCH and "Install Backend" in check.error.message


def test_protocol_mismatch_stops_a_take_before_generate(start_fake, wav_file, tmp_path):
    log = tmp_path / "requests.log"
    backend = start_fake("--protocol", "2", "--log", str(log))
    job = GenerateJob(backend, GenerateRequest(str(wav_file(0.5))), say_hello=True)
    job.wait(timeout=20)
    assert job.error.code == protocol.PROTOCOL_MISMATCH
    assert "generate" not in log.read_text().split()


def test_bad_request_from_server_surfaces(start_fake):
    backend = start_fake()
    inbox = client.Inbox()
    request_id = backend.send("frobnicate", inbox=inbox)
    events = inbox.take(timeout=20)
    assert [(e.id, e.code) for e in events] == [(request_id, protocol.BAD_REQUEST)]
    assert "unknown op" in events[0].message


def test_missing_interpreter_fails_to_start(tmp_path):
    backend = BackendProcess(str(tmp_path / "no-python"))
    with pytest.raises(BackendError, match="Could not start the backend") as caught:
        backend.start()
    assert caught.value.code == client.START_FAILED


def test_close_is_safe_twice_and_ends_process(start_fake):
    backend = start_fake()
    CheckJob(backend).wait(timeout=20)
    pid = backend.pid
    backend.close()
    backend.close()
    assert not backend.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pool_restarts_a_dead_backend(fake_python):
    wrapper = fake_python()
    pool = client.BackendPool()
    try:
        first, new = pool.get(wrapper)
        assert new
        check = CheckJob(first)
        check.wait(timeout=20)
        assert check.hello.version == "0.0-fake"
        again, new = pool.get(wrapper)
        assert not new and again is first
        first.kill()
        second, new = pool.get(wrapper)
        assert new and second is not first and second.alive
    finally:
        pool.close()
    assert not second.alive


# --- which Python --------------------------------------------------------------------

def test_python_resolution_order(tmp_path):
    env_python, pref_python = tmp_path / "env-python", tmp_path / "pref-python"
    venv = tmp_path / "venv"
    for path in (env_python, pref_python, client.managed_python(venv)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    env = {client.PYTHON_ENV_VAR: str(env_python)}
    assert client.resolve_backend_python(env, str(pref_python), venv, "/me", True).source == "environment"
    assert client.resolve_backend_python({}, str(pref_python), venv, "/me", True).source == "preference"
    assert client.resolve_backend_python({}, "", venv, "/me", True).source == "managed"
    assert client.resolve_backend_python({}, "", tmp_path / "none", "/me", True) == client.PythonChoice("/me", "blender")
    with pytest.raises(BackendError, match="click Install Backend"):
        client.resolve_backend_python({}, "", tmp_path / "none", "/me", False)
    with pytest.raises(BackendError, match="not a file"):
        client.resolve_backend_python({client.PYTHON_ENV_VAR: str(tmp_path / "x")}, "", None, "", False)
    with pytest.raises(BackendError, match="does not exist"):
        client.resolve_backend_python({}, str(tmp_path / "x"), None, "", False)


def test_bpy_free_modules_do_not_import_bpy():
    code = ("import sys, types; p = types.ModuleType('wav2sem_lipsync'); p.__path__ = ['addon']; "
            "sys.modules['wav2sem_lipsync'] = p; "
            "import wav2sem_lipsync.core.client, wav2sem_lipsync.core.protocol, wav2sem_lipsync.core.mapping, "
            "wav2sem_lipsync.core.installer, wav2sem_lipsync.core.errors, wav2sem_lipsync.core.backend_python, "
            "wav2sem_lipsync.core.backend_process, wav2sem_lipsync.core.jobs, wav2sem_lipsync.core.pool; "
            "assert 'bpy' not in sys.modules, 'bpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
