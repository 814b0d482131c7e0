"""Helpers shared by the backend tests (imported by conftest.py and the test modules):
audio generators, subprocess helpers for the `wav2sem` command and a JSON-lines
`ServerProcess` driver. (A separate module, not conftest, so that `from w2s_helpers import`
cannot pick up another folder's conftest.)

Everything runs on the CPU in seconds. Subprocesses run `python -m wav2sem` with the
interpreter that runs pytest, so the tests work wherever the package is importable.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000

# One thread per process: the test machines are small and shared; oversubscribed BLAS threads
# make tiny models slower, not faster. Results do not depend on the thread count (tolerances).
SUBPROCESS_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
SUBPROCESS_ENV.pop("WAV2SEM_MODEL", None)


# ----- audio ------------------------------------------------------------------------------
DELETE = object()   # edit_config's value that removes the field


def edit_config(config: dict, path: str, value) -> dict:
    """Set (or, with DELETE, remove) the dotted field `path` of a bundle config in place."""
    node = config
    *parents, leaf = path.split(".")
    for name in parents:
        node = node[name]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return config


def speechlike(seconds: float, sr: int = SR, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """Band-limited noise with a ~4 Hz syllable envelope: loud, never silent, no pauses."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    noise = rng.standard_normal(n + 64)
    kernel = np.hanning(9)
    kernel /= kernel.sum()
    voiced = np.convolve(noise, kernel, mode="same")[:n]
    t = np.arange(n) / sr
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi))
    tone = 0.5 * np.sin(2 * np.pi * (140 + 30 * np.sin(2 * np.pi * 0.5 * t)) * t)
    x = (voiced / (np.abs(voiced).max() + 1e-9) + tone) * envelope
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def sine(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, signal: np.ndarray, sr: int = SR, **kwargs) -> Path:
    path = Path(path)
    sf.write(str(path), signal, sr, **kwargs)
    return path


# ----- the command line -------------------------------------------------------------------
def wav2sem_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "wav2sem", *map(str, args)]


def run_wav2sem(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `wav2sem` command (a new process: a few seconds of imports)."""
    return subprocess.run(wav2sem_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=SUBPROCESS_ENV, stdin=subprocess.DEVNULL)


def run_wav2sem_many(arg_lists, timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run several `wav2sem` invocations concurrently (start-up dominates: imports)."""
    procs = [subprocess.Popen(wav2sem_cmd(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=SUBPROCESS_ENV, stdin=subprocess.DEVNULL) for a in arg_lists]
    results = []
    deadline = time.monotonic() + timeout
    for a, p in zip(arg_lists, procs):
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(wav2sem_cmd(*a), p.returncode, out, err))
    return results


def run_wav2sem_inprocess(*args, as_user_sees: bool = False) -> subprocess.CompletedProcess:
    """`wav2sem ARGS` through `wav2sem.cli.main` in this process (no start-up cost), with
    stdout/stderr captured. sys.argv is set to match because `build_parser` reads it.

    as_user_sees: also capture log lines (pytest's handlers stop `basicConfig`), and show an
    escaping exception as the traceback the real command would print, with exit code 1."""
    import contextlib
    import io
    import logging
    import traceback

    from wav2sem.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["wav2sem", *argv]
    root = logging.getLogger()
    handlers = list(root.handlers)
    if as_user_sees:
        root.addHandler(logging.StreamHandler(err))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse errors
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - what the user would see
                if not as_user_sees:
                    raise
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = saved
        root.handlers[:] = handlers
    return subprocess.CompletedProcess(["wav2sem", *argv], code, out.getvalue(), err.getvalue())


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("wav2sem: error:")]


def assert_clean_failure(proc: subprocess.CompletedProcess, *must_contain: str) -> str:
    """Non-zero exit, exactly one `wav2sem: error:` line, no traceback; returns that line."""
    assert proc.returncode != 0, f"expected failure, got exit 0; stderr:\n{proc.stderr}"
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, f"expected one 'wav2sem: error:' line, stderr was:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in must_contain:
        assert text.lower() in lines[0].lower(), f"{text!r} not in {lines[0]!r}"
    return lines[0]


# ----- the server -------------------------------------------------------------------------
_EOF = {"__eof__": True}


class ServerProcess:
    """`wav2sem serve` in a subprocess, driven through pipes. A reader thread parses stdout
    lines onto a queue, so every wait has a timeout: a hang fails the test instead of blocking."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen(   # binary pipes: a test may send bytes that are not UTF-8
            wav2sem_cmd("serve", *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env or SUBPROCESS_ENV,
        )
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.raw_lines: list[str] = []
        self.bad_lines: list[str] = []     # stdout lines that were not a JSON object
        self.stderr_lines: list[str] = []
        self._held: list[dict] = []        # read but not yet consumed by a wait
        self._next_id = 0
        self.eof = threading.Event()       # stdout closed: the server is gone even if not yet reaped
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace")
            self.raw_lines.append(line)
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.messages.put(msg)
        self.eof.set()
        self.messages.put(_EOF)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", errors="replace"))

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.eof.is_set()

    def send_bytes(self, data: bytes) -> None:
        self.proc.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.proc.stdin.flush()

    def send_raw(self, text: str) -> None:
        self.send_bytes(text.encode("utf-8"))

    def send(self, op: str, params=None, id=None, **extra) -> object:
        if id is None:
            self._next_id += 1
            id = f"r{self._next_id}"
        message = {"id": id, "op": op, **extra}
        if params is not None:
            message["params"] = params
        self.send_raw(json.dumps(message))
        return id

    def next_message(self, timeout: float) -> dict:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message from the server within {timeout} s; stderr:\n{self.stderr[-3000:]}") from None
        if msg is _EOF:
            self.messages.put(_EOF)          # every later wait fails at once too
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            time.sleep(0.2)                  # let the stderr reader catch up
            raise AssertionError(f"the server closed its stdout (exit code {code}); stderr:\n{self.stderr[-3000:]}")
        return msg

    def wait_for(self, request_id, timeout: float = 60, until=("result", "error")) -> tuple[list[dict], dict]:
        """Messages for `request_id` until one whose type is in `until`: (events before, final)."""
        deadline = time.monotonic() + timeout
        events: list[dict] = []
        while True:
            for i, msg in enumerate(self._held):
                if msg.get("id") == request_id:
                    self._held.pop(i)
                    break
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {request_id!r}; got {events}; stderr:\n{self.stderr[-3000:]}")
                msg = self.next_message(remaining)
                if msg.get("id") != request_id:
                    self._held.append(msg)
                    continue
            if msg.get("type") in until:
                return events, msg
            events.append(msg)

    def request(self, op: str, params=None, timeout: float = 60, **kwargs) -> tuple[list[dict], dict]:
        rid = self.send(op, params, **kwargs)
        return self.wait_for(rid, timeout)

    def result(self, op: str, params=None, timeout: float = 60) -> dict:
        events, final = self.request(op, params, timeout)
        assert final["type"] == "result", final
        return final["data"]

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit within {timeout} s") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
