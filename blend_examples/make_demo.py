"""Build the example scene headlessly: blend_examples/demo.wav and demo.blend.

    .venv/bin/python blend_examples/make_demo.py [--out blend_examples] [--new-audio]

demo.wav: a sentence spoken by festival's HTS voice (synthesised by us, no third-party
recording; made only when missing or with --new-audio). demo.blend: the ICT FaceKit head (MIT,
backend/wav2sem/assets/heads/ict_facekit/LICENSE) as a mesh named "Head" with its 53
ARKit-named shape keys, teeth, gums, tongue and eyes, a skin material per part
(blend_examples/ict_head.py), a camera on the face, a key and a fill light, and demo.wav as a
sound strip at frame 1. Generate Lip Sync drives the head's own ARKit keys.

The .blend is saved by the oldest Blender here, so that every supported version opens it
(files open in newer Blenders, not in older ones): Debian's `blender` (3.4) runs this same
script as `blender -b --factory-startup --python make_demo.py -- AUDIO BLEND`; without it,
the `bpy` module of the venv saves it (then it opens only in that version and newer). The
script needs only numpy and bpy, so any Blender 3.4 or newer can rebuild the scene.
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


def save_blend(path: Path, audio: Path, blender: str | None) -> Path:
    """demo.blend saved by `blender` (a program) when given, else by the bpy module here."""
    if blender is None:
        print("NOTE: no `blender` program found; saving demo.blend with the bpy module, so it opens only "
              "in that Blender version and newer.", flush=True)
        return make_blend(path, audio)
    with tempfile.TemporaryDirectory(prefix="wav2sem-demo-") as tmp:
        env = dict(os.environ, HOME=tmp)
        subprocess.run([blender, "-b", "--factory-startup", "--python", str(Path(__file__).resolve()), "--",
                        str(audio), str(path)], check=True, env=env, stdout=subprocess.DEVNULL)
    return path


def make_blend(path: Path, audio: Path) -> Path:
    """Runs in Blender (any supported version): the ICT head with its ARKit keys, lit and framed."""
    os.environ.setdefault("HOME", tempfile.mkdtemp(prefix="wav2sem-demo-home-"))
    import bpy

    sys.path.insert(0, str(HERE))
    import ict_head

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0      # no demo.blend1 backups
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    arrays = ict_head.load_arrays()
    head = ict_head.build_ict_head(bpy, "Head", keys="arkit", arrays=arrays)
    _irises(bpy, head, arrays)
    bpy.context.view_layer.objects.active = head
    head.select_set(True)
    _camera_and_lights(scene, ict_head.to_blender(arrays["neutral"]), arrays)
    scene.sequence_editor_create()
    editor = scene.sequence_editor
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences   # 5.0 renamed sequences
    strip = strips.new_sound("speech", str(audio), channel=1, frame_start=1)
    scene.frame_start, scene.frame_end = 1, int(strip.frame_final_end) - 1   # frame_final_end is exclusive
    scene.render.resolution_x, scene.render.resolution_y = 720, 720
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.display.shading.show_cavity = True
    bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=True)
    bpy.ops.file.make_paths_relative()                      # the sound as //demo.wav, beside the .blend
    bpy.ops.wm.save_mainfile(compress=True)
    return path


IRIS_CM, PUPIL_CM = 0.60, 0.27   # radii around the front of each eyeball (the kit has no eye texture here)


def _irises(bpy, head, arrays) -> None:
    """Give each eyeball an iris and a pupil: faces near its front-most point."""
    names = [str(n) for n in arrays["part_names"].tolist()]
    neutral, faces = arrays["neutral"], np.asarray(arrays["faces"])
    first = faces[:, 0]
    materials = head.data.materials
    for colour, radius in (((0.16, 0.09, 0.05), IRIS_CM), ((0.01, 0.01, 0.01), PUPIL_CM)):
        mat = bpy.data.materials.new("ICT_iris" if radius == IRIS_CM else "ICT_pupil")
        mat.diffuse_color = (*colour, 1.0)
        if bpy.app.version < (5, 0, 0):
            mat.use_nodes = True
        shader = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None) if mat.node_tree else None
        if shader is not None:
            shader.inputs["Base Color"].default_value = (*colour, 1.0)
        materials.append(mat)
        index = len(materials) - 1
        for part in ("eyeball_left", "eyeball_right"):
            start, end = (int(i) for i in arrays["part_ranges"][names.index(part)])
            front = neutral[start + int(np.argmax(neutral[start:end, 2]))]
            for f in np.where((first >= start) & (first < end))[0]:
                corners = faces[f][faces[f] >= 0]
                if np.linalg.norm(neutral[corners].mean(0) - front) < radius:
                    head.data.polygons[int(f)].material_index = index


def _camera_and_lights(scene, v: np.ndarray, arrays) -> None:
    """A portrait camera on the face (eyes to chin) and two area lights. v: Blender coordinates."""
    import bpy

    names = [str(n) for n in arrays["part_names"].tolist()]
    start, end = (int(i) for i in arrays["part_ranges"][names.index("face")])
    face = v[start:end]
    width = float(np.ptp(face[:, 0]))                        # ear to ear, about 0.18 m
    centre = np.array([0.0, float(face[:, 1].min()), float(np.percentile(face[:, 2], 45))])
    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = 85
    cam = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(cam)
    distance = 1.25 * width * cam_data.lens / cam_data.sensor_width   # the face fills most of the frame
    cam.location = (centre[0], centre[1] - distance, centre[2])
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)               # looks along +Y, at the face
    scene.camera = cam
    for name, energy, offset in (("Key", 60.0, (0.25, -0.45, 0.3)), ("Fill", 20.0, (-0.35, -0.4, 0.05))):
        light_data = bpy.data.lights.new(name, "AREA")
        light_data.energy = energy
        light_data.size = 0.3
        light = bpy.data.objects.new(name, light_data)
        light.location = tuple(centre + np.array(offset))
        light.rotation_euler = _look_rotation(centre - np.array(light.location))
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
    """Inside `blender -b --python make_demo.py -- AUDIO BLEND`."""
    audio, blend = (Path(arg) for arg in argv)
    make_blend(blend, audio)
    return 0


if __name__ == "__main__":
    if "bpy" in sys.modules:        # run by a Blender program (it imports bpy before the script)
        sys.exit(blender_main(sys.argv[sys.argv.index("--") + 1:]))
    sys.exit(main())
