"""Operators: generate, cancel and clear lip sync (Check and Install Backend have their own files).

Thin by design: lipsync_run gathers the inputs, runs the backend job and writes the take;
the operator is a ModalRun (ops/run.py) that drives it and reports its Outcome (one sentence
per problem): modal in the UI (a timer drains the backend's queue on the main thread; Esc
cancels), synchronous in background mode (`blender -b`) and from scripts (EXEC).
"""
from __future__ import annotations

import logging

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from ..core import client, runs
from ..core.errors import UserError
from ..scene import takes
from ..scene.selection import find_mesh
from ..ui import properties
from ..ui.availability import why_cannot_generate
from .lipsync_run import FEATURE, LipSyncRun, gather
from .run import CancelRun, ModalRun, Status

log = logging.getLogger(__name__)


class WAV2SEM_OT_generate_lipsync(ModalRun, bpy.types.Operator):
    """Animate the mesh's mouth from speech (shape keys, one undo step)"""
    bl_idname = "wav2sem.generate_lipsync"
    bl_label = "Generate Lip Sync"
    # UNDO: a finished take is one undo step. No REGISTER: its redo panel would re-run the
    # whole generation synchronously, freezing the window.
    bl_options = {"UNDO"}

    object: StringProperty(name="Object", description="Mesh to animate; empty = the active object")  # type: ignore[valid-type]
    audio_path: StringProperty(name="Audio", subtype="FILE_PATH",  # type: ignore[valid-type]
                               description="Speech file; empty = the active or selected sound strip")
    strip: StringProperty(name="Sound Strip",  # type: ignore[valid-type]
                          description="Name of the sound strip to animate (its take is named after it); "
                                      "overrides Audio")
    subject: StringProperty(name="Speaking Style", description="Empty = the model's default")  # type: ignore[valid-type]
    intensity: FloatProperty(name="Intensity", default=1.0, min=0.0, max=5.0)  # type: ignore[valid-type]
    output_mode: EnumProperty(name="Output", items=properties.OUTPUT_MODES, default="COMPACT")  # type: ignore[valid-type]

    feature = FEATURE
    why_disabled = staticmethod(why_cannot_generate)

    # steps
    def _start(self, context: bpy.types.Context) -> LipSyncRun:
        run = LipSyncRun(gather(context, self))
        settings = properties.settings(context)
        settings.running, settings.progress, settings.status = True, 0.0, "Starting the backend"
        return run

    def _progress_shown(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        settings = properties.settings(context)
        settings.progress, settings.status = fraction, message

    def _ui_reset(self, context: bpy.types.Context) -> None:
        if context.scene is not None:
            settings = properties.settings(context)
            settings.running, settings.progress, settings.status = False, 0.0, ""


class WAV2SEM_OT_cancel_lipsync(CancelRun, bpy.types.Operator):
    """Stop the running lip sync; the mesh stays as it was"""
    bl_idname = "wav2sem.cancel_lipsync"
    bl_label = "Cancel Lip Sync"
    feature = runs.LIP_SYNC


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
            names = [self.take] if self.take else takes.list_takes(obj)
            removed = [take for take in names if takes.clear_take(obj, take)]
        except (UserError, takes.TakeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
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
    runs.cancel_all()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    client.POOL.close()
