"""Training recipe: one JSON file (default: default_config.json beside this module), with
`--set key.sub=value` overrides that must name keys the trainers know."""
from __future__ import annotations

import difflib
import json
from dataclasses import fields
from pathlib import Path

from ..errors import BAD_REQUEST, Wav2SemError, reason

DEFAULT_CONFIG = Path(__file__).with_name("default_config.json")
# Keys the trainers read with a default, so a recipe may leave them out.
OPTIONAL_KEYS = {
    "": {"name", "description", "output"},
    "encoder": {"pretrained", "freeze"},
    "semantic_training": {"batch_seconds"},
    "animation_training": {"batch_seconds", "val_items", "init_weights", "lr_schedule", "lr_min_ratio", "lip_weight",
                           "closure_weight", "closure_mm", "gap_weight", "augment", "use_semantic", "weight_loss"},
    "animation_training.augment": {"noise_prob", "snr_db", "tilt_prob", "babble_prob", "babble_snr_db"},
}
ENCODER_SPECS = ("encoder", "semantic_encoder")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    try:
        config = json.loads(Path(path or DEFAULT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Wav2SemError(BAD_REQUEST, f"Cannot read the recipe {path} ({reason(exc)}); give a JSON file like "
                                        f"{DEFAULT_CONFIG.name}.") from exc
    if not isinstance(config, dict):
        raise Wav2SemError(BAD_REQUEST, f"The recipe {path} must be a JSON object like {DEFAULT_CONFIG.name}.")
    default = json.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    for dotted, value in (overrides or {}).items():
        node, default_node = config, default
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate([*parents, leaf]):
            here = ".".join(parents[:depth])
            known = _known_keys(here, node, default_node, config)
            if known is not None and key not in known:
                raise Wav2SemError(BAD_REQUEST, _unknown_key(dotted, ".".join([*parents[:depth], key]), here, known))
            if depth == len(parents):
                break
            default_node = default_node.get(key, {}) if isinstance(default_node, dict) else {}
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise Wav2SemError(BAD_REQUEST, f"Recipe key {dotted!r} cannot be set: {'.'.join(parents[:depth + 1])} "
                                                f"is a value, not a group of keys.")
        node[leaf] = value
    return config


def _known_keys(path: str, node: dict, default_node: object, root: dict) -> set[str] | None:
    """The keys a recipe group may hold, or None where any key goes (a transformers config)."""
    keys = set(node) | OPTIONAL_KEYS.get(path, set())
    spec_name, _, rest = path.partition(".")
    if spec_name in ENCODER_SPECS and rest == "config":
        if root.get(spec_name, {}).get("type") != "logmel":
            return None
        from ..models.logmel import LogMelConfig

        return keys | {f.name for f in fields(LogMelConfig)}
    return keys | (set(default_node) if isinstance(default_node, dict) else set())


def _unknown_key(dotted: str, key: str, group: str, known: set[str]) -> str:
    prefix = f"{group}." if group else ""
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(known), n=1)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    where = f"{group} has" if group else "the top level has"
    return f"--set {dotted} names an unknown recipe key {key!r}{hint}; {where} {', '.join(sorted(known))}."
