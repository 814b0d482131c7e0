"""One generation, shared by the modal and synchronous operator paths: the inputs gathered
from Blender, the backend job, and the write of the take (prepared without bpy by
core/take.py, written by scene/takes.py or scene/face_take.py). Main thread only."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import bpy

from ..core import client, face_plan, mapping, protocol, runs, scratch, take
from ..core.errors import UserError
from ..scene import audio_source, face_take, takes
from ..scene.audio_source import AudioChoice
from ..scene.selection import find_mesh
from ..ui import face_props, preferences, properties
from .run import JobRun, Level, Outcome, cancelled, failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    object_name: str
    take: str
    audio: AudioChoice
    target_fps: float
    subject: str
    intensity: float
    output_mode: str
    model: str
    device: str
    tolerance: float
    keep_warm: bool
    launch: client.Launch


def gather(context: bpy.types.Context, op: Any) -> Inputs:
    """The operator's properties (object, audio_path, strip, ...) and the preferences."""
    obj = find_mesh(context, op.object)
    if obj.mode == "EDIT":
        raise UserError(f"'{obj.name}' is in Edit Mode; switch to Object Mode to add lip sync.")
    assert context.scene is not None
    audio = audio_source.find_audio(context.scene, op.audio_path, op.strip)
    prefs = preferences.preferences(context)
    render = context.scene.render
    model = bpy.path.abspath(prefs.model) if prefs.model else ""
    return Inputs(obj.name, takes.take_name_for(audio.label), audio, mapping.scene_fps(render.fps, render.fps_base),
                  op.subject, op.intensity, op.output_mode, model, prefs.device, prefs.tolerance, prefs.keep_warm,
                  preferences.backend_launch(context))


CANCELLED = cancelled("Lip sync", "the mesh is")
FEATURE = runs.LIP_SYNC


def mesh_facts(obj: bpy.types.Object) -> take.MeshFacts:
    """What the take's plan reads of the mesh (main thread)."""
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    return take.MeshFacts(f"'{obj.name}'", len(mesh.vertices), tuple(takes.user_key_names(obj)),
                          tuple(face_props.stored_rows(obj)), tuple(face_props.strengths(obj).items()))


def _finish_message(summary: takes.TakeSummary, detail: str = "") -> str:
    what = detail or f"{summary.keys} shape keys"
    return (f"Lip sync '{summary.name}': frames {summary.frame_start}-{summary.frame_end}, "
            f"{what}" + (f", {summary.relative_error:.2%} compression error" if summary.relative_error else ""))


class LipSyncRun(JobRun):
    """Backend job for one take, then the write. The plan is made once, from the mesh's
    facts read here, when model_info arrives (core/take.py: no bpy in the job's callback);
    the write plans again only if the mesh changed meanwhile."""

    def __init__(self, inputs: Inputs):
        self.inputs = inputs
        self.cancel_requested = False
        self.facts = mesh_facts(self._mesh())
        self.settings = take.TakeSettings(inputs.target_fps, inputs.intensity, inputs.output_mode, inputs.tolerance)
        self.plan: face_plan.Plan | None = None
        backend, is_new = client.POOL.get(inputs.launch.python.path, inputs.launch.args)
        self.folder = scratch.make_run_folder()
        try:
            audio = audio_source.file_for_backend(inputs.audio, self.folder)
            request = client.GenerateRequest(audio, inputs.model, inputs.subject, inputs.device,
                                             os.path.join(self.folder, "offsets.npy"))
            self.job = client.GenerateJob(backend, request, say_hello=is_new, check_model=self._check_model)
        except BaseException:       # e.g. a packed sound that vanished: the warm backend stays
            scratch.remove_run_folder(self.folder)
            client.POOL.release(inputs.keep_warm)
            raise

    def _mesh(self) -> bpy.types.Object:
        obj = bpy.data.objects.get(self.inputs.object_name)
        if obj is None or obj.type != "MESH":
            raise UserError(f"The mesh '{self.inputs.object_name}' was removed while lip sync was running.")
        return obj

    def _check_model(self, info: protocol.ModelInfo) -> str | client.GenerateRequest | None:
        """Before any inference: can the mesh take this model's output, and what to ask for
        (bpy-free: planned from the facts read when the run started)."""
        self.plan = take.plan(info, self.facts)
        return take.request_for(self.plan, info, self.job.request, self.folder)

    def finish(self, context: bpy.types.Context) -> Outcome:
        """After the job ended: write the take unless it failed or a cancel was asked for."""
        error = self.job.error
        if self.cancel_requested or (error is not None and error.code == protocol.CANCELLED):
            return CANCELLED
        if error is not None:
            return failure(error, FEATURE)
        try:
            summary, warnings = self._write()
        except Exception as exc:
            return failure(exc, FEATURE)
        properties.remember_subjects(context, self.job.model_info)
        reports: list[tuple[Level, str]] = [("WARNING", warning) for warning in warnings]
        return Outcome({"FINISHED"}, (*reports, ("INFO", summary)))

    def _write(self) -> tuple[str, tuple[str, ...]]:
        """Prepare (core/take.py) and write the take; returns the finish message and the warnings."""
        info, result = self.job.model_info, self.job.result
        assert info is not None and result is not None
        obj = self._mesh()
        facts = mesh_facts(obj)
        plan = self.plan if self.plan is not None and facts == self.facts else take.plan(info, facts)
        prepared = take.prepare(plan, info, result, takes.rest_positions(obj), facts, self.settings)
        inputs = self.inputs
        if isinstance(prepared, face_plan.KeyTake):
            summary = face_take.write_key_take(obj, inputs.take, prepared, inputs.audio.frame_start)
            if plan.auto_matched:             # keep the match with the object (same undo step)
                face_props.store_bindings(obj, plan.bindings, result.channels or info.channels)
            channels = len(result.channels or info.channels)
            return _finish_message(summary, take.detail(prepared, channels)), result.warnings
        summary = takes.write_take(obj, inputs.take, prepared, inputs.audio.frame_start)
        detail = f"{summary.keys} channel keys" if plan.mode == face_plan.CHANNELS else ""
        return _finish_message(summary, detail), result.warnings + prepared.warnings

    def close(self) -> None:
        """Remove the run's files and release (or, after a failure, stop) the backend."""
        scratch.remove_run_folder(self.folder)
        self.release_backend(self.inputs.keep_warm)
