"""The mesh an operator works on: named, or the active object. Main thread."""
from __future__ import annotations

import bpy

from ..core.errors import UserError


def find_mesh(context: bpy.types.Context, name: str) -> bpy.types.Object:
    obj = bpy.data.objects.get(name) if name else context.active_object
    if obj is None:
        raise UserError(f"There is no object named '{name}'." if name else "Select a mesh object (the head) first.")
    if obj.type != "MESH":
        kind = obj.type.lower().replace("_", " ")
        article = "an" if kind[:1] in "aeiou" else "a"
        raise UserError(f"'{obj.name}' is {article} {kind}, not a mesh; select the head mesh.")
    if obj.library is not None or getattr(obj.data, "library", None) is not None:
        raise UserError(f"'{obj.name}' is linked from a library; make it local to animate it.")
    return obj
