"""Install Backend: the operator that runs installer.Installer on the shared modal runner
(ops/run.py: modal in the UI, Esc stops pip; blocking in background mode) and shows its
progress in the preferences."""
from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path

import bpy

from ..core import client, installer, runs, torch_build
from ..core.errors import UserError
from ..ui import preferences
from .run import ModalRun, Outcome, Status

ADDON_DIR = Path(__file__).resolve().parents[1]      # the add-on folder (this file is in ops/)


FEATURE = runs.INSTALL


def plan_install(context: bpy.types.Context) -> installer.InstallPlan:
    prefs = preferences.preferences(context)
    base = bpy.path.abspath(prefs.install_python) if prefs.install_python else sys.executable
    pip_args = tuple(shlex.split(prefs.pip_args))
    torch = torch_build.choose_torch(platform.system(), torch_build.find_nvidia_gpus(), pip_args)
    return installer.InstallPlan(base, str(preferences.managed_venv_dir()),
                                 str(ADDON_DIR / installer.BACKEND_SOURCE_DIR), pip_args, torch=torch)


class InstallRun:
    """One install (installer.Installer on its worker thread), polled by the runner."""
    cancel_requested = False

    def __init__(self, plan: installer.InstallPlan):
        client.POOL.close()   # the managed environment may be in use
        self.installer = installer.Installer(plan)
        self._last_line = ""
        try:
            self.installer.start()
        except installer.InstallError as exc:
            raise UserError(str(exc)) from exc

    @property
    def torch_line(self) -> str:
        torch = self.installer.plan.torch
        return torch.description if torch is not None else ""

    @property
    def finished(self) -> bool:
        return bool(self.installer.finished)

    @property
    def fraction(self) -> float:
        return float(self.installer.fraction)

    @property
    def message(self) -> str:
        return f"{self.torch_line}\n{self.installer.step}\n{self._last_line[:120]}".strip()

    def poll(self) -> None:
        lines = self.installer.poll()
        if lines:
            self._last_line = lines[-1]

    def wait(self) -> None:
        self.installer.wait()

    def cancel(self) -> None:
        self.installer.cancel()

    def finish(self, context: bpy.types.Context) -> Outcome:
        inst = self.installer
        if inst.error:
            return Outcome({"CANCELLED"}, (("ERROR", inst.error),))
        return Outcome({"FINISHED"}, (("INFO", f"Backend installed in {inst.plan.venv_dir} ({self.torch_line}); "
                                               "click Check to test it."),))

    def close(self) -> None:
        """Nothing to release: the installer's worker ends with pip."""


class WAV2SEM_OT_install_backend(ModalRun, bpy.types.Operator):
    """Create a Python environment for the backend and install it with its dependencies"""
    bl_idname = "wav2sem.install_backend"
    bl_label = "Install Backend"

    feature = FEATURE
    exclusive = False            # one install at a time

    def _start(self, context: bpy.types.Context) -> InstallRun:
        run = InstallRun(plan_install(context))
        self._show_status(context, f"Installing the backend...\n{run.torch_line}", 0.0)
        return run

    def _progress_shown(self, context: bpy.types.Context, fraction: float, message: str) -> None:
        self._show_status(context, message, fraction)

    def _end(self, outcome: Outcome) -> Status:
        """The preferences show the last report (the progress bar hidden)."""
        if outcome.reports:
            self._show_status(bpy.context, outcome.reports[-1][1], -1.0)
        outcome = Outcome(outcome.status, tuple((level, text.replace("\n", ": ")) for level, text in outcome.reports))
        return super()._end(outcome)

    @staticmethod
    def _show_status(context: bpy.types.Context, text: str, fraction: float) -> None:
        """fraction: the install's progress bar (0..1), -1 hides it."""
        prefs = preferences.preferences(context)
        prefs.status = text
        prefs.install_fraction = fraction


classes = (WAV2SEM_OT_install_backend,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
