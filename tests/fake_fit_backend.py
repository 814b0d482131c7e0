"""A stand-in for `python -m wav2sem serve` that answers fit_face (docs/DESIGN.md "Fit Face")
with simple, exactly known shapes instead of the real fit, and no torch.

jawOpen moves the lower half of the head (object 0, below its middle height, Z up) and every
extra object down by DROP_M; mouthClose moves the same vertices up by half that; mouthFunnel
moves nothing. Landmarks: the head's bounding box, all ten names. Modes (first argument):
  ok       the fit as above (also: "eyes" adds eyeBlink_L when include_eyes is true)
  no_face  error NO_FACE with the landmark guess
  internal error INTERNAL with a traceback
  bad      a keys file with the wrong vertex count
  slow     like ok, but 4 s of progress first (to cancel)
  old      does not know fit_face (an older backend)
With `--mode-file FILE` each fit_face reads its mode from FILE (when it exists), so one
session can switch modes without restarting the backend. Like the real server it answers
hello and cancel at once and fits on a worker thread; every message is built by the protocol
module the add-on and the real server use (wav2sem.protocol).
Run: python tests/fake_fit_backend.py MODE [--log FILE] [--mode-file FILE] [ignored serve arguments]
"""
from __future__ import annotations

import json
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from wav2sem import protocol

DROP_M = 0.01
NAMES = ("jawOpen", "mouthClose", "mouthFunnel")
LANDMARKS = protocol.FIT_LANDMARKS

_lock = threading.Lock()
_cancelled: set = set()
_unfinished: set = set()       # ids of running fits (what a cancel can find)


def send(message: protocol.Progress | protocol.Result | protocol.Error) -> None:
    with _lock:
        sys.stdout.write(protocol.encode(message).decode("ascii"))
        sys.stdout.flush()


def error(rid, code: str, message: str) -> None:
    send(protocol.Error(rid, code, message))


def guess(vertices: np.ndarray) -> dict:
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    return {name: (low + (high - low) * (0.1 + 0.08 * i)).tolist() for i, name in enumerate(LANDMARKS)}


def fit(rid, params: dict, mode: str) -> None:
    try:
        fit_steps(rid, params, mode)
    finally:
        _unfinished.discard(rid)


def fit_steps(rid, params: dict, mode: str) -> None:
    steps = 40 if mode == "slow" else 3
    for i in range(steps):
        if rid in _cancelled:
            return error(rid, protocol.CANCELLED, "Fit cancelled.")
        send(protocol.Progress(rid, "fit", i / steps, f"fitting {i}"))
        time.sleep(0.1 if mode == "slow" else 0.01)
    with np.load(params["mesh"]) as mesh:
        vertices, ids = mesh["vertices"], mesh["object_ids"]
        assert int(mesh["loop_totals"].sum()) == len(mesh["loop_vertices"])
    head = vertices[ids == 0]
    if mode == "no_face":
        return send(protocol.no_face_error(rid, "No face found on this mesh.", guess(head)))
    if mode == "internal":
        return send(protocol.Error(rid, protocol.INTERNAL, "Internal error in the backend: boom",
                                   "Traceback (most recent call last):\nRuntimeError: boom"))
    names = list(NAMES) + (["eyeBlink_L"] if params.get("include_eyes") else [])
    middle = (head[:, 2].min() + head[:, 2].max()) / 2
    moving = (ids > 0) | ((ids == 0) & (vertices[:, 2] < middle))
    deltas = np.zeros((len(names), len(vertices), 3), np.float32)
    deltas[0, moving, 2] = -DROP_M
    deltas[1, moving, 2] = DROP_M / 2
    if mode == "bad":
        deltas = deltas[:, 1:]
    np.savez(params["output"], names=np.array(names), deltas=deltas)
    landmarks = protocol.parse_landmarks(params.get("landmarks") or guess(head))
    if rid in _cancelled:
        return error(rid, protocol.CANCELLED, "Fit cancelled.")
    result = protocol.FitResult(params["output"], tuple(names), landmarks, {"fake": True}, 0.1)
    send(protocol.Result(rid, result.to_dict()))


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    log = sys.argv[sys.argv.index("--log") + 1] if "--log" in sys.argv else None
    mode_file = Path(sys.argv[sys.argv.index("--mode-file") + 1]) if "--mode-file" in sys.argv else None
    fits: list[threading.Thread] = []
    for line in sys.stdin:
        request = json.loads(line)
        rid, op, params = request["id"], request["op"], request.get("params") or {}
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(request) + "\n")
        if op == "hello":
            hello = protocol.Hello(protocol.PROTOCOL_VERSION, "fake", "-", ("cpu",), platform.python_version(), 1)
            send(protocol.Result(rid, hello.to_dict()))
        elif op == "cancel":
            target = params.get("target")
            _cancelled.add(target)
            send(protocol.Result(rid, protocol.CancelResult(target, target in _unfinished).to_dict()))
        elif op == "shutdown":
            send(protocol.Result(rid, {}))
            break
        elif op == "fit_face" and mode != "old":
            now = mode_file.read_text().strip() if mode_file is not None and mode_file.exists() else mode
            _unfinished.add(rid)
            fits.append(threading.Thread(target=fit, args=(rid, params, now), daemon=True))
            fits[-1].start()
        else:
            error(rid, protocol.BAD_REQUEST, f"Unknown op {op!r}; expected one of hello, cancel, shutdown.")
    else:               # end of input, as the real server: the fits asked for finish first
        for thread in fits:
            thread.join()


if __name__ == "__main__":
    main()
