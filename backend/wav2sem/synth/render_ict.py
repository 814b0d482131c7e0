"""Renders of the ICT FaceKit head (26,719 vertices, teeth, gums, tongue, eyes) with Blender
as a Python module (`bpy`, Workbench, smooth shading, z-buffer), for contact sheets.

Run as a separate process (figures.py does):
    HOME=<tmp> python -m wav2sem.synth.render_ict OUT_DIR
    HOME=<tmp> python -m wav2sem.synth.render_ict --weights W.npy FRAMES_DIR   (one PNG per row)
writes OUT_DIR/ict_head.png (the head at rest) and OUT_DIR/ict_visemes.png (the mouth at each
viseme class, front and three-quarter close-ups, and profiles of rest, p/b/m, f/v, u, aa, sh).
Colours are per vertex, by part: skin, lips (the vermilion: edge rings around the lips'
contact loops), teeth off-white, gums and tongue pink-red, the mouth socket dark red, eye
whites with irises. The kit's transparent eye overlays (lacrimal fluid, eye blend, eye occlusion) and its eyelash cards
(alpha-textured, they would draw as solid black) are not drawn.
"""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SKIN = (0.86, 0.69, 0.58)
LIP = (0.70, 0.38, 0.38)
TEETH = (0.93, 0.91, 0.84)
GUMS_TONGUE = (0.80, 0.36, 0.38)
MOUTH_SOCKET = (0.36, 0.10, 0.10)
EYE_WHITE = (0.93, 0.93, 0.93)
IRIS = (0.30, 0.20, 0.13)
PUPIL = (0.03, 0.03, 0.03)
LASHES = (0.10, 0.08, 0.07)
EYE_SOCKET = (0.55, 0.35, 0.32)
HIDDEN_PARTS = ("lacrimal_fluid", "eye_blend", "eye_occlusion", "eyelashes")   # alpha-textured in the kit
LIP_RINGS = 7                 # edge steps from the contact loops that count as vermilion
IRIS_RADIUS_M = 0.0058
PUPIL_RADIUS_M = 0.0024


def lip_vertices(template) -> np.ndarray:
    """Face vertices within LIP_RINGS edge steps of the lips' contact loops (the vermilion
    and the inner lips). -> indices"""
    import scipy.sparse as sp

    from ..heads import ICT_LOWER_CONTACT, ICT_UPPER_CONTACT, ict_part_range

    f = template.faces
    n = template.vertex_count
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    adj = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float32)
    start, end = ict_part_range("face")
    in_face = np.zeros(n, bool)
    in_face[start:end] = True
    reached = np.zeros(n, bool)
    reached[list(ICT_UPPER_CONTACT) + list(ICT_LOWER_CONTACT)] = True
    for _ in range(LIP_RINGS):
        reached |= (adj @ reached.astype(np.float32) > 0) & in_face
    return np.where(reached)[0]


def vertex_colours(template) -> np.ndarray:
    """sRGB per vertex by part (see the module docstring). -> (V, 3)"""
    from ..heads import ict_arrays

    arrays = ict_arrays()
    colours = np.tile(np.array(SKIN), (template.vertex_count, 1))
    by_part = {"teeth": TEETH, "gums_and_tongue": GUMS_TONGUE, "mouth_socket": MOUTH_SOCKET,
               "eyeball_left": EYE_WHITE, "eyeball_right": EYE_WHITE, "eyelashes": LASHES,
               "eye_socket_left": EYE_SOCKET, "eye_socket_right": EYE_SOCKET}
    for name, (s, e) in zip(arrays["part_names"].tolist(), arrays["part_ranges"]):
        if name in by_part:
            colours[s:e] = by_part[name]
    colours[lip_vertices(template)] = LIP
    for name in ("eyeball_left", "eyeball_right"):
        idx = template.regions[name]
        front = template.vertices[idx[np.argmax(template.vertices[idx, 2])]]
        d = np.linalg.norm(template.vertices[idx] - front, axis=1)
        colours[idx[d < IRIS_RADIUS_M]] = IRIS
        colours[idx[d < PUPIL_RADIUS_M]] = PUPIL
    return colours


def drawn_faces(template) -> np.ndarray:
    """Triangles without the transparent eye overlays. -> (F, 3)"""
    hidden = np.zeros(template.vertex_count, bool)
    for name in HIDDEN_PARTS:
        hidden[template.regions[name]] = True
    return template.faces[~hidden[template.faces].any(axis=1)]


class IctRenderer:
    """One Blender scene with the ICT head; render(vertices, view) -> PNG path."""

    MOUTH = (0.0, -0.036, 0.11)

    def __init__(self, template, size: int = 420):
        import bpy  # only this process loads Blender

        self.bpy = bpy
        self.template = template
        bpy.ops.wm.read_factory_settings(use_empty=True)
        mesh = bpy.data.meshes.new("ict")
        mesh.from_pydata(template.vertices.tolist(), [], drawn_faces(template).tolist())
        mesh.update()
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
        srgb = vertex_colours(template)
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        colours = np.concatenate([linear, np.ones((template.vertex_count, 1))], axis=1)
        attr: Any = mesh.color_attributes.new("colour", "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", colours.astype(np.float32).ravel())
        self.mesh = mesh
        obj = bpy.data.objects.new("ict", mesh)
        scene: Any = bpy.context.scene
        scene.collection.objects.link(obj)
        lens = bpy.data.cameras.new("camera")
        lens.type = "ORTHO"
        lens.clip_start, lens.clip_end = 0.01, 10.0
        self.lens = lens
        self.camera = bpy.data.objects.new("camera", lens)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "VERTEX"
        scene.display.shading.show_cavity = True
        scene.display.shading.show_backface_culling = False
        scene.view_settings.view_transform = "Standard"
        self.scene = scene
        self._tmp = tempfile.TemporaryDirectory()
        self._count = 0

    def render(self, vertices: np.ndarray | None, angle_deg: float = 0.0, closeup: bool = True,
               elevation_deg: float = 0.0) -> str:
        verts = self.template.vertices if vertices is None else vertices
        self.mesh.vertices.foreach_set("co", np.asarray(verts, dtype=np.float32).ravel())
        self.mesh.update()
        a, e = math.radians(angle_deg), math.radians(elevation_deg)
        target = np.array(self.MOUTH if closeup else (0.0, -0.005, 0.05))
        self.lens.ortho_scale = 0.075 if closeup else 0.30
        direction = np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])
        self.camera.location = tuple(target + direction * 1.0)
        self.camera.rotation_mode = "XYZ"       # pitch, then yaw: the camera looks at the target
        self.camera.rotation_euler = (-e, a, 0.0)
        self._count += 1
        path = str(Path(self._tmp.name) / f"{self._count}.png")
        self.scene.render.filepath = path
        self.bpy.ops.render.render(write_still=True)
        return path


def _sheet(tiles: list[tuple[str, str]], out_png: Path, columns: int, tile_in: float = 2.6) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    rows = int(math.ceil(len(tiles) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * tile_in, rows * tile_in * 1.08), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, path) in zip(axes.ravel(), tiles):
        ax.imshow(mpimg.imread(path))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def render_sheets(out_dir: Path, size: int = 420) -> None:
    """ict_head.png and ict_visemes.png in out_dir."""
    from ..heads import SPEECH_CHANNELS, ict_head
    from .arkit_rig import arkit_weights, lip_gaps
    from .figures import viseme_pose
    from .phonemes import VISEMES

    template = ict_head(SPEECH_CHANNELS)
    r = IctRenderer(template, size)
    head_tiles = [("rest, front", r.render(None, 0.0, closeup=False)),
                  ("rest, three-quarter", r.render(None, 35.0, closeup=False)),
                  ("rest, side", r.render(None, 90.0, closeup=False)),
                  ("rest, mouth", r.render(None, 0.0))]
    _sheet(head_tiles, out_dir / "ict_head.png", columns=4, tile_in=3.4)
    tiles = []
    for name, members in VISEMES.items():
        phone = members[0]
        weights = arkit_weights(viseme_pose(phone))
        verts = template.vertices + template.offsets_from_weights(weights)[0]
        u, lo = template.lip_centres  # type: ignore[misc]
        gap = (verts[u, 1] - verts[lo, 1]) * 1000
        least = lip_gaps(verts, template, inner=0.7).min() * 1000
        label = f"{name} [{phone.lower()}]\ngap {gap:.1f} mm (min {least:.1f})"
        tiles.append((label + ", front", r.render(verts, 0.0)))
        tiles.append((f"{name} [{phone.lower()}], 3/4", r.render(verts, 35.0, elevation_deg=-8.0)))
    for title, phone in PROFILES:
        weights = arkit_weights(viseme_pose(phone))
        verts = template.vertices + template.offsets_from_weights(weights)[0]
        tiles.append((f"{title} [{phone.lower()}], profile", r.render(verts, 90.0)))
    _sheet(tiles, out_dir / "ict_visemes.png", columns=6)


PROFILES = (("rest", "SIL"), ("PP", "M"), ("FF", "F"), ("U", "UW"), ("aa", "AA"), ("CH", "SH"))


def render_weights(weights_npy: Path, out_dir: Path, size: int = 360) -> None:
    """Render each row of a (N, K) SPEECH_CHANNELS weights file as out_dir/frame_<n>.png
    (front close-up of the mouth), for figures made by another process."""
    import shutil

    from ..heads import SPEECH_CHANNELS, ict_head

    template = ict_head(SPEECH_CHANNELS)
    weights = np.load(weights_npy)
    r = IctRenderer(template, size)
    out_dir.mkdir(parents=True, exist_ok=True)
    offsets = template.offsets_from_weights(weights)
    for n in range(len(weights)):
        shutil.copy(r.render(template.vertices + offsets[n], 0.0), out_dir / f"frame_{n}.png")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--weights":
        render_weights(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    render_sheets(Path(sys.argv[1] if len(sys.argv) > 1 else "results/synth"))
