"""The backend process (`python -m wav2sem serve`) seen from the add-on, without bpy.

Threads: `BackendProcess` owns two daemon reader threads. The stdout reader only parses
protocol lines and puts them on a queue; the stderr reader only keeps the last lines for
error messages. Everything else (send, poll, the GenerateJob state machine) is called from
one thread, Blender's main thread, which drains the queue on a timer or in a loop.
"""
from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from . import protocol
from .protocol import Error, Event, Exited, GenerateResult, Hello, ModelInfo, Progress, Request, Result

log = logging.getLogger(__name__)

NOT_INSTALLED = "NOT_INSTALLED"
START_FAILED = "START_FAILED"
STDERR_LINES_KEPT = 40
STDERR_LINES_SHOWN = 6
# Share of the whole job each backend stage covers, so the bar moves forward only.
STAGE_SPANS = {"load": (0.0, 0.1), "encode": (0.1, 0.3), "decode": (0.3, 1.0)}
CANCEL_GRACE_S = 10.0          # after this the backend is killed rather than waited for
CALL_TIMEOUT_S = 120.0         # hello / model_info (the first call includes torch import)
PYTHON_ENV_VAR = "WAV2SEM_PYTHON"


class BackendError(Exception):
    """A failure to show the user: `message` is one sentence that says what to do."""

    def __init__(self, code: str, message: str, stderr_tail: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.stderr_tail = stderr_tail

    def user_message(self) -> str:
        tail = last_lines(self.stderr_tail, STDERR_LINES_SHOWN)
        return f"{self.message} Backend said: {tail}" if tail else self.message


def last_lines(text: str, count: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


# --- which Python runs the backend ---------------------------------------------------

@dataclass(frozen=True)
class PythonChoice:
    path: str
    source: str        # "environment" | "preference" | "managed" | "blender"


def managed_python(venv_dir: str | Path) -> Path:
    """The interpreter inside the virtual environment that Install Backend makes."""
    venv_dir = Path(venv_dir)
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def resolve_backend_python(environ: Mapping[str, str], preference: str, managed_venv: str | Path | None,
                           current_python: str, current_can_import: bool) -> PythonChoice:
    """Pick the backend interpreter: env var, else preference, else managed venv, else our own.

    Pure function of its inputs (any thread). Raises BackendError(NOT_INSTALLED).
    """
    env_value = environ.get(PYTHON_ENV_VAR, "").strip()
    if env_value:
        if not Path(env_value).is_file():
            raise BackendError(NOT_INSTALLED, f"{PYTHON_ENV_VAR} points to {env_value}, which is not a file; "
                                              "fix or unset the environment variable.")
        return PythonChoice(env_value, "environment")
    preference = preference.strip()
    if preference:
        if not Path(preference).is_file():
            raise BackendError(NOT_INSTALLED, f"The Backend Python {preference} does not exist; choose another "
                                              "interpreter in the add-on preferences or clear it.")
        return PythonChoice(preference, "preference")
    if managed_venv:
        candidate = managed_python(managed_venv)
        if candidate.is_file():
            return PythonChoice(str(candidate), "managed")
    if current_can_import and current_python:
        return PythonChoice(current_python, "blender")
    raise BackendError(NOT_INSTALLED, "The lip-sync backend is not installed: open Edit > Preferences > Add-ons > "
                                      "Wav2Sem Lip Sync and click Install Backend.")


# --- the process ---------------------------------------------------------------------

class BackendProcess:
    """One `python -m wav2sem serve` child. States: new -> running -> closed."""

    def __init__(self, python: str, env: Mapping[str, str] | None = None, command: list[str] | None = None):
        self.python = python
        self.command = command or [python, "-m", "wav2sem", "serve"]
        self._env = dict(os.environ if env is None else env)
        self._env.pop("PYTHONHOME", None)  # Blender's own PYTHONHOME would break another Python
        self._env["PYTHONUNBUFFERED"] = "1"
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.closed = False

    # lifecycle
    def start(self) -> None:
        """Start the child (non-blocking beyond the spawn). Raises BackendError(START_FAILED)."""
        if self._proc is not None:
            return
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        try:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=self._env, creationflags=flags)
        except OSError as exc:
            raise BackendError(START_FAILED, f"Could not start the backend with {self.python} ({exc.strerror or exc}); "
                                             "check the Backend Python in the add-on preferences.") from exc
        log.info("backend started: %s (pid %s)", " ".join(self.command), self._proc.pid)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        for target, stream in ((self._read_stdout, self._proc.stdout), (self._read_stderr, self._proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True, name="wav2sem-backend-reader")
            thread.start()
            self._threads.append(thread)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self.closed

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def close(self, timeout: float = 3.0) -> None:
        """Ask the backend to stop, then make sure it does. Blocking (<= 2*timeout); safe twice."""
        if self.closed:
            return
        self.closed = True
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._write(Request(0, "shutdown"))
                assert proc.stdin is not None
                proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        log.info("backend %s ended (exit code %s)", proc.pid, proc.returncode)

    def kill(self) -> None:
        """End the child at once (used when it does not answer a cancel)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.close()

    # messages
    def send(self, op: str, params: dict[str, Any] | None = None) -> int:
        """Write one request; returns its id. Raises BackendError(BACKEND_DIED) if the pipe is gone."""
        request = Request(next(self._ids), op, params or {})
        self._write(request)
        return request.id

    def _write(self, request: Request) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise BackendError(protocol.BACKEND_DIED, "The backend is not running.")
        try:
            with self._write_lock:
                self._proc.stdin.write(protocol.encode(request))
                self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise BackendError(protocol.BACKEND_DIED, "The backend stopped unexpectedly.",
                               self.stderr_tail()) from exc

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """All events queued so far; waits up to `timeout` seconds for the first one."""
        events: list[Event] = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return events

    def call(self, op: str, params: dict[str, Any] | None = None, timeout: float = CALL_TIMEOUT_S,
             on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        """Send a request and block until its result (main thread; used for hello/model_info
        and in background mode). Raises BackendError."""
        request_id = self.send(op, params)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(protocol.BACKEND_TIMEOUT, f"The backend did not answer '{op}' within "
                                                             f"{timeout:.0f} s.", self.stderr_tail())
            for event in self.poll(min(remaining, 0.5)):
                outcome = self._outcome(event, request_id, on_progress)
                if outcome is not None:
                    return outcome

    def _outcome(self, event: Event, request_id: int,
                 on_progress: Callable[[Progress], None] | None) -> dict[str, Any] | None:
        if isinstance(event, Exited):
            raise died_error(event)
        if event.id != request_id:
            if isinstance(event, Error) and event.id is None:
                raise BackendError(event.code, f"The backend rejected a request: {event.message}")
            return None
        if isinstance(event, Progress):
            if on_progress:
                on_progress(event)
            return None
        if isinstance(event, Error):
            raise BackendError(event.code, event.message)
        assert isinstance(event, Result)
        return event.data

    # reader threads: parse and enqueue, nothing else
    def _read_stdout(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            if not line.strip():
                continue
            try:
                self._events.put(protocol.decode_event(line))
            except protocol.ProtocolError as exc:
                log.warning("backend wrote a non-protocol line: %s", exc)
        proc = self._proc
        returncode = None
        if proc is not None:
            try:
                returncode = proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        for thread in self._threads[1:]:
            thread.join(1.0)  # let stderr finish so the tail is complete
        self._events.put(Exited(returncode, self.stderr_tail()))

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("backend: %s", line)


def died_error(event: Exited) -> BackendError:
    return BackendError(protocol.BACKEND_DIED, f"The backend stopped unexpectedly (exit code {event.returncode}).",
                        event.stderr_tail)


def overall_fraction(stage: str, fraction: float, previous: float) -> float:
    """Stage-relative progress -> progress of the whole job, never going backwards."""
    low, high = STAGE_SPANS.get(stage, (0.0, 1.0))
    return max(previous, low + (high - low) * fraction)


def check_hello(data: dict[str, Any]) -> Hello:
    hello = Hello.from_dict(data)
    if hello.protocol != protocol.PROTOCOL_VERSION:
        raise BackendError(protocol.PROTOCOL_MISMATCH, f"The backend speaks protocol {hello.protocol}, this add-on "
                                                       f"protocol {protocol.PROTOCOL_VERSION}; click Install Backend "
                                                       "to install the matching backend.")
    return hello


# --- one generate request, driven by polling ----------------------------------------

@dataclass(frozen=True)
class GenerateRequest:
    audio: str
    model: str = ""          # bundle directory; "" = backend default
    subject: str = ""        # "" = model default
    device: str = "auto"
    output: str = ""         # where the backend writes offsets .npy; "" = its choice

    def model_params(self) -> dict[str, Any]:
        return {"model": self.model} if self.model else {}

    def generate_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"audio": self.audio, "device": self.device or "auto", "semantic": True}
        params.update(self.model_params())
        if self.subject:
            params["subject"] = self.subject
        if self.output:
            params["output"] = self.output
        return params


class GenerateJob:
    """model_info + generate on a running backend, advanced by `poll` (one thread only).

    States: running -> done (model_info and result set) | failed (error set).
    """

    def __init__(self, backend: BackendProcess, request: GenerateRequest, say_hello: bool = False):
        self.backend = backend
        self.request = request
        self.hello: Hello | None = None
        self._hello_id = backend.send("hello") if say_hello else None
        self.fraction = 0.0
        self.message = "Starting the backend"
        self.model_info: ModelInfo | None = None
        self.result: GenerateResult | None = None
        self.error: BackendError | None = None
        self._info_id = backend.send("model_info", request.model_params())
        self._generate_id = backend.send("generate", request.generate_params())
        self._cancel_deadline: float | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.result is not None and self.model_info is not None)

    def cancel(self) -> None:
        """Ask the backend to stop this generate; it ends with error CANCELLED."""
        if self.finished or self._cancel_deadline is not None:
            return
        self._cancel_deadline = time.monotonic() + CANCEL_GRACE_S
        self.message = "Cancelling"
        try:
            self.backend.send("cancel", {"target": self._generate_id})
        except BackendError:
            self._fail(BackendError(protocol.CANCELLED, "Lip sync was cancelled."))

    def poll(self, timeout: float = 0.0) -> bool:
        """Drain events; returns `finished`. Never raises: failures land in `error`."""
        if self.finished:
            return True
        for event in self.backend.poll(timeout):
            self._handle(event)
            if self.finished:
                return True
        if self._cancel_deadline is not None and time.monotonic() > self._cancel_deadline:
            log.warning("backend ignored cancel; killing it")
            self.backend.kill()
            self._fail(BackendError(protocol.CANCELLED, "Lip sync was cancelled."))
        return self.finished

    def _handle(self, event: Event) -> None:
        if isinstance(event, Exited):
            self._fail(died_error(event))
        elif isinstance(event, Result) and event.id is not None and event.id == self._hello_id:
            try:
                self.hello = check_hello(event.data)
            except BackendError as exc:
                self._fail(exc)
        elif isinstance(event, Error) and event.id in (self._hello_id, self._info_id, self._generate_id, None):
            if event.code == protocol.CANCELLED:
                self._fail(BackendError(protocol.CANCELLED, "Lip sync was cancelled."))
            else:
                detail = (event.traceback or self.backend.stderr_tail()) if event.code == protocol.INTERNAL else ""
                self._fail(BackendError(event.code, event.message, detail))
        elif isinstance(event, Progress) and event.id == self._generate_id:
            self.fraction = overall_fraction(event.stage, event.fraction, self.fraction)
            self.message = event.message or event.stage.capitalize()
        elif isinstance(event, Result) and event.id == self._info_id:
            try:
                self.model_info = ModelInfo.from_dict(event.data)
            except (KeyError, TypeError, ValueError) as exc:
                self._fail(BackendError(protocol.BAD_REQUEST, f"The backend sent an invalid model_info ({exc})."))
        elif isinstance(event, Result) and event.id == self._generate_id:
            try:
                self.result = GenerateResult.from_dict(event.data)
            except (KeyError, TypeError, ValueError) as exc:
                self._fail(BackendError(protocol.BAD_REQUEST, f"The backend sent an invalid result ({exc})."))
            self.fraction = 1.0

    def _fail(self, error: BackendError) -> None:
        if self.error is None:
            self.error = error

    def wait(self, timeout: float | None = None, on_progress: Callable[["GenerateJob"], None] | None = None) -> None:
        """Block until finished (background mode); a timeout cancels the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = -1.0
        while not self.poll(0.2):
            if on_progress and self.fraction != last:
                last = self.fraction
                on_progress(self)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None


# --- the warm backend shared by all operators -----------------------------------------

class BackendPool:
    """Keeps at most one backend warm; restarts it when it died or the Python changed.

    Main thread only. `close()` is called on add-on unregister and at exit.
    """

    def __init__(self) -> None:
        self._backend: BackendProcess | None = None
        self.hello: Hello | None = None

    def get(self, python: str) -> tuple[BackendProcess, bool]:
        """A started backend and whether it is new (then nobody has said hello to it yet).

        Does not wait for the backend to import torch. Raises BackendError(START_FAILED)."""
        backend = self._backend
        if backend is not None and (not backend.alive or backend.python != python):
            backend.close()
            backend = self._backend = None
        if backend is not None:
            return backend, False
        backend = BackendProcess(python)
        backend.start()
        self._backend = backend
        return backend, True

    def hello_sync(self, python: str, timeout: float = CALL_TIMEOUT_S) -> Hello:
        """Start if needed and ask hello, blocking (Check button)."""
        backend, _ = self.get(python)
        try:
            self.hello = check_hello(backend.call("hello", timeout=timeout))
        except BackendError:
            self.close()
            raise
        return self.hello

    def release(self, keep_warm: bool) -> None:
        if not keep_warm:
            self.close()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


POOL = BackendPool()
# Blender does not unregister add-ons when it quits; the backend would also end on the
# end of its stdin, but say goodbye properly.
atexit.register(POOL.close)


def current_python_can_import_backend() -> bool:
    """Whether the Python we run on (e.g. bpy as a module in our venv) has wav2sem."""
    import importlib.util
    name = Path(sys.executable).name.lower()
    if not name.startswith("python"):
        return False  # sys.executable is Blender itself: it cannot run `-m wav2sem`
    return importlib.util.find_spec("wav2sem") is not None
