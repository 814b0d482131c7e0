"""Official-layout FaceFormer checkpoints (built here from the names and shapes documented in
REFERENCE.md) -> `wav2sem convert` -> bundle; strict loading and clear failures."""
from __future__ import annotations

import json
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from w2s_helpers import assert_clean_failure, run_wav2sem, run_wav2sem_inprocess, speechlike
from wav2sem.testing import TINY_WAV2VEC2

D = 16            # feature_dim of the fake checkpoints (VOCASET uses 64, BIWI 128)
V = 40            # template vertices
OLD_G = "encoder.pos_conv_embed.conv.weight_g"
OLD_V = "encoder.pos_conv_embed.conv.weight_v"
NEW_G = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
NEW_V = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"


def sinusoid_table(period: int, d: int) -> torch.Tensor:
    pe = torch.zeros(period, d)
    pos = torch.arange(period).float().unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def official_state(n_subjects: int, period: int, seed: int = 0, masked_spec_embed: bool = True) -> dict:
    """A FaceFormer state dict in the official layout: transformers Wav2Vec2Model names under
    `audio_encoder.` with the OLD weight-norm names, then the decoder parts."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    encoder = Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2))
    state = {}
    for key, value in encoder.state_dict().items():
        key = {NEW_G: OLD_G, NEW_V: OLD_V}.get(key, key)
        if key == "masked_spec_embed" and not masked_spec_embed:
            continue
        state["audio_encoder." + key] = value.clone()
    assert "audio_encoder." + OLD_G in state and "audio_encoder." + OLD_V in state
    hidden = TINY_WAV2VEC2["hidden_size"]
    afm, vm, vmr = nn.Linear(hidden, D), nn.Linear(V * 3, D), nn.Linear(D, V * 3)
    nn.init.normal_(vmr.weight, std=0.02)            # non-zero so the output moves
    nn.init.normal_(vmr.bias, std=0.002)
    for name, layer in (("audio_feature_map", afm), ("vertice_map", vm), ("vertice_map_r", vmr)):
        state[f"{name}.weight"] = layer.weight.detach().clone()
        state[f"{name}.bias"] = layer.bias.detach().clone()
    state["PPE.pe"] = sinusoid_table(period, D).unsqueeze(0).repeat(1, 600 // period + 1, 1)
    dec = nn.TransformerDecoderLayer(D, 4, 2 * D, batch_first=True)
    for key, value in dec.state_dict().items():
        state[f"transformer_decoder.layers.0.{key}"] = value.detach().clone()
    state["obj_vector.weight"] = torch.randn(D, n_subjects)
    return state


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    path = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(123)  # weights differ from the checkpoint's: convert must take the checkpoint's
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def template_npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("tmpl") / "T.npy"
    rng = np.random.default_rng(0)
    np.save(path, (rng.normal(size=(V, 3)) * 0.05).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def vocaset_state():
    return official_state(n_subjects=8, period=30)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, vocaset_state, encoder_dir, template_npy):
    """The VOCASET-style checkpoint converted by a real `wav2sem convert` subprocess."""
    work = tmp_path_factory.mktemp("convert")
    ckpt = work / "vocaset.pth"
    torch.save(vocaset_state, ckpt)
    out = work / "bundle"
    proc = run_wav2sem("convert", "--checkpoint", ckpt, "--dataset", "vocaset", "--encoder", encoder_dir,
                       "--template", template_npy, "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


def direct_forward(state: dict, config, waveform: np.ndarray, subject: int) -> np.ndarray:
    """The FaceFormer forward computed here step by step: the state dict loaded by hand (own
    weight-norm renaming) into `build_model`'s network, reference normalisation, conv features
    interpolated to 30 fps before projection + transformer, and the reference decoder loop."""
    from wav2sem.bundle import build_model

    net = build_model(config).eval()
    renamed = {}
    for key, value in state.items():
        if key == "audio_encoder." + OLD_G:
            key = "audio_encoder." + NEW_G
        elif key == "audio_encoder." + OLD_V:
            key = "audio_encoder." + NEW_V
        renamed[key] = value
    result = net.load_state_dict(renamed, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"audio_encoder.masked_spec_embed"}
    with torch.inference_mode():
        x = (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)
        wav = torch.from_numpy(x.astype(np.float32)).unsqueeze(0)
        enc = net.audio_encoder
        conv = enc.feature_extractor(wav)                                  # (1, C, N)
        n = conv.shape[-1]
        conv = F.interpolate(conv, size=int(n / 50 * 30), mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = enc.feature_projection(conv)
        hidden = enc.encoder(hidden).last_hidden_state
        memory = net.audio_feature_map(hidden)
        onehot = torch.zeros(1, config.decoder.n_subjects)
        onehot[0, subject] = 1
        style = (onehot @ state["obj_vector.weight"].T).unsqueeze(1)     # obj_vector(one_hot)
        offsets = net.decode_reference(memory, style, memory.shape[1])
    return offsets[0].numpy().reshape(-1, V, 3)


def test_convert_vocaset_bundle_layout(converted, vocaset_state, template_npy):
    from safetensors.torch import load_file

    from wav2sem.commands.convert import DATASET_PRESETS

    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["fps"] == 30
    assert cfg["decoder"]["alignment"] == "interpolate"
    assert cfg["decoder"]["period"] == 30
    assert cfg["decoder"]["feature_dim"] == D
    assert cfg["decoder"]["vertex_count"] == V
    assert cfg["decoder"]["n_subjects"] == 8
    assert cfg["decoder"]["n_layers"] == 1
    assert cfg["subjects"] == list(DATASET_PRESETS["vocaset"]["subjects"])
    assert cfg["semantic"] is None
    weights = load_file(str(converted / "model.safetensors"))
    for key in ("vertice_map_r.weight", "obj_vector.weight", "PPE.pe",
                "transformer_decoder.layers.0.self_attn.in_proj_weight",
                "audio_encoder.encoder.layers.1.feed_forward.output_dense.weight"):
        assert torch.equal(weights[key], vocaset_state[key]), key
    # weight-normed positional conv: old names mapped onto the parametrization
    assert torch.equal(weights["audio_encoder." + NEW_G], vocaset_state["audio_encoder." + OLD_G])
    assert torch.equal(weights["audio_encoder." + NEW_V], vocaset_state["audio_encoder." + OLD_V])
    with np.load(converted / "template.npz") as t:
        assert np.array_equal(t["vertices"], np.load(template_npy))


def test_converted_bundle_inference_equals_direct_forward(converted, vocaset_state):
    from wav2sem.bundle import read_bundle
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    wave = speechlike(1.6, seed=11)
    model = load_model(converted, "cpu")
    for subject in (0, 5):
        got = generate(model, wave, subject=subject).offsets
        want = direct_forward(vocaset_state, read_bundle(converted).config, wave, subject)
        assert got.shape == want.shape == (int(((16000 * 1.6 - 400) // 320 + 1) / 50 * 30), V, 3)
        assert np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_wrapped_state_dict_and_no_masked_spec_embed_convert_identically(tmp_path, vocaset_state, converted,
                                                                         encoder_dir, template_npy):
    from safetensors.torch import load_file

    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": vocaset_state, "epoch": 3}, wrapped)  # non-tensor siblings are fine
    bare = tmp_path / "bare.pth"
    torch.save({k: v for k, v in vocaset_state.items() if k != "audio_encoder.masked_spec_embed"}, bare)
    common = ("--dataset", "vocaset", "--encoder", encoder_dir, "--template", template_npy)
    # in-process through the real command-line entry point (the subprocess path is covered above)
    procs = [run_wav2sem_inprocess("convert", "--checkpoint", wrapped, *common, "-o", tmp_path / "b1"),
             run_wav2sem_inprocess("convert", "--checkpoint", bare, *common, "-o", tmp_path / "b2")]
    for p in procs:
        assert p.returncode == 0, p.stderr
    reference = load_file(str(converted / "model.safetensors"))
    for name in ("b1", "b2"):
        weights = load_file(str(tmp_path / name / "model.safetensors"))
        assert set(weights) == set(reference)
        for key in reference:
            if key != "audio_encoder.masked_spec_embed":
                assert torch.equal(weights[key], reference[key]), (name, key)


def test_convert_failures_name_the_problem_and_write_nothing(tmp_path, vocaset_state, encoder_dir, template_npy):
    missing = dict(vocaset_state)
    del missing["transformer_decoder.layers.0.norm2.bias"]
    unexpected = dict(vocaset_state)
    unexpected["audio_feature_map.extra_scale"] = torch.ones(3)
    wrong = dict(vocaset_state)
    wrong["audio_feature_map.bias"] = torch.zeros(D + 1)
    cases = {"missing": missing, "unexpected": unexpected, "wrong": wrong}
    args = []
    for name, state in cases.items():
        torch.save(state, tmp_path / f"{name}.pth")
        args.append(("convert", "--checkpoint", tmp_path / f"{name}.pth", "--dataset", "vocaset", "--encoder",
                     encoder_dir, "--template", template_npy, "-o", tmp_path / "out" / name))
    other_template = tmp_path / "T33.npy"
    np.save(other_template, np.zeros((33, 3), np.float32))
    torch.save(vocaset_state, tmp_path / "good.pth")
    args.append(("convert", "--checkpoint", tmp_path / "good.pth", "--dataset", "vocaset", "--encoder", encoder_dir,
                 "--template", other_template, "-o", tmp_path / "out" / "template"))
    # the first as a real subprocess, the rest through the same entry point in-process (start-up is slow)
    p_missing = run_wav2sem(*args[0])
    p_unexpected, p_wrong, p_template = (run_wav2sem_inprocess(*a) for a in args[1:])
    assert_clean_failure(p_missing, "transformer_decoder.layers.0.norm2.bias", "missing")
    assert_clean_failure(p_unexpected, "audio_feature_map.extra_scale", "unexpected")
    line = assert_clean_failure(p_wrong, "audio_feature_map.bias")
    assert f"({D + 1},)" in line and f"({D},)" in line
    line = assert_clean_failure(p_template, "33")
    assert str(V) in line
    # nothing was written: no bundle folder, no staging leftovers
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_convert_biwi_preset(tmp_path, encoder_dir):
    state = official_state(n_subjects=6, period=25, seed=4)
    np.save(tmp_path / "T.npy", np.random.default_rng(1).normal(size=(V, 3)).astype(np.float32))
    torch.save(state, tmp_path / "biwi.pth")
    proc = run_wav2sem_inprocess("convert", "--checkpoint", tmp_path / "biwi.pth", "--dataset", "BIWI", "--encoder", encoder_dir,
                       "--template", tmp_path / "T.npy", "-o", tmp_path / "biwi")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "biwi" / "config.json").read_text())
    assert cfg["fps"] == 25
    assert cfg["decoder"]["alignment"] == "pair"
    assert cfg["decoder"]["period"] == 25
    assert cfg["subjects"] == ["F2", "F3", "F4", "M3", "M4", "M5"]

    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    wave = speechlike(1.3, seed=5)
    res = generate(load_model(tmp_path / "biwi", "cpu"), wave, subject="M3")
    conv_frames = (16000 * 1.3 - 400) // 320 + 1
    assert res.fps == 25
    assert res.offsets.shape == (int(conv_frames) // 2, V, 3)
    assert np.isfinite(res.offsets).all() and np.abs(res.offsets).max() > 1e-4


def test_convert_never_overwrites_what_is_not_a_bundle(tmp_path, vocaset_state, encoder_dir, template_npy, converted):
    """`-o ~/models` (a folder of the user's files) or `-o` an existing file: one sentence,
    everything kept; `-o` an earlier bundle replaces it."""
    torch.save(vocaset_state, tmp_path / "vocaset.pth")
    common = ("--checkpoint", tmp_path / "vocaset.pth", "--dataset", "vocaset", "--encoder", encoder_dir,
              "--template", template_npy)
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    single = tmp_path / "model.bin"
    single.write_bytes(b"user data")
    p_folder = run_wav2sem_inprocess("convert", *common, "-o", models)
    p_file = run_wav2sem_inprocess("convert", *common, "-o", single)
    assert "not a model bundle" in assert_clean_failure(p_folder, str(models))
    assert "not a model bundle" in assert_clean_failure(p_file, str(single))
    assert [p.name for p in models.iterdir()] == ["notes.txt"] and (models / "notes.txt").read_text() == "mine"
    assert single.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "models", "vocaset.pth"]

    import shutil

    earlier = tmp_path / "earlier"
    shutil.copytree(converted, earlier)
    (earlier / "config.json").write_text((earlier / "config.json").read_text().replace('"fps": 30.0', '"fps": 29.0'))
    assert json.loads((earlier / "config.json").read_text())["fps"] == 29
    again = run_wav2sem_inprocess("convert", *common, "-o", earlier)
    assert again.returncode == 0, again.stderr
    assert json.loads((earlier / "config.json").read_text())["fps"] == 30
