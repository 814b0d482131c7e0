"""What Generate Lip Sync and Fit Face share: one run of a backend job, driven synchronously in
background mode (`blender -b`), from scripts and the redo panel (execute), or modally in the
UI (invoke: a timer polls the job on the main thread; Esc or the panel's cancel button sets
`cancel_requested`), and cleaned up whatever happens.

An operator mixes this in before bpy.types.Operator and gives `_active` (its module's list of
running runs), `status_label`, `_start(context) -> run` and `_finish(context, run) -> Status`;
a run has `job` (poll, wait, cancel, finished, fraction, message), `cancel_requested` and
`close()`.
"""
from __future__ import annotations

import logging
from typing import Any

import bpy

from .lipsync_run import Outcome, failure
from .ui import Status, redraw_sidebars

log = logging.getLogger(__name__)
TIMER_INTERVAL_S = 0.1


class ModalRun:
    _active: list[Any]
    status_label = ""
    _run: Any = None
    _timer: Any = None

    def _start(self, context: bpy.types.Context) -> Any:
        raise NotImplementedError

    def _finish(self, context: bpy.types.Context, run: Any) -> Status:
        raise NotImplementedError

    def _progress_shown(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        """Extra places the progress goes (the panel's properties), if any."""

    def _ui_reset(self, context: bpy.types.Context) -> None:
        """Extra UI state to clear when the run ends, if any."""

    def execute(self, context: bpy.types.Context) -> Status:
        """Synchronous: background mode, scripts and the redo panel."""
        try:
            run = self._start(context)
        except Exception as exc:
            return self._end(failure(exc))
        try:
            try:
                run.job.wait()
            except KeyboardInterrupt:   # Ctrl+C in a terminal: cancel like Esc
                run.cancel_requested = True
                run.job.cancel()
                run.job.wait()
            return self._finish(context, run)
        finally:
            self._cleanup(context)

    def invoke(self, context: bpy.types.Context, event: Any) -> Status:
        if bpy.app.background:
            return self.execute(context)
        try:
            self._start(context)
        except Exception as exc:
            return self._end(failure(exc))
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        wm.modal_handler_add(self)  # type: ignore[arg-type]  # mixed into a bpy.types.Operator
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: Any) -> Status:
        run = self._run
        assert run is not None
        if event.type == "ESC" and event.value == "PRESS":
            run.cancel_requested = True
        if run.cancel_requested:
            run.job.cancel()
        if event.type != "TIMER":
            return {"RUNNING_MODAL"} if event.type == "ESC" else {"PASS_THROUGH"}
        run.job.poll()
        self._show_progress(context, run.job.fraction, run.job.message)
        if not run.job.finished:
            return {"RUNNING_MODAL"}
        try:
            return self._finish(context, run)
        finally:
            self._cleanup(context)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator itself (a file is loaded, the window closes)."""
        if self._run is not None:
            self._run.job.cancel()
        self._cleanup(context)

    def _end(self, outcome: Outcome) -> Status:
        for level, message in outcome.reports:
            self.report({level}, message)   # type: ignore[attr-defined]  # in background mode Blender prints each once
        return outcome.status

    def _show_progress(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        self._progress_shown(context, fraction, message)
        context.window_manager.progress_update(int(fraction * 100))
        if context.workspace is not None:
            context.workspace.status_text_set(f"{self.status_label}: {message} ({fraction:.0%}) - Esc to cancel")
        redraw_sidebars(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        """Whatever fails while closing, no run stays active and the UI stops showing one."""
        run, self._run = self._run, None
        try:
            if run is not None:
                run.close()
        finally:
            if run in self._active:
                self._active.remove(run)
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
