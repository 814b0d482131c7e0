"""The Check button: start the backend and report its versions, devices and model.

Non-blocking in the UI (the shared modal runner, ops/run.py): a Check while a lip sync runs
leaves the window responsive (it says it waits for the lip sync) and takes none of the lip
sync's events. Synchronous in background mode and from scripts. It asks for the model on the
device the preferences name, as Generate will.
"""
from __future__ import annotations

import bpy

from ..core import client, protocol, runs
from ..ui import preferences, properties
from .run import JobRun, ModalRun, Outcome, failure

FEATURE = runs.CHECK


class CheckRun(JobRun):
    """hello + model_info on the pool's backend, shown in the preferences."""

    def __init__(self, context: bpy.types.Context):
        prefs = preferences.preferences(context)
        self.keep_warm = prefs.keep_warm
        self.launch = preferences.backend_launch(context)
        backend, _ = client.POOL.get(self.launch.python.path, self.launch.args)
        try:
            self.job = client.CheckJob(backend, bpy.path.abspath(prefs.model) if prefs.model else "",
                                       device=prefs.device)
        except BaseException:
            client.POOL.release(self.keep_warm)
            raise

    def finish(self, context: bpy.types.Context) -> Outcome:
        job, choice = self.job, self.launch.python
        if job.error is not None:
            return failure(job.error, FEATURE)
        assert job.hello is not None and job.model_info is not None
        info = job.model_info
        properties.remember_subjects(context, info)
        status = (f"{job.hello.summary()}\nPython: {choice.path} ({choice.source})\n"
                  f"Model: {info.name}, {info.vertex_count} vertices, {info.fps:g} fps, "
                  f"{len(info.subjects)} speaking styles"
                  + (f", {len(info.channels)} ARKit channels (drives face keys)" if info.predicts_weights else ""))
        return Outcome({"FINISHED"}, (("INFO", status),))

    @property
    def fraction(self) -> float:
        return 1.0 if self.job.finished else 0.0     # two answers: no finer progress to show

    def cancel(self) -> None:
        """A Check is not cancelled (hello and model_info take seconds); nothing to do."""

    def close(self) -> None:
        error = self.job.error
        if error is not None and error.code == protocol.PROTOCOL_MISMATCH:
            client.POOL.close()   # of no use to anyone; a dead backend the pool restarts itself
        else:
            client.POOL.release(self.keep_warm)


class WAV2SEM_OT_check_backend(ModalRun, bpy.types.Operator):
    """Start the backend and report its versions, devices and model"""
    bl_idname = "wav2sem.check_backend"
    bl_label = "Check"

    feature = FEATURE
    exclusive = False           # may run beside a lip sync; one Check at a time
    cancellable = False         # a few seconds at most; Esc goes to the lip sync beside it

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        reason = runs.busy_reason(FEATURE)
        if reason:
            cls.poll_message_set(reason)
        return not reason

    def _start(self, context: bpy.types.Context) -> CheckRun:
        return CheckRun(context)

    def _progress_shown(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        preferences.preferences(context).status = message

    def _end(self, outcome: Outcome) -> set:
        """The last report is also the preferences' status line (multi-line there)."""
        if outcome.reports:
            preferences.preferences(bpy.context).status = outcome.reports[-1][1]
        outcome = Outcome(outcome.status, tuple((level, text.replace("\n", "; ")) for level, text in outcome.reports))
        return super()._end(outcome)


classes = (WAV2SEM_OT_check_backend,)
register, unregister = bpy.utils.register_classes_factory(classes)
