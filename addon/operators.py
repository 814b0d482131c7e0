"""Operators: generate, cancel and clear lip sync (Check and Install Backend have their own files).

Thin by design: gather inputs from Blender, hand them to client/mapping/apply, turn their
errors into one sentence for the user. In the UI, generate and install are modal (a timer
drains the backend's queue on the main thread; Esc cancels); in background mode
(`blender -b`) and from scripts (EXEC) they run synchronously.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from bpy.props import EnumProperty, FloatProperty, StringProperty

from . import apply, client, mapping, preferences, properties, protocol, versions
from .ui import Status, UserError, redraw_sidebars, user_message

log = logging.getLogger(__name__)
TIMER_INTERVAL_S = 0.1


# --- inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioChoice:
    path: str
    frame_start: int
    strip_name: str = ""
    packed_sound: str = ""      # name of a packed Sound: its bytes go to a temporary file


def find_audio(scene: bpy.types.Scene, audio_path: str) -> AudioChoice:
    """The audio to use: `audio_path` if given, else the active or a selected sound strip."""
    strips = versions.sound_strips(scene)
    if audio_path:
        path = os.path.abspath(bpy.path.abspath(audio_path))
        if not os.path.isfile(path):
            raise UserError(f"Audio file not found: {path}; choose an existing file.")
        for strip in strips:  # a file that is also a strip starts where the strip starts
            if os.path.abspath(versions.sound_strip_path(strip)) == path:
                return AudioChoice(path, round(strip.frame_start), strip.name)
        return AudioChoice(path, scene.frame_current)
    active = versions.active_strip(scene)
    chosen = active if active is not None and active in strips else None
    if chosen is None:
        selected = [s for s in strips if s.select]
        chosen = selected[0] if selected else (strips[0] if len(strips) == 1 else None)
    if chosen is None:
        raise UserError("No audio: select a sound strip in the Video Sequencer or choose an audio file.")
    path = versions.sound_strip_path(chosen)
    if chosen.sound.packed_file is not None:
        return AudioChoice(path, round(chosen.frame_start), chosen.name, chosen.sound.name)
    if not os.path.isfile(path):
        raise UserError(f"The sound strip '{chosen.name}' plays {path}, which does not exist; relink the sound.")
    return AudioChoice(path, round(chosen.frame_start), chosen.name)


def find_mesh(context: bpy.types.Context, name: str) -> bpy.types.Object:
    obj = bpy.data.objects.get(name) if name else context.active_object
    if obj is None:
        raise UserError(f"There is no object named '{name}'." if name else "Select a mesh object (the head) first.")
    if obj.type != "MESH":
        raise UserError(f"'{obj.name}' is a {obj.type.lower()}, not a mesh; select the head mesh.")
    if obj.library is not None or obj.data.library is not None:
        raise UserError(f"'{obj.name}' is linked from a library; make it local to animate it.")
    return obj


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
    python: client.PythonChoice


def gather(context: bpy.types.Context, op: Any) -> Inputs:
    obj = find_mesh(context, op.object)
    if obj.mode == "EDIT":
        raise UserError(f"'{obj.name}' is in Edit Mode; switch to Object Mode to add lip sync.")
    assert context.scene is not None
    audio = find_audio(context.scene, op.audio_path)
    prefs = preferences.preferences(context)
    render = context.scene.render
    model = bpy.path.abspath(prefs.model) if prefs.model else ""
    return Inputs(obj.name, apply.take_name_for(audio.path), audio, mapping.scene_fps(render.fps, render.fps_base),
                  op.subject, op.intensity, op.output_mode, model, prefs.device, prefs.tolerance, prefs.keep_warm,
                  preferences.backend_python(context))


def unpack_sound(audio: AudioChoice, folder: str) -> str:
    """The audio file the backend reads: the strip's file, or a packed sound written out."""
    if not audio.packed_sound:
        return audio.path
    packed = bpy.data.sounds[audio.packed_sound].packed_file
    path = os.path.join(folder, "sound" + (Path(audio.path).suffix or ".wav"))
    with open(path, "wb") as file:
        file.write(packed.data)
    return path


# --- one generation: shared by the modal and synchronous paths ---------------------------

class LipSyncRun:
    """Backend job for one take, then the write. Main thread only."""

    def __init__(self, inputs: Inputs):
        self.inputs = inputs
        self.cancel_requested = False
        backend, is_new = client.POOL.get(inputs.python.path)
        self.tempdir = tempfile.mkdtemp(prefix="wav2sem_lipsync_")
        try:
            audio = unpack_sound(inputs.audio, self.tempdir)
            request = client.GenerateRequest(audio, inputs.model, inputs.subject, inputs.device,
                                             os.path.join(self.tempdir, "offsets.npy"))
            self.job = client.GenerateJob(backend, request, say_hello=is_new)
        except BaseException:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            client.POOL.close()
            raise

    def write(self) -> tuple[apply.TakeSummary, tuple[str, ...]]:
        """After the job succeeded: map, compress and write the take (raises on failure)."""
        job, inputs = self.job, self.inputs
        assert job.model_info is not None and job.result is not None
        obj = bpy.data.objects.get(inputs.object_name)
        if obj is None or obj.type != "MESH":
            raise UserError(f"The mesh '{inputs.object_name}' was removed while lip sync was running.")
        template = np.load(job.model_info.template, allow_pickle=False)
        offsets = np.load(job.result.offsets, allow_pickle=False)
        prepared = mapping.prepare_take(template, apply.rest_positions(obj), offsets, job.result.fps,
                                        inputs.target_fps, inputs.intensity, inputs.output_mode, inputs.tolerance,
                                        mesh_name=f"'{obj.name}'")
        summary = apply.write_take(obj, inputs.take, prepared, inputs.audio.frame_start)
        return summary, job.result.warnings + prepared.warnings

    def close(self) -> None:
        shutil.rmtree(self.tempdir, ignore_errors=True)
        error = self.job.error
        if error is not None and error.code in (protocol.BACKEND_DIED, protocol.PROTOCOL_MISMATCH):
            client.POOL.close()
        else:
            client.POOL.release(self.inputs.keep_warm)


_ACTIVE: list[LipSyncRun] = []   # at most one; a list so operators can see and cancel it


def _finish_message(summary: apply.TakeSummary) -> str:
    return (f"Lip sync '{summary.name}': frames {summary.frame_start}-{summary.frame_end}, "
            f"{summary.keys} shape keys" + (f", {summary.relative_error:.2%} compression error"
                                            if summary.relative_error else ""))


class WAV2SEM_OT_generate_lipsync(bpy.types.Operator):
    """Animate the mesh's mouth from speech (shape keys, one undo step)"""
    bl_idname = "wav2sem.generate_lipsync"
    bl_label = "Generate Lip Sync"
    # UNDO: a finished take is one undo step. No REGISTER: its redo panel would re-run the
    # whole generation synchronously, freezing the window.
    bl_options = {"UNDO"}

    object: StringProperty(name="Object", description="Mesh to animate; empty = the active object")  # type: ignore[valid-type]
    audio_path: StringProperty(name="Audio", subtype="FILE_PATH",  # type: ignore[valid-type]
                               description="Speech file; empty = the active or selected sound strip")
    subject: StringProperty(name="Speaking Style", description="Empty = the model's default")  # type: ignore[valid-type]
    intensity: FloatProperty(name="Intensity", default=1.0, min=0.0, max=5.0)  # type: ignore[valid-type]
    output_mode: EnumProperty(name="Output", items=properties.OUTPUT_MODES, default="COMPACT")  # type: ignore[valid-type]

    _run: LipSyncRun | None = None
    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if bpy.app.background:
            return True  # headless calls pass everything explicitly; errors are reported by execute
        reason = why_cannot_generate(context)
        if reason:
            cls.poll_message_set(reason)
        return not reason

    def execute(self, context: bpy.types.Context) -> Status:
        """Synchronous: background mode and scripts."""
        try:
            run = self._start(context)
        except Exception as exc:
            return self._fail(exc)
        try:
            try:
                run.job.wait()
            except KeyboardInterrupt:   # Ctrl+C in a terminal: cancel like Esc
                run.job.cancel()
                run.job.wait()
            return self._complete(context, run)
        finally:
            self._cleanup(context)

    def invoke(self, context: bpy.types.Context, event: Any) -> Status:
        if bpy.app.background:
            return self.execute(context)
        try:
            self._start(context)
        except Exception as exc:
            return self._fail(exc)
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
        self._show_progress(context, run.job.fraction, run.job.message)
        if not run.job.finished:
            return {"RUNNING_MODAL"}
        try:
            return self._complete(context, run)
        finally:
            self._cleanup(context)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator itself (a file is loaded, the window closes)."""
        if self._run is not None:
            self._run.job.cancel()
        self._cleanup(context)

    # steps
    def _start(self, context: bpy.types.Context) -> LipSyncRun:
        if _ACTIVE:
            raise UserError("A lip sync is already running; wait for it or cancel it.")
        run = LipSyncRun(gather(context, self))
        self._run = run
        _ACTIVE.append(run)
        settings = properties.settings(context)
        settings.running, settings.progress, settings.status = True, 0.0, "Starting the backend"
        return run

    def _complete(self, context: bpy.types.Context, run: LipSyncRun) -> Status:
        error = run.job.error
        if error is not None:
            if error.code == protocol.CANCELLED:
                self.report({"WARNING"}, "Lip sync cancelled; the mesh is unchanged.")
                return {"CANCELLED"}
            return self._fail(error)
        try:
            summary, warnings = run.write()
        except Exception as exc:
            return self._fail(exc)
        properties.remember_subjects(context, run.job.model_info)
        for warning in warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, _finish_message(summary))
        return {"FINISHED"}

    def _fail(self, exc: BaseException) -> Status:
        if not isinstance(exc, (client.BackendError, UserError, mapping.MappingError)):
            log.exception("lip sync failed")
        elif bpy.app.background:
            log.error("%s", user_message(exc))   # stderr (Blender prints reports on stdout)
        self.report({"ERROR"}, user_message(exc))
        return {"CANCELLED"}

    def _show_progress(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        settings = properties.settings(context)
        settings.progress, settings.status = fraction, message
        context.window_manager.progress_update(int(fraction * 100))
        if context.workspace is not None:
            context.workspace.status_text_set(f"Lip sync: {message} ({fraction:.0%}) - Esc to cancel")
        redraw_sidebars(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        if self._run is not None:   # first: the job and the backend, whatever else fails
            self._run.close()
            if self._run in _ACTIVE:
                _ACTIVE.remove(self._run)
            self._run = None
        try:
            if self._timer is not None:
                context.window_manager.event_timer_remove(self._timer)
                context.window_manager.progress_end()
                if context.workspace is not None:
                    context.workspace.status_text_set(None)
            if context.scene is not None:
                settings = properties.settings(context)
                settings.running, settings.progress, settings.status = False, 0.0, ""
            redraw_sidebars(context)
        except (ReferenceError, RuntimeError, AttributeError):   # window or file already gone
            log.debug("UI cleanup skipped", exc_info=True)
        self._timer = None


def why_cannot_generate(context: bpy.types.Context) -> str:
    """The reason the Generate button is disabled, or '' (panel state; main thread)."""
    if _ACTIVE:
        return "A lip sync is running."
    settings = properties.settings(context)
    assert context.scene is not None
    try:
        find_mesh(context, "")
        find_audio(context.scene, bpy.path.abspath(settings.audio_file) if settings.audio_source == "FILE" else "")
        preferences.backend_python(context)
    except (UserError, client.BackendError) as exc:
        return user_message(exc)
    return ""


class WAV2SEM_OT_cancel_lipsync(bpy.types.Operator):
    """Stop the running lip sync; the mesh stays as it was"""
    bl_idname = "wav2sem.cancel_lipsync"
    bl_label = "Cancel Lip Sync"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(_ACTIVE)

    def execute(self, context: bpy.types.Context) -> Status:
        for run in _ACTIVE:
            run.cancel_requested = True
        return {"FINISHED"}


class WAV2SEM_OT_clear_lipsync(bpy.types.Operator):
    """Remove lip-sync takes (their shape keys and actions) from the mesh"""
    bl_idname = "wav2sem.clear_lipsync"
    bl_label = "Clear Lip Sync"
    bl_options = {"REGISTER", "UNDO"}

    object: StringProperty(name="Object", description="Empty = the active object")  # type: ignore[valid-type]
    take: StringProperty(name="Take", description="Empty = every lip-sync take on the mesh")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> Status:
        try:
            obj = find_mesh(context, self.object)
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        takes = [self.take] if self.take else apply.list_takes(obj)
        removed = [take for take in takes if apply.clear_take(obj, take)]
        if not removed:
            self.report({"WARNING"}, f"'{obj.name}' has no lip sync" + (f" named {self.take}." if self.take else "."))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Removed {', '.join(removed)} from '{obj.name}'.")
        return {"FINISHED"}


classes = (WAV2SEM_OT_generate_lipsync, WAV2SEM_OT_cancel_lipsync, WAV2SEM_OT_clear_lipsync)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for run in list(_ACTIVE):
        run.job.cancel()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    client.POOL.close()
