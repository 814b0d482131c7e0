"""Add-on preferences (which Python runs the backend, with which launch settings, which
model) and where the managed backend environment lives. Main thread only."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..core import client, install_progress, mapping
from ..scene import versions

PACKAGE = versions.addon_package(__package__ or "")   # this module is in <add-on>.ui
DEVICES = (("auto", "Auto", "The GPU when there is one, else the CPU"),
           ("cpu", "CPU", "Always the CPU"),
           ("cuda", "CUDA", "An NVIDIA GPU"))


class WAV2SEM_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    backend_python: StringProperty(  # type: ignore[valid-type]
        name="Backend Python", subtype="FILE_PATH",
        description="An interpreter that can import wav2sem; empty = the environment made by Install Backend")
    model: StringProperty(  # type: ignore[valid-type]
        name="Model", subtype="DIR_PATH", description="A model bundle directory; empty = the backend's default model")
    device: EnumProperty(name="Device", items=DEVICES, default="auto")  # type: ignore[valid-type]
    keep_warm: BoolProperty(  # type: ignore[valid-type]
        name="Keep Backend Running", default=True,
        description="Keep the backend and its model loaded between generations (faster, uses memory)")
    backend_threads: IntProperty(  # type: ignore[valid-type]
        name="Backend Threads", default=0, min=0, max=256,
        description="CPU threads the backend's model runs on; 0 = Auto (each Generate uses the cores that "
                    "other programs leave idle at that moment, at least one)")
    start_with_blender: BoolProperty(  # type: ignore[valid-type]
        name="Start Backend With the Add-on", default=False,
        description="Start the backend and load the model as soon as the add-on is enabled (Blender start-up), "
                    "so the first Generate answers at once; it then uses memory all the while Blender runs. "
                    "Off: it starts when the Lip Sync panel is first shown for a mesh")
    tolerance: FloatProperty(  # type: ignore[valid-type]
        name="Compact Tolerance", default=mapping.DEFAULT_TOLERANCE, min=0.0005, max=0.2, precision=4,
        description="Largest relative error allowed when compressing the motion into basis keys")
    install_python: StringProperty(  # type: ignore[valid-type]
        name="Install With", subtype="FILE_PATH",
        description="The Python that creates the backend environment; empty = the Python Blender runs on")
    pip_args: StringProperty(  # type: ignore[valid-type]
        name="Extra pip Arguments",
        description="e.g. --index-url for a mirror (torch then comes from it too; without one, the CPU build of "
                    "torch is chosen when there is no NVIDIA GPU)")
    status: StringProperty(default="", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    install_fraction: FloatProperty(default=-1.0, options={"SKIP_SAVE"})  # type: ignore[valid-type]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        box = layout.box()
        box.label(text="Backend", icon="CONSOLE")
        row = box.row(align=True)
        row.operator("wav2sem.install_backend", icon="IMPORT")
        row.operator("wav2sem.check_backend", icon="CHECKMARK")
        if self.install_fraction >= 0.0:
            draw_progress(box, self.install_fraction)
        if self.status:
            for line in self.status.split("\n")[-4:]:
                if line:
                    box.label(text=line)
        box.prop(self, "backend_python")
        box.prop(self, "install_python")
        box.prop(self, "pip_args")
        box.label(text=f"Managed environment: {managed_venv_dir()}")
        layout.prop(self, "model")
        row = layout.row()
        row.prop(self, "device")
        row.prop(self, "keep_warm")
        row = layout.row()
        if self.backend_threads == 0:
            row.prop(self, "backend_threads", text="Backend Threads: Auto")
        else:
            row.prop(self, "backend_threads")
        row.prop(self, "start_with_blender")
        layout.prop(self, "tolerance")


def draw_progress(layout: bpy.types.UILayout, fraction: float) -> None:
    """Install Backend's bar: layout.progress on Blender 4.0+, a text bar before."""
    if hasattr(layout, "progress"):
        layout.progress(factor=fraction, type="BAR", text=f"{fraction * 100:.0f}%")
    else:
        layout.label(text=install_progress.text_bar(fraction))


classes = (WAV2SEM_AP_preferences,)


def preferences(context: bpy.types.Context | None = None) -> WAV2SEM_AP_preferences:
    context = context or bpy.context
    return context.preferences.addons[PACKAGE].preferences  # type: ignore[return-value]


def managed_venv_dir() -> Path:
    """Where Install Backend puts its virtual environment (in Blender's user data)."""
    return Path(versions.user_data_dir(PACKAGE, "venv"))


_CAN_IMPORT: bool | None = None


def backend_args(prefs: WAV2SEM_AP_preferences) -> tuple[str, ...]:
    """The arguments after `wav2sem serve` (none for Auto, the backend's default)."""
    return ("--threads", str(prefs.backend_threads)) if prefs.backend_threads > 0 else ()


def backend_launch(context: bpy.types.Context | None = None) -> client.Launch:
    """The backend interpreter (see client.resolve_backend_python) and its launch arguments
    (backend_args), so every path that starts a backend (Generate, Fit Face, Check, the
    prewarm) asks the pool for the same one. Reads only: safe from a panel's draw. Raises
    BackendError."""
    global _CAN_IMPORT
    if _CAN_IMPORT is None:
        _CAN_IMPORT = client.current_python_can_import_backend()
    prefs = preferences(context)
    python = client.resolve_backend_python(os.environ, bpy.path.abspath(prefs.backend_python), managed_venv_dir(),
                                           sys.executable, _CAN_IMPORT)
    return client.Launch(python, backend_args(prefs))


register, unregister = bpy.utils.register_classes_factory(classes)
