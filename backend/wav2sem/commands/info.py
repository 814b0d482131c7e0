"""`wav2sem info`: versions, devices and the model bundles this backend can find (each with
its output: vertex offsets, or blendshapes and their channel names)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="*", default=[], help="extra bundle folders (or folders of bundles) to list")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def find_bundles(extra: list[str]) -> list[dict]:
    from ..bundle import CONFIG_FILE, DEFAULT_BUNDLE_DIR, read_bundle
    from ..errors import Wav2SemError

    candidates = [DEFAULT_BUNDLE_DIR]
    if os.environ.get("WAV2SEM_MODEL"):
        candidates.append(Path(os.environ["WAV2SEM_MODEL"]))
    for folder in map(Path, extra):
        candidates += [folder] if (folder / CONFIG_FILE).is_file() else sorted(p.parent for p in folder.glob(f"*/{CONFIG_FILE}"))
    found = []
    for path in candidates:
        try:
            b = read_bundle(path)
            found.append({"path": str(path), "name": b.config.name, "fps": b.config.fps,
                          "vertices": b.template.vertex_count, "subjects": len(b.config.subjects),
                          "wav2sem": b.config.semantic is not None, "output": b.config.output_type,
                          "channels": list(b.config.channels)})
        except Wav2SemError as exc:
            found.append({"path": str(path), "error": exc.message})
    return found


def describe_output(entry: dict) -> str:
    """'vertex offsets' or 'blendshapes: 23 channels (jawOpen, jawForward, mouthClose, ...)'."""
    channels = entry.get("channels") or []
    if not channels:
        return "vertex offsets"
    shown = ", ".join(channels[:6]) + (", ..." if len(channels) > 6 else "")
    return f"blendshapes: {len(channels)} channels ({shown})"


def run(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from .. import __version__
    from ..loaded_model import available_devices
    from ..protocol import PROTOCOL_VERSION

    info = {"wav2sem": __version__, "protocol": PROTOCOL_VERSION, "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "devices": available_devices(), "models": find_bundles(args.models)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("wav2sem", "protocol", "python", "torch", "transformers"):
        print(f"{key:13s} {info[key]}")
    print(f"{'devices':13s} {', '.join(info['devices'])}")
    print("models:")
    for m in info["models"]:
        if "error" in m:
            print(f"  {m['path']}: unusable: {m['error']}")
        else:
            print(f"  {m['name']}: {m['vertices']} vertices, {m['fps']:g} fps, {m['subjects']} subjects, "
                  f"Wav2Sem {'on' if m['wav2sem'] else 'off'}, output {describe_output(m)}  ({m['path']})")
    return 0
