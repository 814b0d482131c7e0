"""Reference heads that ship with the backend: the ICT FaceKit head (MIT, see
assets/heads/ict_facekit/LICENSE) with its ARKit-named expression shapes.

    head = ict_head()                      # Template in metres, Y up, face towards +Z
    head.blendshape_names                  # SPEECH_CHANNELS (or all 53 with channels=None)
    offsets = head.offsets_from_weights(w)  # (T, K) -> (T, V, 3)
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .template import Template

ICT_DIR = Path(__file__).resolve().parent / "assets" / "heads" / "ict_facekit"
ICT_FILE = ICT_DIR / "ict_facekit_arkit.npz"
ICT_UNIT_M = 0.01                          # the kit is in centimetres

# The ARKit channels speech moves (the default model's outputs), ICT spelling (_L/_R;
# browInnerUp split in two). Eyes, cheeks and the nose are left to the animator.
SPEECH_CHANNELS = (
    "jawOpen", "jawForward", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPress_L", "mouthPress_R", "mouthStretch_L", "mouthStretch_R",
    "mouthSmile_L", "mouthSmile_R", "mouthUpperUp_L", "mouthUpperUp_R",
    "mouthLowerDown_L", "mouthLowerDown_R",
    "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
)


@lru_cache(maxsize=1)
def ict_arrays() -> dict[str, np.ndarray]:
    """The kit's arrays as shipped (centimetres): neutral, faces (F, 4; -1 pads triangles),
    expression_names, expression_deltas, part_names, part_ranges."""
    with np.load(ICT_FILE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def ict_part_range(name: str) -> tuple[int, int]:
    """Vertex index range (start, end exclusive) of one part, e.g. "face" or "teeth"."""
    arrays = ict_arrays()
    names = arrays["part_names"].tolist()
    start, end = arrays["part_ranges"][names.index(name)]
    return int(start), int(end)


def ict_triangles() -> np.ndarray:
    """(F, 3) int32: the quads split into two triangles, the triangles kept."""
    faces = ict_arrays()["faces"]
    tris = faces[:, :3]
    quads = faces[faces[:, 3] >= 0]
    return np.concatenate([tris, quads[:, [0, 2, 3]]]).astype(np.int32)


def ict_head(channels: tuple[str, ...] | None = SPEECH_CHANNELS) -> Template:
    """The ICT head as a Template in metres with the named blendshapes (all 53 for None)."""
    arrays = ict_arrays()
    names = tuple(arrays["expression_names"].tolist())
    template = Template(arrays["neutral"] * ICT_UNIT_M, ict_triangles(), {}, {}, names,
                        arrays["expression_deltas"] * ICT_UNIT_M)
    return template if channels is None else template.with_channels(channels)
