"""Write a prepared take as shape-key animation, and remove takes. Main thread only.

One take = one Action on its own NLA track of the mesh's shape-key datablock, plus the
shape keys named `<take>.<index>` (COMPACT, PER_FRAME) or `<take>.<channel>` (a blendshape
model's channels on the template mesh). The Basis and the user's own keys are never changed.
A take that drives the character's own face keys instead (face_take.py) adds no keys: its
action is marked with DRIVES_KEYS_PROPERTY, and clearing it removes only its track and action.
A new take is written under temporary names and only replaces the old take with the same
name once it is complete, so a failure leaves the mesh exactly as it was.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from ..core.mapping import PreparedTake
from . import rest_track, versions

log = logging.getLogger(__name__)

TAKE_PREFIX = "LipSync_"
TAKE_PROPERTY = "wav2sem_take"                 # on the Action: the take's name
CREATED_BASIS_PROPERTY = "wav2sem_created_basis"   # on the Key: we added the Basis
DRIVES_KEYS_PROPERTY = rest_track.DRIVES_KEYS_PROPERTY   # on the Action: it animates the user's keys (kept)
_PENDING = "~new"
_LINEAR = 1                                    # Keyframe.interpolation enum index of 'LINEAR'
# Blender cuts names at 63 UTF-8 bytes. A take's name leaves room for its key names'
# ".<index>" (up to 6 digits: a PER_FRAME take of 9 hours at 30 fps) and the pending marker.
NAME_BYTES = 63
TAKE_NAME_BYTES = NAME_BYTES - len(".000000") - len(_PENDING)
_HASH_CHARS = 6


def take_name_for(label: str) -> str:
    """`LipSync_<label>` within TAKE_NAME_BYTES; a cut name ends in a hash of the whole one,
    so two long labels that differ only at the end still get two takes."""
    name = TAKE_PREFIX + re.sub(r"[^\w\-.]+", "_", label)
    if len(name.encode("utf-8")) <= TAKE_NAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return cut_utf8(name, TAKE_NAME_BYTES - 1 - _HASH_CHARS) + "_" + digest


def cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of `text` of at most `limit` UTF-8 bytes (whole characters only)."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


class TakeError(RuntimeError):
    """A take could not be removed completely; the message says what is left."""


@dataclass(frozen=True)
class TakeSummary:
    name: str
    keys: int
    frame_start: int
    frame_end: int
    relative_error: float


def rest_positions(obj: bpy.types.Object) -> np.ndarray:
    """(V, 3) float32 rest coordinates: the reference (Basis) key if any, else the mesh."""
    mesh = obj.data
    source = mesh.shape_keys.reference_key.data if mesh.shape_keys else mesh.vertices
    coords = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    source.foreach_get("co", coords)
    return coords.reshape(-1, 3)


def _key_name(take: str, index: int, count: int) -> str:
    return f"{take}.{index:0{max(3, len(str(count - 1)))}d}"


def _take_key_pattern(take: str) -> re.Pattern[str]:
    """The take's own keys: `<take>.<index>` and `<take>.<channel>`."""
    return re.compile(re.escape(take) + r"\.(\d+|[A-Za-z][A-Za-z0-9_]*)$")


def drives_user_keys(action: bpy.types.Action) -> bool:
    return bool(action.get(DRIVES_KEYS_PROPERTY))


def take_owned_keys(obj: bpy.types.Object) -> set[str]:
    """Names of the shape keys that belong to lip-sync takes (the add-on made them): keys
    animated by takes that made their own keys, and any key named like one."""
    key = obj.data.shape_keys if obj.type == "MESH" else None
    if key is None:
        return set()
    owned = {b.name for b in key.key_blocks if b.name.startswith(TAKE_PREFIX)}
    if key.animation_data is not None:
        for track in key.animation_data.nla_tracks:
            for strip in track.strips:
                action = strip.action
                if action is not None and TAKE_PROPERTY in action and not drives_user_keys(action):  # type: ignore[operator]
                    owned |= _animated_keys(action)
    return owned


def user_key_names(obj: bpy.types.Object) -> list[str]:
    """The mesh's own shape keys, in order: not the Basis (reference key), not a take's keys."""
    key = obj.data.shape_keys if obj.type == "MESH" else None
    if key is None:
        return []
    owned = take_owned_keys(obj)
    return [b.name for b in key.key_blocks if b != key.reference_key and b.name not in owned]


def list_takes(obj: bpy.types.Object) -> list[str]:
    key = obj.data.shape_keys if obj.type == "MESH" else None
    if key is None or key.animation_data is None:
        return []
    return [track.name for track in key.animation_data.nla_tracks
            if any(s.action is not None and TAKE_PROPERTY in s.action for s in track.strips)]  # type: ignore[operator]


def write_take(obj: bpy.types.Object, take: str, prepared: PreparedTake, frame_start: int) -> TakeSummary:
    """Write `prepared` starting at `frame_start`, replacing a take of the same name.

    Either the whole take is written or, on any exception, nothing changed."""
    mesh = obj.data
    created_basis = mesh.shape_keys is None
    created: dict[str, Any] = {"keys": [], "curves": [], "action": None, "track": None}
    try:
        if created_basis:
            obj.shape_key_add(name="Basis", from_mix=False)
            mesh.shape_keys[CREATED_BASIS_PROPERTY] = True  # type: ignore[index]  # ID property
        rest = rest_positions(obj)
        pending = take + _PENDING
        if prepared.compact is not None:
            _write_compact(obj, pending, prepared, rest, frame_start, created)
            keys, error = len(prepared.compact.basis), prepared.compact.relative_error
        else:
            _write_per_frame(obj, pending, prepared, rest, frame_start, created)
            keys, error = prepared.frames, 0.0
        # Complete: now replace the old take and give the new one its real names.
        clear_take(obj, take, keep_basis=True)
        for index, block in enumerate(created["keys"]):
            block.name = (channel_key_name(take, prepared.key_names[index]) if prepared.key_names
                          else _key_name(take, index, len(created["keys"])))
        for curve, block in zip(created["curves"], created["keys"]):
            curve.data_path = f'key_blocks["{block.name}"].value'
        finish_names(created, take)
    except BaseException:
        discard(obj, created, created_basis)
        raise
    return TakeSummary(take, keys, frame_start, frame_start + prepared.frames - 1, error)


def channel_key_name(take: str, channel: str) -> str:
    """`<take>.<channel>` within Blender's name limit (the take's part is cut if needed)."""
    budget = NAME_BYTES - len(_PENDING) - 1 - len(channel.encode("utf-8"))
    return f"{cut_utf8(take, budget)}.{channel}"


def new_created() -> dict[str, Any]:
    """What a write made so far, for discard(): keys, curves, the action, the track, and
    whether the shape-key datablock's animation data was created for it."""
    return {"keys": [], "curves": [], "action": None, "track": None, "animation_data": False}


def finish_names(created: dict[str, Any], take: str) -> None:
    created["action"].name = take
    created["track"].name = take
    created["track"].strips[0].name = take


def _write_compact(obj: bpy.types.Object, name: str, prepared: PreparedTake, rest: np.ndarray,
                   frame_start: int, created: dict[str, Any]) -> None:
    compact = prepared.compact
    assert compact is not None
    count = len(compact.basis)
    blocks = _add_keys(obj, name, [rest + compact.basis[k] for k in range(count)], created)
    for index, block in enumerate(blocks):
        if prepared.key_names:           # channel weights as predicted: open the slider to their range
            column = compact.weights[:, index]
            block.slider_min = max(-10.0, min(0.0, float(np.floor(column.min(initial=0.0)))))
            block.slider_max = min(10.0, max(1.0, float(np.ceil(column.max(initial=1.0)))))
        else:
            block.slider_min, block.slider_max = -1.0, 1.0   # weights are scaled into [-1, 1]
    frames, values = padded_curves(compact.weights, frame_start)
    animate_keys(obj, name, [b.name for b in blocks], [(frames, values[:, k]) for k in range(count)],
                 frame_start - 1, created)


def padded_curves(values: np.ndarray, frame_start: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) per-frame values from `frame_start` -> scene frames and values with a zero one
    frame before and after, so the take is silent outside its range."""
    frames = np.arange(frame_start - 1, frame_start + len(values) + 1, dtype=np.float32)
    padded = np.zeros((len(frames), values.shape[1]), dtype=np.float32)
    padded[1:-1] = values
    return frames, padded


def _write_per_frame(obj: bpy.types.Object, name: str, prepared: PreparedTake, rest: np.ndarray,
                     frame_start: int, created: dict[str, Any]) -> None:
    offsets = prepared.mesh_offsets
    assert offsets is not None
    blocks = _add_keys(obj, name, [rest + offsets[i] for i in range(len(offsets))], created)
    pulse = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    curves = [(np.array([f - 1, f, f + 1], dtype=np.float32), pulse)
              for f in range(frame_start, frame_start + len(blocks))]
    animate_keys(obj, name, [b.name for b in blocks], curves, frame_start - 1, created)


def _add_keys(obj: bpy.types.Object, name: str, shapes: list[np.ndarray], created: dict[str, Any]) -> list[Any]:
    key = obj.data.shape_keys
    blocks = []
    for index, shape in enumerate(shapes):
        block = obj.shape_key_add(name=_key_name(name, index, len(shapes)), from_mix=False)
        created["keys"].append(block)
        block.relative_key = key.reference_key
        block.value = 0.0
        block.data.foreach_set("co", np.ascontiguousarray(shape, dtype=np.float32).ravel())
        blocks.append(block)
    return blocks


def pending_name(take: str) -> str:
    return take + _PENDING


def animate_keys(obj: bpy.types.Object, name: str, key_names: list[str], curves: list[tuple[np.ndarray, np.ndarray]],
                 strip_start: int, created: dict[str, Any], user_keys: bool = False) -> None:
    """One action `name` (the pending name of a take) with a linear curve per key, on its
    own NLA track. A take of the add-on's own keys holds its end values (zeros) outside its
    strip; one that drives the user's keys (`user_keys`) does not extrapolate (the rest
    track below holds those keys' own values), so takes at other frames on the same keys
    still play."""
    key = obj.data.shape_keys
    assert key is not None
    action, slot, fcurves = versions.new_shape_key_action(name, key)
    created["action"] = action
    action[TAKE_PROPERTY] = name[:-len(_PENDING)]
    if user_keys:
        action[DRIVES_KEYS_PROPERTY] = True
    for key_name, (frames, values) in zip(key_names, curves):
        curve = fcurves.new(f'key_blocks["{key_name}"].value')
        created["curves"].append(curve)
        points = curve.keyframe_points
        points.add(len(frames))
        points.foreach_set("co", np.column_stack([frames, values]).astype(np.float32).ravel())
        try:
            points.foreach_set("interpolation", np.full(len(frames), _LINEAR, dtype=np.int32))
        except (TypeError, AttributeError):  # very old builds: Bezier through the same points
            pass
        curve.update()
    track, strip, made = versions.new_nla_track(key, name, strip_start, action, slot)
    created["track"] = track
    if made:
        created["animation_data"] = True
    # The zero keys at both ends then hold: silent outside the take.
    strip.extrapolation = "NOTHING" if user_keys else "HOLD"



def discard(obj: bpy.types.Object, created: dict[str, Any], created_basis: bool) -> None:
    """Undo a partial write (exception path)."""
    key = obj.data.shape_keys
    try:
        if created["track"] is not None and key is not None and key.animation_data is not None:
            key.animation_data.nla_tracks.remove(created["track"])
        if created["action"] is not None:
            bpy.data.actions.remove(created["action"])
        for block in reversed(created["keys"]):
            obj.shape_key_remove(block)
        rest_track.undo(obj, created)
        if created.get("animation_data") and key is not None and key.animation_data is not None:
            key.animation_data_clear()
        if created_basis and obj.data.shape_keys is not None:
            obj.shape_key_clear()
    except Exception:  # never hide the original error
        log.exception("could not fully remove a partial take")


def _take_tracks(obj: bpy.types.Object, take: str) -> list[tuple[Any, list[bpy.types.Action]]]:
    """The NLA tracks named `take` that hold lip-sync actions, with those actions."""
    key = obj.data.shape_keys
    if key is None or key.animation_data is None:
        return []
    found = []
    for track in key.animation_data.nla_tracks:
        actions = [s.action for s in track.strips
                   if s.action is not None and TAKE_PROPERTY in s.action]  # type: ignore[operator]
        if track.name == take and actions:
            found.append((track, actions))
    return found


def _animated_keys(action: bpy.types.Action) -> set[str]:
    """The shape keys an action's F-curves drive (whatever their names were cut to)."""
    paths = (re.fullmatch(r'key_blocks\["(.+)"\]\.value', curve.data_path) for curve in versions.action_fcurves(action))
    return {match.group(1) for match in paths if match}


def _take_keys(obj: bpy.types.Object, take: str, driven: set[str]) -> list[Any]:
    key = obj.data.shape_keys
    pattern = _take_key_pattern(take)
    return [b for b in key.key_blocks if b != key.reference_key and (b.name in driven or pattern.fullmatch(b.name))]


def clear_take(obj: bpy.types.Object, take: str, keep_basis: bool = False) -> bool:
    """Remove a take's track, action and its own keys (never the user's keys a take drives);
    returns whether there was one. If the add-on
    made the Basis and nothing else is left, the mesh goes back to having no shape keys.
    Raises TakeError if any part of the take is still there afterwards."""
    key = obj.data.shape_keys if obj.type == "MESH" else None
    if key is None:
        return False
    driven: set[str] = set()          # the take's own keys (never the user's keys a take drives)
    tracks = _take_tracks(obj, take)
    for track, actions in tracks:
        for action in actions:
            if not drives_user_keys(action):
                driven |= _animated_keys(action)
        key.animation_data.nla_tracks.remove(track)
        for action in actions:
            if action.users == 0:
                bpy.data.actions.remove(action)
    if tracks:
        rest_track.sync(obj)          # keys no take drives any more: their own values back
    blocks = _take_keys(obj, take, driven)
    for block in blocks:
        obj.shape_key_remove(block)
    left_tracks, left_keys = _take_tracks(obj, take), _take_keys(obj, take, driven)
    if left_tracks or left_keys:
        raise TakeError(f"Could not remove all of {take} from '{obj.name}': {len(left_keys)} shape keys and "
                        f"{len(left_tracks)} NLA tracks are left; remove them in the Shape Keys and NLA editors.")
    if not keep_basis:
        _tidy(obj)
    return bool(tracks or blocks)


def take_span(obj: bpy.types.Object, take: str) -> tuple[int, int] | None:
    """The first and last scene frame a take plays, or None if the mesh has no such take."""
    tracks = _take_tracks(obj, take) if obj.type == "MESH" else []
    if len(tracks) != 1 or len(tracks[0][0].strips) != 1:
        return None
    strip = tracks[0][0].strips[0]          # keyed from one frame before to one frame after the take
    return round(strip.frame_start) + 1, round(strip.frame_end) - 1


def _tidy(obj: bpy.types.Object) -> None:
    key = obj.data.shape_keys
    if key is None:
        return
    animation = key.animation_data
    if animation is not None and animation.action is None and not animation.nla_tracks and not animation.drivers:
        key.animation_data_clear()
    if key.get(CREATED_BASIS_PROPERTY) and len(key.key_blocks) == 1 and key.animation_data is None:
        obj.shape_key_clear()
