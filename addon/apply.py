"""Write a prepared take as shape-key animation, and remove takes. Main thread only.

One take = one Action on its own NLA track of the mesh's shape-key datablock, plus the
shape keys named `<take>.<index>`. The Basis and the user's own keys are never changed.
A new take is written under temporary names and only replaces the old take with the same
name once it is complete, so a failure leaves the mesh exactly as it was.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import versions
from .mapping import PreparedTake

log = logging.getLogger(__name__)

TAKE_PREFIX = "LipSync_"
TAKE_PROPERTY = "wav2sem_take"                 # on the Action: the take's name
CREATED_BASIS_PROPERTY = "wav2sem_created_basis"   # on the Key: we added the Basis
_PENDING = "~new"
_LINEAR = 1                                    # Keyframe.interpolation enum index of 'LINEAR'
_NAME_BUDGET = 63 - 6                          # Blender names are <= 63 bytes; keep room for ".0000"


def take_name_for(audio_path: str) -> str:
    stem = re.sub(r"[^\w\-]+", "_", Path(audio_path).stem)
    return (TAKE_PREFIX + stem)[:_NAME_BUDGET - len(_PENDING)]


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
    return re.compile(re.escape(take) + r"\.\d+$")


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
            block.name = _key_name(take, index, len(created["keys"]))
        for curve, block in zip(created["curves"], created["keys"]):
            curve.data_path = f'key_blocks["{block.name}"].value'
        created["action"].name = take
        created["track"].name = take
        created["track"].strips[0].name = take
    except BaseException:
        _discard(obj, created, created_basis)
        raise
    return TakeSummary(take, keys, frame_start, frame_start + prepared.frames - 1, error)


def _write_compact(obj: bpy.types.Object, name: str, prepared: PreparedTake, rest: np.ndarray,
                   frame_start: int, created: dict[str, Any]) -> None:
    compact = prepared.compact
    assert compact is not None
    count = len(compact.basis)
    blocks = _add_keys(obj, name, [rest + compact.basis[k] for k in range(count)], created)
    for block in blocks:
        block.slider_min, block.slider_max = -1.0, 1.0   # weights are scaled into [-1, 1]
    # Zero one frame before and after so the take is silent outside its range.
    frames = np.arange(frame_start - 1, frame_start + prepared.frames + 1, dtype=np.float32)
    values = np.zeros((len(frames), count), dtype=np.float32)
    values[1:-1] = compact.weights
    _animate(obj, name, blocks, [(frames, values[:, k]) for k in range(count)], frame_start - 1, created)


def _write_per_frame(obj: bpy.types.Object, name: str, prepared: PreparedTake, rest: np.ndarray,
                     frame_start: int, created: dict[str, Any]) -> None:
    offsets = prepared.mesh_offsets
    assert offsets is not None
    blocks = _add_keys(obj, name, [rest + offsets[i] for i in range(len(offsets))], created)
    pulse = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    curves = [(np.array([f - 1, f, f + 1], dtype=np.float32), pulse)
              for f in range(frame_start, frame_start + len(blocks))]
    _animate(obj, name, blocks, curves, frame_start - 1, created)


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


def _animate(obj: bpy.types.Object, name: str, blocks: list[Any], curves: list[tuple[np.ndarray, np.ndarray]],
             strip_start: int, created: dict[str, Any]) -> None:
    key = obj.data.shape_keys
    assert key is not None
    action, slot, fcurves = versions.new_shape_key_action(name, key)
    created["action"] = action
    action[TAKE_PROPERTY] = name[:-len(_PENDING)]
    for block, (frames, values) in zip(blocks, curves):
        curve = fcurves.new(f'key_blocks["{block.name}"].value')
        created["curves"].append(curve)
        points = curve.keyframe_points
        points.add(len(frames))
        points.foreach_set("co", np.column_stack([frames, values]).astype(np.float32).ravel())
        try:
            points.foreach_set("interpolation", np.full(len(frames), _LINEAR, dtype=np.int32))
        except (TypeError, AttributeError):  # very old builds: Bezier through the same points
            pass
        curve.update()
    animation = key.animation_data or key.animation_data_create()
    track = animation.nla_tracks.new()
    track.name = name
    created["track"] = track
    strip = versions.add_nla_strip(track, name, strip_start, action, slot)
    strip.extrapolation = "HOLD"   # the zero keys at both ends then hold: silent outside the take


def _discard(obj: bpy.types.Object, created: dict[str, Any], created_basis: bool) -> None:
    """Undo a partial write (exception path)."""
    key = obj.data.shape_keys
    try:
        if created["track"] is not None and key is not None and key.animation_data is not None:
            key.animation_data.nla_tracks.remove(created["track"])
        if created["action"] is not None:
            bpy.data.actions.remove(created["action"])
        for block in reversed(created["keys"]):
            obj.shape_key_remove(block)
        if created_basis and obj.data.shape_keys is not None:
            obj.shape_key_clear()
    except Exception:  # never hide the original error
        log.exception("could not fully remove a partial take")


def clear_take(obj: bpy.types.Object, take: str, keep_basis: bool = False) -> bool:
    """Remove a take's track, action and keys; returns whether there was one. If the add-on
    made the Basis and nothing else is left, the mesh goes back to having no shape keys."""
    key = obj.data.shape_keys if obj.type == "MESH" else None
    if key is None:
        return False
    found = False
    animation = key.animation_data
    if animation is not None:
        for track in [t for t in animation.nla_tracks if t.name == take]:
            actions = [s.action for s in track.strips
                       if s.action is not None and TAKE_PROPERTY in s.action]  # type: ignore[operator]
            if not actions:
                continue
            animation.nla_tracks.remove(track)
            for action in actions:
                if action.users == 0:
                    bpy.data.actions.remove(action)
            found = True
    pattern = _take_key_pattern(take)
    for block in [b for b in key.key_blocks if pattern.match(b.name)]:
        obj.shape_key_remove(block)
        found = True
    if not keep_basis:
        _tidy(obj)
    return found


def _tidy(obj: bpy.types.Object) -> None:
    key = obj.data.shape_keys
    if key is None:
        return
    animation = key.animation_data
    if animation is not None and animation.action is None and not animation.nla_tracks and not animation.drivers:
        key.animation_data_clear()
    if key.get(CREATED_BASIS_PROPERTY) and len(key.key_blocks) == 1 and key.animation_data is None:
        obj.shape_key_clear()
