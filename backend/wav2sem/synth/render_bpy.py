"""Smooth-shaded Workbench renders of the head with Blender as a Python module (`bpy`).

Run as a separate process (figures.py does): `HOME=<tmp> python -m wav2sem.synth.render_bpy OUT.png`.
Writes a contact sheet: the rest head from the front, three-quarter and side, and the open
(aa) and closed (m) mouth. Needs the `bpy` wheel (Blender 5.0 as a module).
"""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .figures import viseme_pose
from .head import build_head
from .motion import default_rig
from .render import _vertex_colours

VIEWS = (("rest, front", None, 0.0), ("rest, three-quarter", None, 35.0), ("rest, side", None, 90.0),
         ("aa, three-quarter", "AA", 35.0), ("m, three-quarter", "M", 35.0), ("f, side", "F", 90.0))


def render_views(out_png: Path, size: int = 360) -> None:
    """Render VIEWS with Workbench and assemble them into one image."""
    import bpy  # imported here: only this process loads Blender

    template = build_head().template
    assert template.faces is not None
    rig = default_rig()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("head")
    mesh.from_pydata(template.vertices.tolist(), [], template.faces.tolist())
    mesh.update()
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    srgb = _vertex_colours(template)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)   # Blender wants linear
    colours = np.concatenate([linear, np.ones((template.vertex_count, 1))], axis=1)
    attr: Any = mesh.color_attributes.new("colour", "FLOAT_COLOR", "POINT")   # a FloatColorAttribute
    attr.data.foreach_set("color", colours.astype(np.float32).ravel())
    obj = bpy.data.objects.new("head", mesh)
    scene: Any = bpy.context.scene     # the stubs make every RNA pointer Optional
    assert scene is not None
    scene.collection.objects.link(obj)
    lens = bpy.data.cameras.new("camera")
    lens.type = "ORTHO"
    lens.ortho_scale = 0.34
    camera = bpy.data.objects.new("camera", lens)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x, scene.render.resolution_y = int(size * 0.8), size
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "VERTEX"
    scene.display.shading.show_cavity = True
    scene.view_settings.view_transform = "Standard"     # colours as given, not tone-mapped

    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, phone, angle) in enumerate(VIEWS):
            verts = template.vertices if phone is None else rig.apply(viseme_pose(phone))[0]
            mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
            mesh.update()
            a = math.radians(angle)
            camera.location = (math.sin(a), -0.04, math.cos(a))
            camera.rotation_euler = (0.0, a, 0.0)
            scene.render.filepath = str(Path(tmp) / f"{i}.png")
            bpy.ops.render.render(write_still=True)
            tiles.append((title, scene.render.filepath))
        _assemble(tiles, out_png)


def _assemble(tiles: list[tuple[str, str]], out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(9, 7.5))
    for ax, (title, path) in zip(axes.ravel(), tiles):
        ax.imshow(mpimg.imread(path))
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    render_views(Path(sys.argv[1] if len(sys.argv) > 1 else "results/synth/head_workbench.png"))
