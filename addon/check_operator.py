"""The Check button: start the backend and report its versions, devices and model."""
from __future__ import annotations

import bpy

from . import client, preferences, properties, protocol
from .ui import Status, user_message


class WAV2SEM_OT_check_backend(bpy.types.Operator):
    """Start the backend and report its versions, devices and model"""
    bl_idname = "wav2sem.check_backend"
    bl_label = "Check"

    def execute(self, context: bpy.types.Context) -> Status:
        prefs = preferences.preferences(context)
        try:
            choice = preferences.backend_python(context)
            hello = client.POOL.hello_sync(choice.path)
            backend, _ = client.POOL.get(choice.path)
            model = bpy.path.abspath(prefs.model) if prefs.model else ""
            info = protocol.ModelInfo.from_dict(backend.call("model_info", {"model": model} if model else {}))
        except client.BackendError as exc:
            prefs.status = user_message(exc)
            self.report({"ERROR"}, prefs.status)
            return {"CANCELLED"}
        finally:
            client.POOL.release(prefs.keep_warm)
        properties.remember_subjects(context, info)
        prefs.status = (f"{hello.summary()}\nPython: {choice.path} ({choice.source})\n"
                        f"Model: {info.name}, {info.vertex_count} vertices, {info.fps:g} fps, "
                        f"{len(info.subjects)} speaking styles")
        self.report({"INFO"}, prefs.status.replace("\n", "; "))
        return {"FINISHED"}


classes = (WAV2SEM_OT_check_backend,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
