"""`wav2sem convert`: official reference weights + a local speech-encoder folder + a template
-> a model bundle (the only thing the server and the add-on take)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# Dataset conventions of the reference FaceFormer (docs: REFERENCE.md).
DATASET_PRESETS = {
    "vocaset": {"fps": 30.0, "period": 30, "alignment": "interpolate", "subjects": (
        "FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
        "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
        "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA")},
    "biwi": {"fps": 25.0, "period": 25, "alignment": "pair", "subjects": ("F2", "F3", "F4", "M3", "M4", "M5")},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="official vocaset.pth / biwi.pth (or a host model trained with Wav2Sem)")
    parser.add_argument("--arch", default="faceformer", choices=["faceformer"])
    parser.add_argument("--dataset", required=True, type=str.lower, choices=sorted(DATASET_PRESETS))
    parser.add_argument("--encoder", required=True, help="local Hugging Face folder of the speech encoder (config.json)")
    parser.add_argument("--template", required=True, help="neutral face: .npz, .npy, .obj, .ply or templates.pkl")
    parser.add_argument("--template-subject", help="subject key inside templates.pkl")
    parser.add_argument("--wav2sem", help="reference Wav2Sem weights (FeatureExtractor.*/Encoder.* or Wav2Bert.*)")
    parser.add_argument("--name", help="model name (default: the output folder's name)")
    parser.add_argument("-o", "--output", required=True, help="bundle folder to write")


def run(args: argparse.Namespace) -> int:
    from ..bundle import BundleConfig, build_model, check_bundle_target, save_bundle
    from ..checkpoints import (WAV2SEM_FUSION_PREFIX, WAV2SEM_HOST_PREFIX, load_faceformer_checkpoint,
                               load_wav2sem_weights, map_wav2sem_state, read_checkpoint, wav2sem_encoder_spec)
    from ..errors import MODEL_INVALID, Wav2SemError
    from ..models.encoders import encoder_spec_from_directory
    from ..models.faceformer import DecoderConfig
    from ..template import Template

    check_bundle_target(args.output)                  # before any slow work
    preset = DATASET_PRESETS[args.dataset]
    state = read_checkpoint(args.checkpoint)
    if not any(k.startswith("transformer_decoder.layers.") for k in state):
        raise Wav2SemError(MODEL_INVALID, f"{args.checkpoint} has no transformer_decoder.layers.* weights; is it a FaceFormer checkpoint?")
    for key in ("vertice_map.weight", "obj_vector.weight"):
        if key not in state:
            raise Wav2SemError(MODEL_INVALID, f"{args.checkpoint} has no {key}; is it a FaceFormer checkpoint?")
    feature_dim, n_values = state["vertice_map.weight"].shape
    n_subjects = state["obj_vector.weight"].shape[1]
    n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer_decoder.layers."))
    template = Template.load(args.template, args.template_subject)
    if template.vertex_count * 3 != n_values:
        raise Wav2SemError(MODEL_INVALID, f"The template has {template.vertex_count} vertices but the checkpoint "
                           f"was trained for {n_values // 3}; use the dataset's own template.")
    subjects = preset["subjects"] if len(preset["subjects"]) == n_subjects else tuple(f"subject_{i}" for i in range(n_subjects))

    embedded_semantic = any(k.startswith(WAV2SEM_HOST_PREFIX) for k in state)
    semantic_state = read_checkpoint(args.wav2sem) if args.wav2sem else None
    if semantic_state is not None or embedded_semantic:
        has_fusion = any(k.startswith(WAV2SEM_FUSION_PREFIX) for k in {**state, **(semantic_state or {})})
        if not has_fusion:
            raise Wav2SemError(MODEL_INVALID, "No bert_feature_map (fusion layer) in the given weights: Wav2Sem needs a "
                               "host model trained with it; convert without --wav2sem for the plain model.")
    encoder_spec = encoder_spec_from_directory(args.encoder)
    semantic_spec = None
    if semantic_state is not None or embedded_semantic:      # its size: config.json beside the weights, or their shapes
        source = Path(args.wav2sem or args.checkpoint)
        encoder_state, _ = map_wav2sem_state(semantic_state if semantic_state is not None else state)
        semantic_spec = wav2sem_encoder_spec(encoder_state, source.parent, source.name)
    config = BundleConfig(
        name=args.name or Path(args.output).name,
        decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=n_subjects, feature_dim=int(feature_dim),
                              period=preset["period"], n_layers=n_layers, alignment=preset["alignment"]),
        fps=preset["fps"], subjects=subjects, encoder=encoder_spec, semantic=semantic_spec,
        description=f"Converted from {Path(args.checkpoint).name} ({args.dataset})"
                    + (" with Wav2Sem" if semantic_spec else ""),
    )
    model = build_model(config)
    load_faceformer_checkpoint(model, args.checkpoint)
    if semantic_state is not None:
        load_wav2sem_weights(model, semantic_state, args.wav2sem)
    preprocessor = Path(args.encoder) / "preprocessor_config.json"
    save_bundle(args.output, config, model, template,
                json.loads(preprocessor.read_text()) if preprocessor.is_file() else None)
    wav2sem = "off"
    if semantic_spec:
        sizes = model.semantic_encoder.config
        wav2sem = f"on ({sizes.num_hidden_layers} layers of width {sizes.hidden_size}, {sizes.num_attention_heads} heads)"
    print(f"wrote bundle {args.output}: {template.vertex_count} vertices, {n_subjects} subjects, "
          f"{preset['fps']:g} fps, Wav2Sem {wav2sem}", file=sys.stderr)
    return 0
