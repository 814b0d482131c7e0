"""Official reference checkpoints -> our model, by key mapping (one place for every mapping).

- FaceFormer `vocaset.pth` / `biwi.pth`: plain state dicts in our top-level names already;
  only the weight-norm naming of the positional conv differs between transformers versions.
- Wav2Sem weights: `FeatureExtractor.*`, `FeatureProjection.*`, `Encoder.*` (optionally under
  `Wav2Bert.`, with the fusion layer as `bert_feature_map`), mapped onto transformers'
  Wav2Vec2Model names so the library implementation runs them.
- CodeTalker `*_stage2.pth.tar`: our top-level names already (as FaceFormer's);
  `*_stage1.pth.tar`: its decoder and codebook mapped onto `motion.*` (map_codetalker_stage1).
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
    """A Wav2Vec2Config's sizes from its weights: layers from the key indices (0 included: the
    official code builds such encoders), hidden and intermediate widths (no layers: no
    intermediate width, the config's default stands), the conv stack's widths, kernels and
    bias, the norm style, and the positional conv's kernel and groups. Strides are the standard
    (5, 2, 2, 2, 2, 2, 2) and the heads hidden / 64, which shapes cannot tell (a config.json
    beside the weights can)."""
    def indices(prefix: str) -> list[int]:
        return sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise Wav2SemError(MODEL_INVALID, f"{source} has no {key} (Wav2Sem name mapped to wav2vec 2.0); "
                                              "give Wav2Sem encoder weights, or put its config.json beside them.")
        return tuple(state[key].shape)

    layers, convs = indices("encoder.layers."), indices("feature_extractor.conv_layers.")
    if not convs or layers != list(range(len(layers))) or convs != list(range(len(convs))):
        raise Wav2SemError(MODEL_INVALID, f"{source} has no complete Encoder.layers.* / FeatureExtractor.conv_layers.* "
                                          "weights; is it a Wav2Sem (wav2vec 2.0) encoder?")
    hidden = shape("encoder.layer_norm.weight")[0]                                         # (hidden,)
    if len(convs) != 7 or hidden % 64:
        raise Wav2SemError(MODEL_INVALID, f"The Wav2Sem encoder in {source} ({len(convs)} conv layers, width {hidden}) "
                                          "is not one whose strides and heads the weights tell; put its config.json beside them.")
    conv = [shape(f"feature_extractor.conv_layers.{i}.conv.weight") for i in convs]       # (out, in, kernel)
    pos_key = next((k for k in ("encoder.pos_conv_embed.conv.weight_v",
                                "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
                                "encoder.pos_conv_embed.conv.weight") if k in state), "encoder.pos_conv_embed.conv.weight_v")
    pos = shape(pos_key)                                                                   # (hidden, hidden/groups, kernel)
    layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    widths = {"intermediate_size": shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0]} if layers else {}
    return {
        "hidden_size": hidden, "num_hidden_layers": len(layers), "num_attention_heads": hidden // 64, **widths,
        "conv_dim": [c[0] for c in conv], "conv_kernel": [c[2] for c in conv], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "feat_extract_norm": "layer" if layer_norm else "group", "do_stable_layer_norm": layer_norm,
        "num_conv_pos_embeddings": pos[2], "num_conv_pos_embedding_groups": hidden // pos[1],
    }


# ----- CodeTalker ---------------------------------------------------------------------------
# Stage 1 (`*_stage1.pth.tar`, the VQAutoEncoder) -> our `motion.*`. Its encoder (`encoder.*`)
# only trains; its decoder's parts by their official module paths:
_STAGE1_PARTS = {
    "quantize.embedding.": "motion.codebook.embedding.",
    "decoder.decoder_linear_embedding_pre.net.": "motion.decoder.input_map.",
    "decoder.expander.0.0.": "motion.decoder.conv.",
    "decoder.expander.0.2.": "motion.decoder.norm.",            # only with an affine instance norm
    "decoder.decoder_linear_embedding.net.": "motion.decoder.embedding.",
    "decoder.vertice_map_reverse.": "motion.decoder.output_map.",
}
_STAGE1_LAYER = {   # decoder.decoder_transformer.net.{2i}: attention block, {2i+1}: feed-forward block
    (0, "fn.norm."): "attention_norm.", (0, "fn.fn.to_qkv."): "qkv.", (0, "fn.fn.to_out."): "attention_out.",
    (1, "fn.norm."): "mlp_norm.", (1, "fn.fn.l1."): "mlp_in.", (1, "fn.fn.l2."): "mlp_out.",
}
STAGE1_TRANSFORMER = "decoder.decoder_transformer.net."
STAGE1_POSITIONS = "decoder.decoder_pos_embedding.pe"
STAGE1_TRAINING_ONLY = "encoder."


def map_codetalker_stage1(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Official stage-1 keys -> our `motion.*` keys. The encoder's keys are dropped (training
    only); the decoder's positional table gives its row 0 (the one the official code adds to
    every frame, see motion_vq.py). Keys that are neither are kept as they are, so the strict
    check names them as unexpected."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(STAGE1_TRAINING_ONLY):
            continue
        if key == STAGE1_POSITIONS:
            if value.dim() != 3 or value.shape[1] != 1:
                raise Wav2SemError(MODEL_INVALID, f"{source}: {key} has shape {tuple(value.shape)}, expected "
                                                  "(length, 1, width) (the official sinusoid table).")
            out["motion.decoder.position"] = value[0, 0].clone()
            continue
        new = next((ours + key[len(theirs):] for theirs, ours in _STAGE1_PARTS.items() if key.startswith(theirs)), None)
        if new is None and key.startswith(STAGE1_TRANSFORMER):
            index, _, rest = key[len(STAGE1_TRANSFORMER):].partition(".")
            if index.isdigit():
                part = next(((p, ours) for (block, p), ours in _STAGE1_LAYER.items()
                             if int(index) % 2 == block and rest.startswith(p)), None)
                if part is not None:
                    new = f"motion.decoder.layers.{int(index) // 2}.{part[1]}{rest[len(part[0]):]}"
        out[new or key] = value
    return out


def codetalker_stage1_sizes(state: dict[str, torch.Tensor], n_heads: int, source: str) -> dict:
    """MotionVQConfig fields from an official stage-1 state dict's shapes (the heads are not in
    them: `n_heads`, the official configs' 8 by default)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise Wav2SemError(MODEL_INVALID, f"{source} has no {key}; is it a CodeTalker stage-1 "
                                              "(*_stage1.pth.tar) checkpoint?")
        return tuple(state[key].shape)

    if any(k.startswith("decoder.expander.1.") for k in state):
        raise Wav2SemError(MODEL_INVALID, f"{source} was trained with quant_factor > 0 (more than one expander "
                                          "layer); the official CodeTalker code cannot run such a model either "
                                          "(ConvTranspose1d refuses replicate padding), so it is not supported.")
    hidden = shape("decoder.decoder_linear_embedding.net.weight")[0]
    layers = sorted({int(k[len(STAGE1_TRANSFORMER):].split(".")[0]) for k in state if k.startswith(STAGE1_TRANSFORMER)})
    if not layers or layers != list(range(len(layers))) or len(layers) % 2:
        raise Wav2SemError(MODEL_INVALID, f"{source} has no complete decoder.decoder_transformer.net.* blocks "
                                          "(an attention and a feed-forward block per layer).")
    codebook_size, code_dim = shape("quantize.embedding.weight")
    input_map = "decoder.decoder_linear_embedding_pre.net.weight" in state
    frame_width = shape("decoder.decoder_linear_embedding_pre.net.weight")[1] if input_map else hidden
    if frame_width % code_dim:
        raise Wav2SemError(MODEL_INVALID, f"{source}: a frame of codes ({frame_width} values) is not a whole number "
                                          f"of codebook entries ({code_dim} values each).")
    if hidden % n_heads:
        raise Wav2SemError(MODEL_INVALID, f"The stage-1 width {hidden} in {source} does not split into {n_heads} "
                                          "heads; give the heads it was trained with (--stage1-heads).")
    return {
        "hidden_size": hidden, "n_layers": len(layers) // 2, "n_heads": n_heads,
        "intermediate_size": shape(f"{STAGE1_TRANSFORMER}1.fn.fn.l1.weight")[0],
        "codebook_size": codebook_size, "code_dim": code_dim, "codes_per_frame": frame_width // code_dim,
        "input_map": input_map, "output_bias": "decoder.vertice_map_reverse.bias" in state,
        "norm_affine": "decoder.expander.0.2.weight" in state,
    }


def load_codetalker_checkpoints(model: torch.nn.Module, stage2: dict[str, torch.Tensor], stage2_source: str,
                                stage1: dict[str, torch.Tensor], stage1_source: str) -> None:
    """Official stage-2 (CodeTalker, `autoencoder.*` removed as the trainer saves it) and
    stage-1 state dicts into `model` (a models.codetalker.CodeTalker), each strictly. Wav2Sem
    keys in the stage-2 file go to the semantic parts."""
    semantic_keys = [k for k in stage2 if k.startswith((WAV2SEM_HOST_PREFIX, WAV2SEM_FUSION_PREFIX))]
    host = {k: v for k, v in stage2.items() if k not in semantic_keys and not k.startswith("autoencoder.")}
    ours = model.state_dict()
    expected = {k: v for k, v in ours.items() if not k.startswith(("semantic_encoder.", "semantic_fusion.", "motion."))}
    model.load_state_dict(fit_state(expected, host, stage2_source, optional=OPTIONAL_KEYS), strict=False)
    motion = {k: v for k, v in ours.items() if k.startswith("motion.")}
    model.load_state_dict(fit_state(motion, map_codetalker_stage1(stage1, stage1_source), stage1_source), strict=False)
    if semantic_keys and model.has_semantic:
        load_wav2sem_weights(model, {k: stage2[k] for k in semantic_keys}, stage2_source)
