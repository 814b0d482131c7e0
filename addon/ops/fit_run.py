"""One Fit Face, shared by the modal and synchronous operator paths: the inputs gathered from
Blender, the backend job (fit_face), and the write of the keys and the landmark empties.
Main thread only.

Nothing in the scene changes until the backend's result is in; then the keys, the empties
and the face-key rows are written in one go, and any failure takes back every write (so a
cancel or an error leaves the head, its keys and the scene as they were). The one exception
is NO_FACE: the backend's landmark guess becomes empties the user moves before fitting again.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import bpy
import numpy as np

from ..core import client, face_keys, protocol, runs, scratch
from ..core.errors import UserError
from ..scene import fit_landmarks, fit_mesh, takes
from ..scene.selection import find_mesh
from ..ui import face_props, preferences
from .run import JobRun, Level, Outcome, failure

log = logging.getLogger(__name__)

FEATURE = runs.FIT_FACE
_FACE_POINTS = "the nose tip, the lip centres, the mouth corners, the chin and the eye corners"


@dataclass(frozen=True)
class Inputs:
    head: str
    extras: tuple[str, ...]
    landmarks: dict[str, protocol.Point] | None   # use_existing_landmarks: the empties' world positions
    include_eyes: bool
    keep_warm: bool
    launch: client.Launch


def gather(context: bpy.types.Context, op: object) -> tuple[Inputs, fit_mesh.GatheredMesh]:
    """The operator's properties (object, use_existing_landmarks, include_eyes,
    interior_objects), the preferences and the mesh; refuses before any backend work."""
    head = find_mesh(context, getattr(op, "object"))
    extras = fit_mesh.interior_objects(head, getattr(op, "interior_objects"))
    fit_mesh.check_ready([head, *extras])
    fit_mesh.check_conflicts([head, *extras])
    assert context.view_layer is not None
    context.view_layer.update()                   # matrices as they are now (empties, heads just moved)
    landmarks = fit_landmarks.read(head) if getattr(op, "use_existing_landmarks") else None
    gathered = fit_mesh.gather([head, *extras])
    inputs = Inputs(head.name, tuple(o.name for o in extras), landmarks, bool(getattr(op, "include_eyes")),
                    preferences.preferences(context).keep_warm, preferences.backend_launch(context))
    return inputs, gathered


def _names(names: tuple[str, ...] | list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


class FitRun(JobRun):
    """Backend job for one fit, then the write."""

    def __init__(self, inputs: Inputs, gathered: fit_mesh.GatheredMesh):
        self.inputs, self.gathered = inputs, gathered
        self.cancel_requested = False
        self.placed_guess = False          # NO_FACE: empties were made from the backend's guess
        backend, is_new = client.POOL.get(inputs.launch.python.path, inputs.launch.args)
        self.folder = scratch.make_run_folder()
        try:
            mesh_file = os.path.join(self.folder, "mesh.npz")
            gathered.save(mesh_file)
            request = client.FitRequest(mesh_file, os.path.join(self.folder, "keys.npz"), inputs.landmarks,
                                        inputs.include_eyes)
            self.job = client.FitJob(backend, request, say_hello=is_new)
        except BaseException:       # the warm backend stays for the next run
            scratch.remove_run_folder(self.folder)
            client.POOL.release(inputs.keep_warm)
            raise

    @property
    def head_size(self) -> float:
        head = self.gathered.vertices[self.gathered.object_ids == 0]
        return float(np.linalg.norm(head.max(axis=0) - head.min(axis=0))) if len(head) else 0.0

    def _objects(self) -> list[bpy.types.Object]:
        objects: list[bpy.types.Object] = []
        for name in (self.inputs.head, *self.inputs.extras):
            obj = bpy.data.objects.get(name)
            if obj is None or obj.type != "MESH":
                raise UserError(f"'{name}' was removed or renamed while Fit Face ran; fit again.")
            objects.append(obj)
        return objects

    def finish(self, context: bpy.types.Context) -> Outcome:
        """After the job ended: write the keys unless it failed or a cancel was asked for."""
        error = self.job.error
        if self.cancel_requested or (error is not None and error.code == protocol.CANCELLED):
            return Outcome({"CANCELLED"}, (("WARNING", f"Fit Face cancelled; '{self.inputs.head}' is unchanged."),))
        if error is not None and error.code == protocol.NO_FACE:
            return self._no_face(error)
        if error is not None:
            return failure(error, FEATURE)
        undo: fit_mesh.Undo = []
        try:
            written, names = self._write(context, undo)
        except BaseException as exc:
            fit_mesh.rollback(undo)
            return failure(exc, FEATURE)
        removed = fit_mesh.remove_stale(written)
        return self._finished(written, names, removed)

    def _write(self, context: bpy.types.Context, undo: fit_mesh.Undo) -> tuple[fit_mesh.Written, tuple[str, ...]]:
        result = self.job.result
        assert result is not None
        objects = self._objects()
        names, deltas = fit_mesh.load_keys(result.keys, result.names, self.gathered.vertex_count)
        fit_mesh.check_conflicts(objects, names)   # the keys may have changed while the fit ran
        written = fit_mesh.write_keys(objects, self.gathered, names, deltas, undo)
        head = objects[0]
        assert context.view_layer is not None
        context.view_layer.update()
        fit_landmarks.place(head, result.landmarks, self.head_size, undo)
        _match_rows(head, names, undo)
        return written, names

    def _finished(self, written: fit_mesh.Written, names: tuple[str, ...], removed: list[str]) -> Outcome:
        result = self.job.result
        assert result is not None
        head = f"'{self.inputs.head}'"
        what = f"{len(names)} ARKit shape keys ({_names(names)})"
        if written.replaced:
            what += f", {written.replaced} of them refitted in place"
        followers = [f"'{name}'" for name in written.objects[1:]]
        follow = f"; {', '.join(followers)} follow{'s' if len(followers) == 1 else ''} them" if followers else ""
        gone = f"; removed {_names(removed)}, which this fit does not make" if removed else ""
        reports: list[tuple[Level, str]] = [("WARNING", warning) for warning in result.warnings]
        reports.append(("INFO", f"Fit Face: {head} has {what}{follow}{gone}. Generate Lip Sync now drives them; "
                                "move the W2S_ empties and fit again with Use Existing Landmarks to adjust."))
        return Outcome({"FINISHED"}, tuple(reports))

    def _no_face(self, error: client.BackendError) -> Outcome:
        head = self.inputs.head
        try:
            guess = protocol.parse_landmarks(error.details.get("landmarks") or {})
        except ValueError:
            guess = {}
        if self.inputs.landmarks is not None:      # the user's own empties: leave them where they are
            return Outcome({"CANCELLED"}, (("ERROR", f"No face found on '{head}' at the W2S_ empties: move them onto "
                                                     f"the face ({_FACE_POINTS}) and click Fit Face again with Use "
                                                     "Existing Landmarks."),))
        obj = bpy.data.objects.get(head)
        if not guess or obj is None:
            return Outcome({"CANCELLED"}, (("ERROR", f"No face found on '{head}': {error.message}"),))
        undo: fit_mesh.Undo = []
        try:
            bpy.context.view_layer.update()
            fit_landmarks.place(obj, guess, self.head_size, undo)
        except BaseException as exc:
            fit_mesh.rollback(undo)
            return failure(exc, FEATURE)
        self.placed_guess = True
        return Outcome({"CANCELLED"}, (("ERROR", f"No face found on '{head}': move the W2S_ empties onto the face "
                                                 f"({_FACE_POINTS}) and click Fit Face again with Use Existing "
                                                 "Landmarks."),))

    def close(self) -> None:
        """Remove the run's files and release (or, after a failure, stop) the backend."""
        scratch.remove_run_folder(self.folder)
        self.release_backend(self.inputs.keep_warm)


def _match_rows(head: bpy.types.Object, names: tuple[str, ...], undo: fit_mesh.Undo) -> None:
    """Rows kept with the object (Match Face Keys) that bind none of the fitted keys would
    keep Generate off them: match the keys by name again (same undo step)."""
    rows = face_props.stored_rows(head)
    if not any(key for _, key in rows) or any(key in names for _, key in rows):
        return
    channels = [source for source, _ in rows]
    face = face_props.face(head)
    active = face.active_row

    def restore() -> None:
        face.rows.clear()
        for source, key in rows:
            row = face.rows.add()
            row.source, row.key = source, key
        face.active_row = active
    undo.append(restore)
    face_props.store_bindings(head, face_keys.find_face_keys(takes.user_key_names(head)), channels)
