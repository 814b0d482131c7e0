"""Shared pieces of the bad-input and fault matrix: the checks every case makes (one clear
sentence, nothing written, nothing left behind), the `wav2sem` command run in-process or as
a subprocess, a JSON-lines `wav2sem serve` driver on binary pipes, and the bad inputs.

Each test is one row of the matrix table: it carries `@pytest.mark.matrix(tier, case,
expected)` and reports the message it saw with the `seen` fixture (conftest.py records the
rows and, when asked, writes results/reliability_matrix.md + .json).
"""
from __future__ import annotations

import contextlib
import io
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
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
ENV.pop("WAV2SEM_MODEL", None)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "runs as root, which reads and writes through any permission"
ERROR_PREFIX = "wav2sem: error:"


# ----- the checks ----------------------------------------------------------------------------
def assert_one_sentence(message: object, *names: str) -> str:
    """A message a user can act on: one line, no traceback or Python repr, naming `names`."""
    assert isinstance(message, str) and message.strip(), f"no message: {message!r}"
    text = message.strip()
    assert "Traceback" not in text, f"a traceback in the message: {text!r}"
    assert "\n" not in text, f"not one line: {text!r}"
    assert len(text) <= 400, f"too long for one sentence ({len(text)} characters): {text[:200]!r}..."
    for name in names:
        assert name.lower() in text.lower(), f"the message does not name {name!r}: {text!r}"
    return text


def assert_user_error(error: dict, *names: str, codes: tuple[str, ...] = ()) -> str:
    """A protocol error object the user can act on: not INTERNAL, one sentence naming `names`."""
    assert error.get("code") != "INTERNAL", f"INTERNAL where the user can act: {error.get('message')!r}"
    if codes:
        assert error.get("code") in codes, f"code {error.get('code')} (expected {' or '.join(codes)}): {error.get('message')!r}"
    return assert_one_sentence(error.get("message"), *names)


TORCH_CACHE = "torchinductor_"   # torch's own compile cache in TMPDIR (made by importing torch), not ours


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time (nanoseconds), less
    torch's compile cache."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if not p.relative_to(folder).parts[0].startswith(TORCH_CACHE)}


# ----- the command line -----------------------------------------------------------------------
def wav2sem_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "wav2sem", *map(str, args)]


def run_cli(*args, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `wav2sem` command (a new process: ~4 s of imports)."""
    return subprocess.run(wav2sem_cmd(*args), capture_output=True, text=True, timeout=timeout, env=ENV,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def run_inprocess(*args) -> subprocess.CompletedProcess:
    """`wav2sem ARGS` through `wav2sem.cli.main` here; an escaping exception is shown as the
    traceback the real command would print (exit 1)."""
    import logging
    import traceback

    from wav2sem.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved, sys.argv = sys.argv, ["wav2sem", *argv]
    root = logging.getLogger()
    handlers = list(root.handlers)
    handler = logging.StreamHandler(err)
    root.addHandler(handler)     # basicConfig does nothing once pytest has handlers; see the log lines anyway
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - what the user would see
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = saved
        root.handlers[:] = handlers
    return subprocess.CompletedProcess(["wav2sem", *argv], code, out.getvalue(), err.getvalue())


def cli_failure(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Non-zero exit and exactly one `wav2sem: error:` sentence naming `names`; returns it."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    shown = lines[0] if len(lines) == 1 else last_line(proc.stderr)
    assert proc.returncode != 0, f"exit 0; stderr: {last_line(proc.stderr)!r}"
    assert "Traceback" not in proc.stderr, f"a traceback: {last_line(proc.stderr)!r}"
    assert len(lines) == 1, f"{len(lines)} error lines: {proc.stderr[-500:]!r}"
    assert_one_sentence(shown[len(ERROR_PREFIX):], *names)
    return shown


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ----- the server ------------------------------------------------------------------------------
_EOF = {"__eof__": True}


class Server:
    """`wav2sem serve` on binary pipes (so a test can send bytes that are not UTF-8). A reader
    thread parses stdout lines onto a queue: every wait has a timeout."""

    def __init__(self, *args, env: dict | None = None):
        self.proc = subprocess.Popen(wav2sem_cmd("serve", *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env or ENV)
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.bad_lines: list[bytes] = []
        self.stderr_lines: list[str] = []
        self._held: list[dict] = []
        self._next = 0
        self.eof = threading.Event()   # stdout closed: the server is gone even if not yet reaped
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.messages.put(message)
        self.eof.set()
        self.messages.put(_EOF)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.eof.is_set()

    def send_bytes(self, data: bytes) -> None:
        self.proc.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.proc.stdin.flush()

    def send(self, op: str, params: dict | None = None, id: object = None) -> object:
        if id is None:
            self._next += 1
            id = f"m{self._next}"
        message: dict = {"id": id, "op": op}
        if params is not None:
            message["params"] = params
        self.send_bytes(json.dumps(message).encode("utf-8"))
        return id

    def next_message(self, timeout: float) -> dict:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout:g} s") from None
        if message is _EOF:
            self.messages.put(_EOF)
            time.sleep(0.2)
            raise AssertionError(f"the server stopped (exit {self.proc.poll()}): {last_line(self.stderr)!r}")
        return message

    def wait_for(self, request_id, timeout: float = 60) -> tuple[list[dict], dict]:
        """(progress events, final result or error) for `request_id`."""
        deadline = time.monotonic() + timeout
        events: list[dict] = []
        while True:
            held = [m for m in self._held if m.get("id") == request_id]
            if held:
                message = held[0]
                self._held.remove(message)
            else:
                message = self.next_message(max(0.01, deadline - time.monotonic()))
                if message.get("id") != request_id:
                    self._held.append(message)
                    continue
            if message.get("type") in ("result", "error"):
                return events, message
            events.append(message)

    def request(self, op: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.wait_for(self.send(op, params), timeout)[1]

    def error(self, op: str, params: dict | None = None, timeout: float = 60) -> dict:
        """The request must end in an error event; returns its error object."""
        final = self.request(op, params, timeout)
        assert final["type"] == "error", f"expected an error, got {final}"
        return final["error"]

    def null_error(self, timeout: float = 30) -> dict:
        """The next `id: null` error (the answer to a line that is not a request)."""
        _, final = self.wait_for(None, timeout)
        assert final["type"] == "error", final
        return final["error"]

    def probe(self, timeout: float = 60) -> list[dict]:
        """Send a `hello` and wait for its answer: the server still serves. Returns the other
        answers that came before it (e.g. the reply to a bad line)."""
        rid = self.send("hello")
        others = [m for m in self._held if m.get("type") != "progress"]
        self._held.clear()
        events, final = self.wait_for(rid, timeout)
        assert final["type"] == "result", f"hello failed after the case: {final}"
        others += [m for m in self._held if m.get("type") != "progress"]
        self._held.clear()
        return others

    def close(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


# ----- inputs -----------------------------------------------------------------------------------
def speechlike(seconds: float, sr: int = SR, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """A 140 Hz tone plus filtered noise under a 4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    noise = np.convolve(rng.standard_normal(t.size), np.hanning(9) / np.hanning(9).sum(), mode="same")
    x = (0.5 * np.sin(2 * np.pi * 140 * t) + noise / (np.abs(noise).max() + 1e-9))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def write_audio(path: Path, signal: np.ndarray, sr: int = SR, **kwargs) -> Path:
    sf.write(str(path), signal, sr, **kwargs)
    return Path(path)
