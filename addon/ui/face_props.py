"""The face-key mapping kept with each object: `Object.wav2sem_face`.

Rows map a source (an ARKit channel such as `jawOpen`, or a viseme id) to one of the mesh's
shape keys; a row without a key means the channel is solved onto the other keys. The rows
are filled by Match Face Keys, or by the first Generate when the object has none, and can be
edited in the panel. Per-group strengths scale the model's weights (Audio2Face-like): jaw,
lips and upper face (eyes and brows; 0 by default, so they are left alone). Fit Face's panel
options for the head live here too.
"""
from __future__ import annotations

from typing import Any, Iterable

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ..core import face_keys, face_plan

STRENGTH_GROUPS = (("jaw", "Jaw"), ("lips", "Lips"), ("upper_face", "Upper Face"))


class WAV2SEM_PG_face_row(bpy.types.PropertyGroup):
    source: StringProperty(name="Channel", description="ARKit channel or viseme the key stands for")  # type: ignore[valid-type]
    key: StringProperty(name="Shape Key",  # type: ignore[valid-type]
                        description="The mesh's shape key this channel drives; empty = solved onto the other keys")


def _strength(group: str, label: str) -> Any:
    default = face_plan.DEFAULT_STRENGTHS[group]
    return FloatProperty(name=label, default=default, min=0.0, soft_max=2.0, max=5.0,
                         description=f"Scale of the {label.lower()} motion (1 = as the model predicts, "
                                     "0 = these keys are not animated)")


class WAV2SEM_PG_face(bpy.types.PropertyGroup):
    rows: CollectionProperty(type=WAV2SEM_PG_face_row)  # type: ignore[valid-type]
    active_row: IntProperty(default=0)  # type: ignore[valid-type]
    jaw: _strength("jaw", "Jaw")  # type: ignore[valid-type]
    lips: _strength("lips", "Lips")  # type: ignore[valid-type]
    upper_face: _strength("upper_face", "Upper Face")  # type: ignore[valid-type]
    # Fit Face's options for this head (the panel's; the operator takes them as properties).
    fit_include_eyes: BoolProperty(name="Include Eyes", default=False,  # type: ignore[valid-type]
                                   description="Fit Face also fits the eye and eyelid shapes (blinks, gaze)")
    fit_interior: StringProperty(  # type: ignore[valid-type]
        name="Mouth Interior",
        description="Separate teeth, gums and tongue objects for Fit Face, comma-separated; empty = the head's "
                    "child meshes named teeth, tooth, tongue, gum or mouth")


classes = (WAV2SEM_PG_face_row, WAV2SEM_PG_face)


def face(obj: bpy.types.Object) -> WAV2SEM_PG_face:
    return obj.wav2sem_face  # type: ignore[attr-defined,no-any-return]


def stored_rows(obj: bpy.types.Object) -> list[tuple[str, str]]:
    """(source, key) rows kept with the object, keyless rows included."""
    return [(row.source, row.key) for row in face(obj).rows]


def strengths(obj: bpy.types.Object) -> dict[str, float]:
    settings = face(obj)
    return {group: float(getattr(settings, group)) for group, _ in STRENGTH_GROUPS}


def row_group(source: str) -> str:
    """The strength group a row's source belongs to (visemes move the lips)."""
    return "lips" if face_keys.is_viseme(source) else face_keys.group_of(source)


def _row_order(source: str) -> tuple[int, str]:
    return face_keys.GROUPS.index(row_group(source)), source.lower()


def store_bindings(obj: bpy.types.Object, bindings: Iterable[face_keys.KeyBinding],
                   channels: Iterable[str] = ()) -> None:
    """Replace the rows: one per binding, then one keyless row per other channel; jaw and
    lips first, so the keys speech drives are at the top of the list."""
    rows = face(obj).rows
    rows.clear()
    seen = set()
    for binding in sorted(bindings, key=lambda b: _row_order(b.source)):
        row = rows.add()
        row.source, row.key = binding.source, binding.key
        seen.add(binding.source)
    for channel in sorted(channels, key=_row_order):
        if channel not in seen:
            rows.add().source = channel
            seen.add(channel)
    face(obj).active_row = 0


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.wav2sem_face = PointerProperty(type=WAV2SEM_PG_face)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.Object.wav2sem_face  # type: ignore[attr-defined]
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
