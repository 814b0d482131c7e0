"""Headless lip sync for many shots (command-line entry point; prints progress lines).

    blender -b scene.blend --python <installed add-on>/batch.py -- \
        --object Head --audio a.wav [--audio b.wav ...] --output out.blend [--preview out.mp4]

Each audio file becomes a sound strip and a take named after the strip (so the same file
twice, or two folders' line.wav, are separate takes), one after the other from --start
(default: the scene's first frame). A shot that failed leaves no strip. After the last shot
every take is checked at its frames; the exit code is 1 if any shot failed or was lost.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@functools.lru_cache(maxsize=None)
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


def addon_module(name: str) -> Any:
    from importlib import import_module
    return import_module(f"{enable_addon()}.{name}")


def render_preview(scene: bpy.types.Scene, obj: bpy.types.Object, path: str, scale: int) -> None:
    """A Workbench movie with sound. Blender's own output (a line per frame, GPU messages)
    is kept out of the console: a progress line every tenth of the frames instead."""
    versions, quiet = addon_module("scene.versions"), addon_module("core.quiet")
    ensure_camera(scene, obj)
    scene.render.engine = "BLENDER_WORKBENCH"  # type: ignore[assignment]  # stubs list one engine
    scene.render.resolution_percentage = scale
    versions.set_movie_output(scene)
    scene.render.ffmpeg.format = "MPEG4"
    scene.render.ffmpeg.codec = "H264"
    scene.render.ffmpeg.audio_codec = "AAC"
    scene.render.filepath = str(Path(path).resolve())
    scene.render.use_file_extension = False
    total = scene.frame_end - scene.frame_start + 1
    every, rendered = max(1, total // 10), [0]
    error = None
    with quiet.captured_output() as output:
        def progress(*_: Any) -> None:
            rendered[0] += 1
            if rendered[0] % every == 0 or rendered[0] == total:
                output.say(f"preview: frame {rendered[0]}/{total}")
        bpy.app.handlers.render_post.append(progress)
        try:
            bpy.ops.render.render(animation=True)
        except RuntimeError as exc:
            error = exc
        finally:
            bpy.app.handlers.render_post.remove(progress)
    if error is not None:
        raise RuntimeError(f"{report_text(str(error))} (Blender said: {output.tail()})")


REPORT_PREFIXES = ("Error: ", "Warning: ", "Info: ")   # how Blender prints an operator's reports


def report_text(text: str) -> str:
    """An operator's error reports as one line, without Blender's "Error: " prefixes."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line[len("Error: "):] if line.startswith("Error: ") else line for line in lines)


@dataclass(frozen=True)
class Shot:
    label: str            # "[2/5] line.wav"
    take: str
    frames: tuple[int, int]


def animate(args: argparse.Namespace, strip: str) -> tuple[str | None, list[str]]:
    """Generate one take; returns (the error or None, its warnings). Blender's report lines
    are restated by the caller; anything else it printed (a traceback) is passed on."""
    quiet = addon_module("core.quiet")
    error = None
    with quiet.captured_output() as output:
        try:
            bpy.ops.wav2sem.generate_lipsync(  # type: ignore[attr-defined]  # registered by the add-on
                object=args.object, strip=strip, subject=args.subject, intensity=args.intensity,
                output_mode=args.mode)
        except RuntimeError as exc:
            error = report_text(str(exc))
    lines = output.text.splitlines()
    for line in lines:
        if line.strip() and not line.startswith(REPORT_PREFIXES):
            print(line, flush=True)
    return error, [line[len("Warning: "):] for line in lines if line.startswith("Warning: ")]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    versions, takes = addon_module("scene.versions"), addon_module("scene.takes")
    scene = bpy.context.scene
    assert scene is not None
    obj = bpy.data.objects.get(args.object)
    if obj is None:
        print(f"batch: there is no object named {args.object!r} in {bpy.data.filepath or 'the scene'}")
        return 2
    frame = first_frame = scene.frame_start if args.start is None else args.start
    shots: list[Shot] = []
    failures: list[str] = []
    started = time.monotonic()
    for index, audio in enumerate(args.audio, 1):
        label = f"[{index}/{len(args.audio)}] {Path(audio).name}"
        audio_path = str(Path(audio).resolve())
        if not Path(audio_path).is_file():
            print(f"{label}: FAILED: file not found", flush=True)
            failures.append(label)
            continue
        strip = versions.new_sound_strip(scene, Path(audio).stem, audio_path, frame)
        take, start, sound_end = takes.take_name_for(strip.name), round(strip.frame_start), round(strip.frame_final_end)
        shot_start = time.monotonic()
        error, warnings = animate(args, strip.name)
        span = takes.take_span(obj, take)
        if error is None and (span is None or span[0] != start):
            error = f"the take {take} is not on '{obj.name}' at frame {start}"
        if error is not None:
            print(f"{label}: FAILED: {error}", flush=True)
            failures.append(label)
            versions.remove_strip(scene, strip)     # the shot takes no room in the saved scene
            continue
        for warning in warnings:
            print(f"{label}: warning: {warning}", flush=True)
        print(f"{label}: frames {span[0]}-{span[1]} in {time.monotonic() - shot_start:.1f} s", flush=True)
        shots.append(Shot(label, take, span))
        frame = max(sound_end, span[1] + 1) + args.gap
    for shot in shots:   # nothing a later shot did may have replaced or moved an earlier take
        if takes.take_span(obj, shot.take) != shot.frames:
            print(f"{shot.label}: FAILED: its take {shot.take} was replaced by a later shot", flush=True)
            failures.append(shot.label)
    scene.frame_start, scene.frame_end = first_frame, max(first_frame, frame - args.gap - 1)   # the shots
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(args.output).resolve()))
    print(f"saved {args.output}", flush=True)
    if args.preview:
        preview_start = time.monotonic()
        try:
            render_preview(scene, obj, args.preview, args.preview_scale)
        except RuntimeError as exc:
            print(f"preview: FAILED: {exc}", flush=True)
            failures.append("the preview")
        else:
            print(f"preview {args.preview} ({scene.frame_end - scene.frame_start + 1} frames) in "
                  f"{time.monotonic() - preview_start:.1f} s", flush=True)
    done = len(args.audio) - len([f for f in failures if f != "the preview"])
    print(f"summary: {done} of {len(args.audio)} shots animated, {len(failures)} failed"
          + (f" ({', '.join(failures)})" if failures else "")
          + f"; {time.monotonic() - started:.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    sys.exit(main(argv))
