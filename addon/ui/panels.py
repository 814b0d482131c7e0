"""3D View > Sidebar > Lip Sync."""
from __future__ import annotations

import bpy

from ..core import face_keys
from ..core.errors import UserError
from ..scene import audio_source, takes
from . import face_panel, prewarm, properties
from .availability import why_cannot_generate


class WAV2SEM_PT_lipsync(bpy.types.Panel):
    bl_idname = "WAV2SEM_PT_lipsync"
    bl_label = "Lip Sync"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Lip Sync"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = properties.settings(context)
        obj = context.active_object
        if obj is not None and obj.type == "MESH":
            layout.label(text=f"{obj.name} ({len(obj.data.vertices)} vertices)", icon="MESH_DATA")
        else:
            layout.label(text="Select the head mesh", icon="ERROR")

        layout.prop(settings, "audio_source", expand=True)
        if settings.audio_source == "FILE":
            layout.prop(settings, "audio_file", text="")
        else:
            try:
                assert context.scene is not None
                audio = audio_source.find_audio(context.scene)
                layout.label(text=f"{audio.strip_name} at frame {audio.frame_start}", icon="SOUND")
            except UserError:
                layout.label(text="No sound strip selected", icon="SOUND")
        layout.prop_search(settings, "subject", settings, "known_subjects", text="Style", icon="USER")
        layout.prop(settings, "intensity", slider=True)
        if not properties.known_channels(context):       # Compact / Per-Frame: vertex models only
            layout.prop(settings, "output_mode", text="Output")

        if settings.running:
            layout.label(text=settings.status or "Working", icon="SORTTIME")
            row = layout.row(align=True)
            if hasattr(row, "progress"):   # Blender 4.0+
                row.progress(factor=settings.progress, type="BAR")
            else:
                row.prop(settings, "progress", text="", slider=True)
            row.operator("wav2sem.cancel_lipsync", text="", icon="CANCEL")
        else:
            op = layout.operator("wav2sem.generate_lipsync", icon="PLAY_SOUND")
            op.object = obj.name if obj is not None else ""
            op.audio_path = settings.audio_file if settings.audio_source == "FILE" else ""
            op.subject = settings.subject
            op.intensity = settings.intensity
            op.output_mode = settings.output_mode
            reason = why_cannot_generate(context)
            if reason:
                layout.label(text=reason, icon="INFO")

        if obj is not None and obj.type == "MESH" and not face_keys.find_face_keys(takes.user_key_names(obj)):
            box = layout.box()        # a head without face keys: offer Fit Face (options in Face Keys)
            box.label(text="No face keys: Fit Face gives this head ARKit keys", icon="INFO")
            face_panel.draw_fit_face(box, context, obj, options=False)

        if obj is not None and obj.type == "MESH":
            names = takes.list_takes(obj)
            if names:
                box = layout.box()
                for take in names:
                    row = box.row()
                    row.label(text=take, icon="SHAPEKEY_DATA")
                    clear = row.operator("wav2sem.clear_lipsync", text="", icon="X")
                    clear.object, clear.take = obj.name, take
                clear_all = box.operator("wav2sem.clear_lipsync", text="Clear Lip Sync", icon="TRASH")
                clear_all.object = obj.name


classes = (WAV2SEM_PT_lipsync,)


_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()
    prewarm.at_enable()       # starts the backend only if the user opted in (a preference)


def unregister() -> None:
    prewarm.stop()
    _unregister()
