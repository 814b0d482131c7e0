"""Benchmark: writing lip-sync animation into Blender (bpy 5.0 module) and playing it back.

60 s at 30 fps (1800 frames) on a 5023-vertex mesh (FLAME's vertex count), in COMPACT and
PER_FRAME modes: time to prepare (resample + map + SVD), time to write the keys and curves,
.blend size, and depsgraph evaluation time per frame. Targets: COMPACT writes in < 0.5 s
and evaluates in < 3 ms per frame. Prints a table and saves results/blender_write.{md,json}.

The offsets have FaceFormer's structure: a linear output layer from a 64-d feature maps each
frame to V*3 offsets, so they are rank <= 64 (smooth random features, decaying spectrum).
Also: a 60 s take on the ICT FaceKit head (26,719 vertices, its 53 ARKit keys) from 23
ARKit weight curves, as the default model 0.3 drives a character's own keys: the full key
set (a copy), a set without mouthClose and a viseme-only head (both solved onto the keys
they have): prepare (resample + solve), write, .blend size, evaluation per frame.

With --render, also renders Workbench pictures of the synthetic template head at rest and
with the mouth open, written through the same code (results/blender_write.rest.png / .open.png).

Run: .venv/bin/python benchmarks/blender_write.py [--render]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from machine import cpu_name

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
os.environ["HOME"] = tempfile.mkdtemp(prefix="wav2sem_bench_home_")   # before bpy reads it

import bpy  # noqa: E402

# The add-on's modules without registering it (takes/mapping need no registration).
_package = types.ModuleType("wav2sem_lipsync")
_package.__path__ = [str(REPO / "addon")]  # type: ignore[attr-defined]
sys.modules["wav2sem_lipsync"] = _package
from wav2sem_lipsync.core import face_keys, face_plan, mapping, visemes  # noqa: E402
from wav2sem_lipsync.scene import face_take, takes  # noqa: E402

sys.path.insert(0, str(REPO / "blend_examples"))
import ict_head  # noqa: E402

VERTICES = 5023
SECONDS, FPS = 60, 30
FEATURES = 64
EVAL_FRAMES = 120


def grid_mesh(vertex_count: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """A curved quad grid with exactly vertex_count vertices (Y up, metres, head-sized)."""
    cols = 71
    rows = -(-vertex_count // cols)
    index = np.arange(vertex_count)
    u, v = (index % cols) / (cols - 1), (index // cols) / (rows - 1)
    verts = np.stack([0.16 * (u - 0.5), 0.22 * (v - 0.5), 0.04 * np.cos(np.pi * (u - 0.5))], 1)
    faces = [(r * cols + c, r * cols + c + 1, (r + 1) * cols + c + 1, (r + 1) * cols + c)
             for r in range(rows - 1) for c in range(cols - 1) if (r + 1) * cols + c + 1 < vertex_count]
    return verts.astype(np.float32), faces


def faceformer_like_offsets(frames: int, vertex_count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    # Smooth features (speech-rate motion, 1-8 Hz) with a decaying spectrum.
    freqs = rng.uniform(1.0, 8.0, FEATURES)
    phases = rng.uniform(0, 2 * np.pi, FEATURES)
    features = np.sin(2 * np.pi * freqs * t[:, None] + phases) * (0.85 ** np.arange(FEATURES))   # (T, F)
    fields = rng.normal(size=(FEATURES, vertex_count * 3)) * 0.002                             # metres
    return (features @ fields).reshape(frames, vertex_count, 3).astype(np.float32)


def new_object(name: str, verts: np.ndarray, faces: list) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def reset_scene() -> None:
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.actions, bpy.data.cameras):
        for item in list(collection):
            collection.remove(item)


def saved_size_and_playback(scene, obj, frame_end: int) -> tuple[float, float]:
    """The .blend size (MB, uncompressed) and the median time (ms) to show a frame of the take:
    frame change plus the mesh evaluated with its keys mixed."""
    scene.frame_end = frame_end
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=False, copy=True)
        blend_mb = path.stat().st_size / 1e6
    frames = np.linspace(1, frame_end, EVAL_FRAMES).astype(int)
    scene.frame_set(int(frames[0]))
    times = []
    for frame in frames:
        t0 = time.perf_counter()
        scene.frame_set(int(frame))
        obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        times.append(time.perf_counter() - t0)
    return blend_mb, float(np.median(times)) * 1e3


def measure(mode: str, template: np.ndarray, faces: list, offsets: np.ndarray) -> dict:
    reset_scene()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    obj = new_object("Head", template, faces)
    start = time.perf_counter()
    prepared = mapping.prepare_take(template, takes.rest_positions(obj), offsets, FPS, FPS, 1.0, mode)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    summary = takes.write_take(obj, "LipSync_bench", prepared, 1)
    write_s = time.perf_counter() - start
    blend_mb, eval_ms = saved_size_and_playback(scene, obj, summary.frame_end)
    return {"mode": mode, "keys": summary.keys, "relative_error": summary.relative_error,
            "prepare_s": prepare_s, "write_s": write_s, "blend_mb": blend_mb, "eval_ms_per_frame": eval_ms}


def smooth_weights(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    """Speech-rate weight curves in 0..1 (1-6 Hz), as a model's ARKit output. -> (T, K)"""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    freqs, phases = rng.uniform(1.0, 6.0, channels), rng.uniform(0, 2 * np.pi, channels)
    return (0.3 + 0.3 * np.sin(2 * np.pi * freqs * t[:, None] + phases)).astype(np.float32)


def measure_ict(case: str, arrays: dict, weights: np.ndarray) -> dict:
    """One take on the ICT head's own keys: 'full', 'no mouthClose' or 'visemes'."""
    from wav2sem.heads import SPEECH_CHANNELS, ict_head as reference_head

    reset_scene()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    if case == "visemes":
        obj = ict_head.build_ict_head(bpy, "Head", keys="visemes", visemes=visemes.VISEME_SHAPES, arrays=arrays)
    else:
        only = [n for n in arrays["expression_names"].tolist() if not (case == "no mouthClose" and n == "mouthClose")]
        obj = ict_head.build_ict_head(bpy, "Head", keys="arkit", only=only, arrays=arrays)
    reference = reference_head()
    names = [k.name for k in obj.data.shape_keys.key_blocks][1:]
    start = time.perf_counter()
    bindings = face_keys.find_face_keys(names)
    prepared = face_plan.prepare_key_take(weights, SPEECH_CHANNELS, FPS, FPS, bindings, reference.blendshape_deltas,
                                          lips=reference.regions["lips"], landmarks=reference.landmarks)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    summary = face_take.write_key_take(obj, "LipSync_bench", prepared, 1)
    write_s = time.perf_counter() - start
    blend_mb, eval_ms = saved_size_and_playback(scene, obj, summary.frame_end)
    return {"case": case, "keys_on_mesh": len(names), "keys_driven": len(prepared.keys), "prepare_s": prepare_s,
            "write_s": write_s, "blend_mb": blend_mb, "eval_ms_per_frame": eval_ms}


def render_mouth(out_dir: Path) -> list[Path]:
    """Synthetic template head (Y up, metres) imported Z-up at 10x scale, jaw opening from
    rest; written by the add-on's writer; Workbench renders at rest and mouth open."""
    from wav2sem.synth.head import build_head
    from wav2sem.synth.rig import ARTICULATORS, Rig

    reset_scene()
    head = build_head()
    template = head.template.vertices
    values = np.zeros((31, len(ARTICULATORS)))
    values[:, ARTICULATORS.index("jaw_open")] = np.sin(np.linspace(0, np.pi, 31))      # 0 -> 1 -> 0
    offsets = Rig.for_head(head).apply(values) - template[None]
    y_up_to_z_up = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float32)
    obj = new_object("Head", template @ y_up_to_z_up.T * 10.0, head.template.faces.tolist())
    for polygon in obj.data.polygons:
        polygon.use_smooth = True
    prepared = mapping.prepare_take(template, takes.rest_positions(obj), offsets, 30.0, 24.0)
    takes.write_take(obj, "LipSync_open", prepared, 1)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -4.0, -0.3)               # in front of the face (+Z template -> -Y)
    camera.rotation_euler = (np.pi / 2, 0.0, 0.0)
    camera.data.lens = 70
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 400
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    paths = []
    for name, frame in (("rest", 1), ("open", 1 + prepared.frames // 2)):
        scene.frame_set(frame)
        scene.render.filepath = str(out_dir / f"blender_write.{name}.png")
        bpy.ops.render.render(write_still=True)
        paths.append(out_dir / f"blender_write.{name}.png")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="also render the mouth pictures")
    args = parser.parse_args()
    template, faces = grid_mesh(VERTICES)
    offsets = faceformer_like_offsets(SECONDS * FPS, VERTICES)
    rows = [measure(mode, template, faces, offsets) for mode in ("COMPACT", "PER_FRAME")]
    machine = (f"{cpu_name()}, {os.cpu_count()} CPUs, Blender {bpy.app.version_string}, "
               f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)")
    lines = [f"# Blender write benchmark: {SECONDS} s at {FPS} fps, {VERTICES} vertices", "",
             f"Machine: {machine}", "",
             "| mode | keys | rel. error | prepare (s) | write (s) | .blend (MB) | eval (ms/frame) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['mode']} | {r['keys']} | {r['relative_error']:.4f} | {r['prepare_s']:.3f} | {r['write_s']:.3f} "
              f"| {r['blend_mb']:.1f} | {r['eval_ms_per_frame']:.2f} |" for r in rows]
    arrays = ict_head.load_arrays()
    weights = smooth_weights(SECONDS * FPS, 23)
    ict_rows = [measure_ict(case, arrays, weights) for case in ("full", "no mouthClose", "visemes")]
    lines += ["", f"ICT FaceKit head (26,719 vertices): a {SECONDS} s take of 23 ARKit weight curves onto the "
                  "head's own keys (eval: median per frame, keys mixed by Blender)", "",
              "| keys on the mesh | keys | driven | prepare (s) | write (s) | .blend (MB) | eval (ms/frame) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['keys_on_mesh']} | {r['keys_driven']} | {r['prepare_s']:.3f} | {r['write_s']:.3f} "
              f"| {r['blend_mb']:.1f} | {r['eval_ms_per_frame']:.2f} |" for r in ict_rows]
    rows += ict_rows
    compact = rows[0]
    lines += ["", f"Targets: COMPACT write < 0.5 s: {'met' if compact['write_s'] < 0.5 else 'MISSED'} "
                  f"({compact['write_s']:.3f} s; with prepare {compact['write_s'] + compact['prepare_s']:.3f} s); "
                  f"evaluation < 3 ms/frame: {'met' if compact['eval_ms_per_frame'] < 3 else 'MISSED'} "
                  f"({compact['eval_ms_per_frame']:.2f} ms)."]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "blender_write.md").write_text(table + "\n")
    (RESULTS / "blender_write.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    if args.render:
        for path in render_mouth(RESULTS):
            print(f"rendered {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
