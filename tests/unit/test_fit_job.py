"""FitJob against tests/fake_fit_backend.py (the real geometry is tested in tests/backend):
progress, the result, NO_FACE with its landmarks, cancel, an old backend."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wav2sem_lipsync.core import protocol
from wav2sem_lipsync.core.client import BackendProcess, FitJob, FitRequest

FAKE_FIT = Path(__file__).resolve().parents[1] / "fake_fit_backend.py"


@pytest.fixture
def fit_server():
    started: list[BackendProcess] = []

    def start(mode: str = "ok") -> BackendProcess:
        backend = BackendProcess(sys.executable, command=[sys.executable, str(FAKE_FIT), mode])
        backend.start()
        started.append(backend)
        return backend
    yield start
    for backend in started:
        backend.close()


@pytest.fixture
def mesh(tmp_path) -> FitRequest:
    """A unit cube's corners and its six quads; the keys go beside it."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
    quads = [0, 1, 3, 2, 4, 6, 7, 5, 0, 4, 5, 1, 2, 3, 7, 6, 0, 2, 6, 4, 1, 5, 7, 3]
    np.savez(tmp_path / "mesh.npz", vertices=corners, loop_totals=np.full(6, 4, np.int32),
             loop_vertices=np.array(quads, np.int32), object_ids=np.zeros(8, np.int32))
    return FitRequest(str(tmp_path / "mesh.npz"), str(tmp_path / "keys.npz"))


def test_request_params_carry_the_landmarks_only_when_given():
    assert FitRequest("m.npz").params() == {"mesh": "m.npz", "include_eyes": False}
    params = FitRequest("m.npz", "k.npz", {"chin": (1, 2, 3)}, include_eyes=True).params()
    assert params == {"mesh": "m.npz", "output": "k.npz", "include_eyes": True, "landmarks": {"chin": [1.0, 2.0, 3.0]}}


def test_fit_reports_progress_forward_and_parses_the_result(fit_server, mesh):
    job = FitJob(fit_server(), dataclasses.replace(mesh, landmarks={"chin": (0, 0, 1)}), say_hello=True)
    fractions = []
    while not job.poll(0.05):
        fractions.append(job.fraction)
    assert job.error is None and job.hello is not None
    assert fractions == sorted(fractions) and job.fraction == 1.0
    result = job.result
    assert result.names == ("jawOpen", "mouthClose", "mouthFunnel") and result.keys == mesh.output
    assert result.landmarks == {"chin": (0.0, 0.0, 1.0)} and result.report == {"fake": True}
    assert result.seconds == 0.1 and result.warnings == ()
    assert protocol.FitResult.from_dict(result.to_dict()) == result
    with np.load(result.keys) as keys:
        assert keys["deltas"].shape == (3, 8, 3)


def test_no_face_keeps_the_landmark_guess(fit_server, mesh):
    job = FitJob(fit_server("no_face"), mesh)
    job.wait(timeout=20)
    assert job.error is not None and job.error.code == protocol.NO_FACE
    guess = protocol.parse_landmarks(job.error.details["landmarks"])
    assert sorted(guess) == sorted(protocol.FIT_LANDMARKS) and guess["nose_tip"] == (0.1, 0.1, 0.1)


def test_cancel_ends_the_fit_cancelled(fit_server, mesh):
    job = FitJob(fit_server("slow"), mesh)
    deadline = time.monotonic() + 20
    while job.fraction == 0.0 and not job.poll(0.05):
        assert time.monotonic() < deadline
    job.cancel()
    job.wait(timeout=20)
    assert job.error is not None and job.error.code == protocol.CANCELLED and job.result is None


def test_an_old_backend_is_told_to_update(fit_server, mesh):
    job = FitJob(fit_server("old"), mesh)
    job.wait(timeout=20)
    assert job.error.code == protocol.PROTOCOL_MISMATCH and "Install Backend" in job.error.message


def test_landmarks_must_be_finite_points():
    assert protocol.parse_landmarks({"a": [1, 2, 3]}) == {"a": (1.0, 2.0, 3.0)}
    for bad in ({"a": [1, 2]}, {"a": [1, 2, float("nan")]}, {"a": "x"}, []):
        with pytest.raises(ValueError):
            protocol.parse_landmarks(bad)


def test_error_events_keep_their_other_fields():
    line = b'{"id": 3, "type": "error", "error": {"code": "NO_FACE", "message": "m", "landmarks": {"chin": [0, 0, 0]}}}'
    event = protocol.decode_event(line)
    assert event.details == {"landmarks": {"chin": [0, 0, 0]}}
    assert protocol.decode_event(protocol.encode(event)) == event
