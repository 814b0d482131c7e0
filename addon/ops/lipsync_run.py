"""One generation, shared by the modal and synchronous operator paths: the inputs gathered
from Blender, the backend job, and the write of the take. Main thread only."""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from ..scene import takes, audio_source, face_take
from ..scene.selection import find_mesh
from ..core import client, face_plan, key_solve, mapping, protocol, scratch
from ..ui import face_props, preferences, properties
from ..scene.audio_source import AudioChoice
from .run import JobRun, Level, Outcome, cancelled, failure
from ..core.errors import UserError

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
FEATURE = "Lip sync"


def _finish_message(summary: takes.TakeSummary, detail: str = "") -> str:
    what = detail or f"{summary.keys} shape keys"
    return (f"Lip sync '{summary.name}': frames {summary.frame_start}-{summary.frame_end}, "
            f"{what}" + (f", {summary.relative_error:.2%} compression error" if summary.relative_error else ""))


def _key_take_detail(prepared: face_plan.KeyTake, channels: int) -> str:
    names = ", ".join(prepared.keys[:4]) + (", ..." if len(prepared.keys) > 4 else "")
    how = "copied from the model's channels" if prepared.kind == "full" else f"solved from {channels} channels"
    return f"{len(prepared.keys)} face keys ({names}) {how}"


class LipSyncRun(JobRun):
    """Backend job for one take, then the write."""

    def __init__(self, inputs: Inputs):
        self.inputs = inputs
        self.cancel_requested = False
        backend, is_new = client.POOL.get(inputs.launch.python.path, inputs.launch.args)
        self.folder = scratch.make_run_folder()
        try:
            audio = audio_source.file_for_backend(inputs.audio, self.folder)
            request = client.GenerateRequest(audio, inputs.model, inputs.subject, inputs.device,
                                             os.path.join(self.folder, "offsets.npy"))
            self.plan: face_plan.Plan | None = None
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

    def _plan(self, obj: bpy.types.Object, info: protocol.ModelInfo) -> face_plan.Plan:
        mesh = obj.data
        assert isinstance(mesh, bpy.types.Mesh)
        return face_plan.plan_take(info, f"'{obj.name}'", len(mesh.vertices), takes.user_key_names(obj),
                                   face_props.stored_rows(obj), face_props.strengths(obj))

    def _check_model(self, info: protocol.ModelInfo) -> str | client.GenerateRequest | None:
        """Before any inference: can the mesh take this model's output, and what to ask for.
        A blendshape model is asked for its weights only (no offsets), a factored vertex model
        for its coefficients only (the take is made from its factors)."""
        try:
            self.plan = self._plan(self._mesh(), info)
        except UserError as exc:
            return str(exc)
        if self.plan.problem:
            return self.plan.problem
        if self.plan.mode == face_plan.OFFSETS:
            if not info.factored:
                return None
            return dataclasses.replace(self.job.request, offsets=False, factors=True,
                                       coefficients_output=os.path.join(self.folder, "coefficients.npy"))
        return dataclasses.replace(self.job.request, offsets=False,
                                   weights_output=os.path.join(self.folder, "weights.npy"))

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
        """Write the take; returns the finish message and the warnings."""
        job, inputs = self.job, self.inputs
        info, result = job.model_info, job.result
        assert info is not None and result is not None
        obj = self._mesh()
        plan = self._plan(obj, info)          # the mesh as it is now (keys may have changed meanwhile)
        if plan.problem:
            raise mapping.MappingError(plan.problem)
        mesh_name = f"'{obj.name}'"
        if plan.mode == face_plan.OFFSETS:
            prepared = self._prepare_offsets(obj, info, result, mesh_name)
            summary = takes.write_take(obj, inputs.take, prepared, inputs.audio.frame_start)
            return _finish_message(summary), result.warnings + prepared.warnings
        if result.weights is None:
            raise mapping.MappingError(f"The model '{info.name}' returned no weights for {mesh_name}; reinstall the "
                                       "backend or choose another model.")
        weights = np.load(result.weights, allow_pickle=False)
        channels = result.channels or info.channels
        assert info.blendshapes is not None          # else the plan refused the mesh
        blendshapes = np.load(info.blendshapes, allow_pickle=False)
        strengths = face_props.strengths(obj)
        if plan.mode == face_plan.KEYS:
            lips = np.load(info.regions["lips"], allow_pickle=False) if "lips" in info.regions else None
            key_take = face_plan.prepare_key_take(weights, channels, result.fps, inputs.target_fps, plan.bindings,
                                                  blendshapes, strengths, inputs.intensity, lips, mesh_name,
                                                  info.landmarks)
            summary = face_take.write_key_take(obj, inputs.take, key_take, inputs.audio.frame_start)
            if plan.auto_matched:             # keep the match with the object (same undo step)
                face_props.store_bindings(obj, plan.bindings, channels)
            return _finish_message(summary, _key_take_detail(key_take, len(channels))), result.warnings
        template = np.load(info.template, allow_pickle=False)
        gains = np.asarray(key_solve.apply_strengths(np.ones((1, len(channels)), np.float32), channels, strengths),
                           dtype=np.float32)[0] * np.float32(inputs.intensity)
        prepared = mapping.prepare_channel_take(template, takes.rest_positions(obj), blendshapes, weights, channels,
                                                result.fps, inputs.target_fps, gains, mesh_name)
        summary = takes.write_take(obj, inputs.take, prepared, inputs.audio.frame_start)
        return _finish_message(summary, f"{summary.keys} channel keys"), result.warnings + prepared.warnings

    def _prepare_offsets(self, obj: bpy.types.Object, info: protocol.ModelInfo, result: protocol.GenerateResult,
                         mesh_name: str) -> mapping.PreparedTake:
        """A vertex model's take: from its factors when it sent them (exact, no dense array),
        else from the dense offsets (an older backend, or a model without factors)."""
        inputs = self.inputs
        template = np.load(info.template, allow_pickle=False)
        rest = takes.rest_positions(obj)
        if result.coefficients is not None and info.output_basis:
            coefficients = np.load(result.coefficients, allow_pickle=False)
            basis = np.load(info.output_basis, allow_pickle=False)
            return mapping.prepare_factor_take(template, rest, coefficients, basis, result.fps, inputs.target_fps,
                                               inputs.intensity, inputs.output_mode, inputs.tolerance, mesh_name)
        if result.offsets is None:
            raise mapping.MappingError(f"{mesh_name} changed while the lip sync ran; generate again.")
        offsets = np.load(result.offsets, allow_pickle=False)
        return mapping.prepare_take(template, rest, offsets, result.fps, inputs.target_fps, inputs.intensity,
                                    inputs.output_mode, inputs.tolerance, mesh_name=mesh_name)

    def close(self) -> None:
        """Remove the run's files and release (or, after a failure, stop) the backend."""
        scratch.remove_run_folder(self.folder)
        try:
            error = self.job.error
            if error is not None and error.code in (protocol.BACKEND_DIED, protocol.BACKEND_TIMEOUT, protocol.PROTOCOL_MISMATCH):
                client.POOL.close()
            else:
                client.POOL.release(self.inputs.keep_warm)
        except Exception:
            log.exception("releasing the backend failed; stopping it")
            client.POOL.close()
