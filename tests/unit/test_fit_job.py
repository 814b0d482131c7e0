"""FitJob against a small fit_face server written here (the real geometry is tested in
tests/backend): progress, the result, NO_FACE with its landmarks, cancel, an old backend."""
from __future__ import annotations

import sys
import time

import pytest

from wav2sem_lipsync import protocol
from wav2sem_lipsync.client import BackendProcess, FitJob, FitRequest

# Answers hello and cancel at once and fit_face from a worker thread, like `wav2sem serve`.
FIT_SERVER = r'''
import json, sys, threading, time
mode = sys.argv[1]
lock = threading.Lock()
cancelled = set()

def send(message):
    with lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

def fit(rid, params):
    steps = 40 if mode == "slow" else 3
    for i in range(steps):
        if rid in cancelled:
            send({"id": rid, "type": "error", "error": {"code": "CANCELLED", "message": "cancelled"}})
            return
        send({"id": rid, "type": "progress", "stage": "fit", "fraction": i / steps, "message": f"step {i}"})
        time.sleep(0.1 if mode == "slow" else 0.01)
    if mode == "no_face":
        send({"id": rid, "type": "error", "error": {"code": "NO_FACE", "message": "No face found.",
                                                    "landmarks": {"nose_tip": [0.0, -0.1, 1.6]}}})
        return
    send({"id": rid, "type": "result", "data": {
        "keys": "/tmp/keys.npz", "names": ["jawOpen", "mouthClose"], "seconds": 0.5, "warnings": ["w"],
        "landmarks": {"nose_tip": [0.0, -0.1, 1.6], "chin": [0, -0.05, 1.45]}, "report": {"rms_mm": 1.5},
        "echo": params}})

for line in sys.stdin:
    request = json.loads(line)
    rid, op, params = request["id"], request["op"], request.get("params") or {}
    if op == "hello":
        send({"id": rid, "type": "result", "data": {"protocol": 1, "version": "t", "torch": "-", "devices": []}})
    elif op == "cancel":
        cancelled.add(params["target"])
        send({"id": rid, "type": "result", "data": {"target": params["target"], "found": True}})
    elif op == "shutdown":
        break
    elif op == "fit_face" and mode != "old":
        threading.Thread(target=fit, args=(rid, params), daemon=True).start()
    else:
        send({"id": rid, "type": "error", "error": {"code": "BAD_REQUEST", "message": f"Unknown op {op!r}."}})
'''


@pytest.fixture
def fit_server(tmp_path):
    script = tmp_path / "fit_server.py"
    script.write_text(FIT_SERVER)
    started: list[BackendProcess] = []

    def start(mode: str = "ok") -> BackendProcess:
        backend = BackendProcess(sys.executable, command=[sys.executable, str(script), mode])
        backend.start()
        started.append(backend)
        return backend
    yield start
    for backend in started:
        backend.close()


def test_request_params_carry_the_landmarks_only_when_given():
    assert FitRequest("m.npz").params() == {"mesh": "m.npz", "include_eyes": False}
    params = FitRequest("m.npz", "k.npz", {"chin": (1, 2, 3)}, include_eyes=True).params()
    assert params == {"mesh": "m.npz", "output": "k.npz", "include_eyes": True, "landmarks": {"chin": [1.0, 2.0, 3.0]}}


def test_fit_reports_progress_forward_and_parses_the_result(fit_server):
    job = FitJob(fit_server(), FitRequest("m.npz", landmarks={"chin": (0, 0, 1)}), say_hello=True)
    fractions = []
    while not job.poll(0.05):
        fractions.append(job.fraction)
    assert job.error is None and job.hello is not None
    assert fractions == sorted(fractions) and job.fraction == 1.0
    result = job.result
    assert result.names == ("jawOpen", "mouthClose") and result.keys == "/tmp/keys.npz"
    assert result.landmarks["chin"] == (0.0, -0.05, 1.45) and result.report == {"rms_mm": 1.5}
    assert result.warnings == ("w",) and result.seconds == 0.5
    assert protocol.FitResult.from_dict(result.to_dict()) == result


def test_no_face_keeps_the_landmark_guess(fit_server):
    job = FitJob(fit_server("no_face"), FitRequest("m.npz"))
    job.wait(timeout=20)
    assert job.error is not None and job.error.code == protocol.NO_FACE
    assert protocol.parse_landmarks(job.error.details["landmarks"]) == {"nose_tip": (0.0, -0.1, 1.6)}


def test_cancel_ends_the_fit_cancelled(fit_server):
    job = FitJob(fit_server("slow"), FitRequest("m.npz"))
    deadline = time.monotonic() + 20
    while job.fraction == 0.0 and not job.poll(0.05):
        assert time.monotonic() < deadline
    job.cancel()
    job.wait(timeout=20)
    assert job.error is not None and job.error.code == protocol.CANCELLED and job.result is None


def test_an_old_backend_is_told_to_update(fit_server):
    job = FitJob(fit_server("old"), FitRequest("m.npz"))
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
