"""Write a take onto the character's own face keys (face_plan.KEYS). Main thread only.

The take is one Action (marked takes.DRIVES_KEYS_PROPERTY) with one weight curve per driven
key, on its own NLA track named after the take, above the object's rest track (rest_track.py:
it holds the driven keys at the user's own values outside the takes); no shape key is added,
and no key's value, range or other curves change: the Basis and every key the take does not
drive are left as they were (a driven key's value shows its animation; clearing the take puts
back the value it had before). The new take is written under a pending name and replaces an old take of the
same name only once complete; on any error the object is left exactly as it was.
"""
from __future__ import annotations

from typing import Any

import bpy

from ..core.face_plan import KeyTake
from ..core.mapping import MappingError
from . import rest_track, takes


def write_key_take(obj: bpy.types.Object, take: str, prepared: KeyTake, frame_start: int) -> takes.TakeSummary:
    key = obj.data.shape_keys
    missing = [name for name in prepared.keys if key is None or name not in key.key_blocks]
    if missing:
        raise MappingError(f"'{obj.name}' has no shape key {missing[0]!r} any more; click Match Face Keys in the "
                           "Lip Sync panel, or pick the key for that channel there.")
    assert key is not None
    created: dict[str, Any] = takes.new_created()
    try:
        rest_track.ensure(obj, rest_track.rest_values(obj, list(prepared.keys)), created)   # below the take
        frames, values = takes.padded_curves(prepared.values, frame_start)
        takes.animate_keys(obj, takes.pending_name(take), list(prepared.keys),
                           [(frames, values[:, m]) for m in range(values.shape[1])], frame_start - 1, created,
                           user_keys=True)
        takes.clear_take(obj, take, keep_basis=True)
        takes.finish_names(created, take)
    except BaseException:
        takes.discard(obj, created, created_basis=False)
        raise
    return takes.TakeSummary(take, len(prepared.keys), frame_start, frame_start + prepared.frames - 1, 0.0)
