"""3D View > Sidebar > Lip Sync > Face Keys: per-group strengths, which shape key each
channel drives (kept with the object, editable), and Fit Face with its options."""
from __future__ import annotations

from typing import Any

import bpy

from ..core import face_keys, face_plan, runs
from ..scene import fit_landmarks, takes
from . import face_props, properties
from .availability import why_cannot_fit


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
        bindings, matched_now = face_plan.bindings_for(takes.user_key_names(obj), rows)
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
        draw_fit_face(layout.box(), context, obj, options=True)


def draw_fit_face(layout: Any, context: bpy.types.Context, obj: bpy.types.Object, options: bool) -> None:
    """Fit Face for `obj`: its progress while it runs, else (with `options`, the head's Include
    Eyes and Mouth Interior) the Fit Face button and, once there are landmark empties, the
    refit from them."""
    run = runs.active(runs.FIT_FACE)
    if run is not None:
        layout.label(text=f"Fitting '{run.inputs.head}': {run.job.message} ({run.job.fraction:.0%})", icon="SORTTIME")
        layout.operator("wav2sem.cancel_fit_face", icon="CANCEL")
        return
    settings = face_props.face(obj)
    if options:
        layout.prop(settings, "fit_include_eyes")
        layout.prop(settings, "fit_interior", text="Interior", icon="OBJECT_DATA")
    row = layout.row(align=True)
    for existing, label, icon in ((False, "Fit Face", "SHAPEKEY_DATA"), (True, "Refit from Landmarks", "EMPTY_DATA")):
        if existing and not fit_landmarks.find(obj):
            continue
        op = row.operator("wav2sem.fit_face", text=label, icon=icon)
        op.object, op.use_existing_landmarks = obj.name, existing
        op.include_eyes, op.interior_objects = settings.fit_include_eyes, settings.fit_interior
    reason = why_cannot_fit(context)
    if reason:
        layout.label(text=reason, icon="INFO")


classes = (WAV2SEM_UL_face_rows, WAV2SEM_PT_face_keys)
register, unregister = bpy.utils.register_classes_factory(classes)
