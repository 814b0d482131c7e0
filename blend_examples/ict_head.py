"""The ICT FaceKit head (MIT, backend/wav2sem/assets/heads/ict_facekit/LICENSE) as a Blender
mesh: quads kept, metres, Z up, one material slot per part (and an iris and a pupil on the
eyeballs, which the kit leaves white), and optionally its 53 ARKit
expression shapes as shape keys (in another naming style, a subset, or as viseme keys).

Needs only numpy and bpy, so it runs in any Blender 3.4 ... 5.x, Debian's included (which
has numpy but not the wav2sem package):

    import sys; sys.path.insert(0, "<repo>/blend_examples")
    import bpy, ict_head
    head = ict_head.build_ict_head(bpy)                                   # 53 ARKit keys
    head = ict_head.build_ict_head(bpy, "Renamed", rename=ict_head.apple_style)
    head = ict_head.build_ict_head(bpy, "Partial", only=("jawOpen", "mouthFunnel"))
    head = ict_head.build_ict_head(bpy, "Visemes", keys="visemes", visemes=VISEME_SHAPES)
    head = ict_head.build_ict_head(bpy, "Plain", keys=None)                # no shape keys

or from the command line:
    blender -b --python blend_examples/ict_head.py -- --output head.blend [--keys arkit|none]

The kit is in centimetres, Y up, facing +Z; Blender's front view looks along +Y, so a point
(x, y, z) of the kit becomes (x, -z, y) / 100. A face belongs to the part of its first vertex.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

NPZ = Path(__file__).resolve().parents[1] / "backend" / "wav2sem" / "assets" / "heads" / "ict_facekit" / \
    "ict_facekit_arkit.npz"
UNIT_M = 0.01
# Base colours (linear RGB) by part; unknown parts are skin.
SKIN = (0.80, 0.52, 0.42)
PART_COLOURS = {
    "face": SKIN, "head_and_neck": SKIN, "eye_socket_left": SKIN, "eye_socket_right": SKIN, "eye_blend": SKIN,
    "mouth_socket": (0.35, 0.08, 0.08),
    "gums_and_tongue": (0.75, 0.25, 0.28),
    "teeth": (0.90, 0.87, 0.78),
    "eyeball_left": (0.92, 0.92, 0.92), "eyeball_right": (0.92, 0.92, 0.92),
    "lacrimal_fluid": (0.95, 0.95, 0.95),
    "eye_occlusion": (0.30, 0.20, 0.18),
    "eyelashes": (0.04, 0.03, 0.03),
}
# Thin see-through layers over the eyes in the kit; opaque they would hide the eyes, so their
# faces are left out by default (their vertices stay: the vertex order is the template's).
OVERLAY_PARTS = ("lacrimal_fluid", "eye_occlusion", "eye_blend")
# The kit's eyeballs have no iris: the faces of each eyeball within these angles of its gaze
# (+Z in the kit) get two more materials after the parts' (a 12 mm eyeball, 6 mm iris).
EYEBALLS = ("eyeball_left", "eyeball_right")
IRIS = ("ICT_iris", (0.16, 0.09, 0.05), 32.0)
PUPIL = ("ICT_pupil", (0.01, 0.01, 0.01), 13.0)


def load_arrays(npz: str | Path | None = None) -> dict[str, np.ndarray]:
    with np.load(str(npz or NPZ), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def to_blender(points: np.ndarray) -> np.ndarray:
    """Kit coordinates (cm, Y up) -> Blender (m, Z up), (..., 3) float32."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1) * np.float32(UNIT_M)


def apple_style(channel: str) -> str:
    """ICT spelling -> Apple's (mouthPress_L -> mouthPressLeft)."""
    if channel.endswith("_L"):
        return channel[:-2] + "Left"
    if channel.endswith("_R"):
        return channel[:-2] + "Right"
    return channel


def maya_style(channel: str) -> str:
    """What a Maya FBX export shows: blendShape1.mouthPressLeft."""
    return "blendShape1." + apple_style(channel)


def viseme_deltas(arrays: Mapping[str, np.ndarray], visemes: Mapping[str, Mapping[str, float]]) -> dict[str, np.ndarray]:
    """Each viseme's displacement (V, 3), kit units, as its weighted sum of expression deltas.
    Weights name ICT channels or side-less bases (`mouthPress` = both sides)."""
    names = [str(n) for n in arrays["expression_names"].tolist()]
    index = {n: i for i, n in enumerate(names)}
    deltas = arrays["expression_deltas"]
    out = {}
    for viseme, weights in visemes.items():
        total = np.zeros(deltas.shape[1:], dtype=np.float32)
        for channel, weight in weights.items():
            for name in (channel,) if channel in index else (channel + "_L", channel + "_R"):
                if name in index:
                    total += np.float32(weight) * deltas[index[name]]
        out[viseme] = total
    return out


def _mesh(bpy: Any, name: str, arrays: Mapping[str, np.ndarray], overlays: bool) -> Any:
    verts = to_blender(arrays["neutral"])
    faces = np.asarray(arrays["faces"], dtype=np.int64)
    starts = np.asarray(arrays["part_ranges"], dtype=np.int64)[:, 0]
    parts = np.searchsorted(starts, faces[:, 0], side="right") - 1
    part_names = [str(n) for n in arrays["part_names"].tolist()]
    if not overlays:
        keep = ~np.isin(parts, [i for i, n in enumerate(part_names) if n in OVERLAY_PARTS])
        faces, parts = faces[keep], parts[keep]
    sizes = np.where(faces[:, 3] >= 0, 4, 3)
    loop_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    loops = faces[faces >= 0]              # row-major: each face's corners in order

    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(int(sizes.sum()))
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", loop_starts.astype(np.int32))
    try:                                   # 3.x needs it; 4.0+ derives it from loop_start (read-only)
        mesh.polygons.foreach_set("loop_total", sizes.astype(np.int32))
    except (AttributeError, TypeError, RuntimeError):
        pass
    mesh.polygons.foreach_set("vertices", loops.astype(np.int32))
    mesh.update(calc_edges=True)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
    for part in part_names:
        mesh.materials.append(_material(bpy, f"ICT_{part}", PART_COLOURS.get(part, SKIN)))
    slots = parts.copy()
    for extra, (name, colour, angle) in enumerate((IRIS, PUPIL)):
        mesh.materials.append(_material(bpy, name, colour))
        gaze = _within_gaze(arrays, faces, parts, part_names, angle)
        slots[gaze] = len(part_names) + extra
    mesh.polygons.foreach_set("material_index", slots.astype(np.int32))
    mesh.update()
    return mesh


def _within_gaze(arrays: Mapping[str, np.ndarray], faces: np.ndarray, parts: np.ndarray, part_names: list[str],
                 degrees: float) -> np.ndarray:
    """Faces of the eyeballs whose centre is within `degrees` of the eye's gaze (+Z)."""
    neutral = np.asarray(arrays["neutral"], dtype=np.float64)
    ranges = np.asarray(arrays["part_ranges"])
    chosen = np.zeros(len(faces), dtype=bool)
    for eye in EYEBALLS:
        if eye not in part_names:
            continue
        index = part_names.index(eye)
        start, end = ranges[index]
        centre = neutral[start:end].mean(axis=0)
        mine = np.nonzero(parts == index)[0]
        corners = faces[mine]
        sizes = (corners >= 0).sum(axis=1)
        centroid = np.where(corners[..., None] >= 0, neutral[np.maximum(corners, 0)], 0.0).sum(axis=1) / sizes[:, None]
        direction = centroid - centre
        cosine = direction[:, 2] / np.maximum(np.linalg.norm(direction, axis=1), 1e-12)
        chosen[mine[cosine > np.cos(np.radians(degrees))]] = True
    return chosen


def _material(bpy: Any, name: str, colour: tuple[float, float, float]) -> Any:
    material = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    material.diffuse_color = (*colour, 1.0)          # Workbench and the viewport
    material.roughness = 0.5
    if bpy.app.version < (5, 0, 0):                    # 5.0+: materials always use nodes
        material.use_nodes = True
    tree = getattr(material, "node_tree", None)
    shader = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None) if tree is not None else None
    if shader is not None:
        shader.inputs["Base Color"].default_value = (*colour, 1.0)
        shader.inputs["Roughness"].default_value = 0.35 if "eye" in name or "teeth" in name else 0.55
    return material


def build_ict_head(bpy: Any, name: str = "ICT_Head", keys: str | None = "arkit",
                   rename: Callable[[str], str | None] | None = None, only: Iterable[str] | None = None,
                   visemes: Mapping[str, Mapping[str, float]] | None = None,
                   arrays: Mapping[str, np.ndarray] | None = None, npz: str | Path | None = None,
                   overlays: bool = False, link: bool = True) -> Any:
    """A new object `name` with the ICT head (26,719 vertices, the kit's order).

    keys: "arkit" (the expression shapes), "visemes" (one key per entry of `visemes`, a
    table viseme id -> {channel or side-less base: weight}), "arkit+visemes", or None.
    rename: key name for each ARKit channel (ICT spelling) or viseme id; None skips it.
    only: the ARKit channels to keep (default all 53). arrays: ict_arrays() if you have
    them, else the npz (`npz`, default the kit in this repository) is read with numpy.
    """
    if arrays is None:
        arrays = load_arrays(npz)
    mesh = _mesh(bpy, name, arrays, overlays)
    obj = bpy.data.objects.new(name, mesh)
    if link:
        bpy.context.scene.collection.objects.link(obj)
    if keys is None:
        return obj
    if keys not in ("arkit", "visemes", "arkit+visemes"):
        raise ValueError(f"keys must be 'arkit', 'visemes', 'arkit+visemes' or None, not {keys!r}")
    shapes: list[tuple[str, np.ndarray]] = []
    if "arkit" in keys:
        names = [str(n) for n in arrays["expression_names"].tolist()]
        wanted = set(names if only is None else only)
        unknown = wanted - set(names)
        if unknown:
            raise ValueError(f"the ICT head has no expression {sorted(unknown)[0]!r}")
        shapes += [(n, arrays["expression_deltas"][i]) for i, n in enumerate(names) if n in wanted]
    if "visemes" in keys:
        if not visemes:
            raise ValueError("keys='visemes' needs a viseme table (e.g. the add-on's visemes.VISEME_SHAPES)")
        shapes += list(viseme_deltas(arrays, visemes).items())
    neutral = np.asarray(arrays["neutral"], dtype=np.float32)
    obj.shape_key_add(name="Basis", from_mix=False)
    for source, delta in shapes:
        key_name = rename(source) if rename is not None else source
        if not key_name:
            continue
        block = obj.shape_key_add(name=key_name, from_mix=False)
        block.value = 0.0                                   # at rest
        block.data.foreach_set("co", to_blender(neutral + delta).ravel())
    return obj


def main(argv: list[str]) -> None:
    import argparse

    import bpy
    parser = argparse.ArgumentParser(prog="ict_head.py")
    parser.add_argument("--output", required=True, help="where to save the .blend")
    parser.add_argument("--name", default="ICT_Head")
    parser.add_argument("--keys", choices=("arkit", "none"), default="arkit")
    args = parser.parse_args(argv)
    build_ict_head(bpy, args.name, keys=None if args.keys == "none" else args.keys)
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(args.output).resolve()))


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else [])
