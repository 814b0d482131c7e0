"""`make demo`: animate the example head from speech with the embedded default model.

Builds demo.wav / demo.blend if missing (make_demo.py: the ICT FaceKit head with its 53
ARKit-named shape keys), installs the built add-on zip into a throw-away Blender home (the
`bpy` 5.0 module of the project venv), runs the headless Generate Lip Sync on the scene's
sound strip (it drives the head's own ARKit keys), and writes into out/demo/:
  demo_animated.blend   the scene with the lip-sync take
  demo_preview.mp4      Workbench preview with the sound (Blender's FFmpeg)
  demo_contact_sheet.png  frames across the clip, with the mouth opening of each
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE = "wav2sem_lipsync"
SHEET_FRAMES = 16


def fallback_model(out: Path) -> Path | None:
    """Without an embedded default model, an untrained one on the demo head, so the whole
    path still runs; the caller says so clearly."""
    from wav2sem.bundle import DEFAULT_BUNDLE_DIR, read_bundle
    from wav2sem.errors import Wav2SemError

    try:
        read_bundle(DEFAULT_BUNDLE_DIR)
        return None
    except Wav2SemError:
        from wav2sem.testing import write_tiny_ict_bundle

        return write_tiny_ict_bundle(out / "untrained-model")


def install_addon(bpy):
    """Install and enable the built extension zip; returns the add-on's package module."""
    zips = sorted((REPO / "dist").glob(f"{PACKAGE}-*-extension.zip"))
    if not zips:
        raise SystemExit("No add-on zip in dist/: run `make addon` (make demo does it) first.")
    result = bpy.ops.extensions.package_install_files(filepath=str(zips[-1]), repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"}:
        raise SystemExit(f"Installing {zips[-1].name} failed: {result}")
    return next(m for name, m in sys.modules.items() if name.endswith(f".{PACKAGE}") or name == PACKAGE)


def driven_keys(head) -> list[str]:
    """The shape keys the lip-sync take's curves drive (on the head's own keys)."""
    import re

    animation = head.data.shape_keys.animation_data if head.data.shape_keys else None
    names: list[str] = []
    for track in animation.nla_tracks if animation else ():
        for strip in track.strips:
            bag = strip.action
            if bag is None or "wav2sem_take" not in bag:       # the take's own action only
                continue
            curves = bag.fcurves if hasattr(bag, "fcurves") and len(bag.fcurves) else [
                c for layer in getattr(bag, "layers", ()) for s in layer.strips for b in s.channelbags for c in b.fcurves]
            names += [m.group(1) for c in curves if (m := re.fullmatch(r'key_blocks\["(.+)"\]\.value', c.data_path))]
    return names


def mouth_camera(bpy, scene, head, upper: int, lower: int):
    """A second camera, close on the mouth (about 9 cm across), for the contact sheet."""
    from mathutils import Vector

    rest = head.data.shape_keys.reference_key.data if head.data.shape_keys else head.data.vertices
    mouth = head.matrix_world @ ((Vector(rest[upper].co) + Vector(rest[lower].co)) / 2)
    data = bpy.data.cameras.new("MouthCamera")
    data.lens = 85
    cam = bpy.data.objects.new("MouthCamera", data)
    scene.collection.objects.link(cam)
    cam.location = (mouth.x, mouth.y - 0.09 * data.lens / data.sensor_width, mouth.z + 0.01)
    cam.rotation_euler = (1.5708, 0.0, 0.0)                    # looks along +Y, at the face
    return cam


def contact_sheet(bpy, scene, head, path: Path, frames: list[int]) -> None:
    """Render Workbench stills of the mouth (close-up camera) at `frames` and tile them with
    each frame's lip gap (between the model's lip-centre landmarks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wav2sem.bundle import read_bundle

    landmarks = read_bundle(os.environ.get("WAV2SEM_MODEL") or None).template.landmarks
    upper, lower = landmarks.get("upper_lip_center"), landmarks.get("lower_lip_center")
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.image_settings.file_format = "PNG"
    scene.render.resolution_percentage = 50
    face_camera = scene.camera
    if upper is not None and lower is not None:
        scene.camera = mouth_camera(bpy, scene, head, upper, lower)
    cols = 4
    rows = (len(frames) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for ax, frame in zip(axes.flat, frames):
                scene.frame_set(frame)
                still = Path(tmp) / f"{frame:05d}.png"
                scene.render.filepath = str(still)
                bpy.ops.render.render(write_still=True)
                ax.imshow(plt.imread(still))
                label = f"frame {frame} ({frame / scene.render.fps:.2f} s)"
                if upper is not None and lower is not None:
                    evaluated = head.evaluated_get(bpy.context.evaluated_depsgraph_get())
                    mesh = evaluated.to_mesh()
                    # the lip gap as the backend measures it (metrics.lip_gap): height, upper over lower
                    gap = (head.matrix_world @ mesh.vertices[upper].co - head.matrix_world @ mesh.vertices[lower].co).z
                    evaluated.to_mesh_clear()
                    label += f"\nlip gap {gap * 1000:.1f} mm"
                ax.set_title(label, fontsize=9)
    finally:
        if scene.camera is not face_camera:
            bpy.data.objects.remove(scene.camera)
            scene.camera = face_camera
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "out" / "demo"))
    parser.add_argument("--no-preview", action="store_true", help="skip the movie")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    started = time.monotonic()

    import make_demo

    if not (HERE / "demo.blend").is_file() or not (HERE / "demo.wav").is_file():
        print("building blend_examples/demo.blend and demo.wav ...", flush=True)
        make_demo.main(["--out", str(HERE)])
    untrained = fallback_model(out)
    if untrained is not None:
        os.environ["WAV2SEM_MODEL"] = str(untrained)
        print("NOTE: the embedded default model is not in this checkout yet; using an UNTRAINED model "
              f"({untrained}). The mouth moves but this is not lip sync.", flush=True)
    os.environ.setdefault("WAV2SEM_PYTHON", sys.executable)     # the venv: it has wav2sem installed
    os.environ["HOME"] = tempfile.mkdtemp(prefix="wav2sem-demo-home-")   # Blender reads HOME at import
    import bpy

    addon = install_addon(bpy)
    bpy.ops.wm.open_mainfile(filepath=str(HERE / "demo.blend"))
    scene = bpy.context.scene
    head = bpy.data.objects["Head"]
    print("generating lip sync (headless) ...", flush=True)
    t0 = time.monotonic()
    bpy.ops.wav2sem.generate_lipsync(object="Head")
    print(f"  take written in {time.monotonic() - t0:.1f} s (frames {scene.frame_start}-{scene.frame_end} "
          f"at {scene.render.fps} fps); keys it drives: {', '.join(driven_keys(head))}", flush=True)
    animated = out / "demo_animated.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(animated), copy=True)
    sheet = out / "demo_contact_sheet.png"
    first, last = scene.frame_start, scene.frame_end
    frames = [round(first + i * (last - first) / (SHEET_FRAMES - 1)) for i in range(SHEET_FRAMES)]
    contact_sheet(bpy, scene, head, sheet, frames)
    outputs = [animated, sheet]
    if not args.no_preview:
        from importlib import import_module

        batch = import_module(addon.__name__ + ".batch")
        movie = out / "demo_preview.mp4"
        batch.render_preview(scene, head, str(movie), 50)
        outputs.append(movie)
    print(f"demo done in {time.monotonic() - started:.0f} s:")
    for path in outputs:
        print(f"  {path}")
    if untrained is not None:
        print("  (untrained model: see the NOTE above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
