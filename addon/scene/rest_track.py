"""The rest track under takes that drive the user's own shape keys. Main thread only.

Blender's NLA gives a channel that some strip animates the property's default value
wherever no strip covers it: 0 for a shape key's value in 3.x, but 1 in 4.x and 5.x, which
would open every driven key fully between takes. So, below the takes, one NLA track (not a
take: its action carries REST_PROPERTY, not a take name) holds each driven key at the value
the user gave it, everywhere; the takes above it extrapolate nothing, so takes at other
frames on the same keys all play. It is made before the first such take (new tracks go on
top, so it stays the lowest), gains a curve per newly driven key, loses the curves of keys no
take drives any more (their values are put back), and goes with the last such take.
"""
from __future__ import annotations

import re
from typing import Any

import bpy
import numpy as np

from . import versions

REST_PROPERTY = "wav2sem_rest"          # on the rest track's Action
DRIVES_KEYS_PROPERTY = "wav2sem_drives_keys"   # on a take's Action that animates the user's keys
TRACK_NAME = "LipSync rest values"
_PATH = re.compile(r'key_blocks\["(.+)"\]\.value')


def _path(name: str) -> str:
    return f'key_blocks["{name}"].value'


def find(key: Any) -> tuple[Any, Any] | None:
    """(track, strip) of the rest track, or None."""
    if key is None or key.animation_data is None:
        return None
    for track in key.animation_data.nla_tracks:
        for strip in track.strips:
            if strip.action is not None and strip.action.get(REST_PROPERTY):
                return track, strip
    return None


def _curves(action: bpy.types.Action) -> dict[str, Any]:
    """key name -> F-curve."""
    found = {}
    for curve in versions.action_fcurves(action):
        match = _PATH.fullmatch(curve.data_path)
        if match:
            found[match.group(1)] = curve
    return found


def rest_values(obj: bpy.types.Object, names: list[str]) -> dict[str, float]:
    """The values the user gave these keys: as the rest track holds them (animation
    overwrites a driven key's value as frames change), else their values now."""
    key = obj.data.shape_keys
    rest = find(key)
    held = {}
    if rest is not None:
        held = {name: float(curve.keyframe_points[0].co[1]) for name, curve in _curves(rest[1].action).items()
                if len(curve.keyframe_points)}
    return {name: held.get(name, float(key.key_blocks[name].value)) for name in names}


def _add_curve(fcurves: Any, name: str, value: float) -> Any:
    curve = fcurves.new(_path(name))
    curve.keyframe_points.add(1)
    curve.keyframe_points.foreach_set("co", np.array([0.0, value], dtype=np.float32))
    curve.update()
    return curve


def ensure(obj: bpy.types.Object, values: dict[str, float], created: dict[str, Any]) -> None:
    """The rest track holding at least these keys at these values. What it makes goes into
    `created` ("rest_track", "rest_action", "rest_curves", "animation_data") for undo()."""
    key = obj.data.shape_keys
    assert key is not None
    rest = find(key)
    if rest is None:
        action, slot, fcurves = versions.new_shape_key_action("LipSync rest", key)
        created["rest_action"] = action
        action[REST_PROPERTY] = True
        for name, value in values.items():
            _add_curve(fcurves, name, value)
        track, strip, made = versions.new_nla_track(key, TRACK_NAME, 0, action, slot)
        created["rest_track"] = track
        if made:
            created["animation_data"] = True
        strip.extrapolation = "HOLD"
        return
    track, strip = rest
    have = _curves(strip.action)
    fcurves = versions.strip_fcurves(strip)
    for name, value in values.items():
        if name not in have:
            created.setdefault("rest_curves", []).append(_add_curve(fcurves, name, value))


def undo(obj: bpy.types.Object, created: dict[str, Any]) -> None:
    """Remove what ensure() made (exception path)."""
    key = obj.data.shape_keys
    rest = find(key)
    if rest is not None:
        fcurves = versions.strip_fcurves(rest[1])
        for curve in created.get("rest_curves", []):
            fcurves.remove(curve)
    if created.get("rest_track") is not None and key is not None and key.animation_data is not None:
        key.animation_data.nla_tracks.remove(created["rest_track"])
    if created.get("rest_action") is not None:
        bpy.data.actions.remove(created["rest_action"])


def driven_keys(key: Any) -> set[str]:
    """Keys animated by takes that drive the user's keys (pending ones included)."""
    names: set[str] = set()
    if key is None or key.animation_data is None:
        return names
    for track in key.animation_data.nla_tracks:
        for strip in track.strips:
            action = strip.action
            if action is not None and action.get(DRIVES_KEYS_PROPERTY):
                names |= set(_curves(action))
    return names


def sync(obj: bpy.types.Object) -> None:
    """After takes were removed: keys no take drives any more get their values back and
    leave the rest track; the track goes when it holds nothing."""
    key = obj.data.shape_keys
    rest = find(key)
    if rest is None:
        return
    track, strip = rest
    action = strip.action
    still = driven_keys(key)
    fcurves = versions.strip_fcurves(strip)
    for name, curve in _curves(action).items():
        if name in still:
            continue
        block = key.key_blocks.get(name)
        if block is not None and len(curve.keyframe_points):
            block.value = float(curve.keyframe_points[0].co[1])
        fcurves.remove(curve)
    if not _curves(action):
        key.animation_data.nla_tracks.remove(track)
        if action.users == 0:
            bpy.data.actions.remove(action)
