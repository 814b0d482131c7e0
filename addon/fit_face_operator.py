"""Fit Face: ARKit-named shape keys for a head that has none (docs/DESIGN.md "Fit Face").

Thin like the generate operator: fit_run gathers the inputs, runs the backend job and writes
the keys; this drives it and reports its Outcome. In the UI it is modal (a timer drains the
backend's queue on the main thread; Esc or the panel's cancel button stops it); in background
mode (`blender -b`) and from scripts (EXEC) it runs synchronously. A finished fit is one undo
step (the UNDO flag: Blender pushes it when the operator finishes, modal or not).
"""
from __future__ import annotations

import logging
from typing import Any

import bpy
from bpy.props import BoolProperty, StringProperty

from . import operators
from .fit_run import FitRun, failure, gather
from .lipsync_run import Outcome
from .ui import Status, UserError, redraw_sidebars

log = logging.getLogger(__name__)
TIMER_INTERVAL_S = 0.1
_ACTIVE: list[FitRun] = []   # at most one; a list so the panel and the cancel operator can see it


def running() -> FitRun | None:
    """The fit in progress, if any (panel state; main thread)."""
    return _ACTIVE[0] if _ACTIVE else None


def why_cannot_fit(context: bpy.types.Context) -> str:
    """The reason the Fit Face button is disabled, or '' (main thread)."""
    if _ACTIVE:
        return "Fit Face is running."
    if operators._ACTIVE:
        return "A lip sync is running; wait for it or cancel it."
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        return "Select the head mesh first."
    return ""


class WAV2SEM_OT_fit_face(bpy.types.Operator):
    """Give the head the reference head's ARKit shape keys (landmarks as W2S_ empties you can move)"""
    bl_idname = "wav2sem.fit_face"
    bl_label = "Fit Face"
    bl_options = {"REGISTER", "UNDO"}

    object: StringProperty(name="Object", description="Head mesh; empty = the active object")  # type: ignore[valid-type]
    use_existing_landmarks: BoolProperty(  # type: ignore[valid-type]
        name="Use Existing Landmarks", default=False,
        description="Fit from the W2S_ empties as you moved them instead of finding the face again")
    include_eyes: BoolProperty(name="Include Eyes", default=False,  # type: ignore[valid-type]
                               description="Also fit the eye and eyelid shapes (blinks, gaze)")
    interior_objects: StringProperty(  # type: ignore[valid-type]
        name="Mouth Interior",
        description="Separate teeth, gums and tongue objects, comma-separated; empty = the head's child meshes "
                    "named teeth, tooth, tongue, gum or mouth")

    _run: FitRun | None = None
    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if bpy.app.background:
            return True   # headless calls pass everything explicitly; errors are reported by execute
        reason = why_cannot_fit(context)
        if reason:
            cls.poll_message_set(reason)
        return not reason

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
        wm.modal_handler_add(self)
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
        self._show_progress(context, run)
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

    # steps
    def _start(self, context: bpy.types.Context) -> FitRun:
        if _ACTIVE:
            raise UserError("Fit Face is already running; wait for it or press Esc.")
        if operators._ACTIVE:
            raise UserError("A lip sync is running; wait for it or cancel it, then fit the face.")
        if not self.object and context.active_object is not None:
            self.object = context.active_object.name   # the redo panel re-runs on the same head
        run = FitRun(*gather(context, self))
        self._run = run
        _ACTIVE.append(run)
        return run

    def _end(self, outcome: Outcome) -> Status:
        for level, message in outcome.reports:
            self.report({level}, message)
        return outcome.status

    def _finish(self, context: bpy.types.Context, run: FitRun) -> Status:
        outcome = run.finish(context)
        if run.placed_guess and not bpy.app.background:
            # NO_FACE ends CANCELLED (no undo step of the operator's), but it made the guessed
            # empties: give them a step of their own so Ctrl+Z removes them cleanly.
            try:
                bpy.ops.ed.undo_push(message="Fit Face landmarks")
            except RuntimeError:
                log.debug("no undo step for the landmark empties", exc_info=True)
        return self._end(outcome)

    def _show_progress(self, context: bpy.types.Context, run: FitRun) -> None:
        fraction, message = run.job.fraction, run.job.message
        context.window_manager.progress_update(int(fraction * 100))
        if context.workspace is not None:
            context.workspace.status_text_set(f"Fit Face: {message} ({fraction:.0%}) - Esc to cancel")
        redraw_sidebars(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        """Whatever fails while closing, no fit stays active and the UI stops showing one."""
        run, self._run = self._run, None
        try:
            if run is not None:
                run.close()
        finally:
            if run in _ACTIVE:
                _ACTIVE.remove(run)
            self._reset_ui(context)

    def _reset_ui(self, context: bpy.types.Context) -> None:
        timer, self._timer = self._timer, None
        try:
            if timer is not None:
                context.window_manager.event_timer_remove(timer)
                context.window_manager.progress_end()
                if context.workspace is not None:
                    context.workspace.status_text_set(None)
            redraw_sidebars(context)
        except (ReferenceError, RuntimeError, AttributeError):   # window or file already gone
            log.debug("UI cleanup skipped", exc_info=True)


class WAV2SEM_OT_cancel_fit_face(bpy.types.Operator):
    """Stop the running Fit Face; the head stays as it was"""
    bl_idname = "wav2sem.cancel_fit_face"
    bl_label = "Cancel Fit Face"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(_ACTIVE)

    def execute(self, context: bpy.types.Context) -> Status:
        for run in _ACTIVE:
            run.cancel_requested = True
        return {"FINISHED"}


classes = (WAV2SEM_OT_fit_face, WAV2SEM_OT_cancel_fit_face)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for run in list(_ACTIVE):
        run.job.cancel()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
