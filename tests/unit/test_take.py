"""core/take.py: one take without bpy: the plan from the mesh's facts, the request each mode
asks for, and the prepared take of each output mode from real .npy files."""
from __future__ import annotations

import numpy as np
import pytest

from wav2sem_lipsync.core import face_plan, mapping, protocol, take
from wav2sem_lipsync.core.jobs import GenerateRequest

CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel")
V, T, FPS = 40, 30, 30.0


def facts(vertex_count=V, keys=(), stored=(), strengths=(("jaw", 1.0), ("lips", 1.0), ("upper_face", 0.0))):
    return take.MeshFacts("'Head'", vertex_count, tuple(keys), tuple(stored), tuple(strengths))


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    template = rng.normal(size=(V, 3)).astype(np.float32)
    arrays = {"template": template,
              "blendshapes": rng.normal(scale=0.01, size=(len(CHANNELS), V, 3)).astype(np.float32),
              "weights": rng.uniform(size=(T, len(CHANNELS))).astype(np.float32),
              "offsets": rng.normal(scale=0.01, size=(T, V, 3)).astype(np.float32)}
    paths = {}
    for name, array in arrays.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], array)
    return paths, arrays


def blendshape_info(paths):
    return protocol.ModelInfo("tiny", FPS, V, paths["template"], output="blendshapes", channels=CHANNELS,
                              blendshapes=paths["blendshapes"])


def vertex_info(paths, basis=None):
    return protocol.ModelInfo("tiny", FPS, V, paths["template"], output_basis=basis)


def test_each_mode_asks_for_what_it_writes(files, tmp_path):
    paths, _ = files
    request = GenerateRequest("/a.wav", output="/o.npy")
    keys_plan = take.plan(blendshape_info(paths), facts(keys=("jawOpen", "mouthFunnel")))
    assert keys_plan.mode == face_plan.KEYS
    asked = take.request_for(keys_plan, blendshape_info(paths), request, str(tmp_path))
    assert isinstance(asked, GenerateRequest) and not asked.offsets and asked.weights_output.endswith("weights.npy")
    channels_plan = take.plan(blendshape_info(paths), facts())
    assert channels_plan.mode == face_plan.CHANNELS
    assert take.request_for(channels_plan, blendshape_info(paths), request, str(tmp_path)).weights_output
    offsets_plan = take.plan(vertex_info(paths), facts())
    assert take.request_for(offsets_plan, vertex_info(paths), request, str(tmp_path)) is None   # dense offsets
    factored = vertex_info(paths, basis="/basis.npy")
    asked = take.request_for(take.plan(factored, facts()), factored, request, str(tmp_path))
    assert asked.factors and not asked.offsets and asked.coefficients_output.endswith("coefficients.npy")
    refused = take.plan(vertex_info(paths), facts(vertex_count=7))
    assert take.request_for(refused, vertex_info(paths), request, str(tmp_path)) == refused.problem


def test_prepare_gives_each_mode_its_take(files):
    paths, arrays = files
    settings = take.TakeSettings(target_fps=24.0)
    info = blendshape_info(paths)
    weights = protocol.GenerateResult(None, T, FPS, V, weights=paths["weights"], channels=CHANNELS)
    mesh = facts(keys=("jawOpen", "mouthFunnel"))
    key_take = take.prepare(take.plan(info, mesh), info, weights, arrays["template"], mesh, settings)
    assert isinstance(key_take, face_plan.KeyTake) and key_take.keys == ("jawOpen", "mouthFunnel")
    assert key_take.frames == 24                                  # 1 s at the scene's 24 fps
    assert "2 face keys (jawOpen, mouthFunnel)" in take.detail(key_take, len(CHANNELS))

    mesh = facts()
    channel_take = take.prepare(take.plan(info, mesh), info, weights, arrays["template"], mesh, settings)
    assert isinstance(channel_take, mapping.PreparedTake) and channel_take.compact.weights.shape == (24, len(CHANNELS))
    assert channel_take.key_names == CHANNELS

    vertex = vertex_info(paths)
    dense = protocol.GenerateResult(paths["offsets"], T, FPS, V)
    offsets_take = take.prepare(take.plan(vertex, mesh), vertex, dense, arrays["template"], mesh, settings)
    assert isinstance(offsets_take, mapping.PreparedTake) and offsets_take.frames == 24


def test_group_strengths_scale_the_channel_take(files):
    paths, arrays = files
    info = blendshape_info(paths)
    weights = protocol.GenerateResult(None, T, FPS, V, weights=paths["weights"], channels=CHANNELS)
    settings = take.TakeSettings(target_fps=FPS)
    full = take.prepare(take.plan(info, facts()), info, weights, arrays["template"], facts(), settings)
    quiet_jaw = facts(strengths=(("jaw", 0.5), ("lips", 1.0), ("upper_face", 0.0)))
    half = take.prepare(take.plan(info, quiet_jaw), info, weights, arrays["template"], quiet_jaw, settings)
    jaw = CHANNELS.index("jawOpen")
    np.testing.assert_allclose(half.compact.weights[:, jaw], 0.5 * full.compact.weights[:, jaw], rtol=1e-6)
    np.testing.assert_allclose(half.compact.weights[:, 1:], full.compact.weights[:, 1:], rtol=1e-6)


def test_missing_outputs_and_refusals_are_sentences(files):
    paths, arrays = files
    info = blendshape_info(paths)
    no_weights = protocol.GenerateResult("/o.npy", T, FPS, V)
    with pytest.raises(mapping.MappingError, match="returned no weights for 'Head'"):
        take.prepare(take.plan(info, facts()), info, no_weights, arrays["template"], facts(), take.TakeSettings(FPS))
    small = facts(vertex_count=7)
    with pytest.raises(mapping.MappingError, match="'Head' has no ARKit-named face shape keys"):
        take.prepare(take.plan(info, small), info, no_weights, arrays["template"], small, take.TakeSettings(FPS))
