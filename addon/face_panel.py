"""3D View > Sidebar > Lip Sync > Face Keys: per-group strengths and which shape key each
channel drives (kept with the object, editable)."""
from __future__ import annotations

from typing import Any

import bpy

from . import apply, face_keys, face_plan, face_props, properties


class WAV2SEM_UL_face_rows(bpy.types.UIList):
    """One row per channel: the channel, the shape key it drives (searchable), or that it is
    solved onto the other keys; greyed when its group's strength is 0 (not animated)."""

    def draw_item(self, context: Any, layout: Any, data: Any, item: Any, icon: Any,  # type: ignore[override]
                  active_data: Any, active_property: Any, index: Any = 0, flt_flag: Any = 0) -> None:
        obj = data.id_data
        keys = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
        row = layout.row(align=True)
        row.active = getattr(data, face_props.row_group(item.source), 1.0) > 0   # greyed: its group is at 0
        split = row.split(factor=0.4)
        split.label(text=item.source)
        if keys is not None:
            split.prop_search(item, "key", keys, "key_blocks", text="")
        else:
            split.prop(item, "key", text="")
        if not item.key:
            row.label(text="solved onto other keys")
        elif keys is None or item.key not in keys.key_blocks:
            row.label(text="no such key", icon="ERROR")


class WAV2SEM_PT_face_keys(bpy.types.Panel):
    bl_idname = "WAV2SEM_PT_face_keys"
    bl_label = "Face Keys"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Lip Sync"
    bl_parent_id = "WAV2SEM_PT_lipsync"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return obj is not None and obj.type == "MESH"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        obj = context.active_object
        assert obj is not None
        settings = face_props.face(obj)
        column = layout.column(align=True)
        for group, label in face_props.STRENGTH_GROUPS:
            column.prop(settings, group, text=label, slider=True)

        rows = face_props.stored_rows(obj)
        bindings, matched_now = face_plan.bindings_for(apply.user_key_names(obj), rows)
        channels = properties.known_channels(context)
        if channels:
            summary = face_keys.describe(channels, bindings)
        elif bindings:
            summary = f"{len(bindings)} face keys"
        else:
            summary = "No ARKit-named or viseme shape keys"
        layout.label(text=summary, icon="SHAPEKEY_DATA")
        if bindings and matched_now:
            layout.label(text="Matched by name; kept with the object at the first Generate", icon="INFO")
        layout.operator("wav2sem.match_face_keys", icon="LINKED").object = obj.name
        if rows:
            layout.template_list("WAV2SEM_UL_face_rows", "", settings, "rows", settings, "active_row", rows=6)


classes = (WAV2SEM_UL_face_rows, WAV2SEM_PT_face_keys)
register, unregister = bpy.utils.register_classes_factory(classes)
