"""Install Backend: the operator that runs installer.Installer (modal in the UI, blocking
in background mode) and shows its progress in the preferences."""
from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import bpy

from ..core import client, installer, torch_build
from ..ui import preferences
from .run import Status, redraw_sidebars

ADDON_DIR = Path(__file__).resolve().parent


class WAV2SEM_OT_install_backend(bpy.types.Operator):
    """Create a Python environment for the backend and install it with its dependencies"""
    bl_idname = "wav2sem.install_backend"
    bl_label = "Install Backend"

    _installer: installer.Installer | None = None
    _timer: Any = None

    def _plan(self, context: bpy.types.Context) -> installer.InstallPlan:
        prefs = preferences.preferences(context)
        base = bpy.path.abspath(prefs.install_python) if prefs.install_python else sys.executable
        pip_args = tuple(shlex.split(prefs.pip_args))
        torch = torch_build.choose_torch(platform.system(), torch_build.find_nvidia_gpus(), pip_args)
        return installer.InstallPlan(base, str(preferences.managed_venv_dir()),
                                     str(ADDON_DIR / installer.BACKEND_SOURCE_DIR), pip_args, torch=torch)

    def _begin(self, context: bpy.types.Context) -> bool:
        client.POOL.close()   # the managed environment may be in use
        self._installer = installer.Installer(self._plan(context))
        try:
            self._installer.start()
        except installer.InstallError as exc:
            self._report_status(context, str(exc), error=True)
            return False
        self._report_status(context, f"Installing the backend...\n{self._torch_line()}", fraction=0.0)
        return True

    def execute(self, context: bpy.types.Context) -> Status:
        if not self._begin(context):
            return {"CANCELLED"}
        assert self._installer is not None
        self._installer.wait()
        return self._end(context)

    def invoke(self, context: bpy.types.Context, event: Any) -> Status:
        if bpy.app.background:
            return self.execute(context)
        if not self._begin(context):
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: Any) -> Status:
        inst = self._installer
        assert inst is not None
        if event.type == "ESC" and event.value == "PRESS":
            inst.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        lines = inst.poll()
        if lines:
            self._report_status(context, f"{self._torch_line()}\n{inst.step}\n{lines[-1][:120]}", inst.fraction)
        if not inst.finished:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._end(context)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator (file load, window close): stop pip too."""
        if self._installer is not None:
            self._installer.cancel()
        if self._timer is not None:
            try:
                context.window_manager.event_timer_remove(self._timer)
            except (ReferenceError, RuntimeError):
                pass
            self._timer = None

    def _end(self, context: bpy.types.Context) -> Status:
        inst = self._installer
        assert inst is not None
        if inst.error:
            self._report_status(context, inst.error, error=True)
            return {"CANCELLED"}
        self._report_status(context, f"Backend installed in {inst.plan.venv_dir} ({self._torch_line()}); "
                                     "click Check to test it.")
        return {"FINISHED"}

    def _torch_line(self) -> str:
        torch = self._installer.plan.torch if self._installer is not None else None
        return torch.description if torch is not None else ""

    def _report_status(self, context: bpy.types.Context, text: str, fraction: float = -1.0,
                       error: bool = False) -> None:
        """fraction: the install's progress bar (0..1), -1 hides it."""
        prefs = preferences.preferences(context)
        prefs.status = text
        prefs.install_fraction = fraction
        if error or bpy.app.background:
            self.report({"ERROR"} if error else {"INFO"}, text.replace("\n", ": "))
        redraw_sidebars(context)


classes = (WAV2SEM_OT_install_backend,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
