"""One `python -m wav2sem serve` child process and the routing of its events, without bpy.

Threads: two daemon reader threads per process. The stdout reader parses protocol lines
and routes each event, by request id, to the inbox of whoever sent that request, so no
request can take another's events; the stderr reader keeps the last lines for error
messages. Sending, taking from inboxes and closing happen on one thread, Blender's main
thread.

Routing: an event goes to the inbox its request was sent with; a request's route ends with
its result or error. `Exited` (the process ended) goes to every inbox still waiting. An
error with id null means the backend could not read one of our lines and cannot say which:
it goes to every inbox with a request that has had no event yet (a request that has had
an event was clearly read), so the lost request fails instead of waiting forever.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Mapping, Sequence

from . import protocol
from .errors import BackendError
from .protocol import Error, Event, Exited, Request, Result

log = logging.getLogger(__name__)

START_FAILED = "START_FAILED"
STDERR_LINES_KEPT = 40
READER_JOIN_S = 2.0       # how long close() waits for the readers to report the exit
TERMINATE_GRACE_S = 2.0   # how long close() waits after SIGTERM (the server then still cleans up) before killing


class Inbox:
    """The events for the requests one job sent; filled by the reader, emptied by the job."""

    def __init__(self) -> None:
        self._events: queue.Queue[Event] = queue.Queue()

    def put(self, event: Event) -> None:
        self._events.put(event)

    def take(self, timeout: float = 0.0) -> list[Event]:
        """All events so far; waits up to `timeout` seconds for the first one."""
        events: list[Event] = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return events


@dataclass
class _Route:
    inbox: Inbox
    op: str
    heard: bool = False


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The backend's environment: UTF-8 on every pipe whatever the locale or code page."""
    child = dict(env)
    child.pop("PYTHONHOME", None)   # Blender's own PYTHONHOME would break another Python
    child.update(PYTHONUNBUFFERED="1", PYTHONUTF8="1", PYTHONIOENCODING="utf-8")
    return child


class BackendProcess:
    """One backend child. States: new -> running -> closed (or exited on its own)."""

    def __init__(self, python: str, env: Mapping[str, str] | None = None, command: list[str] | None = None,
                 args: Sequence[str] = ()):
        self.python = python
        self.args = tuple(args)    # after `serve`: the launch settings (e.g. --threads 1); part of its identity
        self.command = command or [python, "-m", "wav2sem", "serve", *self.args]
        self._env = child_environment(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._routes: dict[int, _Route] = {}
        self._routes_lock = threading.Lock()
        self._exited: Exited | None = None
        self._stdout_reader: threading.Thread | None = None
        self._stderr_reader: threading.Thread | None = None
        self.last_event_at = time.monotonic()   # when the backend last sent a protocol line
        self.closed = False
        self.greeted = False    # a job checked its hello (protocol version): later jobs need not ask

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
        self._stderr_reader = self._reader(self._read_stderr, self._proc.stderr)
        self._stdout_reader = self._reader(self._read_stdout, self._proc.stdout)

    @staticmethod
    def _reader(target: Any, stream: IO[bytes]) -> threading.Thread:
        thread = threading.Thread(target=target, args=(stream,), daemon=True, name="wav2sem-backend-reader")
        thread.start()
        return thread

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self.closed

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def waiting_ops(self, before: int | None = None) -> list[str]:
        """The ops of the requests sent with an inbox and not answered yet (sent before the
        request with id `before`, if given), oldest first."""
        with self._routes_lock:
            return [route.op for request_id, route in self._routes.items() if before is None or request_id < before]

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has ended (negative: killed by that signal), else None."""
        return self._proc.poll() if self._proc else None

    def close(self, timeout: float = 3.0) -> None:
        """Ask the backend to stop and make sure it has: sends `shutdown` (it cancels what runs,
        removes its temp folder and exits), ends its input, waits up to `timeout`, then
        terminates and, last of all, kills it.

        Never raises; safe twice and in any state. Afterwards every inbox still waiting has an `Exited`."""
        if self.closed:
            return
        proc = self._proc
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(BackendError):    # it may have stopped reading
                    self._write(Request(next(self._ids), "shutdown"))
                with contextlib.suppress(OSError, ValueError):
                    if proc.stdin is not None:
                        proc.stdin.close()
        finally:
            self.closed = True      # from here on nothing more is written
            if proc is not None:
                self._end(proc, timeout)

    def _end(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait up to `timeout` for the child to exit; terminate it (the server still removes its
        temp folder then), and kill it only if that fails too."""
        try:
            if not _exits_within(proc, timeout):
                log.warning("backend %s did not stop in %.1f s; terminating it", proc.pid, timeout)
                proc.terminate()
                if not _exits_within(proc, TERMINATE_GRACE_S):
                    log.warning("backend %s ignored the termination; killing it", proc.pid)
                    proc.kill()
                    _exits_within(proc, timeout)
        finally:
            if self._stdout_reader is not None:   # it reports the exit to the inboxes...
                self._stdout_reader.join(READER_JOIN_S)
            self._exit(Exited(proc.returncode, self.stderr_tail()))   # ...unless a grandchild holds stdout
            log.info("backend %s ended (exit code %s)", proc.pid, proc.returncode)

    def kill(self) -> None:
        """End the child at once (it does not answer a cancel, or nothing at all)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.close()

    # messages
    def send(self, op: str, params: dict[str, Any] | None = None, inbox: Inbox | None = None) -> int:
        """Write one request; its events go to `inbox` (none: they are dropped). Returns its id.

        Raises BackendError(BACKEND_DIED) if the process is gone."""
        request = Request(next(self._ids), op, params or {})
        if inbox is not None:
            with self._routes_lock:
                exited = self._exited
                self._routes[request.id] = _Route(inbox, op)
            if exited is not None:
                inbox.put(exited)
        try:
            self._write(request)
        except BackendError:
            self._forget(request.id)
            raise
        return request.id

    def discard(self, inbox: Inbox) -> None:
        """Stop routing to `inbox` (its job ended): later events of its requests are dropped."""
        with self._routes_lock:
            for request_id in [i for i, route in self._routes.items() if route.inbox is inbox]:
                del self._routes[request_id]

    def _forget(self, request_id: int) -> None:
        with self._routes_lock:
            self._routes.pop(request_id, None)

    def _write(self, request: Request) -> None:
        if self.closed or self._proc is None or self._proc.stdin is None:
            raise BackendError(protocol.BACKEND_DIED, "The backend is not running.")
        try:
            with self._write_lock:
                self._proc.stdin.write(protocol.encode(request))
                self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise BackendError(protocol.BACKEND_DIED, "The backend stopped unexpectedly.",
                               self.stderr_tail()) from exc

    def _route(self, event: Event) -> None:
        self.last_event_at = time.monotonic()
        with self._routes_lock:
            if event.id is None:
                routes = [route for route in self._routes.values() if not route.heard]
            elif isinstance(event.id, int) and event.id in self._routes:
                routes = [self._routes[event.id]]
                if isinstance(event, (Result, Error)):
                    del self._routes[event.id]   # answered: the route ends here
            else:
                routes = []     # not one of our ids (ours are ints)
            for route in routes:
                route.heard = True
            inboxes = {id(route.inbox): route.inbox for route in routes}
        if not inboxes:
            log.debug("backend event for no waiting request: %s", event)
        for inbox in inboxes.values():
            inbox.put(event)

    def _exit(self, event: Exited) -> None:
        """Tell every waiting inbox that the process ended (the first report counts)."""
        with self._routes_lock:
            if self._exited is not None:
                return
            self._exited = event
            inboxes = {id(route.inbox): route.inbox for route in self._routes.values()}
            self._routes.clear()
        for inbox in inboxes.values():
            inbox.put(event)

    # reader threads
    def _read_stdout(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in iter(stream.readline, b""):
                if not line.strip():
                    continue
                try:
                    self._route(protocol.decode_event(line))   # UTF-8, invalid bytes replaced
                except protocol.ProtocolError as exc:
                    log.warning("backend wrote a non-protocol line: %s", exc)
        returncode = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = self._proc.wait(5.0)
        if self._stderr_reader is not None:
            self._stderr_reader.join(1.0)   # let stderr finish so the tail is complete
        with contextlib.suppress(OSError):
            stream.close()
        self._exit(Exited(returncode, self.stderr_tail()))

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line:
                    self._stderr.append(line)
                    log.debug("backend: %s", line)
        with contextlib.suppress(OSError):
            stream.close()


def _exits_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(seconds)
    return proc.poll() is not None


def died_error(event: Exited) -> BackendError:
    return BackendError(protocol.BACKEND_DIED, f"The backend stopped unexpectedly (exit code {event.returncode}).",
                        event.stderr_tail)
