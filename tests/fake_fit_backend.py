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
hello and cancel at once and fits on a worker thread.
Run: python tests/fake_fit_backend.py MODE [--log FILE] [--mode-file FILE] [ignored serve arguments]
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

DROP_M = 0.01
NAMES = ("jawOpen", "mouthClose", "mouthFunnel")
LANDMARKS = ("nose_tip", "upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right",
             "chin", "eye_outer_left", "eye_inner_left", "eye_inner_right", "eye_outer_right")

_lock = threading.Lock()
_cancelled: set = set()


def send(message: dict) -> None:
    with _lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def error(rid, code: str, message: str, **extra) -> None:
    send({"id": rid, "type": "error", "error": {"code": code, "message": message, **extra}})


def guess(vertices: np.ndarray) -> dict:
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    return {name: (low + (high - low) * (0.1 + 0.08 * i)).tolist() for i, name in enumerate(LANDMARKS)}


def fit(rid, params: dict, mode: str) -> None:
    steps = 40 if mode == "slow" else 3
    for i in range(steps):
        if rid in _cancelled:
            return error(rid, "CANCELLED", "Fit cancelled.")
        send({"id": rid, "type": "progress", "stage": "fit", "fraction": i / steps, "message": f"fitting {i}"})
        time.sleep(0.1 if mode == "slow" else 0.01)
    with np.load(params["mesh"]) as mesh:
        vertices, ids = mesh["vertices"], mesh["object_ids"]
        assert int(mesh["loop_totals"].sum()) == len(mesh["loop_vertices"])
    head = vertices[ids == 0]
    if mode == "no_face":
        return error(rid, "NO_FACE", "No face found on this mesh.", landmarks=guess(head))
    if mode == "internal":
        return error(rid, "INTERNAL", "Internal error in the backend: boom",
                     traceback="Traceback (most recent call last):\nRuntimeError: boom")
    names = list(NAMES) + (["eyeBlink_L"] if params.get("include_eyes") else [])
    middle = (head[:, 2].min() + head[:, 2].max()) / 2
    moving = (ids > 0) | ((ids == 0) & (vertices[:, 2] < middle))
    deltas = np.zeros((len(names), len(vertices), 3), np.float32)
    deltas[0, moving, 2] = -DROP_M
    deltas[1, moving, 2] = DROP_M / 2
    if mode == "bad":
        deltas = deltas[:, 1:]
    np.savez(params["output"], names=np.array(names), deltas=deltas)
    landmarks = params.get("landmarks") or guess(head)
    if rid in _cancelled:
        return error(rid, "CANCELLED", "Fit cancelled.")
    send({"id": rid, "type": "result", "data": {"keys": params["output"], "names": names, "landmarks": landmarks,
                                                "report": {"fake": True}, "seconds": 0.1, "warnings": []}})


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    log = sys.argv[sys.argv.index("--log") + 1] if "--log" in sys.argv else None
    mode_file = Path(sys.argv[sys.argv.index("--mode-file") + 1]) if "--mode-file" in sys.argv else None
    for line in sys.stdin:
        request = json.loads(line)
        rid, op, params = request["id"], request["op"], request.get("params") or {}
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(request) + "\n")
        if op == "hello":
            send({"id": rid, "type": "result", "data": {"protocol": 1, "version": "fake", "torch": "-",
                                                        "devices": ["cpu"]}})
        elif op == "cancel":
            _cancelled.add(params.get("target"))
            send({"id": rid, "type": "result", "data": {"target": params.get("target"), "found": True}})
        elif op == "shutdown":
            send({"id": rid, "type": "result", "data": {}})
            break
        elif op == "fit_face" and mode != "old":
            now = mode_file.read_text().strip() if mode_file is not None and mode_file.exists() else mode
            threading.Thread(target=fit, args=(rid, params, now), daemon=True).start()
        else:
            error(rid, "BAD_REQUEST", f"Unknown op {op!r}; expected one of hello, cancel, shutdown.")


if __name__ == "__main__":
    main()
