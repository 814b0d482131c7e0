"""`wav2sem serve`'s transport: request lines in, protocol events out (docs/DESIGN.md "Backend
protocol"; every message is built by protocol.py), and the threads between them. The
operations themselves are in operations.py.

Threads: the main thread reads stdin (bytes, decoded as UTF-8 per line whatever the locale)
and answers `cancel`/`shutdown` at once; `hello` runs on a side thread so it is answered
while a generate runs; one worker thread runs `model_info`, `generate` and `fit_face` in
order. The worker imports torch at once (while the first line is awaited) and sets torch's
intra-op threads from `--threads auto|N` before any model loads. Protocol lines go to the
original stdout only; file descriptor 1 is pointed at stderr so stray prints from libraries
can never corrupt it.

End of input lets queued and running work finish, then exits; `shutdown`, SIGTERM and Ctrl-C
cancel it. A request's outputs are put in place (`Job.commit`) only while its cancel is not
set, under the same lock `cancel` takes: a cancelled request never gets a result.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable

from .. import __version__, protocol
from ..errors import BAD_REQUEST, INTERNAL, Cancelled, Wav2SemError
from .operations import KEEP_THREADS, Operations
from .workdir import make_workdir

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL_S = 0.2   # at most ~5 progress events a second per request...
PROGRESS_MIN_STEP = 0.05        # ...unless the fraction moved this much or the stage changed
WORKER_OPS = ("model_info", "generate", "fit_face")
OPS = ("hello", *WORKER_OPS, "cancel", "shutdown")


class Terminated(BaseException):
    """SIGTERM: stop now, as Ctrl-C does (raised in the main thread by the signal handler)."""


class Job:
    """One request on its way through the server; its operation sees it as a RequestHandle."""

    def __init__(self, server: "Server", request_id: protocol.RequestId, op: str, params: dict):
        self.id, self.op, self.params = request_id, op, params
        self.cancel = threading.Event()
        self._server = server
        self._last: tuple[str | None, float, float] = (None, -1.0, 0.0)    # stage, fraction, time sent

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def progress(self, stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        last_stage, last_fraction, last_time = self._last
        if (stage != last_stage or fraction >= 1.0 or fraction - last_fraction >= PROGRESS_MIN_STEP
                or now - last_time >= PROGRESS_MIN_INTERVAL_S):
            self._last = (stage, fraction, now)
            self._server.send(protocol.Progress(self.id, stage, round(float(fraction), 4), message))

    def commit(self, write: Callable[[], None]) -> None:
        self._server.commit(self, write)


class Server:
    """Handles request lines; `out` receives protocol lines (writes are thread-safe)."""

    def __init__(self, out: IO[str], default_model: str | None = None, default_device: str = "auto",
                 threads: int | str | None = KEEP_THREADS):
        self.out = out
        self.workdir = make_workdir()
        self.operations = Operations(self.workdir, default_model, default_device, threads)
        self._handlers: dict[str, Callable[[dict, Job], Any]] = {
            "hello": self.operations.hello, "model_info": self.operations.model_info,
            "generate": self.operations.generate, "fit_face": self.operations.fit_face}
        self._write_lock = threading.Lock()
        self._jobs: "queue.Queue[Job | None]" = queue.Queue()
        self._pending: dict[Any, Job] = {}
        self._pending_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="wav2sem-worker", daemon=True)
        self._worker.start()
        self._hellos: list[threading.Thread] = []     # hello's side threads (stop waits for their answers)

    # ----- output ---------------------------------------------------------------------
    def send(self, message: protocol.Progress | protocol.Result | protocol.Error) -> None:
        line = protocol.encode(message).decode("ascii")
        with self._write_lock:
            self.out.write(line)
            self.out.flush()

    def _refuse(self, request_id: protocol.RequestId, message: str) -> None:
        self.send(protocol.Error(request_id, BAD_REQUEST, message))

    # ----- input (main thread) --------------------------------------------------------
    def handle_line(self, line: bytes | str) -> bool:
        """Parse and dispatch one line. Returns False when the server should stop."""
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                self._refuse(None, "Request is not valid UTF-8 text; send JSON encoded as UTF-8.")
                return True
        if not line.strip():
            return True
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:   # JSONDecodeError, int digit limit, deep nesting
            self._refuse(None, f"Request is not valid JSON ({str(exc)[:120]}).")
            return True
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            rid = request.get("id") if isinstance(request, dict) else None
            self._refuse(rid if _is_scalar(rid) else None,
                         'A request must be a JSON object with "id", "op" and optional "params".')
            return True
        request_id, op = request.get("id"), request["op"]
        params = request.get("params")
        params = {} if params is None else params
        if not _is_scalar(request_id):
            self._refuse(None, '"id" must be a string, a finite number or null.')
            return True
        if not isinstance(params, dict):
            self._refuse(request_id, '"params" must be a JSON object.')
            return True
        if op == "cancel":
            self._cancel(request_id, params.get("target"))
        elif op == "shutdown":
            self.send(protocol.Result(request_id, {}))
            return False
        elif op == "hello":      # answered at once, even while a generate runs
            self._hellos = [thread for thread in self._hellos if thread.is_alive()]
            self._hellos.append(threading.Thread(target=self._run, args=(Job(self, request_id, op, params),),
                                                 name="wav2sem-hello", daemon=True))
            self._hellos[-1].start()
        elif op in WORKER_OPS:
            self._queue(Job(self, request_id, op, params))
        else:
            self._refuse(request_id, f"Unknown op {op[:40]!r}; expected one of {', '.join(OPS)}.")
        return True

    def _queue(self, job: Job) -> None:
        with self._pending_lock:
            busy = job.id is not None and job.id in self._pending
            if not busy:
                self._pending[job.id] = job
        if busy:
            self._refuse(job.id, f"Request id {job.id!r} is still in use by an unfinished request.")
        else:
            self._jobs.put(job)

    def _cancel(self, request_id: protocol.RequestId, target: Any) -> None:
        if not _is_scalar(target):
            self._refuse(request_id, '"target" must be the id (a string or number) of a request.')
            return
        with self._pending_lock:      # the lock a commit takes: cancel is either in time or not found
            job = self._pending.get(target)
            if job is not None:
                job.cancel.set()
        self.send(protocol.Result(request_id, protocol.CancelResult(target, job is not None).to_dict()))

    def _cancel_all(self) -> None:
        with self._pending_lock:
            for job in self._pending.values():
                job.cancel.set()

    def stop(self, drain: bool = False) -> None:
        """End the worker and remove temporary files. Main thread. `drain`: let queued and
        running requests finish first (end of input); else cancel them. Either way every
        request read so far gets its answer (a hello too) before this returns. Ctrl-C or
        SIGTERM while draining cancels what is left."""
        if not drain:
            self._cancel_all()
        self._jobs.put(None)
        try:
            for thread in (self._worker, *self._hellos):
                while thread.is_alive():
                    thread.join(0.2)
        except (KeyboardInterrupt, Terminated):
            self._cancel_all()
            self._worker.join(timeout=30)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ----- worker thread (and hello's) ------------------------------------------------
    def _work(self) -> None:
        try:
            self.operations.prepare()
        except Exception:   # a broken torch: each request reports it
            log.exception("preparing the backend failed")
        while (job := self._jobs.get()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            if job.cancel.is_set():
                raise Cancelled()
            reply = self._handlers[job.op](job.params, job)
            self.send(protocol.Result(job.id, reply.to_dict()))
        except Wav2SemError as exc:
            self.send(_error_event(job.id, exc))
        except Exception as exc:  # keep serving after anything; the add-on shows the message
            log.exception("request %r failed", job.id)
            self.send(protocol.Error(job.id, INTERNAL, f"Internal error in the backend: {exc!r}", traceback.format_exc()))
        finally:
            self._forget(job)

    def commit(self, job: Job, write: Callable[[], None]) -> None:
        """Run `write` unless `job` was cancelled (then raise Cancelled), under the lock cancel
        takes; from then on a cancel no longer finds the job."""
        with self._pending_lock:
            if job.cancel.is_set():
                raise Cancelled()
            write()
            if self._pending.get(job.id) is job:
                del self._pending[job.id]

    def _forget(self, job: Job) -> None:
        with self._pending_lock:
            if self._pending.get(job.id) is job:
                del self._pending[job.id]


def _error_event(request_id: protocol.RequestId, exc: Wav2SemError) -> protocol.Error:
    landmarks = getattr(exc, "landmarks", None)     # fit's NoFaceError carries its landmark guess
    if landmarks is not None:
        return protocol.no_face_error(request_id, exc.message, landmarks)
    return protocol.Error(request_id, exc.code, exc.message)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def serve_stdio(default_model: str | None, default_device: str, threads: int | None) -> int:
    """Serve requests from stdin until end of input, `shutdown`, SIGTERM or Ctrl-C. Main thread."""
    # Keep the real stdout for protocol lines; everything else that writes to fd 1 goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", newline="\n", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    server = Server(protocol_out, default_model, default_device, threads)
    log.info("wav2sem %s serving on stdin/stdout (protocol %d)", __version__, protocol.PROTOCOL_VERSION)
    drain = False
    try:
        for line in sys.stdin.buffer:       # bytes: each line is decoded as UTF-8, whatever the locale
            if not server.handle_line(line):
                break
        else:
            drain = True                    # end of input: finish what was asked for, then exit
    except (KeyboardInterrupt, Terminated):
        pass
    finally:
        server.stop(drain=drain)
    return 0
