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
from .ops import check, face_match, fit_face, generate, install  # noqa: E402
from .ui import face_panel, face_props, panels, preferences, properties  # noqa: E402

_MODULES = (preferences, properties, face_props, generate, fit_face, face_match, check, install, panels, face_panel)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
