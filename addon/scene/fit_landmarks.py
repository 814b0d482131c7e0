"""Fit Face's landmarks as empties the user can move: `W2S_<landmark>`, parented to the head
(keeping their world position), custom property LANDMARK_PROPERTY = the landmark's name, so
a second head's `W2S_chin.001` still resolves. Main thread only.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import bpy
from mathutils import Matrix, Vector

from ..core.errors import UserError
from ..core.protocol import FIT_LANDMARKS, Point
from .fit_mesh import Undo

PREFIX = "W2S_"
LANDMARK_PROPERTY = "wav2sem_landmark"     # on the empty: the landmark it marks
SIZE_SHARE = 0.015                         # an empty's size: this share of the head's size


def find(head: bpy.types.Object) -> dict[str, bpy.types.Object]:
    """landmark name -> its empty among the head's children."""
    found: dict[str, bpy.types.Object] = {}
    for child in head.children:
        name = child.get(LANDMARK_PROPERTY) if child.type == "EMPTY" else None
        if isinstance(name, str) and name not in found:
            found[name] = child
    return found


def read(head: bpy.types.Object, names: Sequence[str] = FIT_LANDMARKS) -> dict[str, Point]:
    """The empties' world positions (the caller updates the view layer first). Raises
    UserError naming the landmarks that have no empty."""
    empties = find(head)
    missing = [name for name in names if name not in empties]
    if missing:
        shown = ", ".join(PREFIX + name for name in missing)
        raise UserError(f"'{head.name}' has no landmark empt{'ies' if len(missing) > 1 else 'y'} {shown}; turn off "
                        "Use Existing Landmarks and click Fit Face to place them all, then move them.")
    points: dict[str, Point] = {}
    for name in names:
        x, y, z = empties[name].matrix_world.translation[:]
        points[name] = (float(x), float(y), float(z))
    return points


def _world_to_location(empty: bpy.types.Object, head: bpy.types.Object, point: Point) -> Vector:
    """The location that puts the empty's origin at `point` under its parent."""
    parent_space = head.matrix_world @ empty.matrix_parent_inverse
    return parent_space.inverted() @ Vector(point)


def _new_empty(head: bpy.types.Object, name: str, size: float, undo: Undo) -> bpy.types.Object:
    empty = bpy.data.objects.new(PREFIX + name, None)
    undo.append(lambda: bpy.data.objects.remove(empty))
    empty.empty_display_type = "SPHERE"
    empty.empty_display_size = size
    empty.show_in_front = True
    empty[LANDMARK_PROPERTY] = name
    collections = head.users_collection or (bpy.context.scene.collection,)
    collections[0].objects.link(empty)
    empty.parent = head
    empty.matrix_parent_inverse = head.matrix_world.inverted()
    return empty


def place(head: bpy.types.Object, points: Mapping[str, Point], head_size: float, undo: Undo) -> list[str]:
    """Put an empty at each world-space point: move the head's existing ones, make the
    others. Registers each change in `undo`. Returns the names of the new empties."""
    empties = find(head)
    made = []
    for name, point in points.items():
        empty = empties.get(name)
        if empty is None:
            empty = _new_empty(head, name, max(head_size * SIZE_SHARE, 1e-4), undo)
            made.append(empty.name)
        else:
            basis = empty.matrix_basis.copy()

            def restore(empty: bpy.types.Object = empty, basis: Matrix = basis) -> None:
                empty.matrix_basis = basis
            undo.append(restore)
        empty.location = _world_to_location(empty, head, point)
    return made
