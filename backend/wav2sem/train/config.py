"""Training recipe: one JSON file (default: default_config.json beside this module)."""
from __future__ import annotations

import json
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).with_name("default_config.json")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    config = json.loads(Path(path or DEFAULT_CONFIG).read_text())
    for dotted, value in (overrides or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config
