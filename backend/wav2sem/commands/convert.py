"""`wav2sem convert`: official reference weights (FaceFormer, or CodeTalker's two stages) + a
local speech-encoder folder + a template -> a model bundle (the only thing the server and the
add-on take). Every size is read from the weights' shapes (the heads, which shapes cannot
tell, are the official ones); loading is strict."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import BAD_REQUEST, MODEL_INVALID, Wav2SemError
from ..models.talker import DecoderConfig

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
    parser.add_argument("--checkpoint", required=True,
                        help="official FaceFormer vocaset.pth / biwi.pth, or CodeTalker *_stage2.pth.tar "
                             "(either may carry the Wav2Sem release's Wav2Bert.* / bert_feature_map.*)")
    parser.add_argument("--arch", default="faceformer", choices=["faceformer", "codetalker"])
    parser.add_argument("--stage1", help="CodeTalker: the stage-1 motion autoencoder, *_stage1.pth.tar")
    parser.add_argument("--stage1-heads", type=int, default=8,
                        help="CodeTalker: attention heads of stage 1 (not in the weights; official configs: 8)")
    parser.add_argument("--feedback-window", type=int, default=0,
                        help="CodeTalker: frames of codes re-decoded per fed-back frame; 0 (default) = the whole "
                             "prefix, as the official code (exact, cost grows with length squared); N > 0 = the "
                             "last N frames (faster, approximate)")
    parser.add_argument("--dataset", required=True, type=str.lower, choices=sorted(DATASET_PRESETS))
    parser.add_argument("--encoder", required=True, help="local Hugging Face folder of the speech encoder (config.json)")
    parser.add_argument("--template", required=True, help="neutral face: .npz, .npy, .obj, .ply or templates.pkl")
    parser.add_argument("--template-subject", help="subject key inside templates.pkl")
    parser.add_argument("--wav2sem", help="reference Wav2Sem weights (FeatureExtractor.*/Encoder.* or Wav2Bert.*)")
    parser.add_argument("--name", help="model name (default: the output folder's name)")
    parser.add_argument("-o", "--output", required=True, help="bundle folder to write")


def run(args: argparse.Namespace) -> int:
    from ..bundle import BundleConfig, build_model, check_bundle_target, save_bundle
    from ..checkpoints import load_wav2sem_weights, read_checkpoint
    from ..models.encoders import encoder_spec_from_directory
    from ..template import Template

    check_bundle_target(args.output)                  # before any slow work
    codetalker = args.arch == "codetalker"
    _check_options(args, codetalker)
    preset = DATASET_PRESETS[args.dataset]
    state = read_checkpoint(args.checkpoint)
    stage1 = read_checkpoint(args.stage1) if codetalker else None
    sizes = _codetalker_sizes(args, state, stage1) if codetalker else _faceformer_sizes(args, state)
    template = Template.load(args.template, args.template_subject)
    if template.vertex_count * 3 != sizes["n_values"]:
        raise Wav2SemError(MODEL_INVALID, f"The template has {template.vertex_count} vertices but the checkpoint "
                           f"was trained for {sizes['n_values'] // 3}; use the dataset's own template.")
    n_subjects = sizes["n_subjects"]
    subjects = preset["subjects"] if len(preset["subjects"]) == n_subjects else tuple(f"subject_{i}" for i in range(n_subjects))
    semantic_state = read_checkpoint(args.wav2sem) if args.wav2sem else None
    semantic_spec = _semantic_spec(args, state, semantic_state)
    config = BundleConfig(
        name=args.name or Path(args.output).name,
        decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=n_subjects,
                              feature_dim=sizes["feature_dim"], period=preset["period"], n_layers=sizes["n_layers"],
                              ff_dim=sizes.get("ff_dim"), alignment=preset["alignment"]),
        fps=preset["fps"], subjects=subjects, encoder=encoder_spec_from_directory(args.encoder), semantic=semantic_spec,
        arch=args.arch, motion_vq=sizes.get("motion_vq"),
        description=f"Converted from {Path(args.checkpoint).name} ({args.dataset})"
                    + (" with Wav2Sem" if semantic_spec else ""),
    )
    model = build_model(config)
    if codetalker:
        from ..checkpoints import load_codetalker_checkpoints

        load_codetalker_checkpoints(model, state, args.checkpoint, stage1, args.stage1)
    else:
        from ..checkpoints import load_faceformer_checkpoint

        load_faceformer_checkpoint(model, args.checkpoint)
    if semantic_state is not None:
        load_wav2sem_weights(model, semantic_state, args.wav2sem)
    preprocessor = Path(args.encoder) / "preprocessor_config.json"
    save_bundle(args.output, config, model, template,
                json.loads(preprocessor.read_text()) if preprocessor.is_file() else None)
    wav2sem = "off"
    if semantic_spec:
        s = model.semantic_encoder.config
        wav2sem = f"on ({s.num_hidden_layers} layers of width {s.hidden_size}, {s.num_attention_heads} heads)"
    print(f"wrote bundle {args.output}: {args.arch}, {template.vertex_count} vertices, {n_subjects} subjects, "
          f"{preset['fps']:g} fps, Wav2Sem {wav2sem}", file=sys.stderr)
    return 0


def _check_options(args: argparse.Namespace, codetalker: bool) -> None:
    if codetalker and not args.stage1:
        raise Wav2SemError(BAD_REQUEST, "CodeTalker needs its stage-1 motion autoencoder too: add --stage1 "
                                        "FILE_stage1.pth.tar (the stage-2 checkpoint does not contain it).")
    if not codetalker and (args.stage1 or args.feedback_window):
        raise Wav2SemError(BAD_REQUEST, "--stage1 and --feedback-window are CodeTalker options; add --arch codetalker.")
    if args.stage1_heads < 1 or args.feedback_window < 0:
        raise Wav2SemError(BAD_REQUEST, "--stage1-heads must be 1 or more and --feedback-window 0 or more.")


def _layer_count(state: dict, prefix: str) -> int:
    return 1 + max(int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix))


def _faceformer_sizes(args: argparse.Namespace, state: dict) -> dict:
    if not any(k.startswith("transformer_decoder.layers.") for k in state):
        raise Wav2SemError(MODEL_INVALID, f"{args.checkpoint} has no transformer_decoder.layers.* weights; is it a FaceFormer checkpoint?")
    for key in ("vertice_map.weight", "obj_vector.weight"):
        if key not in state:
            hint = " (it looks like CodeTalker's: add --arch codetalker)" if "feat_map.weight" in state else ""
            raise Wav2SemError(MODEL_INVALID, f"{args.checkpoint} has no {key}; is it a FaceFormer checkpoint?{hint}")
    feature_dim, n_values = state["vertice_map.weight"].shape
    return {"feature_dim": int(feature_dim), "n_values": int(n_values), "n_subjects": int(state["obj_vector.weight"].shape[1]),
            "n_layers": _layer_count(state, "transformer_decoder.layers.")}


def _codetalker_sizes(args: argparse.Namespace, state: dict, stage1: dict) -> dict:
    """Stage-2 sizes from its weights' shapes, stage-1 sizes from its own, and their agreement."""
    from ..checkpoints import codetalker_stage1_sizes
    from ..models.motion_vq import MotionVQConfig

    for key in ("vertice_map.weight", "feat_map.weight", "learnable_style_emb.weight", "transformer_decoder.layers.0.linear1.weight"):
        if key not in state:
            hint = (" It looks like a stage-1 checkpoint: give it as --stage1 and the stage-2 one as --checkpoint."
                    if any(k.startswith("quantize.") for k in state) else "")
            raise Wav2SemError(MODEL_INVALID, f"{args.checkpoint} has no {key}; is it a CodeTalker stage-2 "
                                              f"(*_stage2.pth.tar) checkpoint?{hint}")
    feature_dim, n_values = state["vertice_map.weight"].shape
    motion = MotionVQConfig(**codetalker_stage1_sizes(stage1, args.stage1_heads, args.stage1),
                            feedback_window=args.feedback_window)
    frame_width, stage2_dim = state["feat_map.weight"].shape
    if frame_width != motion.frame_width:
        raise Wav2SemError(MODEL_INVALID, f"The stage-2 checkpoint predicts {frame_width} code values per frame but "
                                          f"the stage-1 one decodes {motion.frame_width} ({motion.codes_per_frame} x "
                                          f"{motion.code_dim}); give the stage-1 checkpoint it was trained with.")
    out_key = "decoder.vertice_map_reverse.weight"
    if out_key in stage1 and stage1[out_key].shape[0] != n_values:
        raise Wav2SemError(MODEL_INVALID, f"Stage 1 decodes {stage1[out_key].shape[0] // 3} vertices but stage 2 feeds "
                                          f"back {n_values // 3}; the two checkpoints do not belong together.")
    return {"feature_dim": int(feature_dim), "n_values": int(n_values),
            "n_subjects": int(state["learnable_style_emb.weight"].shape[0]),
            "n_layers": _layer_count(state, "transformer_decoder.layers."),
            "ff_dim": int(state["transformer_decoder.layers.0.linear1.weight"].shape[0]), "motion_vq": motion}


def _semantic_spec(args: argparse.Namespace, state: dict, semantic_state: dict | None) -> dict | None:
    """The Wav2Sem encoder's spec when the checkpoint or --wav2sem carries one (None: off)."""
    from ..checkpoints import WAV2SEM_FUSION_PREFIX, WAV2SEM_HOST_PREFIX, map_wav2sem_state, wav2sem_encoder_spec

    embedded = any(k.startswith(WAV2SEM_HOST_PREFIX) for k in state)
    if semantic_state is None and not embedded:
        return None
    if not any(k.startswith(WAV2SEM_FUSION_PREFIX) for k in {**state, **(semantic_state or {})}):
        raise Wav2SemError(MODEL_INVALID, "No bert_feature_map (fusion layer) in the given weights: Wav2Sem needs a "
                           "host model trained with it; convert without --wav2sem for the plain model.")
    source = Path(args.wav2sem or args.checkpoint)
    encoder_state, _ = map_wav2sem_state(semantic_state if semantic_state is not None else state)
    return wav2sem_encoder_spec(encoder_state, source.parent, source.name)
