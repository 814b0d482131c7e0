"""Official reference checkpoints -> our model, by key mapping (one place for every mapping).

- FaceFormer `vocaset.pth` / `biwi.pth`: plain state dicts in our top-level names already;
  only the weight-norm naming of the positional conv differs between transformers versions.
- Wav2Sem weights: `FeatureExtractor.*`, `FeatureProjection.*`, `Encoder.*` (optionally under
  `Wav2Bert.`, with the fusion layer as `bert_feature_map`), mapped onto transformers'
  Wav2Vec2Model names so the library implementation runs them.
Checkpoints are read with `torch.load(weights_only=True)`: tensors only, no code execution.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from .errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError, reason

# Old (torch.nn.utils.weight_norm) vs new (parametrizations) names of a weight-normed conv.
_WEIGHT_NORM = {
    "pos_conv_embed.conv.weight_g": "pos_conv_embed.conv.parametrizations.weight.original0",
    "pos_conv_embed.conv.weight_v": "pos_conv_embed.conv.parametrizations.weight.original1",
}
_WAV2SEM_PREFIXES = {
    "FeatureExtractor.": "feature_extractor.",
    "FeatureProjection.": "feature_projection.",
    "Encoder.": "encoder.",
}
WAV2SEM_HOST_PREFIX = "Wav2Bert."
WAV2SEM_FUSION_PREFIX = "bert_feature_map."
OPTIONAL_KEYS = ("audio_encoder.masked_spec_embed",)  # training-only; present in some checkpoints


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth / .pth.tar (plain, or under 'state_dict') or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise Wav2SemError(MODEL_NOT_FOUND, f"Checkpoint not found: {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:     # what weights_only raises for anything but tensors and containers
        raise Wav2SemError(MODEL_INVALID, f"Refused to load checkpoint {path.name}: it holds Python objects, not only "
                                          "tensors, and unpickling them could run code; give a plain state dict.") from exc
    except Exception as exc:
        raise Wav2SemError(MODEL_INVALID, f"Cannot read checkpoint {path.name} ({reason(exc)}); "
                                          "the file is damaged or not a PyTorch checkpoint.") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Wav2SemError(MODEL_INVALID, f"{path.name} does not contain a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix


def rename_weight_norm(state: dict[str, torch.Tensor], expected_keys) -> dict[str, torch.Tensor]:
    """Translate weight_g/weight_v <-> parametrizations.* to whatever the model expects."""
    expected = set(expected_keys)
    out = {}
    for key, value in state.items():
        new = key
        for old_suffix, new_suffix in _WEIGHT_NORM.items():
            if key.endswith(old_suffix) and key not in expected:
                new = key[: -len(old_suffix)] + new_suffix
            elif key.endswith(new_suffix) and key not in expected:
                new = key[: -len(new_suffix)] + old_suffix
        out[new] = value
    return out


def map_wav2sem_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Reference Wav2Sem keys -> (Wav2Vec2Model state, fusion Linear state).

    Accepts the standalone encoder (`FeatureExtractor.*` ...) or a host-model checkpoint
    (`Wav2Bert.*` + `bert_feature_map.*`, other host keys ignored)."""
    has_host_prefix = any(k.startswith(WAV2SEM_HOST_PREFIX) for k in state)
    encoder, fusion = {}, {}
    for key, value in state.items():
        if key.startswith(WAV2SEM_FUSION_PREFIX):
            fusion[key[len(WAV2SEM_FUSION_PREFIX):]] = value
            continue
        if has_host_prefix:
            if not key.startswith(WAV2SEM_HOST_PREFIX):
                continue
            key = key[len(WAV2SEM_HOST_PREFIX):]
        for old, new in _WAV2SEM_PREFIXES.items():
            if key.startswith(old):
                encoder[new + key[len(old):]] = value
                break
        else:
            encoder[key] = value  # left as is: reported as unexpected if it does not fit
    return encoder, fusion


def fit_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str,
              optional=()) -> dict[str, torch.Tensor]:
    """`state` renamed to the `expected` keys, checked strictly (MODEL_INVALID names missing,
    unexpected and misshapen keys). Keys in `optional` may be absent (expected's value is
    kept) or extra (dropped)."""
    from .bundle import check_state_dict

    state = rename_weight_norm(state, expected)
    state = {k: v for k, v in state.items() if k in expected or k not in optional}
    for key in optional:
        if key in expected and key not in state:
            state[key] = expected[key]
    check_state_dict(expected, state, source)
    return state


def load_faceformer_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Load an official FaceFormer state dict (audio encoder + decoder) strictly into `model`.
    Wav2Sem keys in the same file (`Wav2Bert.*`, `bert_feature_map.*`) go to the semantic parts."""
    state = read_checkpoint(path)
    semantic_keys = [k for k in state if k.startswith((WAV2SEM_HOST_PREFIX, WAV2SEM_FUSION_PREFIX))]
    host = {k: v for k, v in state.items() if k not in semantic_keys}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(("semantic_encoder.", "semantic_fusion."))}
    model.load_state_dict(fit_state(expected, host, str(path), optional=OPTIONAL_KEYS), strict=False)
    if semantic_keys and model.has_semantic:
        load_wav2sem_weights(model, {k: state[k] for k in semantic_keys}, str(path))


def load_wav2sem_weights(model: torch.nn.Module, state_or_path, source: str | None = None) -> None:
    """Load reference-named Wav2Sem weights into model.semantic_encoder (+ semantic_fusion
    when the checkpoint carries `bert_feature_map`)."""
    if not isinstance(state_or_path, dict):
        source = str(state_or_path)
        state_or_path = read_checkpoint(state_or_path)
    encoder_state, fusion_state = map_wav2sem_state(state_or_path)
    encoder = model.semantic_encoder
    encoder.load_state_dict(fit_state(encoder.state_dict(), encoder_state, f"{source} (Wav2Sem encoder)",
                                      optional=("masked_spec_embed",)))
    if fusion_state:
        fusion = model.semantic_fusion
        fusion.load_state_dict(fit_state(fusion.state_dict(), fusion_state, f"{source} (bert_feature_map)"))


def wav2sem_encoder_spec(encoder_state: dict[str, torch.Tensor], directory: Path, source: str) -> dict:
    """The encoder spec of Wav2Sem weights (already in transformers names, see map_wav2sem_state):
    from a wav2vec 2.0 config.json in `directory` (beside the weights) when there is one, else
    read from the weights' shapes (see _wav2vec2_sizes)."""
    from .models.encoders import encoder_spec_from_directory

    config_path = directory / "config.json"
    if config_path.is_file():
        try:
            described = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError):
            described = None
        if described == "wav2vec2":
            return encoder_spec_from_directory(directory)
    return {"type": "wav2vec2", "config": _wav2vec2_sizes(encoder_state, source)}


def _wav2vec2_sizes(state: dict[str, torch.Tensor], source: str) -> dict:
    """A Wav2Vec2Config's sizes from its weights: layers from the key indices, hidden and
    intermediate widths, the conv stack's widths, kernels and bias, the norm style, and the
    positional conv's kernel and groups. Strides are the standard (5, 2, 2, 2, 2, 2, 2) and
    the heads hidden / 64, which shapes cannot tell (a config.json beside the weights can)."""
    def indices(prefix: str) -> list[int]:
        return sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise Wav2SemError(MODEL_INVALID, f"{source} has no {key} (Wav2Sem name mapped to wav2vec 2.0); "
                                              "give Wav2Sem encoder weights, or put its config.json beside them.")
        return tuple(state[key].shape)

    layers, convs = indices("encoder.layers."), indices("feature_extractor.conv_layers.")
    if not layers or not convs or layers != list(range(len(layers))) or convs != list(range(len(convs))):
        raise Wav2SemError(MODEL_INVALID, f"{source} has no complete Encoder.layers.* / FeatureExtractor.conv_layers.* "
                                          "weights; is it a Wav2Sem (wav2vec 2.0) encoder?")
    hidden = shape("encoder.layers.0.attention.q_proj.weight")[0]
    if len(convs) != 7 or hidden % 64:
        raise Wav2SemError(MODEL_INVALID, f"The Wav2Sem encoder in {source} ({len(convs)} conv layers, width {hidden}) "
                                          "is not one whose strides and heads the weights tell; put its config.json beside them.")
    conv = [shape(f"feature_extractor.conv_layers.{i}.conv.weight") for i in convs]       # (out, in, kernel)
    pos_key = next((k for k in ("encoder.pos_conv_embed.conv.weight_v",
                                "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
                                "encoder.pos_conv_embed.conv.weight") if k in state), "encoder.pos_conv_embed.conv.weight_v")
    pos = shape(pos_key)                                                                   # (hidden, hidden/groups, kernel)
    layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    return {
        "hidden_size": hidden, "num_hidden_layers": len(layers), "num_attention_heads": hidden // 64,
        "intermediate_size": shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0],
        "conv_dim": [c[0] for c in conv], "conv_kernel": [c[2] for c in conv], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "feat_extract_norm": "layer" if layer_norm else "group", "do_stable_layer_norm": layer_norm,
        "num_conv_pos_embeddings": pos[2], "num_conv_pos_embedding_groups": hidden // pos[1],
    }
