"""Headless lip sync for many shots (command-line entry point; prints progress lines).

    blender -b scene.blend --python <installed add-on>/batch.py -- \
        --object Head --audio a.wav [--audio b.wav ...] --output out.blend [--preview out.mp4]

Each audio file becomes a sound strip and a take, one after the other from --start
(default: the scene's first frame). The exit code is 1 if any shot failed.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import addon_utils
import bpy

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch.py", description="Wav2Sem Lip Sync for many shots.")
    parser.add_argument("--object", required=True, help="the head mesh")
    parser.add_argument("--audio", action="append", required=True, help="speech file (repeat for more shots)")
    parser.add_argument("--output", required=True, help="where to save the .blend")
    parser.add_argument("--subject", default="", help="speaking style; default: the model's")
    parser.add_argument("--intensity", type=float, default=1.0)
    parser.add_argument("--mode", choices=("COMPACT", "PER_FRAME"), default="COMPACT")
    parser.add_argument("--start", type=int, default=None, help="first frame (default: scene start)")
    parser.add_argument("--gap", type=int, default=12, help="frames between shots")
    parser.add_argument("--preview", help="also render a Workbench preview movie with sound (.mp4)")
    parser.add_argument("--preview-scale", type=int, default=50, help="preview resolution in percent")
    return parser.parse_args(argv)


def enable_addon() -> str:
    """Enable the add-on this file belongs to (legacy or extension install)."""
    for module in addon_utils.modules():  # type: ignore[func-returns-value,attr-defined]
        if Path(module.__file__).resolve().parent == HERE:
            addon_utils.enable(module.__name__, default_set=True)
            return str(module.__name__)
    raise SystemExit(f"batch.py: {HERE} is not an installed add-on; install the Wav2Sem Lip Sync zip first.")


def ensure_camera(scene: bpy.types.Scene, obj: bpy.types.Object) -> None:
    """A front camera framing the head, if the scene has none (-Y looks at +Y in Blender)."""
    if scene.camera is not None:
        return
    from mathutils import Vector
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    center = sum(corners, Vector()) / 8
    size = max((max(c[i] for c in corners) - min(c[i] for c in corners)) for i in range(3)) or 1.0
    camera = bpy.data.objects.new("LipSyncCamera", bpy.data.cameras.new("LipSyncCamera"))
    scene.collection.objects.link(camera)
    camera.location = center + Vector((0.0, -2.2 * size, 0.0))
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.camera = camera


def render_preview(scene: bpy.types.Scene, obj: bpy.types.Object, path: str, scale: int) -> None:
    from importlib import import_module
    versions = import_module(enable_addon() + ".versions")
    ensure_camera(scene, obj)
    scene.render.engine = "BLENDER_WORKBENCH"  # type: ignore[assignment]  # stubs list one engine
    scene.render.resolution_percentage = scale
    versions.set_movie_output(scene)
    scene.render.ffmpeg.format = "MPEG4"
    scene.render.ffmpeg.codec = "H264"
    scene.render.ffmpeg.audio_codec = "AAC"
    scene.render.filepath = str(Path(path).resolve())
    scene.render.use_file_extension = False
    bpy.ops.render.render(animation=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from importlib import import_module
    versions = import_module(enable_addon() + ".versions")
    scene = bpy.context.scene
    assert scene is not None
    if bpy.data.objects.get(args.object) is None:
        print(f"batch: there is no object named {args.object!r} in {bpy.data.filepath or 'the scene'}")
        return 2
    frame = first_frame = scene.frame_start if args.start is None else args.start
    failures, started = [], time.monotonic()
    last_frame = frame
    for index, audio in enumerate(args.audio, 1):
        label = f"[{index}/{len(args.audio)}] {Path(audio).name}"
        audio_path = str(Path(audio).resolve())
        if not Path(audio_path).is_file():
            print(f"{label}: FAILED: file not found", flush=True)
            failures.append(audio)
            continue
        strip = versions.new_sound_strip(scene, Path(audio).stem, audio_path, frame)
        shot_start = time.monotonic()
        try:
            bpy.ops.wav2sem.generate_lipsync(  # type: ignore[attr-defined]  # registered by the add-on
                object=args.object, audio_path=audio_path, subject=args.subject, intensity=args.intensity,
                output_mode=args.mode)
        except RuntimeError as exc:
            print(f"{label}: FAILED: {str(exc).strip()}", flush=True)
            failures.append(audio)
        else:
            print(f"{label}: frames {round(strip.frame_final_start)}-{round(strip.frame_final_end) - 1} "
                  f"in {time.monotonic() - shot_start:.1f} s", flush=True)
        last_frame = round(strip.frame_final_end)
        frame = last_frame + args.gap
    scene.frame_start, scene.frame_end = first_frame, max(first_frame, last_frame - 1)   # the shots, for playback
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(args.output).resolve()))
    print(f"saved {args.output}", flush=True)
    if args.preview:
        preview_start = time.monotonic()
        render_preview(scene, bpy.data.objects[args.object], args.preview, args.preview_scale)
        print(f"preview {args.preview} ({scene.frame_end - scene.frame_start + 1} frames) in "
              f"{time.monotonic() - preview_start:.1f} s", flush=True)
    done = len(args.audio) - len(failures)
    print(f"summary: {done} of {len(args.audio)} shots animated, {len(failures)} failed"
          + (f" ({', '.join(Path(f).name for f in failures)})" if failures else "")
          + f"; {time.monotonic() - started:.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    sys.exit(main(argv))
