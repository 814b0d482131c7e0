"""A converted CodeTalker checkpoint (issue 14) in Blender 5.0 (bpy module, the installed add-on,
a real backend): 22 s of speech, past the official code's 600-frame limit, becomes a take that
follows `wav2sem infer`'s own offsets for the same bundle."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bpy_helpers import PACKAGE, VERTEX_COUNT, add_sound_strip, bpy, evaluated_coords, make_head, write_wav
from test_addon import STRIP_FRAME, expected_mesh, take_frames


@pytest.fixture(scope="module")
def codetalker_bundle(workdir, bundle):
    from wav2sem.testing_codetalker import write_tiny_codetalker_bundle
    return write_tiny_codetalker_bundle(workdir / "codetalker", bundle / "template.npz", vertices=VERTEX_COUNT)


def test_codetalker_take_past_600_frames(scene, template, addon, bundle, codetalker_bundle, workdir):
    speech = write_wav(workdir / "long_line.wav", 22.0)
    out = workdir / "codetalker.npy"
    subprocess.run([sys.executable, "-m", "wav2sem", "infer", str(speech), "-o", str(out), "--model",
                    str(codetalker_bundle)], check=True, capture_output=True, timeout=600)
    reference = np.load(out).astype(np.float64)
    assert reference.shape[0] > 600
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.model = str(codetalker_bundle)
    try:
        head = make_head(template)
        add_sound_strip(scene, speech, STRIP_FRAME)
        assert bpy.ops.wav2sem.generate_lipsync(object="Head") == {"FINISHED"}
        errors, norms = [], []
        for frame in range(STRIP_FRAME, STRIP_FRAME + take_frames(reference)):
            expected = expected_mesh(template, reference, frame)
            rest = expected_mesh(template, np.zeros_like(reference), frame)
            errors.append(np.sum((evaluated_coords(head, frame) - expected) ** 2))
            norms.append(np.sum((expected - rest) ** 2))
        assert sum(norms) > 0
        assert np.sqrt(sum(errors) / sum(norms)) <= prefs.tolerance + 1e-3
    finally:
        prefs.model = str(bundle)
