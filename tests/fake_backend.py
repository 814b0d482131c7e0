"""A stand-in for `python -m wav2sem serve` that speaks the same JSON-lines protocol
(docs/DESIGN.md) with a deterministic, low-rank "mouth" motion and no torch.

Used by tests for what the real backend will not do on request: crash mid-generate, be
slow (so cancel can be tested), ignore a cancel, write junk on stdout, speak another
protocol version, hang, stop reading its stdin. Like the real server it answers hello and
cancel at once, even while a generate runs, and queues the other requests.
With `--blendshapes K` it is a blendshape (ARKit) model: model_info declares K channels
(jawOpen, mouthClose, ...) and their displacements, generate returns (T, K) weights (and
offsets = weights @ deltas unless asked for `offsets: false`). Every message is built by the
protocol module the add-on and the real server use (wav2sem.protocol), so the fake cannot
drift from them (tests/backend/test_protocol_agreement.py).
Run: python tests/fake_backend.py [--crash-after-progress N] [--slow S] [--log FILE] ...
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

from wav2sem import protocol

FPS = 30.0
CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthPress_L", "mouthPress_R",
            "mouthSmile_L", "mouthSmile_R", "browInnerUp_L", "browInnerUp_R")


def make_template(vertex_count: int) -> np.ndarray:
    """A deterministic blob of points, Y up, in metres (like FLAME)."""
    rng = np.random.default_rng(7)
    points = rng.normal(size=(vertex_count, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points * np.float32([0.08, 0.11, 0.09])


def motion(template: np.ndarray, frames: int, fps: float) -> np.ndarray:
    """(T, V, 3) offsets: a jaw opening (lower half moves down) and a lip spread (x)."""
    t = np.arange(frames, dtype=np.float32) / fps
    jaw = (0.5 + 0.5 * np.sin(2 * math.pi * 3.0 * t)).astype(np.float32)         # (T,)
    spread = np.sin(2 * math.pi * 1.3 * t).astype(np.float32)
    lower = (template[:, 1] < 0).astype(np.float32)
    jaw_field = np.zeros_like(template)
    jaw_field[:, 1] = -0.01 * lower
    spread_field = np.zeros_like(template)
    spread_field[:, 0] = 0.004 * template[:, 0] / 0.08
    return (jaw[:, None, None] * jaw_field + spread[:, None, None] * spread_field).astype(np.float32)


def channel_weights(frames: int, count: int, fps: float = FPS) -> np.ndarray:
    """(T, K) weights in 0..1: channel k a sine at its own rate (jawOpen at 3 Hz)."""
    t = np.arange(frames, dtype=np.float64)[:, None] / fps
    rates = 3.0 + 0.7 * np.arange(count)[None, :]
    return (0.5 + 0.45 * np.sin(2 * math.pi * rates * t)).astype(np.float32)


def channel_deltas(template: np.ndarray, count: int) -> np.ndarray:
    """(K, V, 3) displacements: channel k moves the vertices of its own slice of the head."""
    deltas = np.zeros((count,) + template.shape, dtype=np.float32)
    for k in range(count):
        deltas[k, k::count, (k % 3)] = 0.01
    return deltas


def audio_seconds(path: str) -> float:
    with wave.open(path, "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


class Server:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="fake_wav2sem_"))
        if args.template:
            self.template = np.load(args.template).astype(np.float32)
        else:
            self.template = make_template(args.vertex_count)
        self.template_path = self.workdir / "template.npy"
        np.save(self.template_path, self.template)
        self.channels = CHANNELS[:args.blendshapes] if args.blendshapes else ()
        self.blendshapes_path = self.workdir / "blendshapes.npy"
        if self.channels:
            np.save(self.blendshapes_path, channel_deltas(self.template, len(self.channels)))
        self.requests: queue.Queue[dict | None] = queue.Queue()
        self.cancelled: set[int] = set()
        self.unfinished: set = set()        # ids of queued and running requests (what a cancel can find)
        self.lock = threading.Lock()

    def send(self, message: protocol.Progress | protocol.Result | protocol.Error) -> None:
        with self.lock:
            sys.stdout.write(protocol.encode(message).decode("ascii"))
            sys.stdout.flush()

    def error(self, request_id, code: str, message: str) -> None:
        self.send(protocol.Error(request_id, code, message))

    def reply(self, request_id, result) -> None:
        """A result event carrying one of protocol's result types."""
        self.send(protocol.Result(request_id, result.to_dict()))

    def read_stdin(self) -> None:
        for line in sys.stdin:
            try:
                request = json.loads(line)
                if not isinstance(request, dict) or "op" not in request:
                    raise ValueError(line)
            except ValueError:
                self.error(None, protocol.BAD_REQUEST, "not a request")
                continue
            if self.args.log:
                with open(self.args.log, "a", encoding="utf-8") as log:
                    log.write(request["op"] + "\n")
            if self.args.log_requests:
                with open(self.args.log_requests, "a", encoding="utf-8") as log:
                    log.write(json.dumps(request) + "\n")
            if self.args.hang:
                continue
            rid = request.get("id")
            if request["op"] == "cancel":   # handled at once, even while generating
                target = request.get("params", {}).get("target", -1)
                if not self.args.ignore_cancel:
                    self.cancelled.add(target)
                self.reply(rid, protocol.CancelResult(target, target in self.unfinished))
            elif request["op"] == "hello":   # answered at once, even while generating
                self.reply(rid, protocol.Hello(self.args.protocol, "0.0-fake", "none", ("cpu",),
                                               platform.python_version(), 1))
            else:
                self.unfinished.add(rid)
                self.requests.put(request)
        self.requests.put(None)

    def serve(self) -> int:
        if self.args.deaf:
            sys.stdin.close()
            os.close(0)
            print("fake backend stopped reading its stdin", file=sys.stderr, flush=True)
            time.sleep(600)
            return 0
        threading.Thread(target=self.read_stdin, daemon=True).start()
        print("fake backend ready", file=sys.stderr, flush=True)
        while True:
            request = self.requests.get()
            if request is None:
                return 0
            rid, op, params = request.get("id"), request["op"], request.get("params") or {}
            if op == "shutdown":
                self.send(protocol.Result(rid, {}))
                return 0
            if op == "model_info":
                self.reply(rid, protocol.ModelInfo(
                    "fake", FPS, len(self.template), str(self.template_path), subjects=("A", "B"),
                    output=protocol.OUTPUT_BLENDSHAPES if self.channels else protocol.OUTPUT_VERTICES,
                    channels=tuple(self.channels), blendshapes=str(self.blendshapes_path) if self.channels else None,
                    directory=str(self.workdir), description="tests/fake_backend.py"))
            elif op == "generate":
                self.generate(rid, params)
            else:
                self.error(rid, protocol.BAD_REQUEST, f"unknown op {op!r}")
            self.unfinished.discard(rid)

    def generate(self, rid: int, params: dict) -> None:
        audio = str(params.get("audio", ""))
        if not os.path.isfile(audio):
            self.error(rid, protocol.AUDIO_NOT_FOUND, f"Audio file not found: {audio}.")
            return
        if self.args.junk_stdout:
            print("this is not a protocol line", flush=True)
        frames = max(2, int(audio_seconds(audio) * FPS))
        steps = 5
        for step in range(steps):
            if rid in self.cancelled:
                self.error(rid, protocol.CANCELLED, "Generation was cancelled.")
                return
            self.send(protocol.Progress(rid, "decode", step / steps, f"Decoding {step}/{steps}"))
            if self.args.crash_after_progress is not None and step >= self.args.crash_after_progress:
                print("Traceback (most recent call last):\nRuntimeError: fake backend crashed on purpose",
                      file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(self.args.slow / steps)
        output = params.get("output") or str(self.workdir / f"offsets_{rid}.npy")
        weights_output = None
        if self.channels:
            weights = channel_weights(frames, len(self.channels))
            weights_output = params.get("weights_output") or str(self.workdir / f"weights_{rid}.npy")
            np.save(weights_output, weights)
            if params.get("offsets", True) is False:
                output = None
            else:
                deltas = channel_deltas(self.template, len(self.channels))
                np.save(output, np.einsum("tk,kvc->tvc", weights, deltas).astype(np.float32))
        else:
            np.save(output, motion(self.template, frames, FPS))
        self.reply(rid, protocol.GenerateResult(output, frames, FPS, len(self.template), "fake", 0.0,
                                                tuple(self.args.warning), weights_output, tuple(self.channels)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vertex-count", type=int, default=200)
    parser.add_argument("--template", help="(V, 3) .npy to use as the template")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds a generate takes")
    parser.add_argument("--crash-after-progress", type=int, default=None)
    parser.add_argument("--ignore-cancel", action="store_true")
    parser.add_argument("--junk-stdout", action="store_true")
    parser.add_argument("--protocol", type=int, default=1)
    parser.add_argument("--warning", action="append", default=[], help="a warning to put in every result")
    parser.add_argument("--log", help="append the op of every request received to this file")
    parser.add_argument("--log-requests", help="append every request received to this file (JSON lines)")
    parser.add_argument("--blendshapes", type=int, default=0, help="be a blendshape model with this many channels")
    parser.add_argument("--hang", action="store_true", help="read requests but never answer")
    parser.add_argument("--deaf", action="store_true", help="close stdin at once and stay alive, silent")
    # Also accepted so the fake can be launched like the real thing: fake_backend.py serve
    parser.add_argument("command", nargs="?", default="serve")
    return Server(parser.parse_args()).serve()


if __name__ == "__main__":
    sys.exit(main())
