"""Wav2Sem: reference key mapping onto transformers' Wav2Vec2Model, the fused semantic vector
at inference (Linear applied, unlike the reference release), and utterance segmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from w2s_helpers import SR, speechlike
from wav2sem.errors import MODEL_INVALID, Wav2SemError
from wav2sem.testing import TINY_WAV2VEC2

# ----- key mapping ------------------------------------------------------------------------
TOP = {"feature_extractor.": "FeatureExtractor.", "feature_projection.": "FeatureProjection.", "encoder.": "Encoder."}


def to_reference_names(state: dict, keep_masked_spec_embed: bool = False) -> dict:
    """transformers Wav2Vec2Model names -> the released Wav2Sem names (written from REFERENCE.md:
    FeatureExtractor.conv_layers.N.conv, ..., Encoder.pos_conv_embed.conv.weight_g / weight_v)."""
    out = {}
    for key, value in state.items():
        if key == "masked_spec_embed":
            if keep_masked_spec_embed:
                out[key] = value.clone()
            continue
        key = key.replace("pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv_embed.conv.weight_g")
        key = key.replace("pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv_embed.conv.weight_v")
        for ours, theirs in TOP.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        else:
            raise AssertionError(f"unexpected transformers key {key}")
        out[key] = value.clone()
    return out


@pytest.fixture(scope="module")
def source_encoder():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(77)
    return Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).eval()


@pytest.fixture()
def fresh_net(tiny_bundle):
    from wav2sem.bundle import load_weights, read_bundle

    return load_weights(read_bundle(tiny_bundle))


def test_reference_names_are_the_documented_ones(source_encoder):
    ref = to_reference_names(source_encoder.state_dict())
    for key in ("FeatureExtractor.conv_layers.0.conv.weight", "FeatureExtractor.conv_layers.0.layer_norm.weight",
                "FeatureExtractor.conv_layers.6.conv.weight", "FeatureProjection.layer_norm.bias",
                "FeatureProjection.projection.weight", "Encoder.pos_conv_embed.conv.weight_g",
                "Encoder.pos_conv_embed.conv.weight_v", "Encoder.layer_norm.weight",
                "Encoder.layers.1.attention.q_proj.weight", "Encoder.layers.0.attention.out_proj.bias",
                "Encoder.layers.0.layer_norm.weight", "Encoder.layers.1.feed_forward.intermediate_dense.weight",
                "Encoder.layers.0.feed_forward.output_dense.bias", "Encoder.layers.1.final_layer_norm.weight"):
        assert key in ref, key


def expected_semantic(source_encoder, fusion_w, fusion_b, wav: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        hidden = source_encoder(wav).last_hidden_state.mean(dim=1)   # (1, H)
        return hidden @ fusion_w.T + fusion_b


@pytest.mark.parametrize("masked_spec_embed", [False, True])
def test_standalone_wav2sem_weights_load(source_encoder, fresh_net, masked_spec_embed):
    from wav2sem.checkpoints import load_wav2sem_weights, map_wav2sem_state

    ref = to_reference_names(source_encoder.state_dict(), keep_masked_spec_embed=masked_spec_embed)
    encoder_state, fusion_state = map_wav2sem_state(ref)
    assert fusion_state == {}
    assert "feature_extractor.conv_layers.0.conv.weight" in encoder_state
    assert "encoder.layers.1.attention.k_proj.weight" in encoder_state

    fusion_before = {k: v.clone() for k, v in fresh_net.semantic_fusion.state_dict().items()}
    load_wav2sem_weights(fresh_net, ref, "wav2sem.pt")
    for key, value in source_encoder.state_dict().items():
        if key != "masked_spec_embed":
            assert torch.equal(fresh_net.semantic_encoder.state_dict()[key], value), key
    # the fusion layer is untouched when the file does not carry bert_feature_map
    for key, value in fresh_net.semantic_fusion.state_dict().items():
        assert torch.equal(value, fusion_before[key])
    wav = torch.from_numpy(speechlike(1.0, seed=3)).unsqueeze(0)
    with torch.inference_mode():
        got = fresh_net.semantic_vector(wav)
    want = expected_semantic(source_encoder, fusion_before["weight"], fusion_before["bias"], wav)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_host_model_wav2bert_prefix_and_bert_feature_map(source_encoder, fresh_net, tmp_path):
    from wav2sem.checkpoints import load_wav2sem_weights, map_wav2sem_state

    hidden = TINY_WAV2VEC2["hidden_size"]
    torch.manual_seed(5)
    fusion_w, fusion_b = torch.randn(hidden, hidden) * 0.2, torch.randn(hidden) * 0.2
    state = {"Wav2Bert." + k: v for k, v in to_reference_names(source_encoder.state_dict()).items()}
    state["bert_feature_map.weight"] = fusion_w
    state["bert_feature_map.bias"] = fusion_b
    state["audio_feature_map.weight"] = torch.zeros(3, 3)       # a host-model key: ignored here
    encoder_state, fusion_state = map_wav2sem_state(state)
    assert set(fusion_state) == {"weight", "bias"}
    assert not any(k.startswith(("Wav2Bert.", "audio_feature_map")) for k in encoder_state)

    path = tmp_path / "host_wav2sem.pth"
    torch.save({"state_dict": state}, path)
    load_wav2sem_weights(fresh_net, path)                       # from a file this time
    assert torch.equal(fresh_net.semantic_fusion.weight, fusion_w)
    wav = torch.from_numpy(speechlike(1.2, seed=4)).unsqueeze(0)
    with torch.inference_mode():
        got = fresh_net.semantic_vector(wav)
    want = expected_semantic(source_encoder, fusion_w, fusion_b, wav)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the Linear is really applied: the raw mean-pooled vector is something else
    with torch.inference_mode():
        raw = source_encoder(wav).last_hidden_state.mean(dim=1)
    assert (got - raw).abs().max() > 1e-2


@pytest.mark.parametrize("prefix", ["", "Wav2Bert."])
def test_missing_and_unexpected_wav2sem_keys_are_named(source_encoder, fresh_net, prefix):
    from wav2sem.checkpoints import load_wav2sem_weights

    ref = {prefix + k: v for k, v in to_reference_names(source_encoder.state_dict()).items()}
    missing = dict(ref)
    del missing[prefix + "Encoder.layers.1.final_layer_norm.bias"]
    with pytest.raises(Wav2SemError) as info:
        load_wav2sem_weights(fresh_net, missing, "w.pt")
    assert info.value.code == MODEL_INVALID
    assert "layers.1.final_layer_norm.bias" in info.value.message and "missing" in info.value.message

    unexpected = dict(ref)
    unexpected[prefix + "Encoder.layers.0.attention.rotary.weight"] = torch.zeros(2)
    with pytest.raises(Wav2SemError) as info:
        load_wav2sem_weights(fresh_net, unexpected, "w.pt")
    assert info.value.code == MODEL_INVALID
    assert "layers.0.attention.rotary.weight" in info.value.message and "unexpected" in info.value.message

    wrong = dict(ref)
    wrong[prefix + "FeatureProjection.projection.bias"] = torch.zeros(5)
    with pytest.raises(Wav2SemError) as info:
        load_wav2sem_weights(fresh_net, wrong, "w.pt")
    assert info.value.code == MODEL_INVALID
    assert "feature_projection.projection.bias" in info.value.message.lower().replace("featureprojection", "feature_projection")


# ----- the semantic vector at inference ---------------------------------------------------
def test_semantic_vector_is_fusion_of_mean_pooled_hidden_state(tiny_model):
    net = tiny_model.net
    wav = torch.from_numpy(speechlike(1.5, seed=8)).unsqueeze(0)
    with torch.inference_mode():
        got = net.semantic_vector(wav)
        hidden = net.semantic_encoder(wav).last_hidden_state
        pooled = hidden.mean(dim=1)
        want = pooled @ net.semantic_fusion.weight.T + net.semantic_fusion.bias
    assert got.shape == (1, net.audio_encoder.config.hidden_size)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert (got - pooled).abs().max() > 1e-3


def test_generate_with_semantic_equals_hand_fused_forward(tiny_model):
    """For a clip <= 20 s: memory = audio_feature_map(encoder features + fused sentence vector
    on every frame), decoded by the reference loop."""
    from wav2sem.inference import generate
    from wav2sem.models.encoders import encode_aligned

    net = tiny_model.net
    wave = speechlike(2.0, seed=9)
    got = generate(tiny_model, wave, subject=1, semantic=True).offsets
    with torch.inference_mode():
        x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        wav = torch.from_numpy(x.astype(np.float32)).unsqueeze(0)
        hidden = encode_aligned(net.audio_encoder, wav, 30.0, "interpolate")
        sem = net.semantic_fusion(net.semantic_encoder(wav).last_hidden_state.mean(dim=1))
        memory = net.audio_feature_map(hidden + sem.unsqueeze(1))
        style = net.obj_vector(torch.tensor([[0.0, 1.0, 0.0]])).unsqueeze(1)
        want = net.decode_reference(memory, style, memory.shape[1])[0].numpy().reshape(got.shape)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_semantic_switch_changes_output_and_warns_without_module(tiny_model, tiny_model_plain):
    from wav2sem.inference import generate

    wave = speechlike(1.5, seed=10)
    on = generate(tiny_model, wave, semantic=True)
    off = generate(tiny_model, wave, semantic=False)
    assert on.offsets.shape == off.offsets.shape
    assert np.abs(on.offsets - off.offsets).max() > 1e-4
    assert on.warnings == [] and off.warnings == []
    plain = generate(tiny_model_plain, wave, semantic=True)
    assert any("Wav2Sem" in w for w in plain.warnings)
    plain_off = generate(tiny_model_plain, wave, semantic=False)
    assert plain_off.warnings == []
    np.testing.assert_array_equal(plain.offsets, plain_off.offsets)


# ----- segmentation -----------------------------------------------------------------------
def bursts_with_pauses(total_s: float, burst_s: float, pause_s: float, seed: int = 0):
    """Speech-like bursts separated by silent pauses; returns (signal, list of pause intervals)."""
    parts, pauses, t = [], [], 0
    rng = np.random.default_rng(seed)
    n_total = int(total_s * SR)
    while t < n_total:
        n = min(int(burst_s * SR), n_total - t)
        parts.append(speechlike(n / SR, seed=int(rng.integers(1 << 30))))
        t += n
        if t >= n_total:
            break
        p = min(int(pause_s * SR), n_total - t)
        parts.append((rng.standard_normal(p) * 1e-5).astype(np.float32))   # near-digital silence
        pauses.append((t, t + p))
        t += p
    return np.concatenate(parts)[:n_total], pauses


def check_cover(spans, n, max_len):
    assert spans[0][0] == 0 and spans[-1][1] == n
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert b == c, f"gap or overlap at {b} / {c}"
    for a, b in spans:
        assert 0 < b - a <= max_len, f"span {a}..{b} is {(b - a) / SR:.2f} s"


def test_short_clip_is_one_span():
    from wav2sem.segmentation import utterance_spans

    for seconds in (0.5, 12.0, 20.0):
        x = speechlike(seconds, seed=1)
        assert utterance_spans(x, SR) == [(0, len(x))]


def test_long_clip_is_cut_at_pauses():
    from wav2sem.segmentation import utterance_spans

    x, pauses = bursts_with_pauses(50.0, burst_s=3.0, pause_s=0.5)
    spans = utterance_spans(x, SR)
    check_cover(spans, len(x), 20 * SR)
    assert len(spans) >= 3
    for _, end in spans[:-1]:                     # every cut lies inside a pause
        assert any(a <= end <= b for a, b in pauses), f"cut at {end / SR:.2f} s is not in a pause"
    # the latest pause that fits is used, so spans are long (not chopped at every pause)
    assert all(b - a > 15 * SR for a, b in spans[:-1])


def test_long_clip_without_pauses_gets_equal_windows():
    from wav2sem.segmentation import utterance_spans

    x = speechlike(50.0, seed=2)
    spans = utterance_spans(x, SR)
    check_cover(spans, len(x), 20 * SR)
    assert len(spans) == 3
    lengths = [b - a for a, b in spans]
    assert max(lengths) - min(lengths) <= 1


def test_span_stays_within_limit_when_a_pause_leaves_a_short_tail():
    """A pause 0.8 s before the end of a 20.4 s clip: the tail (< 1 s) must not be merged into
    a span that then exceeds the 20 s limit."""
    from wav2sem.segmentation import utterance_spans

    head = speechlike(19.4, seed=3)
    pause = (np.random.default_rng(0).standard_normal(int(0.4 * SR)) * 1e-5).astype(np.float32)
    tail = speechlike(0.6, seed=4)
    x = np.concatenate([head, pause, tail])
    spans = utterance_spans(x, SR)
    check_cover(spans, len(x), 20 * SR)


# ----- convert: the Wav2Sem encoder's size is read from its weights ----------------------------
SMALL_WAV2SEM = dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2, intermediate_size=96,
                     conv_dim=(16, 16, 24, 24, 32, 32, 48), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)


@pytest.mark.parametrize("beside", [False, True], ids=["shapes only", "config.json beside"])
def test_convert_reads_a_non_base_wav2sem_encoder_from_its_weights(tmp_path, beside):
    """A Wav2Sem encoder of another size than wav2vec 2.0 base (here 3 layers of width 128, its
    own conv widths and positional conv) converts, loads strictly and computes what the source
    encoder computes. Without a config the heads are hidden/64; a config.json beside the weights
    gives them (4 here, which the shapes cannot tell)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from test_convert import V, official_state
    from w2s_helpers import run_wav2sem_inprocess
    from wav2sem.loaded_model import load_model

    sizes = {**SMALL_WAV2SEM, "num_attention_heads": 4 if beside else 2}
    torch.manual_seed(5)
    source = Wav2Vec2Model(Wav2Vec2Config(**sizes)).eval()
    weights = tmp_path / "wav2sem"
    weights.mkdir()
    state = to_reference_names(source.state_dict())
    state["bert_feature_map.weight"] = torch.randn(TINY_WAV2VEC2["hidden_size"], sizes["hidden_size"]) * 0.05
    state["bert_feature_map.bias"] = torch.zeros(TINY_WAV2VEC2["hidden_size"])
    torch.save(state, weights / "wav2sem.pth")
    if beside:
        Wav2Vec2Config(**sizes).save_pretrained(weights)
    torch.save(official_state(n_subjects=8, period=30), tmp_path / "vocaset.pth")
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(tmp_path / "encoder")
    np.save(tmp_path / "T.npy", np.random.default_rng(0).normal(size=(V, 3)).astype(np.float32))
    proc = run_wav2sem_inprocess("convert", "--checkpoint", tmp_path / "vocaset.pth", "--dataset", "vocaset",
                                 "--encoder", tmp_path / "encoder", "--template", tmp_path / "T.npy",
                                 "--wav2sem", weights / "wav2sem.pth", "-o", tmp_path / "bundle")
    assert proc.returncode == 0, proc.stderr
    model = load_model(tmp_path / "bundle", "cpu")                       # strict load
    got = model.net.semantic_encoder.config
    for key, value in sizes.items():
        assert getattr(got, key) == (list(value) if isinstance(value, tuple) else value), key
    wav = torch.from_numpy(speechlike(0.8, seed=2)).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(model.net.semantic_encoder(wav).last_hidden_state, source(wav).last_hidden_state)
        torch.testing.assert_close(model.net.semantic_fusion.weight, state["bert_feature_map.weight"])


@pytest.mark.parametrize("name, sizes", [
    ("base", {}),
    ("large-lv60", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    ("no transformer layers", dict(num_hidden_layers=0)),     # the official code builds these too
])
def test_wav2vec2_sizes_read_from_shapes_match_the_published_configs(name, sizes):
    """Built on the meta device (shapes, no memory): the published base and large-lv60 layouts,
    and one without transformer layers."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from wav2sem.checkpoints import _wav2vec2_sizes

    config = Wav2Vec2Config(**sizes)
    with torch.device("meta"):
        state = Wav2Vec2Model(config).state_dict()
    got = _wav2vec2_sizes(to_reference_names_state(state), name)
    for key, value in got.items():
        want = getattr(config, key)
        assert (list(want) if isinstance(want, tuple) else want) == value, key


def to_reference_names_state(state: dict) -> dict:
    """transformers names -> reference names -> back through map_wav2sem_state (the convert path)."""
    from wav2sem.checkpoints import map_wav2sem_state

    encoder, _ = map_wav2sem_state(to_reference_names(state))
    return encoder
