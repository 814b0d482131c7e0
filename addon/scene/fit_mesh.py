"""Fit Face's mesh side: the head (and the mouth interior's objects) as the backend's mesh
file, and the fitted keys written back as ordinary shape keys. Main thread only.

Mesh file (docs/DESIGN.md "Fit Face"): `vertices` (V, 3) float64, world space, the rest
positions (the reference key's when there are shape keys); `loop_totals` (F,) and
`loop_vertices` (L,) int32, every polygon in Blender's order, indices into `vertices` (an
extra object's are offset by where its vertices start); `object_ids` (V,) int32, 0 = the
head, 1.. = the extra objects in order.

Keys: one per fitted name on each object, relative to its reference key (a Basis is added
when it has none), its shape = rest + the world-space delta taken into the object's local
space with the inverse of matrix_world's 3x3 part (as it was when the mesh was gathered).
The Key datablock's FITTED_PROPERTY lists the keys a fit made: fitting again rewrites their
data in place (takes' curves keep pointing at them; value, range and mute stay), and a key
of the same name, or one standing for the same ARKit shape in another spelling, that no fit
made refuses the fit. An extra object's keys are driven by the head's key of the same name.
Every write registers how to take it back (`Undo`), so a failure leaves everything as it was.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import bpy
import numpy as np

from ..core import face_keys
from ..core.errors import UserError
from . import takes

log = logging.getLogger(__name__)

FITTED_PROPERTY = "wav2sem_fitted"       # on the Key datablock: the names of the keys fits made
INTERIOR_WORDS = ("teeth", "tooth", "tongue", "gum", "mouth")   # auto-picked mouth-interior objects
STILL_M = 1e-7                           # an extra object no key moves more than this gets no keys
Undo = list[Callable[[], None]]          # how to take back each write, run in reverse on failure


@dataclass(frozen=True)
class Part:
    """One object of the fit: its vertices are rows start .. start + count of the mesh file."""
    name: str
    start: int
    count: int
    to_local: np.ndarray                 # (3, 3) inverse of matrix_world's 3x3 part when gathered


@dataclass(frozen=True)
class GatheredMesh:
    parts: tuple[Part, ...]              # the head first
    vertices: np.ndarray                 # (V, 3) float64, world space
    loop_totals: np.ndarray              # (F,) int32
    loop_vertices: np.ndarray            # (L,) int32
    object_ids: np.ndarray               # (V,) int32

    @property
    def vertex_count(self) -> int:
        return int(len(self.vertices))

    def save(self, path: str) -> None:
        np.savez(path, vertices=self.vertices, loop_totals=self.loop_totals, loop_vertices=self.loop_vertices,
                 object_ids=self.object_ids)


def rollback(undo: Undo) -> None:
    """Take back the writes registered so far, newest first (never raises)."""
    for step in reversed(undo):
        try:
            step()
        except Exception:   # keep taking back the rest; the original error is what the user sees
            log.exception("could not take back part of a fit")
    undo.clear()


# --- which objects ---------------------------------------------------------------------

def _writable(obj: bpy.types.Object) -> bool:
    return obj.library is None and getattr(obj.data, "library", None) is None


def interior_objects(head: bpy.types.Object, names: str) -> list[bpy.types.Object]:
    """The mouth interior's separate objects: the comma-separated `names`, or when empty the
    mesh objects parented (at any depth) to the head whose names contain teeth, tooth,
    tongue, gum or mouth."""
    if not names.strip():
        return [child for child in head.children_recursive
                if child.type == "MESH" and _writable(child) and child.data is not head.data
                and any(word in child.name.lower() for word in INTERIOR_WORDS)]
    chosen: list[bpy.types.Object] = []
    for name in (n.strip() for n in names.split(",")):
        obj = bpy.data.objects.get(name) if name else None
        if not name or (obj is not None and obj in chosen):
            continue
        if obj is None:
            raise UserError(f"There is no object named '{name}' (Mouth Interior); give the teeth, gums and tongue "
                            "objects' names separated by commas, or leave it empty to pick them by name.")
        if obj == head or obj.type != "MESH" or obj.data is head.data:
            raise UserError(f"'{name}' cannot be part of the mouth interior of '{head.name}': give separate mesh "
                            "objects (teeth, gums, tongue), not the head itself.")
        if not _writable(obj):
            raise UserError(f"'{name}' is linked from a library; make it local to give it shape keys.")
        chosen.append(obj)
    return chosen


def check_ready(objects: Sequence[bpy.types.Object]) -> None:
    """Refuse what cannot be fitted: Edit Mode, a head without faces."""
    for obj in objects:
        if obj.mode == "EDIT":
            raise UserError(f"'{obj.name}' is in Edit Mode; switch to Object Mode to fit the face.")
    head = objects[0]
    if len(head.data.polygons) == 0:
        raise UserError(f"'{head.name}' has no faces, only vertices; Fit Face needs the head's surface.")


# --- keys a fit may replace, keys it must not touch -----------------------------------------

def fitted_names(obj: bpy.types.Object) -> list[str]:
    """The keys earlier fits made on this object (its Key's FITTED_PROPERTY)."""
    key = obj.data.shape_keys
    listed = key.get(FITTED_PROPERTY) if key is not None else None
    if listed is None or isinstance(listed, str):
        return []
    return [str(name) for name in listed]


def conflicts(obj: bpy.types.Object, names: Iterable[str]) -> list[tuple[str, str]]:
    """(key, name) for each of the object's keys that no fit made but that is one of `names`
    or stands for one in another ARKit spelling (both would be driven, doubling the motion)."""
    key = obj.data.shape_keys
    if key is None:
        return []
    wanted = list(names)
    skip = set(fitted_names(obj)) | takes.take_owned_keys(obj)
    found = []
    for block in key.key_blocks:
        if block.name in skip:
            continue
        if block.name in wanted:
            found.append((block.name, block.name))
            continue
        source = face_keys.canonical_source(block.name) if block != key.reference_key else None
        match = next((name for name in wanted if source and face_keys.covers(source, name)), None)
        if match is not None:
            found.append((block.name, match))
    return found


def check_conflicts(objects: Sequence[bpy.types.Object], names: Iterable[str] = face_keys.ALL_CHANNELS) -> None:
    """Refuse the fit when a key it would make exists and no fit made it (before any work,
    with every ARKit name; again before the write, with the fitted names)."""
    names = list(names)
    for obj in objects:
        found = conflicts(obj, names)
        if not found:
            continue
        shown = ", ".join(f"'{k}'" if k == n else f"'{k}' (for {n})" for k, n in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        extra = "" if obj == objects[0] else f", or leave '{obj.name}' out of the Mouth Interior"
        raise UserError(f"'{obj.name}' already has the shape key{'s' if len(found) > 1 else ''} {shown}{more}, "
                        f"which Fit Face did not make; rename or delete {'them' if len(found) > 1 else 'it'} and fit "
                        f"again{extra} (Generate Lip Sync drives a head's own ARKit keys without Fit Face).")


# --- the mesh file ---------------------------------------------------------------------

def _rest_local(obj: bpy.types.Object) -> np.ndarray:
    """(n, 3) float64 rest coordinates in object space (reference key, else the mesh)."""
    return takes.rest_positions(obj).astype(np.float64)


def _matrix3(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.array(obj.matrix_world, dtype=np.float64)        # (4, 4)
    return matrix[:3, :3], matrix[:3, 3]


def _polygons(mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    """(loop_totals (F,), loop_vertices (L,)) int32, each polygon's corners in order."""
    count = len(mesh.polygons)
    totals = np.empty(count, dtype=np.int32)
    starts = np.empty(count, dtype=np.int32)
    mesh.polygons.foreach_get("loop_total", totals)
    mesh.polygons.foreach_get("loop_start", starts)
    corners = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", corners)
    offsets = np.concatenate([[0], np.cumsum(totals)[:-1]]).astype(np.int64)
    order = np.repeat(starts.astype(np.int64) - offsets, totals) + np.arange(int(totals.sum()))
    return totals, corners[order]


def gather(objects: Sequence[bpy.types.Object]) -> GatheredMesh:
    """The head (first) and the extra objects as one world-space mesh, with what the write
    needs to take the deltas back into each object's space."""
    parts, vertices, totals, loops, ids = [], [], [], [], []
    start = 0
    for index, obj in enumerate(objects):
        rotation, translation = _matrix3(obj)
        if abs(np.linalg.det(rotation)) < 1e-12:
            raise UserError(f"'{obj.name}' has a zero scale; apply or fix its scale to fit the face.")
        rest = _rest_local(obj)
        vertices.append(rest @ rotation.T + translation)
        object_totals, object_loops = _polygons(obj.data)
        totals.append(object_totals)
        loops.append(object_loops + np.int32(start))
        ids.append(np.full(len(rest), index, dtype=np.int32))
        parts.append(Part(obj.name, start, len(rest), np.linalg.inv(rotation)))
        start += len(rest)
    return GatheredMesh(tuple(parts), np.concatenate(vertices), np.concatenate(totals).astype(np.int32),
                        np.concatenate(loops).astype(np.int32), np.concatenate(ids))


# --- the keys file ---------------------------------------------------------------------

def load_keys(path: str, names: Sequence[str], vertex_count: int) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, deltas (K, V, 3) float32) from the backend's keys file, checked against its
    result and the mesh that was sent."""
    try:
        with np.load(path, allow_pickle=False) as data:
            file_names = tuple(str(n) for n in data["names"].tolist())
            deltas = np.asarray(data["deltas"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"The backend's fitted keys could not be read ({exc}); fit again, or click Install "
                        "Backend if it keeps failing.") from exc
    if file_names != tuple(names) or deltas.shape != (len(names), vertex_count, 3):
        raise UserError(f"The backend's fitted keys ({deltas.shape}) do not match the {vertex_count} vertices sent; "
                        "fit again, or click Install Backend if it keeps failing.")
    if not np.isfinite(deltas).all():
        raise UserError("The backend's fitted keys are not finite numbers; fit again with the landmarks moved.")
    bad = [n for n in names if len(n.encode("utf-8")) > takes.NAME_BYTES or list(names).count(n) > 1]
    if bad:
        raise UserError(f"The backend sent an unusable key name {bad[0]!r}; click Install Backend to update it.")
    return file_names, deltas


# --- writing ---------------------------------------------------------------------------

def _co(block: Any) -> np.ndarray:
    coords = np.empty(len(block.data) * 3, dtype=np.float32)
    block.data.foreach_get("co", coords)
    return coords


def _set_fitted(key: bpy.types.Key, names: Sequence[str], undo: Undo) -> None:
    previous = key.get(FITTED_PROPERTY)
    previous = list(previous) if previous is not None and not isinstance(previous, str) else previous

    def restore() -> None:
        if previous is None:
            del key[FITTED_PROPERTY]  # type: ignore[attr-defined]
        else:
            key[FITTED_PROPERTY] = previous  # type: ignore[index]
    key[FITTED_PROPERTY] = list(names)  # type: ignore[index]
    undo.append(restore)


def _ensure_basis(obj: bpy.types.Object, undo: Undo) -> bpy.types.Key:
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
        undo.append(obj.shape_key_clear)
    key = obj.data.shape_keys
    assert key is not None
    return key


def _write_block(obj: bpy.types.Object, key: bpy.types.Key, name: str, shape: np.ndarray, undo: Undo) -> Any:
    """Create the key `name` or rewrite it in place (an earlier fit made it)."""
    block = key.key_blocks.get(name)
    if block is None:
        block = obj.shape_key_add(name=name, from_mix=False)
        undo.append(lambda: obj.shape_key_remove(block))
        if block.name != name:
            raise UserError(f"'{obj.name}' cannot take a shape key named {name!r}; rename its keys and fit again.")
        block.value = 0.0
    else:
        old, relative = _co(block), block.relative_key

        def restore() -> None:
            block.data.foreach_set("co", old)
            block.relative_key = relative
        undo.append(restore)
    block.relative_key = key.reference_key
    block.data.foreach_set("co", np.ascontiguousarray(shape, dtype=np.float32).ravel())
    return block


def key_path(name: str) -> str:
    return f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'


def _drive(block: Any, head_key: bpy.types.Key, head_block: Any, undo: Undo) -> None:
    """The extra object's key follows the head's key of the same name (a copy of its value)."""
    owner = block.id_data
    path = key_path(block.name)
    animation = owner.animation_data
    curve = next((c for c in animation.drivers if c.data_path == path), None) if animation is not None else None
    if curve is None:
        curve = block.driver_add("value")
        undo.append(lambda: owner.driver_remove(path))
    driver = curve.driver
    driver.type = "AVERAGE"
    while len(driver.variables) > 1:
        driver.variables.remove(driver.variables[-1])
    variable = driver.variables[0] if len(driver.variables) else driver.variables.new()
    variable.name, variable.type = "head", "SINGLE_PROP"
    target = variable.targets[0]
    target.id_type = "KEY"
    target.id = head_key
    target.data_path = key_path(head_block.name)
    block.slider_min, block.slider_max = head_block.slider_min, head_block.slider_max


@dataclass(frozen=True)
class Written:
    objects: tuple[str, ...]             # the objects that got keys, the head first
    replaced: int                        # keys rewritten in place on the head
    stale: dict[str, list[str]]          # object -> keys an earlier fit made that this one did not


def write_keys(objects: Sequence[bpy.types.Object], gathered: GatheredMesh, names: Sequence[str],
               deltas: np.ndarray, undo: Undo) -> Written:
    """Write the fitted keys on every object (see the module doc); registers each write in
    `undo`. Stale keys of earlier fits are only listed: remove_stale takes them away once
    everything else is written."""
    head = objects[0]
    written, stale = [], {}
    replaced = 0
    head_key = None
    for obj, part in zip(objects, gathered.parts):
        if obj.name != part.name or obj.type != "MESH" or len(obj.data.vertices) != part.count:
            raise UserError(f"'{part.name}' changed while Fit Face ran; fit again.")
        local = deltas[:, part.start:part.start + part.count] @ part.to_local.T.astype(np.float32)   # (K, n, 3)
        before = fitted_names(obj)
        if obj != head and not before and float(np.abs(local).max(initial=0.0)) <= STILL_M:
            continue                     # the fit does not move it (upper teeth): no keys
        key = _ensure_basis(obj, undo)
        rest = takes.rest_positions(obj)
        replaced += sum(1 for name in names if name in before) if obj == head else 0
        for index, name in enumerate(names):
            block = _write_block(obj, key, name, rest + local[index], undo)
            if obj == head:
                continue
            assert head_key is not None
            _drive(block, head_key, head_key.key_blocks[name], undo)
        _set_fitted(key, names, undo)
        if obj == head:
            head_key = key
        written.append(obj.name)
        stale[obj.name] = [name for name in before if name not in names]
    return Written(tuple(written), replaced, {name: keys for name, keys in stale.items() if keys})


def remove_stale(written: Written) -> list[str]:
    """Remove the keys earlier fits made that this fit did not (and their drivers); the
    last step of a fit, after which nothing can fail. Returns the removed names."""
    removed: list[str] = []
    for object_name, names in written.stale.items():
        obj = bpy.data.objects.get(object_name)
        key = obj.data.shape_keys if obj is not None else None
        if key is None:
            continue
        for name in names:
            block = key.key_blocks.get(name)
            if block is None:
                continue
            if key.animation_data is not None and any(c.data_path == key_path(name) for c in key.animation_data.drivers):
                key.driver_remove(key_path(name))
            obj.shape_key_remove(block)
            removed.append(name)
    return sorted(set(removed))
