"""Build the example scene headlessly: blend_examples/demo.wav and demo.blend.

    .venv/bin/python blend_examples/make_demo.py [--out blend_examples] [--new-audio]

demo.wav: a sentence spoken by festival's HTS voice (synthesised by us, no third-party
recording; made only when missing or with --new-audio). demo.blend: the model's template head
as a mesh named "Head" with a skin and a lip material, a camera framing the face, a key and a
fill light, and demo.wav as a sound strip at frame 1.

The .blend is saved by the oldest Blender here, so that every supported version opens it
(files open in newer Blenders, not in older ones): Debian's `blender` (3.4) runs this same
script as `blender -b --factory-startup --python make_demo.py -- SCENE.npz AUDIO BLEND`;
without it, the `bpy` module of the venv saves it (then it opens only in that version and newer).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEMO_TEXT = ("Hello! My lips follow your voice. Peter packed five bright maps, "
             "then we watched the moon rise over the bay.")
DEMO_VOICE = "cmu_us_slt_arctic_hts"
FPS = 30


def make_audio(path: Path) -> Path:
    """Speak DEMO_TEXT with festival and write 16 kHz mono PCM-16 with short silences around it."""
    import soundfile as sf
    import soxr

    from wav2sem.synth.tts.festival import synthesize_batch

    clip = synthesize_batch([DEMO_TEXT], DEMO_VOICE)[0]
    audio = soxr.resample(clip.audio, clip.sample_rate, 16000) if clip.sample_rate != 16000 else clip.audio
    pad = np.zeros(int(0.4 * 16000), np.float32)
    audio = np.concatenate([pad, 0.9 * audio / max(1e-6, float(np.abs(audio).max())), pad])
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def head_template():
    """The embedded default model's template if it exists, else the synthetic head itself."""
    from wav2sem.bundle import DEFAULT_BUNDLE_DIR, TEMPLATE_FILE
    from wav2sem.synth.head import build_head
    from wav2sem.template import Template

    default = DEFAULT_BUNDLE_DIR / TEMPLATE_FILE
    return Template.load(default) if default.is_file() else build_head().template


def write_scene_data(path: Path) -> Path:
    """What the scene needs from the backend, for a Blender whose Python has no wav2sem."""
    template = head_template()
    faces = template.faces if template.faces is not None else np.zeros((0, 3), np.int32)
    np.savez(path, vertices=template.vertices.astype(np.float64), faces=faces.astype(np.int64),
             lips=np.asarray(template.regions.get("lips", np.zeros(0, int)), np.int64))
    return path


def save_blend(path: Path, audio: Path, blender: str | None) -> Path:
    """demo.blend saved by `blender` (a program) when given, else by the bpy module here."""
    with tempfile.TemporaryDirectory(prefix="wav2sem-demo-") as tmp:
        data = write_scene_data(Path(tmp) / "scene.npz")
        if blender is None:
            print("NOTE: no `blender` program found; saving demo.blend with the bpy module, so it opens only "
                  "in that Blender version and newer.", flush=True)
            return make_blend(path, audio, data)
        env = dict(os.environ, HOME=tmp)
        subprocess.run([blender, "-b", "--factory-startup", "--python", str(Path(__file__).resolve()), "--",
                        str(data), str(audio), str(path)], check=True, env=env, stdout=subprocess.DEVNULL)
    return path


def make_blend(path: Path, audio: Path, scene_data: Path) -> Path:
    """Runs in Blender (any supported version): the scene from write_scene_data's file."""
    os.environ.setdefault("HOME", tempfile.mkdtemp(prefix="wav2sem-demo-home-"))
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0      # no demo.blend1 backups
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    with np.load(scene_data) as data:
        vertices, faces, lips = data["vertices"], data["faces"], data["lips"]
    mesh = bpy.data.meshes.new("Head")
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    mesh.update()
    for poly in mesh.polygons:
        poly.use_smooth = True
    head = bpy.data.objects.new("Head", mesh)
    scene.collection.objects.link(head)
    _materials(head, set(lips.tolist()))
    # Template: metres, Y up, face towards +Z. Blender: Z up, so turn the head to look down -Y.
    head.rotation_euler = (np.pi / 2, 0.0, 0.0)
    bpy.context.view_layer.objects.active = head
    head.select_set(True)
    _camera_and_lights(scene, vertices)
    scene.sequence_editor_create()
    editor = scene.sequence_editor
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences   # 5.0 renamed sequences
    strip = strips.new_sound("speech", str(audio), channel=1, frame_start=1)
    scene.frame_start, scene.frame_end = 1, int(strip.frame_final_end) - 1   # frame_final_end is exclusive
    scene.render.resolution_x, scene.render.resolution_y = 720, 720
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=True)
    bpy.ops.file.make_paths_relative()                      # the sound as //demo.wav, beside the .blend
    bpy.ops.wm.save_mainfile(compress=True)
    return path


def _materials(head, lips: set[int]) -> None:
    import bpy

    def material(name: str, rgba) -> "bpy.types.Material":
        mat = bpy.data.materials.new(name)
        mat.diffuse_color = rgba                      # Workbench "Material" colour
        mat.use_nodes = True
        principled = mat.node_tree.nodes.get("Principled BSDF")
        if principled is not None:
            principled.inputs["Base Color"].default_value = rgba
            principled.inputs["Roughness"].default_value = 0.55
        return mat

    head.data.materials.append(material("Skin", (0.80, 0.62, 0.52, 1.0)))
    head.data.materials.append(material("Lips", (0.66, 0.30, 0.30, 1.0)))
    if lips:
        for poly in head.data.polygons:
            if sum(v in lips for v in poly.vertices) == len(poly.vertices):
                poly.material_index = 1


def _camera_and_lights(scene, v: np.ndarray) -> None:
    import bpy

    # After the +90 degree X rotation: template (x, y, z) -> Blender (x, -z, y).
    height = float(np.ptp(v[:, 1]))
    face = v[v[:, 2] > np.percentile(v[:, 2], 60)]          # the front of the head
    centre = np.array([v[:, 0].mean(), -face[:, 2].mean(), np.percentile(face[:, 1], 40)])
    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = 85
    cam = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (centre[0], centre[1] - 2.2 * height, centre[2])
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    for name, energy, offset in (("Key", 600.0, (1.2, -2.0, 1.4)), ("Fill", 200.0, (-1.6, -1.8, 0.2))):
        light_data = bpy.data.lights.new(name, "AREA")
        light_data.energy = energy * height * height
        light = bpy.data.objects.new(name, light_data)
        light.location = tuple(centre + np.array(offset) * height)
        direction = centre - np.array(light.location)
        light.rotation_euler = _look_rotation(direction)
        scene.collection.objects.link(light)


def _look_rotation(direction: np.ndarray) -> tuple[float, float, float]:
    from mathutils import Vector

    return tuple(Vector(direction.tolist()).to_track_quat("-Z", "Y").to_euler())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE), help="folder for demo.wav and demo.blend")
    parser.add_argument("--new-audio", action="store_true", help="speak demo.wav again even if it exists")
    parser.add_argument("--blender", default=shutil.which("blender"),
                        help="the Blender that saves demo.blend (default: `blender` on PATH, else the bpy module)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    audio = out / "demo.wav"
    if args.new_audio or not audio.is_file():
        make_audio(audio)
    blend = save_blend(out / "demo.blend", audio, args.blender)
    print(f"wrote {blend} (sound: {audio})")
    return 0


def blender_main(argv: list[str]) -> int:
    """Inside `blender -b --python make_demo.py -- SCENE.npz AUDIO BLEND`."""
    scene_data, audio, blend = (Path(arg) for arg in argv)
    make_blend(blend, audio, scene_data)
    return 0


if __name__ == "__main__":
    if "bpy" in sys.modules:        # run by a Blender program (it imports bpy before the script)
        sys.exit(blender_main(sys.argv[sys.argv.index("--") + 1:]))
    sys.exit(main())
