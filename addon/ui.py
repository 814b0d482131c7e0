"""What every operator shares: the status type, user errors and their one-sentence
messages, and redrawing the panels. bpy only for the redraw."""
from __future__ import annotations

from typing import Literal

import bpy

from . import apply, client, mapping

# What execute/invoke/modal return (Blender's operator status flags).
Status = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]


class UserError(Exception):
    """Something the user must change in Blender (selection, file, settings)."""


def user_message(exc: BaseException) -> str:
    if isinstance(exc, client.BackendError):
        return exc.user_message()
    if isinstance(exc, (UserError, mapping.MappingError, apply.TakeError)):
        return str(exc)
    return f"Lip sync failed unexpectedly: {exc!r} (see the system console)."


def redraw_sidebars(context: bpy.types.Context) -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type in ("VIEW_3D", "PREFERENCES"):
            area.tag_redraw()
