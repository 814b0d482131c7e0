"""`wav2sem train`: semantic pretraining, animation training, or the whole default recipe.

    wav2sem train default  --corpus corpus --out runs/default [--config cfg.json] [--set k=v ...]
    wav2sem train semantic --corpus corpus --out runs/sem
    wav2sem train animation --corpus corpus --out runs/anim --semantic runs/sem/semantic_encoder.safetensors
Runs in one process or under `torchrun --nproc-per-node N -m wav2sem train ...`; reruns of
the same command resume from the last finished epoch.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=["semantic", "animation", "default"])
    parser.add_argument("--corpus", required=True, action="append",
                        help="corpus folder (wav2sem synth, wav2sem corpus real, VOCASET or BIWI layout); give it "
                             "again to train on a mix of corpora made on the same head")
    parser.add_argument("--out", required=True, help="run folder: config, log, checkpoints, metrics, bundle")
    parser.add_argument("--config", help="recipe JSON (default: the shipped default_config.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. animation_training.epochs=3 (JSON values)")
    parser.add_argument("--semantic", help="semantic encoder weights for the animation stage")
    parser.add_argument("--no-semantic", action="store_true", help="train the animation model without Wav2Sem")
    parser.add_argument("--bundle", help="where to write the model bundle (default OUT/bundle)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints in OUT")


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from ..bundle import check_bundle_target
    from ..train.animation import train_animation
    from ..train.config import load_config
    from ..train.semantic import WEIGHTS, train_semantic

    out = Path(args.out)
    if args.stage in ("animation", "default"):
        check_bundle_target(args.bundle or out / "bundle")    # refused now, not after hours of training
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config, _overrides(args.set))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("wav2sem").addHandler(handler)
    resume = not args.fresh
    if args.stage in ("semantic", "default") and not args.no_semantic:
        result = train_semantic(config, args.corpus, out, args.device, resume)
        log.info("semantic stage: %s", result)
    if args.stage in ("animation", "default"):
        semantic = None if args.no_semantic else (args.semantic or out / WEIGHTS)
        result = train_animation(config, args.corpus, out, semantic, args.device, resume, args.bundle)
        log.info("animation stage: best %s", result)
    return 0
