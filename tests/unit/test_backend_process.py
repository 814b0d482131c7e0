"""BackendProcess: events routed per request, close() that always ends the child (the real
backend, asked to shut down, ends by itself), and UTF-8 on the pipes whatever the parent's
locale (a real backend for that one)."""
from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from wav2sem_lipsync.core import client, protocol
from wav2sem_lipsync.core.client import BackendError, BackendProcess, CheckJob, GenerateJob, GenerateRequest


def wait_for_stderr(backend: BackendProcess, text: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while text not in backend.stderr_tail():
        assert time.monotonic() < deadline, f"backend never said {text!r}: {backend.stderr_tail()}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_each_request_gets_only_its_own_events(start_fake):
    backend = start_fake()
    first, second = client.Inbox(), client.Inbox()
    hello_id = backend.send("hello", inbox=first)
    info_id = backend.send("model_info", inbox=second)
    backend.send("frobnicate")               # no inbox: its error goes nowhere
    events = {}
    deadline = time.monotonic() + 20
    while len(events) < 2 and time.monotonic() < deadline:
        for inbox in (first, second):
            for event in inbox.take(0.05):
                events.setdefault(id(inbox), []).append(event)
    assert [e.id for e in events[id(first)]] == [hello_id]
    assert [e.id for e in events[id(second)]] == [info_id]
    assert backend.waiting_ops() == []


def test_close_of_a_backend_that_stopped_reading_returns_and_ends_it(start_fake):
    backend = start_fake("--deaf")           # alive, but writing to its stdin fails
    wait_for_stderr(backend, "stopped reading")
    pid = backend.pid
    backend.close(timeout=1.0)               # must not raise
    assert not backend.alive and gone(pid)
    assert backend.returncode == -signal.SIGTERM, "terminate comes before kill"
    with pytest.raises(BackendError) as caught:
        CheckJob(backend)
    assert caught.value.code == protocol.BACKEND_DIED


def test_pool_close_of_a_broken_backend_gives_a_fresh_one_next_time(fake_python):
    python = fake_python("--deaf")
    pool = client.BackendPool()
    try:
        first, _ = pool.get(python)
        wait_for_stderr(first, "stopped reading")
        pool.close()
        assert gone(first.pid)
        second, new = pool.get(python)
        assert new and second is not first and second.alive
    finally:
        pool.close()


def test_close_ends_a_waiting_take_at_once(start_fake, wav_file):
    backend = start_fake("--slow", "30")
    take = GenerateJob(backend, GenerateRequest(str(wav_file(1.0))))
    take.poll(1.0)
    backend.close(timeout=1.0)
    assert take.poll(2.0), "the take did not learn that its backend is gone"
    assert take.error.code == protocol.BACKEND_DIED


def test_close_is_safe_in_any_state():
    never_started = BackendProcess(sys.executable, command=[sys.executable, "-c", "pass"])
    never_started.close()
    never_started.close()
    assert never_started.closed and not never_started.alive and never_started.returncode is None


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from wav2sem.testing import write_tiny_bundle
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", vertex_count=60)


# --- close() during a take of the real backend ---------------------------------------

def test_close_during_a_take_shuts_the_real_backend_down(tiny_bundle, wav_file, caplog):
    """`shutdown` reaches the backend: it cancels the take, removes its temp folder and exits 0
    by itself. (End of input alone would let the take finish; a kill leaves the folder.)"""
    audio = wav_file(600.0)                  # ten minutes: the take is still running when close() comes
    backend = BackendProcess(sys.executable, command=[sys.executable, "-m", "wav2sem", "serve",
                                                      "--model", str(tiny_bundle), "--device", "cpu"])
    backend.start()
    try:
        take = GenerateJob(backend, GenerateRequest(str(audio), device="cpu"))
        deadline = time.monotonic() + 120
        while take.fraction == 0.0 and not take.poll(0.05):
            assert time.monotonic() < deadline, f"the take never started: {backend.stderr_tail()}"
        assert take.error is None and take.result is None, "the take ended before close() was called"
        workdirs = list(Path(tempfile.gettempdir()).glob(f"wav2sem-serve-{backend.pid}-*"))
        assert len(workdirs) == 1, workdirs
        with caplog.at_level(logging.WARNING, logger="wav2sem_lipsync.core.backend_process"):
            backend.close(timeout=60.0)      # generous for shared CI; a backend that shuts down needs far less
        take.poll(5.0)
        assert take.error is not None and take.error.code == protocol.CANCELLED, "shutdown did not cancel the take"
        assert backend.returncode == 0, f"the backend was ended by signal {-backend.returncode}"
        assert not caplog.records, "close() had to terminate or kill the backend"
        assert not workdirs[0].exists(), "the backend left its temp folder"
    finally:
        backend.close()


# --- non-ASCII paths with a locale that is not UTF-8 ---------------------------------


@pytest.mark.parametrize("parent_env", [
    {"LC_ALL": "C"},
    {"LC_ALL": "C", "PYTHONUTF8": "0"},       # a plain ASCII locale, no UTF-8 mode
    {"PYTHONIOENCODING": "latin-1"},           # stdin in a code page, file names in UTF-8: Windows
], ids=["C", "C-no-utf8-mode", "code-page-stdin"])
def test_non_ascii_paths_reach_the_real_backend(tiny_bundle, tmp_path, parent_env):
    folder = tmp_path / "Stimme äöü 日本"
    folder.mkdir()
    audio = folder / "line äöü 日本.wav"
    with wave.open(str(audio), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((np.sin(np.arange(16000) * 0.05) * 3000).astype("<i2").tobytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    env.update(parent_env)
    backend = BackendProcess(sys.executable, env=env,
                             command=[sys.executable, "-m", "wav2sem", "serve", "--model", str(tiny_bundle)])
    backend.start()
    try:
        output = folder / "offsets ü.npy"
        take = GenerateJob(backend, GenerateRequest(str(audio), device="cpu", output=str(output)), say_hello=True)
        take.wait(timeout=120)
        assert take.error is None, take.error.user_message()
        assert take.result.offsets == str(output)
        assert np.load(output).shape == (take.result.frames, 60, 3) and take.result.frames > 20
    finally:
        backend.close()
