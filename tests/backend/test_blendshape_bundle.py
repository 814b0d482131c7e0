"""Blendshape bundles on disk: config.json's "output" field and decoder.output_channels round
trip through save/read/load, are checked field by field (one MODEL_INVALID sentence each),
the template must carry exactly the channels, and vertex bundles are written as before."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from w2s_helpers import DELETE, edit_config
from wav2sem.errors import MODEL_INVALID, Wav2SemError

CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel")


def _template(vertex_count: int = 60, channels=CHANNELS):
    from wav2sem.template import Template
    from wav2sem.testing import grid_template

    base = grid_template(vertex_count, 3)
    deltas = np.random.default_rng(0).normal(scale=0.003, size=(len(channels), vertex_count, 3)).astype(np.float32)
    return Template(base.vertices, None, base.regions, base.landmarks, tuple(channels), deltas)


def _config(template, arch: str = "direct"):
    from wav2sem.bundle import BundleConfig
    from wav2sem.models.talker import DecoderConfig
    from wav2sem.testing import tiny_encoder_spec

    return BundleConfig(name="tiny-blend", decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=2,
                                                                 feature_dim=16, output_channels=len(template.blendshape_names)),
                        fps=30.0, subjects=("a", "b"), encoder=tiny_encoder_spec(), semantic=None, arch=arch,
                        channels=template.blendshape_names)


@pytest.fixture(scope="module")
def blend_bundle(tmp_path_factory) -> Path:
    from wav2sem.bundle import build_model, save_bundle

    template = _template()
    return save_bundle(tmp_path_factory.mktemp("bs") / "bundle", _config(template), build_model(_config(template)), template)


def _one_sentence(exc: Wav2SemError) -> str:
    assert exc.code == MODEL_INVALID, (exc.code, exc.message)
    assert "\n" not in exc.message and "Traceback" not in exc.message and len(exc.message) < 400, exc.message
    return exc.message


@pytest.mark.parametrize("arch", ["direct", "faceformer"])
def test_a_blendshape_bundle_round_trips(tmp_path, arch):
    import torch

    from wav2sem.bundle import build_model, load_weights, read_bundle, save_bundle
    from wav2sem.bundle_config import BundleConfig

    template = _template()
    config = _config(template, arch)
    torch.manual_seed(0)
    net = build_model(config)
    directory = save_bundle(tmp_path / "b", config, net, template)
    data = json.loads((directory / "config.json").read_text())
    assert data["output"] == {"type": "blendshapes", "channels": list(CHANNELS)}
    assert data["decoder"]["output_channels"] == 3 and data["format_version"] == 2
    again = BundleConfig.from_dict(data)
    assert (again.decoder, again.channels, again.arch, again.subjects) == (config.decoder, config.channels, arch, config.subjects)
    bundle = read_bundle(directory)
    assert bundle.config.channels == CHANNELS and bundle.config.output_type == "blendshapes"
    assert bundle.template.blendshape_names == CHANNELS
    np.testing.assert_array_equal(bundle.template.blendshape_deltas, template.blendshape_deltas)
    loaded = load_weights(bundle)
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_vertex_bundles_are_written_as_before(tmp_path):
    from wav2sem.bundle import read_bundle
    from wav2sem.testing import write_tiny_bundle

    directory = write_tiny_bundle(tmp_path / "v", vertex_count=40, semantic=False)
    data = json.loads((directory / "config.json").read_text())
    assert data["format_version"] == 1 and "output" not in data and "output_channels" not in data["decoder"]
    config = read_bundle(directory).config
    assert config.output_type == "vertices" and config.channels == () and config.decoder.output_channels == 0
    # "output": {"type": "vertices"} written by hand means the same
    data["output"] = {"type": "vertices"}
    (directory / "config.json").write_text(json.dumps(data))
    assert read_bundle(directory).config == config


def _set(path: str, value):
    return lambda data: edit_config(data, path, value)


OUTPUT_CASES = {
    "output a string": (_set("output", "blendshapes"), "output must be an object"),
    "output a list": (_set("output", ["jawOpen"]), "output must be an object"),
    "output type unknown": (_set("output.type", "weights"), "output.type"),
    "output type missing": (_set("output.type", DELETE), "output.type"),
    "output unknown field": (_set("output.deltas", [1, 2]), "unknown fields"),
    "output absent": (_set("output", DELETE), "output_channels is 3"),
    "output type vertices": (_set("output", {"type": "vertices"}), "output_channels is 3"),
    "channels missing": (_set("output.channels", DELETE), "output.channels"),
    "channels empty": (_set("output.channels", []), "output.channels"),
    "channels a string": (_set("output.channels", "jawOpen"), "output.channels"),
    "channels numbers": (_set("output.channels", [1, 2, 3]), "output.channels"),
    "channels with an empty name": (_set("output.channels", ["jawOpen", "", "mouthFunnel"]), "output.channels"),
    "channels twice": (_set("output.channels", ["jawOpen", "jawOpen", "mouthFunnel"]), "'jawOpen' twice"),
    "fewer channels than outputs": (_set("output.channels", ["jawOpen", "mouthClose"]), "lists 2 channels"),
    "output_channels text": (_set("decoder.output_channels", "3"), "decoder.output_channels"),
    "output_channels negative": (_set("decoder.output_channels", -3), "decoder.output_channels"),
    "output_channels float": (_set("decoder.output_channels", 3.0), "decoder.output_channels"),
    "output_channels 0": (_set("decoder.output_channels", 0), "decoder.output_channels is 0"),
    "format newer": (_set("format_version", 3), "newer"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_bad_output_fields_are_one_model_invalid_sentence(tmp_path, blend_bundle, case):
    from wav2sem.bundle import read_bundle

    directory = Path(shutil.copytree(blend_bundle, tmp_path / "bad"))
    edit, expected = OUTPUT_CASES[case]
    data = edit(json.loads((directory / "config.json").read_text()))
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(Wav2SemError) as info:
        read_bundle(directory)
    message = _one_sentence(info.value)
    assert "config.json" in message and expected in message, message


TEMPLATE_CASES = {
    "no blendshapes": (lambda t: type(t)(t.vertices, None, t.regions, t.landmarks), "no blendshapes"),
    "another channel": (lambda t: type(t)(t.vertices, None, t.regions, t.landmarks, ("jawOpen", "mouthClose", "tongueOut"),
                                          t.blendshape_deltas), "no blendshape 'mouthFunnel'"),
    "another order": (lambda t: t.with_channels(("mouthClose", "jawOpen", "mouthFunnel")), "in their order"),
    "more channels": (lambda t: type(t)(t.vertices, None, t.regions, t.landmarks, CHANNELS + ("browInnerUp",),
                                        np.concatenate([t.blendshape_deltas, t.blendshape_deltas[:1]])), "in their order"),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_CASES))
def test_a_template_without_the_models_channels_is_refused(tmp_path, blend_bundle, case):
    from wav2sem.bundle import read_bundle, save_bundle, build_model
    from wav2sem.template import Template

    directory = Path(shutil.copytree(blend_bundle, tmp_path / "bad"))
    change, expected = TEMPLATE_CASES[case]
    template = change(Template.load(directory / "template.npz"))
    template.save(directory / "template.npz")
    with pytest.raises(Wav2SemError) as info:
        read_bundle(directory)
    assert expected in _one_sentence(info.value) and str(directory) in info.value.message
    config = read_bundle(blend_bundle).config
    with pytest.raises(Wav2SemError) as info:            # nor is such a bundle written
        save_bundle(tmp_path / "new", config, build_model(config), template)
    assert expected in _one_sentence(info.value)
    assert not (tmp_path / "new").exists()
