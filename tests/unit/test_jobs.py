"""CheckJob and GenerateJob against the fake backend: a Check during a take, cancel that
wins over a late result, the mesh check before any inference, the watchdog."""
from __future__ import annotations

import time

import pytest

from wav2sem_lipsync.core import client, protocol
from wav2sem_lipsync.core.client import CheckJob, GenerateJob, GenerateRequest


def running_take(backend, wav, **kwargs) -> GenerateJob:
    """A take whose generate the backend is working on (its first progress arrived)."""
    job = GenerateJob(backend, GenerateRequest(str(wav)), **kwargs)
    deadline = time.monotonic() + 20
    while job.fraction == 0.0 and not job.poll(0.05):
        assert time.monotonic() < deadline, "the take never started"
    assert not job.finished, job.error
    return job


def ops_received(log) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_check_during_a_take_returns_at_once_and_the_take_still_finishes(start_fake, wav_file):
    backend = start_fake("--slow", "3")
    take = running_take(backend, wav_file(1.0))
    started = time.monotonic()
    check = CheckJob(backend)
    assert not check.poll()
    assert time.monotonic() - started < 0.5        # nothing waited for the take
    deadline = time.monotonic() + 5
    while check.hello is None and time.monotonic() < deadline:
        check.poll(0.05)
    assert check.hello is not None and not check.finished   # hello at once; model_info waits
    assert check.message == client.BUSY_MESSAGE
    take.wait(timeout=30)
    assert take.error is None and take.result.frames == 30 and take.model_info.vertex_count == 200
    check.wait(timeout=10)
    assert check.error is None and check.model_info.vertex_count == 200


def test_pool_keeps_the_backend_a_take_still_waits_on(fake_python, wav_file):
    pool = client.BackendPool()
    try:
        backend, _ = pool.get(fake_python("--slow", "2"))
        take = running_take(backend, wav_file(1.0))
        check = CheckJob(backend)
        check.wait(timeout=30)          # done once the take is: model_info is queued behind it
        take.wait(timeout=30)
        assert check.error is None and take.error is None
        pool.release(keep_warm=False)   # nobody waits any more: now it stops
        assert not backend.alive
    finally:
        pool.close()


def test_release_after_a_check_does_not_stop_a_running_take(fake_python, wav_file):
    pool = client.BackendPool()
    try:
        backend, _ = pool.get(fake_python("--slow", "3"))
        check = CheckJob(backend)
        check.wait(timeout=20)
        take = running_take(backend, wav_file(1.0))
        pool.release(keep_warm=False)   # the Check ends while the take runs
        assert backend.alive
        take.wait(timeout=30)
        assert take.error is None and take.result is not None
    finally:
        pool.close()


def test_cancel_wins_over_a_result_that_arrives_afterwards(start_fake, wav_file):
    backend = start_fake("--slow", "2", "--ignore-cancel")   # finishes and sends its result anyway
    take = running_take(backend, wav_file(1.0))
    take.cancel()
    messages = []
    while not take.poll(0.05):
        messages.append(take.message)
    assert messages and set(messages) == {"Cancelling"}
    assert take.error.code == protocol.CANCELLED and take.result is None
    assert take.message == "Cancelled"
    assert backend.alive     # it answered within the grace: no need to kill it


def test_cancel_before_generate_ends_at_once_and_nothing_is_generated(start_fake, wav_file, tmp_path):
    log = tmp_path / "requests.log"
    backend = start_fake("--log", str(log))
    take = GenerateJob(backend, GenerateRequest(str(wav_file(1.0))), say_hello=True)
    take.cancel()
    assert take.finished and take.error.code == protocol.CANCELLED and take.message == "Cancelled"
    CheckJob(backend).wait(timeout=20)   # everything sent before has been read by now
    assert "generate" not in ops_received(log)


def test_mesh_that_cannot_take_the_model_is_refused_before_generate(start_fake, wav_file, tmp_path):
    log = tmp_path / "requests.log"
    backend = start_fake("--log", str(log))
    sentence = "The mesh has 500 vertices but the model animates 200; use the model's template mesh."
    seen = []

    def check_model(info: protocol.ModelInfo) -> str | None:
        seen.append(info.vertex_count)
        return sentence if info.vertex_count != 500 else None

    take = GenerateJob(backend, GenerateRequest(str(wav_file(1.0))), say_hello=True, check_model=check_model)
    take.wait(timeout=20)
    assert take.error.code == protocol.MESH_MISMATCH and take.error.message == sentence
    assert take.result is None and seen == [200]
    CheckJob(backend).wait(timeout=20)
    assert ops_received(log).count("model_info") == 2 and "generate" not in ops_received(log)


def test_mesh_check_that_passes_lets_the_take_run(start_fake, wav_file):
    backend = start_fake()
    take = GenerateJob(backend, GenerateRequest(str(wav_file(0.5))), check_model=lambda info: None)
    take.wait(timeout=20)
    assert take.error is None and take.result.frames == 15


@pytest.mark.parametrize("make_job", [
    lambda backend, wav: GenerateJob(backend, GenerateRequest(str(wav)), say_hello=True, watchdog_s=1.0),
    lambda backend, wav: CheckJob(backend, watchdog_s=1.0),
], ids=["generate", "check"])
def test_a_backend_that_never_answers_times_out_and_is_stopped(start_fake, wav_file, make_job):
    backend = start_fake("--hang")
    job = make_job(backend, wav_file(0.5))
    started = time.monotonic()
    while not job.poll(0.1):
        assert time.monotonic() - started < 10, "the watchdog never fired"
    assert job.error.code == protocol.BACKEND_TIMEOUT and "stopped answering" in job.error.message
    assert not backend.alive


def test_progress_of_another_request_keeps_the_watchdog_quiet(start_fake, wav_file):
    backend = start_fake("--slow", "3")      # a progress event every 0.6 s
    take = running_take(backend, wav_file(1.0))
    check = CheckJob(backend, watchdog_s=1.5)  # queued behind the 3 s take: silent itself
    check.wait(timeout=30)
    take.wait(timeout=30)
    assert check.error is None and take.error is None


def test_mesh_check_can_ask_for_weights_only(start_fake, wav_file, tmp_path):
    """A blendshape model on a mesh with face keys: the check swaps in a request without offsets."""
    import dataclasses
    import json

    log = tmp_path / "requests.jsonl"
    backend = start_fake("--blendshapes", "4", "--log-requests", str(log))
    weights = tmp_path / "weights.npy"

    def check_model(info: protocol.ModelInfo):
        assert info.predicts_weights and info.channels == ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")
        return dataclasses.replace(take.request, offsets=False, weights_output=str(weights))

    take = GenerateJob(backend, GenerateRequest(str(wav_file(0.5)), output=str(tmp_path / "offsets.npy")),
                       check_model=check_model)
    take.wait(timeout=20)
    assert take.error is None and take.result.offsets is None and take.result.weights == str(weights)
    assert take.result.channels == ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")
    params = [json.loads(line)["params"] for line in log.read_text().splitlines()
              if json.loads(line)["op"] == "generate"][0]
    assert params["offsets"] is False and params["weights_output"] == str(weights) and "output" not in params
    assert not (tmp_path / "offsets.npy").exists()
