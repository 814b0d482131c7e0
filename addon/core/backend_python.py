"""Which Python runs the backend (`python -m wav2sem serve`), without bpy."""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import BackendError

NOT_INSTALLED = "NOT_INSTALLED"
PYTHON_ENV_VAR = "WAV2SEM_PYTHON"


@dataclass(frozen=True)
class PythonChoice:
    path: str
    source: str        # "environment" | "preference" | "managed" | "blender"


def managed_python(venv_dir: str | Path) -> Path:
    """The interpreter inside the virtual environment that Install Backend makes."""
    venv_dir = Path(venv_dir)
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def resolve_backend_python(environ: Mapping[str, str], preference: str, managed_venv: str | Path | None,
                           current_python: str, current_can_import: bool) -> PythonChoice:
    """Pick the backend interpreter: env var, else preference, else managed venv, else our own.

    Pure function of its inputs (any thread). Raises BackendError(NOT_INSTALLED).
    """
    env_value = environ.get(PYTHON_ENV_VAR, "").strip()
    if env_value:
        if not Path(env_value).is_file():
            raise BackendError(NOT_INSTALLED, f"{PYTHON_ENV_VAR} points to {env_value}, which is not a file; "
                                              "fix or unset the environment variable.")
        return PythonChoice(env_value, "environment")
    preference = preference.strip()
    if preference:
        if not Path(preference).is_file():
            raise BackendError(NOT_INSTALLED, f"The Backend Python {preference} does not exist; choose another "
                                              "interpreter in the add-on preferences or clear it.")
        return PythonChoice(preference, "preference")
    if managed_venv:
        candidate = managed_python(managed_venv)
        if candidate.is_file():
            return PythonChoice(str(candidate), "managed")
    if current_can_import and current_python:
        return PythonChoice(current_python, "blender")
    raise BackendError(NOT_INSTALLED, "The lip-sync backend is not installed: open Edit > Preferences > Add-ons > "
                                      "Wav2Sem Lip Sync and click Install Backend.")


def current_python_can_import_backend() -> bool:
    """Whether the Python we run on (e.g. bpy as a module in our venv) has wav2sem."""
    name = Path(sys.executable).name.lower()
    if not name.startswith("python"):
        return False  # sys.executable is Blender itself: it cannot run `-m wav2sem`
    return importlib.util.find_spec("wav2sem") is not None
