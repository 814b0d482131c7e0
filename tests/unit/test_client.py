"""The backend client against a real subprocess: the fake backend (tests/fake_backend.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from wav2sem_lipsync import client, protocol
from wav2sem_lipsync.client import BackendError, BackendProcess, GenerateJob, GenerateRequest


@pytest.fixture
def start_fake(fake_backend_command):
    started: list[BackendProcess] = []

    def start(*switches: str) -> BackendProcess:
        backend = BackendProcess(sys.executable, command=fake_backend_command(*switches))
        backend.start()
        started.append(backend)
        return backend
    yield start
    for backend in started:
        backend.close()


def test_hello_model_info_and_generate(start_fake, wav_file, tmp_path):
    backend = start_fake("--slow", "1.5")   # progress spread over 1.5 s: several polls see it move
    hello = client.check_hello(backend.call("hello", timeout=20))
    assert hello.devices == ("cpu",)
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
    assert backend.call("hello", timeout=10)["protocol"] == 1


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
    monkeypatch.setattr(client, "CANCEL_GRACE_S", 0.5)
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
    assert "crashed on purpose" in job.error.user_message()
    assert not backend.alive


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
    with pytest.raises(BackendError, match="Install Backend") as caught:
        client.check_hello(backend.call("hello", timeout=20))
    assert caught.value.code == protocol.PROTOCOL_MISMATCH


def test_bad_request_from_server_surfaces(start_fake):
    backend = start_fake()
    with pytest.raises(BackendError, match="unknown op"):
        backend.call("frobnicate", timeout=20)


def test_missing_interpreter_fails_to_start(tmp_path):
    backend = BackendProcess(str(tmp_path / "no-python"))
    with pytest.raises(BackendError, match="Could not start the backend") as caught:
        backend.start()
    assert caught.value.code == client.START_FAILED


def test_close_is_safe_twice_and_ends_process(start_fake):
    backend = start_fake()
    backend.call("hello", timeout=20)
    pid = backend.pid
    backend.close()
    backend.close()
    assert not backend.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pool_restarts_a_dead_backend(tmp_path, fake_backend_command, monkeypatch):
    # The pool launches `python -m wav2sem serve`; a wrapper script stands in for Python.
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(fake_backend_command())}\n")
    wrapper.chmod(0o755)
    pool = client.BackendPool()
    try:
        hello = pool.hello_sync(str(wrapper), timeout=20)
        assert hello.version == "0.0-fake"
        first, new = pool.get(str(wrapper))
        assert not new
        first.kill()
        second, new = pool.get(str(wrapper))
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
            "import wav2sem_lipsync.client, wav2sem_lipsync.protocol, wav2sem_lipsync.mapping, "
            "wav2sem_lipsync.installer; "
            "assert 'bpy' not in sys.modules, 'bpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
