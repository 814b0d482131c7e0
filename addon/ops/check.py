"""The Check button: start the backend and report its versions, devices and model.

Non-blocking in the UI: a CheckJob polled by a modal timer, so a Check while a lip sync
runs leaves the window responsive (it says it waits for the lip sync) and takes none of the
lip sync's events. Synchronous in background mode and from scripts (execute).
"""
from __future__ import annotations

from typing import Any, ClassVar

import bpy

from ..core import client, protocol
from ..ui import preferences, properties
from .run import Status, redraw_sidebars, user_message

TIMER_INTERVAL_S = 0.1


class WAV2SEM_OT_check_backend(bpy.types.Operator):
    """Start the backend and report its versions, devices and model"""
    bl_idname = "wav2sem.check_backend"
    bl_label = "Check"

    _running: ClassVar[bool] = False      # one Check at a time
    _job: client.CheckJob | None = None
    _python: client.PythonChoice | None = None
    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if cls._running:
            cls.poll_message_set("A check is already running.")
        return not cls._running

    def execute(self, context: bpy.types.Context) -> Status:
        """Synchronous: background mode and scripts."""
        if not self._start(context):
            return {"CANCELLED"}
        assert self._job is not None
        self._job.wait()
        return self._finish(context)

    def invoke(self, context: bpy.types.Context, event: Any) -> Status:
        if bpy.app.background:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: Any) -> Status:
        job = self._job
        assert job is not None
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if not job.poll():
            self._show(context, job.message)
            return {"RUNNING_MODAL"}
        return self._finish(context)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator itself (a file is loaded, the window closes)."""
        self._cleanup(context)

    def _start(self, context: bpy.types.Context) -> bool:
        prefs = preferences.preferences(context)
        try:
            self._python = preferences.backend_python(context)
            backend, _ = client.POOL.get(self._python.path)
            self._job = client.CheckJob(backend, bpy.path.abspath(prefs.model) if prefs.model else "")
        except client.BackendError as exc:
            self._report_error(context, exc)
            return False
        type(self)._running = True
        self._show(context, "Starting the backend")
        return True

    def _finish(self, context: bpy.types.Context) -> Status:
        job, choice = self._job, self._python
        assert job is not None and choice is not None
        try:
            if job.error is not None:
                self._report_error(context, job.error)
                return {"CANCELLED"}
            assert job.hello is not None and job.model_info is not None
            info = job.model_info
            properties.remember_subjects(context, info)
            self._show(context, f"{job.hello.summary()}\nPython: {choice.path} ({choice.source})\n"
                                f"Model: {info.name}, {info.vertex_count} vertices, {info.fps:g} fps, "
                                f"{len(info.subjects)} speaking styles"
                                + (f", {len(info.channels)} ARKit channels (drives face keys)"
                                   if info.predicts_weights else ""))
            self.report({"INFO"}, preferences.preferences(context).status.replace("\n", "; "))
            return {"FINISHED"}
        finally:
            self._cleanup(context)

    def _report_error(self, context: bpy.types.Context, exc: client.BackendError) -> None:
        self._show(context, user_message(exc))
        self.report({"ERROR"}, user_message(exc))

    def _show(self, context: bpy.types.Context, status: str) -> None:
        preferences.preferences(context).status = status
        redraw_sidebars(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if self._job is not None:
            error = self._job.error
            if error is not None and error.code == protocol.PROTOCOL_MISMATCH:
                client.POOL.close()   # of no use to anyone; a dead backend the pool restarts itself
            else:
                client.POOL.release(preferences.preferences(context).keep_warm)
            self._job = None
        type(self)._running = False


classes = (WAV2SEM_OT_check_backend,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
