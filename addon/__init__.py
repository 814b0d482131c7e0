"""Wav2Sem Lip Sync: speech-driven shape-key animation for a head mesh (docs/addon.md)."""
from __future__ import annotations

bl_info = {
    "name": "Wav2Sem Lip Sync",
    "author": "Wav2Sem Lip Sync contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D View > Sidebar > Lip Sync",
    "description": "Animate a 3D face from speech with a local Wav2Sem backend",
    "doc_url": "",
    "category": "Animation",
}

# Registration order: settings before the operators and panels that use them.
from . import (check_operator, face_match, face_panel, face_props, fit_face_operator, install_operator,  # noqa: E402
               operators, panels, preferences, properties)

_MODULES = (preferences, properties, face_props, operators, fit_face_operator, face_match, check_operator,
            install_operator, panels, face_panel)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
