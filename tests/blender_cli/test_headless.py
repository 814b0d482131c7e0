"""The legacy zip in Debian's Blender 3.4: the documented headless command and batch.py,
with a real backend subprocess."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import SCENE_FPS, write_wav

pytestmark = pytest.mark.blender_cli

READ_BACK = """
import bpy, json, sys, numpy as np
obj = bpy.data.objects[%r]
out = {"keys": [k.name for k in obj.data.shape_keys.key_blocks], "actions": sorted(a.name for a in bpy.data.actions),
       "frames": {}}
for frame in %s:
    bpy.context.scene.frame_set(frame)
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    co = np.empty(len(ev.data.vertices) * 3, np.float32)
    ev.data.vertices.foreach_get("co", co)
    out["frames"][frame] = co.tolist()
print("RESULT " + json.dumps(out))
"""
# A second head sharing nothing with the first (mesh copied), for the COMPACT take.
COPY_HEAD = ("h = bpy.data.objects['Head'].copy(); h.data = h.data.copy(); h.name = 'Head2'; "
             "bpy.context.scene.collection.objects.link(h); ")


def read_back(cli, blend, frames, name="Head"):
    script = cli.work / "read_back.py"
    script.write_text(READ_BACK % (name, list(frames)))
    result = cli(str(blend), "--python", str(script))
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_headless_operator_matches_backend(cli):
    """PER_FRAME on Head (exact) and COMPACT on a copy (within the tolerance), legacy actions."""
    audio = write_wav(cli.work / "line.wav", 1.5)
    out = cli.work / "out.blend"
    result = cli(str(cli.work / "scene.blend"), "--python-exit-code", "1", "--python-expr",
                 "import bpy; " + COPY_HEAD +
                 "bpy.ops.wav2sem.generate_lipsync(object='Head', audio_path='line.wav', output_mode='PER_FRAME'); "
                 "bpy.ops.wav2sem.generate_lipsync(object='Head2', audio_path='line.wav'); "
                 f"bpy.ops.wm.save_as_mainfile(filepath={str(out)!r})")
    assert "Lip sync 'LipSync_line'" in result.stdout
    reference = cli.work / "reference.npy"
    subprocess.run([sys.executable, "-m", "wav2sem", "infer", str(audio), "-o", str(reference),
                    "--model", str(cli.bundle)], check=True, capture_output=True)
    offsets = np.load(reference).astype(np.float64)
    frames = [1, 5, 17, 30]
    linear = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T * 10.0
    rest = cli.template @ linear + [0.2, -0.1, 1.5]

    def expected(frame):
        position = (frame - 1) / SCENE_FPS * 30.0          # current frame 1 = start; model 30 fps
        lower = int(position)
        frac = position - lower
        return rest + (offsets[lower] * (1 - frac) + offsets[min(lower + 1, len(offsets) - 1)] * frac) @ linear

    per_frame = read_back(cli, out, [0] + frames)
    assert per_frame["actions"] == ["LipSync_line", "LipSync_line.001"] and per_frame["keys"][0] == "Basis"
    np.testing.assert_allclose(np.array(per_frame["frames"]["0"]).reshape(-1, 3), rest, atol=1e-5)   # before
    for frame in frames:
        np.testing.assert_allclose(np.array(per_frame["frames"][str(frame)]).reshape(-1, 3), expected(frame),
                                   atol=5e-5)
    compact = read_back(cli, out, frames, name="Head2")
    assert len(compact["keys"]) <= 1 + 64
    error = sum(np.sum((np.array(compact["frames"][str(f)]).reshape(-1, 3) - expected(f)) ** 2) for f in frames)
    motion = sum(np.sum((expected(f) - rest) ** 2) for f in frames)
    assert np.sqrt(error / motion) < 0.03          # 1 % tolerance over the whole take; 4 frames here


def test_headless_error_gives_message_and_exit_code(cli):
    result = cli(str(cli.work / "scene.blend"), "--python-exit-code", "1", "--python-expr",
                 "import bpy; bpy.ops.wav2sem.generate_lipsync(object='Head', audio_path='missing.wav')", check=False)
    assert result.returncode == 1
    # Blender's report and the script's traceback; the add-on adds no third copy.
    assert 1 <= (result.stdout + result.stderr).count("Audio file not found") <= 2


def test_batch_many_shots_with_preview(cli):
    audios = [write_wav(cli.work / name, seconds) for name, seconds in (("a.wav", 1.0), ("b.wav", 0.8))]
    out, movie = cli.work / "batch.blend", cli.work / "preview.mp4"
    result = cli(str(cli.work / "scene.blend"), "--python", str(cli.addon_dir / "batch.py"), "--",
                 "--object", "Head", "--audio", str(audios[0]), "--audio", str(audios[1]),
                 "--audio", str(cli.work / "nope.wav"), "--output", str(out), "--preview", str(movie),
                 "--preview-scale", "10", check=False, timeout=300)
    lines = result.stdout.splitlines()
    # The frames the take plays (the 1.0 s sound covers 1-25; the model gives 29 frames at 30 fps).
    assert any(l.startswith("[1/3] a.wav: frames 1-24") for l in lines), result.stdout[-2000:]
    assert any(l.startswith("[2/3] b.wav: frames 38-56") for l in lines), result.stdout[-2000:]
    assert any(l.startswith("[3/3] nope.wav: FAILED") for l in lines)
    assert any(l.startswith("summary: 2 of 3 shots animated, 1 failed") for l in lines)
    assert result.returncode == 1                      # one shot failed
    # Blender's own render output (about 30 "Append frame" lines here) is quietened; a progress line instead.
    assert "Append frame" not in result.stdout + result.stderr
    assert any(l.startswith("preview: frame ") for l in lines), result.stdout[-2000:]
    assert movie.stat().st_size > 1000
    state = read_back(cli, out, [1])
    assert state["actions"] == ["LipSync_a", "LipSync_b"]
    data = movie.read_bytes()
    assert b"avc1" in data and b"mp4a" in data       # H.264 video and AAC sound sample entries


READ_TAKES = """
import bpy, json
key = bpy.data.objects["Head"].data.shape_keys
tracks = key.animation_data.nla_tracks if key and key.animation_data else []
takes = {t.name: [round(s.frame_start) + 1 for s in t.strips] for t in tracks}
keys = {t: sum(1 for b in key.key_blocks if b.name.startswith(t + ".")) for t in takes}
print("TAKES " + json.dumps({"takes": takes, "keys": keys}))
"""


def read_takes(cli, blend):
    script = cli.work / "read_takes.py"
    script.write_text(READ_TAKES)
    result = cli(str(blend), "--python", str(script))
    return json.loads(next(l for l in result.stdout.splitlines() if l.startswith("TAKES "))[len("TAKES "):])


def run_batch(cli, out, *audios, extra=()):
    args = ["--object", "Head", *[a for audio in audios for a in ("--audio", str(audio))], "--output", str(out)]
    return cli(str(cli.work / "scene.blend"), "--python", str(cli.addon_dir / "batch.py"), "--", *args, *extra,
               check=False, timeout=300)


def test_batch_gives_every_shot_its_own_take(cli):
    """Two folders' line.wav and the same file twice: three takes at three places, none lost."""
    (cli.work / "010").mkdir(exist_ok=True)
    (cli.work / "020").mkdir(exist_ok=True)
    first = write_wav(cli.work / "010" / "line.wav", 1.0)
    second = write_wav(cli.work / "020" / "line.wav", 0.8)
    out = cli.work / "shots.blend"
    result = run_batch(cli, out, first, second, first)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "summary: 3 of 3 shots animated, 0 failed" in result.stdout
    state = read_takes(cli, out)
    assert state["takes"] == {"LipSync_line": [1], "LipSync_line.001": [38], "LipSync_line.002": [70]}
    assert all(count > 0 for count in state["keys"].values()), state


def test_batch_with_a_failing_shot_says_so_once_and_exits_non_zero(cli):
    good = write_wav(cli.work / "good.wav", 0.6)
    bad = cli.work / "bad.wav"
    bad.write_text("this is not audio\n")
    out = cli.work / "partly.blend"
    result = run_batch(cli, out, good, bad)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    failed = next(l for l in lines if l.startswith("[2/2] bad.wav: FAILED: "))
    message = failed[len("[2/2] bad.wav: FAILED: "):]
    assert len(message) > 20 and not message.startswith("Error")
    combined = result.stdout + result.stderr
    assert combined.count(message) == 1, combined[-3000:]          # one line per problem
    summary = next(l for l in lines if l.startswith("summary: "))
    assert summary.startswith("summary: 1 of 2 shots animated, 1 failed") and "bad.wav" in summary
    assert read_takes(cli, out)["takes"] == {"LipSync_good": [1]}
