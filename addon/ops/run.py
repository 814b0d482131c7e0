"""The run layer every long operator shares (Generate Lip Sync, Fit Face, Check, Install
Backend): the run's outcome, one modal runner (which registers the run in core/runs.py) and
one failure() that names the feature. Main thread only.

A run is driven synchronously in background mode (`blender -b`), from scripts and the redo
panel (execute), or modally in the UI (invoke: a timer polls it on the main thread; Esc or a
panel's cancel button sets `cancel_requested`), and is cleaned up whatever happens.

An operator mixes ModalRun in before bpy.types.Operator and gives `feature` (its name in
messages), `_start(context) -> Run` and optionally `_progress_shown` / `_ui_reset`. Generate
and Fit Face are exclusive (`exclusive = True`): while one runs, neither starts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import bpy

from ..core import client, mapping, protocol, runs
from ..core.errors import UserError
from ..scene import takes

log = logging.getLogger(__name__)
TIMER_INTERVAL_S = 0.1

# What execute/invoke/modal return (Blender's operator status flags).
Status = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]
Level = Literal["INFO", "WARNING", "ERROR"]


@dataclass(frozen=True)
class Outcome:
    """How the operator ends and what it reports: (level, message) pairs."""
    status: Status
    reports: tuple[tuple[Level, str], ...]


class Run(Protocol):
    """One backend job (or install) and what its operator does when it ends."""
    cancel_requested: bool

    @property
    def finished(self) -> bool: ...
    @property
    def fraction(self) -> float: ...
    @property
    def message(self) -> str: ...
    def poll(self) -> Any: ...
    def wait(self) -> Any: ...
    def cancel(self) -> None: ...
    def finish(self, context: bpy.types.Context) -> Outcome: ...
    def close(self) -> None: ...


class JobRun:
    """A run around one backend job (core.jobs): the job's progress is the run's. Subclasses
    set `job` and give finish() and close()."""
    job: Any
    cancel_requested = False

    @property
    def finished(self) -> bool:
        return bool(self.job.finished)

    @property
    def fraction(self) -> float:
        return float(self.job.fraction)

    @property
    def message(self) -> str:
        return str(self.job.message)

    def poll(self) -> Any:
        return self.job.poll()

    def wait(self) -> Any:
        return self.job.wait()

    def cancel(self) -> None:
        self.job.cancel()

    def release_backend(self, keep_warm: bool) -> None:
        """Give the pool's backend back: kept warm or stopped as the preferences say; stopped
        after a failure of the process itself (it died, hung or spoke another protocol)."""
        try:
            error = self.job.error
            if error is not None and error.code in (protocol.BACKEND_DIED, protocol.BACKEND_TIMEOUT,
                                                    protocol.PROTOCOL_MISMATCH):
                client.POOL.close()
            else:
                client.POOL.release(keep_warm)
        except Exception:
            log.exception("releasing the backend failed; stopping it")
            client.POOL.close()


class CancelRun:
    """An operator that asks the run of `feature` to stop (the panel's cancel button)."""
    feature = ""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return runs.active(cls.feature) is not None

    def execute(self, context: bpy.types.Context) -> Status:
        run = runs.active(self.feature)
        if run is not None:
            run.cancel_requested = True
        return {"FINISHED"}


def user_message(exc: BaseException, feature: str) -> str:
    """One sentence for the user; an unexpected error names the feature that failed."""
    if isinstance(exc, client.BackendError):
        return exc.user_message()
    if isinstance(exc, (UserError, mapping.MappingError, takes.TakeError)):
        return str(exc)
    return f"{feature} failed unexpectedly: {exc!r} (see the system console)."


def failure(exc: BaseException, feature: str) -> Outcome:
    if not isinstance(exc, (client.BackendError, UserError, mapping.MappingError, takes.TakeError)):
        log.error("%s failed", feature, exc_info=exc)
    return Outcome({"CANCELLED"}, (("ERROR", user_message(exc, feature)),))


def cancelled(feature: str, what: str) -> Outcome:
    return Outcome({"CANCELLED"}, (("WARNING", f"{feature} cancelled; {what} unchanged."),))


def redraw_sidebars(context: bpy.types.Context) -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type in ("VIEW_3D", "PREFERENCES"):
            area.tag_redraw()


class ModalRun:
    feature = ""
    exclusive = True
    cancellable = True         # False: Esc is left to other handlers (a Check beside a lip sync)
    _run: Any = None
    _timer: Any = None

    @staticmethod
    def why_disabled(context: bpy.types.Context) -> str:
        """The sentence a disabled button shows, or '' (ui/availability.py)."""
        return ""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if bpy.app.background:
            return True   # headless calls pass everything explicitly; errors are reported by execute
        reason = cls.why_disabled(context)
        if reason:
            cls.poll_message_set(reason)  # type: ignore[attr-defined]  # mixed into a bpy.types.Operator
        return not reason

    def _start(self, context: bpy.types.Context) -> Run:
        raise NotImplementedError

    def _progress_shown(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        """Extra places the progress goes (the panel's properties), if any."""

    def _ui_reset(self, context: bpy.types.Context) -> None:
        """Extra UI state to clear when the run ends, if any."""

    def _begin(self, context: bpy.types.Context) -> None:
        reason = runs.busy_reason(None if self.exclusive else self.feature)
        if reason:
            raise UserError(reason)
        run = self._start(context)
        self._run = run
        runs.add(self.feature, self.exclusive, run)

    def execute(self, context: bpy.types.Context) -> Status:
        """Synchronous: background mode, scripts and the redo panel."""
        try:
            self._begin(context)
        except Exception as exc:
            return self._end(failure(exc, self.feature))
        run = self._run
        try:
            try:
                run.wait()
            except KeyboardInterrupt:   # Ctrl+C in a terminal: cancel like Esc
                run.cancel_requested = True
                run.cancel()
                run.wait()
            return self._finish(context, run)
        finally:
            self._cleanup(context)

    def invoke(self, context: bpy.types.Context, event: Any) -> Status:
        if bpy.app.background:
            return self.execute(context)
        try:
            self._begin(context)
        except Exception as exc:
            return self._end(failure(exc, self.feature))
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        wm.modal_handler_add(self)  # type: ignore[arg-type]  # mixed into a bpy.types.Operator
        wm.progress_begin(0, 100)
        self._show_progress(context, 0.0, "Starting")
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: Any) -> Status:
        run = self._run
        assert run is not None
        try:
            if self.cancellable and event.type == "ESC" and event.value == "PRESS":
                run.cancel_requested = True
            if run.cancel_requested:
                run.cancel()
            if event.type != "TIMER":
                return {"RUNNING_MODAL"} if self.cancellable and event.type == "ESC" else {"PASS_THROUGH"}
            run.poll()
            self._show_progress(context, run.fraction, run.message)
            if not run.finished:
                return {"RUNNING_MODAL"}
        except Exception as exc:          # a defect: end the run, never leave it active
            run.cancel()
            self._cleanup(context)
            return self._end(failure(exc, self.feature))
        try:
            return self._finish(context, run)
        finally:
            self._cleanup(context)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator itself (a file is loaded, the window closes)."""
        if self._run is not None:
            self._run.cancel()
        self._cleanup(context)

    def _finish(self, context: bpy.types.Context, run: Run) -> Status:
        """The run ended: its writes (never interrupted by Ctrl+C half-way) and reports."""
        try:
            outcome = run.finish(context)
        except KeyboardInterrupt:
            outcome = cancelled(self.feature, "the scene is")
        return self._end(outcome)

    def _end(self, outcome: Outcome) -> Status:
        for level, message in outcome.reports:
            self.report({level}, message)   # type: ignore[attr-defined]  # in background mode Blender prints each once
        return outcome.status

    def _show_progress(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        self._progress_shown(context, fraction, message)
        context.window_manager.progress_update(int(fraction * 100))
        if context.workspace is not None:
            status = message.strip().replace("\n", " - ")
            escape = " - Esc to cancel" if self.cancellable else ""
            context.workspace.status_text_set(f"{self.feature}: {status} ({fraction:.0%}){escape}")
        redraw_sidebars(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        """Whatever fails while closing, no run stays active and the UI stops showing one."""
        run, self._run = self._run, None
        try:
            if run is not None:
                run.close()
        finally:
            runs.remove(run)
            self._reset_ui(context)

    def _reset_ui(self, context: bpy.types.Context) -> None:
        timer, self._timer = self._timer, None
        try:
            if timer is not None:
                context.window_manager.event_timer_remove(timer)
                context.window_manager.progress_end()
                if context.workspace is not None:
                    context.workspace.status_text_set(None)
            self._ui_reset(context)
            redraw_sidebars(context)
        except (ReferenceError, RuntimeError, AttributeError):   # window or file already gone
            log.debug("UI cleanup skipped", exc_info=True)
