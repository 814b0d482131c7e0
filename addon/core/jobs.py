"""Requests to a running backend, advanced by polling (one thread only), without bpy.

`CheckJob` asks hello + model_info (the Check button); `GenerateJob` asks model_info, checks
the mesh against it, then asks generate (one take); `FitJob` asks fit_face (Fit Face). Each job has its own inbox, so a Check
while a take runs takes none of the take's events; `poll` never blocks longer than asked.

Watchdog: a job fails with BACKEND_TIMEOUT and the backend is killed when the backend has
sent nothing at all for `watchdog_s` while the job waits. The backend reports progress at
least every few seconds while it works (serve.py throttles to ~5 a second; inference reports
per speech window and per frame), so silence means it hangs. The default is generous because
the first request of a fresh backend includes the torch import and, for model_info, the model
load (CUDA initialisation included), neither of which reports progress.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import protocol
from .backend_process import BackendProcess, Inbox, died_error
from .errors import BackendError
from .protocol import Error, Event, Exited, FitResult, GenerateResult, Hello, ModelInfo, Point, Progress, Result

log = logging.getLogger(__name__)

MESH_MISMATCH = protocol.MESH_MISMATCH
CANCEL_GRACE_S = 10.0          # after this the backend is killed rather than waited for
WATCHDOG_S = 120.0             # silence from the backend after which it counts as hung
BUSY_MESSAGE = "waiting: the backend is busy with a lip sync"
# Share of the whole job each backend stage covers, so the bar moves forward only.
STAGE_SPANS = {"load": (0.0, 0.1), "encode": (0.1, 0.3), "decode": (0.3, 1.0)}

# Before generate is sent: a sentence when the mesh cannot take the model's output, a new
# request when the mesh needs another one (e.g. only the weights of a blendshape model), else None.
ModelCheck = Callable[[ModelInfo], "str | GenerateRequest | None"]


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


def parse_model_info(data: dict[str, Any]) -> ModelInfo:
    try:
        return ModelInfo.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(protocol.BAD_REQUEST, f"The backend sent an invalid model_info ({exc}).") from exc


def cancelled_error() -> BackendError:
    return BackendError(protocol.CANCELLED, "Lip sync was cancelled.")


class BackendJob:
    """What both jobs share: the inbox, errors, the watchdog and the end. Subclasses handle events.

    States: running -> finished (`error` set, or the subclass's results); it ends once."""

    def __init__(self, backend: BackendProcess, watchdog_s: float | None = None):
        self.backend = backend
        self.inbox = Inbox()
        self.watchdog_s = WATCHDOG_S if watchdog_s is None else watchdog_s
        self.error: BackendError | None = None
        self.message = "Starting the backend"
        self._started_at = time.monotonic()

    @property
    def finished(self) -> bool:
        return self.error is not None or self._succeeded()

    def _succeeded(self) -> bool:
        raise NotImplementedError

    def _handle(self, event: Event) -> None:
        raise NotImplementedError

    def _send(self, op: str, params: dict[str, Any] | None = None) -> int:
        return self.backend.send(op, params, self.inbox)

    def _greet(self, data: dict[str, Any]) -> Hello:
        """A hello result checked; the backend is then known to speak our protocol."""
        hello = check_hello(data)
        self.backend.greeted = True
        return hello

    def poll(self, timeout: float = 0.0) -> bool:
        """Handle the events so far (waits up to `timeout` for the first); returns `finished`.

        Never raises: failures land in `error`."""
        if self.finished:
            return True
        for event in self.inbox.take(timeout):
            self._handle(event)
            if self.finished:
                break
        if not self.finished:
            self._check_time()
        if self.finished:
            self._end()
        return self.finished

    def _check_time(self) -> None:
        quiet = time.monotonic() - max(self._started_at, self.backend.last_event_at)
        if quiet > self.watchdog_s:
            log.warning("backend silent for %.0f s; killing it", quiet)
            tail = self.backend.stderr_tail()
            self.backend.kill()
            self._fail(BackendError(protocol.BACKEND_TIMEOUT,
                                    f"The backend stopped answering (nothing for {self.watchdog_s:.0f} s); it was "
                                    "stopped and a fresh one starts on the next try.", tail))

    def _fail(self, error: BackendError) -> None:
        if self.error is None:
            self.error = error

    def _error_from(self, event: Error) -> BackendError:
        detail = (event.traceback or self.backend.stderr_tail()) if event.code == protocol.INTERNAL else ""
        message = event.message if event.id is not None else f"The backend rejected a request: {event.message}"
        return BackendError(event.code, message, detail, event.details)

    def _end(self) -> None:
        self.backend.discard(self.inbox)
        if self.error is None:
            self.message = "Done"
        elif self.error.code == protocol.CANCELLED:
            self.message = "Cancelled"
        else:
            self.message = "Failed"

    def wait(self, timeout: float | None = None) -> None:
        """Block until finished (background mode); a timeout fails the job with BACKEND_TIMEOUT."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll(0.2):
            if deadline is not None and time.monotonic() > deadline:
                self._fail(BackendError(protocol.BACKEND_TIMEOUT, f"The backend did not answer within {timeout:.0f} s.",
                                        self.backend.stderr_tail()))
                self._end()


class CheckJob(BackendJob):
    """hello + model_info (the Check button). Done when both arrived."""

    def __init__(self, backend: BackendProcess, model: str = "", watchdog_s: float | None = None, *,
                 device: str = ""):
        super().__init__(backend, watchdog_s)
        self.hello: Hello | None = None
        self.model_info: ModelInfo | None = None
        self._hello_id = self._send("hello")
        self._info_id = self._send("model_info", GenerateRequest("", model, device=device).info_params())

    def _succeeded(self) -> bool:
        return self.hello is not None and self.model_info is not None

    def _handle(self, event: Event) -> None:
        try:
            if isinstance(event, Exited):
                raise died_error(event)
            if isinstance(event, Error):
                raise self._error_from(event)
            if isinstance(event, Result) and event.id == self._hello_id:
                self.hello = self._greet(event.data)
            elif isinstance(event, Result) and event.id == self._info_id:
                self.model_info = parse_model_info(event.data)
        except BackendError as exc:
            self._fail(exc)

    def poll(self, timeout: float = 0.0) -> bool:
        finished = super().poll(timeout)
        if not finished:
            self.message = BUSY_MESSAGE if self._queued_behind_generate() else "Asking the backend"
        return finished

    def _queued_behind_generate(self) -> bool:
        """The backend answers model_info in order, so after any generate sent before it."""
        return self.model_info is None and "generate" in self.backend.waiting_ops(before=self._info_id)


# --- one generate request -----------------------------------------------------------

@dataclass(frozen=True)
class GenerateRequest:
    audio: str
    model: str = ""          # bundle directory; "" = backend default
    subject: str = ""        # "" = model default
    device: str = "auto"
    output: str = ""         # where the backend writes offsets .npy; "" = its choice
    offsets: bool = True     # False: no offsets file where a blendshape model's weights or (with
                             # factors) a factored model's coefficients stand for them; else ignored
    weights_output: str = ""  # where a blendshape model's weights .npy go; "" = its choice
    factors: bool = False    # True: a factored vertex model (model_info output_basis) sends its coefficients
    coefficients_output: str = ""  # where those coefficients .npy go; "" = its choice

    def model_params(self) -> dict[str, Any]:
        return {"model": self.model} if self.model else {}

    def info_params(self) -> dict[str, Any]:
        """model_info's: the model on the device generate will use, so it loads once (and a
        prewarm's model_info loads what the first generate needs)."""
        params = self.model_params()
        if self.device and self.device != "auto":
            params["device"] = self.device
        return params

    def generate_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"audio": self.audio, "device": self.device or "auto", "semantic": True}
        params.update(self.model_params())
        if self.subject:
            params["subject"] = self.subject
        if self.output and self.offsets:
            params["output"] = self.output
        if not self.offsets:
            params["offsets"] = False
        if self.weights_output:
            params["weights_output"] = self.weights_output
        if self.factors:
            params["factors"] = True
        if self.coefficients_output:
            params["coefficients_output"] = self.coefficients_output
        return params


class CancellableJob(BackendJob):
    """A job whose main request (`_cancel_target`) can be cancelled: once `cancel()` was
    called it ends CANCELLED, even if a result arrives afterwards; a backend that ignores the
    cancel for CANCEL_GRACE_S is killed."""

    def __init__(self, backend: BackendProcess, watchdog_s: float | None = None):
        super().__init__(backend, watchdog_s)
        self.result: Any = None
        self._cancelled = False
        self._cancel_deadline: float | None = None

    def _cancel_target(self) -> int | None:
        """The id of the request the backend works on for this job (None: not sent yet)."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop this job: it ends CANCELLED (at once if the backend is not working on it yet)."""
        if self._cancelled or self.error is not None:
            return
        self._cancelled = True
        target = self._cancel_target()
        if target is None or self.result is not None:   # nothing runs for this job
            self.result = None
            self._fail(cancelled_error())
            self._end()
            return
        self.message = "Cancelling"
        self._cancel_deadline = time.monotonic() + CANCEL_GRACE_S
        try:
            self.backend.send("cancel", {"target": target})
        except BackendError:
            self._fail(cancelled_error())
            self._end()

    def _check_time(self) -> None:
        if self._cancel_deadline is not None and time.monotonic() > self._cancel_deadline:
            log.warning("backend ignored cancel; killing it")
            self.backend.kill()
            self._fail(cancelled_error())
        else:
            super()._check_time()

    def _handle(self, event: Event) -> None:
        try:
            self._dispatch(event)
        except BackendError as exc:
            self._fail(cancelled_error() if self._cancelled else exc)

    def _dispatch(self, event: Event) -> None:
        raise NotImplementedError


class GenerateJob(CancellableJob):
    """(hello +) model_info, the mesh check, then generate: one take.

    `check_model(info)` returns a sentence when the mesh cannot take this model's output; the
    job then fails with MESH_MISMATCH and generate is never sent. It may instead return a
    GenerateRequest, which is sent in place of the first (`request` then holds it). Once
    `cancel()` was called the job ends CANCELLED, even if a result arrives afterwards. The constructor raises
    BackendError(BACKEND_DIED) if the backend is gone; `poll` never raises.
    """

    def __init__(self, backend: BackendProcess, request: GenerateRequest, say_hello: bool = False,
                 check_model: ModelCheck | None = None, watchdog_s: float | None = None):
        super().__init__(backend, watchdog_s)
        self.request = request
        self.check_model = check_model
        self.hello: Hello | None = None
        self.model_info: ModelInfo | None = None
        self.result: GenerateResult | None = None
        self.fraction = 0.0
        self._hello_id = self._send("hello") if say_hello else None
        self._info_id = self._send("model_info", request.info_params())
        self._generate_id: int | None = None
        if not say_hello:
            self.message = "Loading the model"

    def _succeeded(self) -> bool:
        return self.result is not None

    def _cancel_target(self) -> int | None:
        return self._generate_id

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Exited):
            raise died_error(event)
        if isinstance(event, Error):
            raise cancelled_error() if event.code == protocol.CANCELLED else self._error_from(event)
        if isinstance(event, Progress) and event.id == self._generate_id:
            self.fraction = overall_fraction(event.stage, event.fraction, self.fraction)
            if not self._cancelled:
                self.message = event.message or event.stage.capitalize()
        elif isinstance(event, Result) and event.id == self._hello_id:
            self.hello = self._greet(event.data)
            self.message = "Loading the model"
            self._send_generate_when_ready()
        elif isinstance(event, Result) and event.id == self._info_id:
            self.model_info = parse_model_info(event.data)
            self._send_generate_when_ready()
        elif isinstance(event, Result) and event.id == self._generate_id:
            if self._cancelled:
                raise cancelled_error()   # cancel before commit wins
            try:
                self.result = GenerateResult.from_dict(event.data)
            except (KeyError, TypeError, ValueError) as exc:
                raise BackendError(protocol.BAD_REQUEST, f"The backend sent an invalid result ({exc}).") from exc
            self.fraction = 1.0

    def _send_generate_when_ready(self) -> None:
        if self._generate_id is not None or self.model_info is None:
            return
        if self._hello_id is not None and self.hello is None:
            return
        problem = self.check_model(self.model_info) if self.check_model else None
        if isinstance(problem, GenerateRequest):
            self.request, problem = problem, None
        if problem:
            raise BackendError(MESH_MISMATCH, problem)
        self._generate_id = self._send("generate", self.request.generate_params())
        self.message = "Generating"

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


# --- one fit_face request ------------------------------------------------------------

FIT_UNKNOWN = "unknown op"     # how a backend older than Fit Face answers fit_face (any case)


@dataclass(frozen=True)
class FitRequest:
    mesh: str                                 # the mesh .npz (DESIGN.md "Fit Face")
    output: str = ""                          # where the keys .npz go; "" = the backend's choice
    landmarks: dict[str, Point] | None = None  # world-space starting points; None = the fit finds them
    include_eyes: bool = False

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"mesh": self.mesh, "include_eyes": bool(self.include_eyes)}
        if self.output:
            params["output"] = self.output
        if self.landmarks is not None:
            params["landmarks"] = {name: [float(c) for c in point] for name, point in self.landmarks.items()}
        return params


class FitJob(CancellableJob):
    """(hello +) fit_face: reference-head shape keys for one mesh.

    Progress comes as stage "fit"; `result` is a FitResult. A NO_FACE error keeps the
    backend's "landmarks" guess in `error.details`. The constructor raises
    BackendError(BACKEND_DIED) if the backend is gone; `poll` never raises.
    """

    def __init__(self, backend: BackendProcess, request: FitRequest, say_hello: bool = False,
                 watchdog_s: float | None = None):
        super().__init__(backend, watchdog_s)
        self.request = request
        self.hello: Hello | None = None
        self.result: FitResult | None = None
        self.fraction = 0.0
        self._hello_id = self._send("hello") if say_hello else None
        self._fit_id: int | None = self._send("fit_face", request.params())
        self.message = "Fitting the face"

    def _succeeded(self) -> bool:
        return self.result is not None and (self._hello_id is None or self.hello is not None)

    def _cancel_target(self) -> int | None:
        return self._fit_id

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Exited):
            raise died_error(event)
        if isinstance(event, Error):
            if event.code == protocol.CANCELLED:
                raise cancelled_error()
            if event.code == protocol.BAD_REQUEST and event.message.lower().startswith(FIT_UNKNOWN):
                raise BackendError(protocol.PROTOCOL_MISMATCH, "The installed backend is older than Fit Face; click "
                                                               "Install Backend to update it.")
            raise self._error_from(event)
        if isinstance(event, Progress) and event.id == self._fit_id:
            self.fraction = max(self.fraction, event.fraction)
            if not self._cancelled:
                self.message = event.message or "Fitting the face"
        elif isinstance(event, Result) and event.id == self._hello_id:
            self.hello = self._greet(event.data)
        elif isinstance(event, Result) and event.id == self._fit_id:
            if self._cancelled:
                raise cancelled_error()   # cancel before commit wins
            try:
                self.result = FitResult.from_dict(event.data)
            except (KeyError, TypeError, ValueError) as exc:
                raise BackendError(protocol.BAD_REQUEST, f"The backend sent an invalid fit_face result ({exc}).") from exc
            self.fraction = 1.0
