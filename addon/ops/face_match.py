"""Match Face Keys: fill the object's face-key rows (face_props) from its shape-key names."""
from __future__ import annotations

import bpy
from bpy.props import StringProperty

from ..core import face_keys
from ..core.errors import UserError
from ..scene import takes
from ..scene.selection import find_mesh
from ..ui import face_props, properties
from .run import Status


class WAV2SEM_OT_match_face_keys(bpy.types.Operator):
    """Find the mesh's ARKit-named and viseme shape keys and keep which channel each drives"""
    bl_idname = "wav2sem.match_face_keys"
    bl_label = "Match Face Keys"
    bl_options = {"REGISTER", "UNDO"}

    object: StringProperty(name="Object", description="Empty = the active object")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> Status:
        try:
            obj = find_mesh(context, self.object)
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        bindings = face_keys.find_face_keys(takes.user_key_names(obj))
        channels = properties.known_channels(context)
        if not bindings:
            self.report({"WARNING"}, f"'{obj.name}' has no ARKit-named face shape keys (jawOpen, mouthClose, ...) "
                                     "or viseme keys (viseme_aa, ... or A, I, U, E, O); nothing matched.")
            return {"CANCELLED"}
        face_props.store_bindings(obj, bindings, channels)
        detail = face_keys.describe(channels, bindings) if channels else f"{len(bindings)} face keys"
        self.report({"INFO"}, f"'{obj.name}': {detail}.")
        return {"FINISHED"}


classes = (WAV2SEM_OT_match_face_keys,)
register, unregister = bpy.utils.register_classes_factory(classes)
