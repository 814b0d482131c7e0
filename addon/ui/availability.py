"""Why a button is off: the sentence a disabled Generate or Fit Face shows (panels, operator
poll). Reads only: safe from a panel's draw. Main thread."""
from __future__ import annotations

import bpy

from ..core import runs
from ..core.errors import BackendError, UserError
from ..scene import audio_source
from ..scene.selection import find_mesh
from . import preferences, properties


def why_cannot_generate(context: bpy.types.Context) -> str:
    """The reason the Generate button is disabled, or ''."""
    if runs.active() is not None:
        return runs.busy_reason()
    settings = properties.settings(context)
    assert context.scene is not None
    try:
        find_mesh(context, "")
        audio_source.find_audio(context.scene, bpy.path.abspath(settings.audio_file) if settings.audio_source == "FILE" else "")
        preferences.backend_launch(context)
    except BackendError as exc:
        return exc.user_message()
    except UserError as exc:
        return str(exc)
    return ""


def why_cannot_fit(context: bpy.types.Context) -> str:
    """The reason the Fit Face button is disabled, or ''."""
    if runs.active() is not None:
        return runs.busy_reason()
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        return "Select the head mesh first."
    return ""
