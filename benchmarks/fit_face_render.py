"""Blender Workbench renders for the Fit Face contact sheets (as wav2sem.synth.render_ict).

Run in its own process with a throw-away HOME (benchmarks/fit_face_quality.py does):
    HOME=<tmp> python benchmarks/fit_face_render.py JOB.npz OUT_DIR
JOB.npz holds `triangles` (T, 3), `colours` (V, 3) sRGB, `poses` (P, V, 3) vertex positions
in a head frame (metres, Y up, face towards +Z), `views` (N, 6): angle_deg (about Y, 0 =
front), elevation_deg, target x, y, z, ortho_scale; and `jobs` (J, 2): (pose, view) pairs.
Writes OUT_DIR/<j>.png for each job row.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def render(job: Path, out_dir: Path, size: int = 380) -> None:
    import bpy

    data = np.load(job)
    triangles, colours, poses = data["triangles"], data["colours"], data["poses"]
    views, jobs = data["views"], data["jobs"]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("head")
    mesh.from_pydata(poses[0].tolist(), [], triangles.tolist())
    mesh.update()
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    linear = np.where(colours <= 0.04045, colours / 12.92, ((colours + 0.055) / 1.055) ** 2.4)
    rgba = np.concatenate([linear, np.ones((len(colours), 1))], axis=1)
    attr: Any = mesh.color_attributes.new("colour", "FLOAT_COLOR", "POINT")
    attr.data.foreach_set("color", rgba.astype(np.float32).ravel())
    obj = bpy.data.objects.new("head", mesh)
    scene: Any = bpy.context.scene
    scene.collection.objects.link(obj)
    lens = bpy.data.cameras.new("camera")
    lens.type = "ORTHO"
    lens.clip_start, lens.clip_end = 0.001, 20.0
    camera = bpy.data.objects.new("camera", lens)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "VERTEX"
    scene.display.shading.show_cavity = True
    scene.display.shading.show_backface_culling = False
    scene.view_settings.view_transform = "Standard"
    out_dir.mkdir(parents=True, exist_ok=True)
    for j, (pose, view) in enumerate(jobs):
        mesh.vertices.foreach_set("co", poses[pose].astype(np.float32).ravel())
        mesh.update()
        angle, elevation, tx, ty, tz, scale = views[view]
        a, e = math.radians(angle), math.radians(elevation)
        direction = np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])
        lens.ortho_scale = float(scale)
        camera.location = tuple(np.array([tx, ty, tz]) + direction * 2.0)
        camera.rotation_mode = "XYZ"
        camera.rotation_euler = (-e, a, 0.0)
        scene.render.filepath = str(out_dir / f"{j}.png")
        bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    render(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 380)
