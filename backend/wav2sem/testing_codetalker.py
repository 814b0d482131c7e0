"""Tiny CodeTalker checkpoints in the official layout, from the documented names and shapes
(REFERENCE.md; github.com/Doubiiu/CodeTalker models/stage1_*.py, stage2.py; the Wav2Sem
release's CodeTalker_Wav2Sem/models/stage2.py and wav2bert.py), with seeded numpy values.

The same function feeds the tests (tests/backend/test_codetalker.py) and the script that ran
the official code on them once (benchmarks/codetalker_official.py --make-reference): every
tensor comes from numpy's generator, not from a library's initialisation, so the weights are
the same under any torch or transformers version. The official stage 2 hard-codes the speech
width 768 (`audio_feature_map`, `bert_feature_map`), so the speech encoders are 768 wide but
one layer deep with small convolutions.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

SPEECH = dict(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=64,
              conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16, conv_bias=False)
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
TINY = dict(vertices=40, feature_dim=32, stage2_layers=2, hidden=32, stage1_layers=2, stage1_heads=8,
            intermediate=48, codebook=16, code_dim=8)
DATASETS = {   # codes per frame (x code_dim 8: VOCASET's frame of codes is the decoder width, BIWI's is mapped)
    "vocaset": dict(codes_per_frame=4, n_subjects=8, period=30, input_map=False, output_bias=True),
    "biwi": dict(codes_per_frame=2, n_subjects=6, period=25, input_map=True, output_bias=False),
}


class _Values:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, std: float) -> torch.Tensor:
        return torch.from_numpy((self.rng.standard_normal(shape) * std).astype(np.float32))

    def linear(self, state: dict, name: str, out: int, inp: int, bias: bool = True, gain: float = 1.0) -> None:
        state[f"{name}.weight"] = self.normal((out, inp), gain / math.sqrt(inp))
        if bias:
            state[f"{name}.bias"] = self.normal((out,), 0.02)

    def norm(self, state: dict, name: str, width: int) -> None:
        state[f"{name}.weight"] = 1.0 + self.normal((width,), 0.1)
        state[f"{name}.bias"] = self.normal((width,), 0.1)


def sinusoids(length: int, width: int) -> torch.Tensor:
    """The official sinusoid table (length, width)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


BASE = dict(vertices=5023, feature_dim=1024, stage2_layers=6, hidden=1024, stage1_layers=6, stage1_heads=8,
            intermediate=1536, codebook=256, code_dim=64, codes_per_frame=16)    # the official VOCASET sizes
BASE_SPEECH = dict(SPEECH, num_hidden_layers=12, intermediate_size=3072, conv_dim=(512,) * 7,
                   num_conv_pos_embeddings=128)                                 # wav2vec 2.0 base


def speech_encoder_state(values: _Values, names: dict[str, str], speech: dict = SPEECH) -> dict:
    """wav2vec 2.0 base layout ("group" norm, post-LN, old weight-norm names) at `speech`'s sizes.
    names: the three part prefixes, e.g. {"feature_extractor": "audio_encoder.feature_extractor", ...}."""
    state: dict = {}
    h, conv = speech["hidden_size"], speech["conv_dim"]
    fe, fp, enc = names["feature_extractor"], names["feature_projection"], names["encoder"]
    channels_in = 1
    for i, (width, kernel) in enumerate(zip(conv, CONV_KERNELS)):
        state[f"{fe}.conv_layers.{i}.conv.weight"] = values.normal((width, channels_in, kernel), 1 / math.sqrt(channels_in * kernel))
        channels_in = width
    values.norm(state, f"{fe}.conv_layers.0.layer_norm", conv[0])
    values.norm(state, f"{fp}.layer_norm", conv[-1])
    values.linear(state, f"{fp}.projection", h, conv[-1])
    kernel, groups = speech["num_conv_pos_embeddings"], speech["num_conv_pos_embedding_groups"]
    state[f"{enc}.pos_conv_embed.conv.weight_g"] = 1.0 + values.normal((1, 1, kernel), 0.1)
    state[f"{enc}.pos_conv_embed.conv.weight_v"] = values.normal((h, h // groups, kernel), 1.0)
    state[f"{enc}.pos_conv_embed.conv.bias"] = values.normal((h,), 0.02)
    values.norm(state, f"{enc}.layer_norm", h)
    for i in range(speech["num_hidden_layers"]):
        layer = f"{enc}.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            values.linear(state, f"{layer}.attention.{proj}", h, h)
        values.norm(state, f"{layer}.layer_norm", h)
        values.linear(state, f"{layer}.feed_forward.intermediate_dense", speech["intermediate_size"], h)
        values.linear(state, f"{layer}.feed_forward.output_dense", h, speech["intermediate_size"])
        values.norm(state, f"{layer}.final_layer_norm", h)
    return state


def official_stage1(dataset: str, seed: int = 0, vertices: int = TINY["vertices"], sizes: dict | None = None) -> dict:
    """A `*_stage1.pth.tar` state dict (VQAutoEncoder: encoder, decoder, quantize); `sizes`
    overrides TINY and the dataset's preset (e.g. BASE)."""
    size = {**TINY, **DATASETS[dataset], "vertices": vertices, **(sizes or {})}
    preset, values, state = size, _Values(seed), {}
    h, v3 = size["hidden"], size["vertices"] * 3
    frame_width = preset["codes_per_frame"] * size["code_dim"]

    def transformer(prefix: str) -> None:
        for i in range(size["stage1_layers"]):
            values.norm(state, f"{prefix}.net.{2 * i}.fn.norm", h)
            values.linear(state, f"{prefix}.net.{2 * i}.fn.fn.to_qkv", 3 * h, h, bias=False)
            values.linear(state, f"{prefix}.net.{2 * i}.fn.fn.to_out", h, h)
            values.norm(state, f"{prefix}.net.{2 * i + 1}.fn.norm", h)
            values.linear(state, f"{prefix}.net.{2 * i + 1}.fn.fn.l1", size["intermediate"], h)
            values.linear(state, f"{prefix}.net.{2 * i + 1}.fn.fn.l2", h, size["intermediate"])

    def conv(prefix: str) -> None:          # Conv1d(h, h, 5)
        state[f"{prefix}.weight"] = values.normal((h, h, 5), 1 / math.sqrt(5 * h))
        state[f"{prefix}.bias"] = values.normal((h,), 0.02)

    values.linear(state, "encoder.vertice_mapping.0", h, v3)
    conv("encoder.squasher.0.0")
    transformer("encoder.encoder_transformer")
    state["encoder.encoder_pos_embedding.pe"] = sinusoids(5000, h).unsqueeze(1)
    values.linear(state, "encoder.encoder_linear_embedding.net", h, h)
    if preset["input_map"]:
        values.linear(state, "encoder.encoder_linear_embedding_post.net", frame_width, h)
        values.linear(state, "decoder.decoder_linear_embedding_pre.net", h, frame_width)
    conv("decoder.expander.0.0")
    transformer("decoder.decoder_transformer")
    state["decoder.decoder_pos_embedding.pe"] = sinusoids(5000, h).unsqueeze(1)
    values.linear(state, "decoder.decoder_linear_embedding.net", h, h)
    values.linear(state, "decoder.vertice_map_reverse", v3, h, bias=preset["output_bias"], gain=0.05)
    state["quantize.embedding.weight"] = values.normal((size["codebook"], size["code_dim"]), 1.0)
    return state


def official_stage2(dataset: str, seed: int = 1, wav2sem: bool = False, vertices: int = TINY["vertices"],
                    sizes: dict | None = None, speech: dict = SPEECH) -> dict:
    """A `*_stage2.pth.tar` state dict (CodeTalker without `autoencoder.*`, as the official
    trainer saves it); with `wav2sem`, the release's `Wav2Bert.*` and `bert_feature_map.*`."""
    size = {**TINY, **DATASETS[dataset], "vertices": vertices, **(sizes or {})}
    preset, values = size, _Values(seed)
    d, v3 = size["feature_dim"], size["vertices"] * 3
    state = speech_encoder_state(values, {part: f"audio_encoder.{part}"
                                          for part in ("feature_extractor", "feature_projection", "encoder")}, speech)
    state["audio_encoder.masked_spec_embed"] = torch.from_numpy(values.rng.uniform(size=speech["hidden_size"]).astype(np.float32))
    values.linear(state, "audio_feature_map", d, speech["hidden_size"])
    values.linear(state, "vertice_map", d, v3, gain=3.0)          # the fed-back motion is small: make it count
    period = preset["period"]
    state["PPE.pe"] = sinusoids(period, d).unsqueeze(0).repeat(1, 600 // period + 1, 1)
    for i in range(size["stage2_layers"]):
        layer = f"transformer_decoder.layers.{i}"
        for attention in ("self_attn", "multihead_attn"):
            state[f"{layer}.{attention}.in_proj_weight"] = values.normal((3 * d, d), 1 / math.sqrt(d))
            state[f"{layer}.{attention}.in_proj_bias"] = values.normal((3 * d,), 0.02)
            values.linear(state, f"{layer}.{attention}.out_proj", d, d)
        values.linear(state, f"{layer}.linear1", 2 * d, d)
        values.linear(state, f"{layer}.linear2", d, 2 * d)
        for norm in ("norm1", "norm2", "norm3"):
            values.norm(state, f"{layer}.{norm}", d)
    values.linear(state, "feat_map", preset["codes_per_frame"] * size["code_dim"], d, bias=False)
    state["learnable_style_emb.weight"] = values.normal((preset["n_subjects"], d), 1.0)
    if wav2sem:
        state.update(speech_encoder_state(values, {"feature_extractor": "Wav2Bert.FeatureExtractor",
                                                   "feature_projection": "Wav2Bert.FeatureProjection",
                                                   "encoder": "Wav2Bert.Encoder"}, speech))
        values.linear(state, "bert_feature_map", speech["hidden_size"], speech["hidden_size"])
    return state


def encoder_config(speech: dict = SPEECH) -> dict:
    """The speech encoder's config.json (transformers Wav2Vec2Config fields) for `--encoder`."""
    return {"model_type": "wav2vec2", "architectures": ["Wav2Vec2Model"], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
            "conv_kernel": list(CONV_KERNELS), "feat_extract_norm": "group", "do_stable_layer_norm": False,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in speech.items()}}


def write_tiny_codetalker_bundle(directory, template_path, dataset: str = "vocaset", wav2sem: bool = False,
                                 vertices: int = TINY["vertices"], extra_args=()) -> Path:
    """Official-layout tiny checkpoints converted by `wav2sem convert --arch codetalker` (in
    process) into a bundle at `directory`; its checkpoints and encoder folder beside it."""
    import json

    from .cli import main

    directory = Path(directory)
    work = directory.parent / f"{directory.name}-checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": official_stage1(dataset, vertices=vertices)}, work / "s_stage1.pth.tar")
    torch.save({"state_dict": official_stage2(dataset, wav2sem=wav2sem, vertices=vertices)}, work / "s_stage2.pth.tar")
    (work / "encoder").mkdir(exist_ok=True)
    (work / "encoder" / "config.json").write_text(json.dumps(encoder_config()))
    code = main(["convert", "--arch", "codetalker", "--checkpoint", str(work / "s_stage2.pth.tar"),
                 "--stage1", str(work / "s_stage1.pth.tar"), "--dataset", dataset, "--encoder", str(work / "encoder"),
                 "--template", str(template_path), "-o", str(directory), *extra_args])
    if code != 0:
        raise RuntimeError(f"wav2sem convert failed ({code})")
    return directory
