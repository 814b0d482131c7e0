"""Fit Face: ARKit-named shape keys for a head that has none (docs/DESIGN.md "Fit Face").

Thin like the generate operator: fit_run gathers the inputs, runs the backend job and writes
the keys; this drives it and reports its Outcome. In the UI it is modal (a timer drains the
backend's queue on the main thread; Esc or the panel's cancel button stops it); in background
mode (`blender -b`) and from scripts (EXEC) it runs synchronously. A finished fit is one undo
step (the UNDO flag: Blender pushes it when the operator finishes, modal or not).
"""
from __future__ import annotations

import logging

import bpy
from bpy.props import BoolProperty, StringProperty

from ..core import runs
from ..ui.availability import why_cannot_fit
from .fit_run import FEATURE, FitRun, gather
from .run import CancelRun, ModalRun, Run, Status

log = logging.getLogger(__name__)


class WAV2SEM_OT_fit_face(ModalRun, bpy.types.Operator):
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

    feature = FEATURE
    why_disabled = staticmethod(why_cannot_fit)

    # steps
    def _start(self, context: bpy.types.Context) -> FitRun:
        if not self.object and context.active_object is not None:
            self.object = context.active_object.name   # the redo panel re-runs on the same head
        return FitRun(*gather(context, self))

    def _finish(self, context: bpy.types.Context, run: Run) -> Status:
        status = super()._finish(context, run)
        if isinstance(run, FitRun) and run.placed_guess and not bpy.app.background:
            # NO_FACE ends CANCELLED (no undo step of the operator's), but it made the guessed
            # empties: give them a step of their own so Ctrl+Z removes them cleanly.
            try:
                bpy.ops.ed.undo_push(message="Fit Face landmarks")
            except RuntimeError:
                log.debug("no undo step for the landmark empties", exc_info=True)
        return status


class WAV2SEM_OT_cancel_fit_face(CancelRun, bpy.types.Operator):
    """Stop the running Fit Face; the head stays as it was"""
    bl_idname = "wav2sem.cancel_fit_face"
    bl_label = "Cancel Fit Face"
    feature = runs.FIT_FACE


classes = (WAV2SEM_OT_fit_face, WAV2SEM_OT_cancel_fit_face)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    runs.cancel_all()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
