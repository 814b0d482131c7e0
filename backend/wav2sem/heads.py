"""Reference heads that ship with the backend: the ICT FaceKit head (MIT, see
assets/heads/ict_facekit/LICENSE) with its ARKit-named expression shapes.

    head = ict_head()                      # Template in metres, Y up, face towards +Z
    head.blendshape_names                  # SPEECH_CHANNELS (or all 53 with channels=None)
    offsets = head.offsets_from_weights(w)  # (T, K) -> (T, V, 3)
    head.regions["lips"], head.landmarks["upper_lip_center"]

Regions (vertex indices): `lips` (the lip vertices of the face part, for lip vertex error
and loss weighting), `upper_face` (forehead, brows and eyes of the face part, for FDD),
`jaw` (face vertices that jawOpen moves), `brows`, `eyes` (both eyeballs), `upper_teeth`,
`lower_teeth`, and every part of the kit by its own name (`face`, `head_and_neck`,
`mouth_socket`, `gums_and_tongue`, `teeth`, `eyeball_left`, ...).
Landmarks: template.LANDMARK_NAMES. upper/lower_lip_center are the midline vertices of the
lips' contact edge (the inner lip line), so their distance is the lip gap (0.6 mm apart in
y at rest, 0 when sealed). +X is the subject's left.
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


# Landmark vertices of the kit (checked by tests/synth/test_arkit_rig.py).
ICT_LANDMARKS = {
    "upper_lip_center": 5532,     # midline, upper lip's contact edge (y -3.32 cm)
    "lower_lip_center": 5519,     # midline, lower lip's contact edge (y -3.39 cm; jawOpen moves it 3.5 cm)
    "mouth_corner_left": 6206,    # where the lip contact loops turn (x +2.2 cm)
    "mouth_corner_right": 5701,   # x -2.2 cm
    "chin": 968,                  # midline, most forward point below the mentolabial fold
    "nose_tip": 4841,             # midline, most forward vertex of the face
    "brow_left": 4235,            # where browInnerUp_L + browOuterUp_L move the brow most
    "brow_right": 2039,
}
# The lips' contact edges (inner lip line), midline to corner on each side, in order
# right corner (-x) .. midline .. left corner (+x), edge loops of the kit's quads (the two
# loops do not pair vertex by vertex: compare them at equal x, see arkit_rig.lip_gaps).
ICT_UPPER_CONTACT = (5700, 5672, 5914, 5618, 5615, 5594, 5591, 5608, 5632, 5660, 5688, 5687, 5738,
                     5739, 5761, 6036, 6022, 5798, 5810, 5532, 6315, 6303, 6526, 6540, 6266, 6244,
                     6243, 6192, 6193, 6165, 6137, 6113, 6096, 6099, 6120, 6123, 6419, 6177, 6205)
ICT_LOWER_CONTACT = (5701, 5728, 5729, 5996, 5755, 5896, 5803, 5821, 5837, 5848, 5859, 5874, 5965,
                     5951, 5982, 6010, 5883, 5939, 5519, 6444, 6388, 6514, 6486, 6455, 6469, 6379,
                     6364, 6353, 6342, 6326, 6308, 6401, 6260, 6500, 6234, 6233, 6206)


def _regions(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Vertex index sets (see the module docstring), computed from the kit in centimetres."""
    p = arrays["neutral"]
    names = arrays["part_names"].tolist()
    parts = {n: np.arange(*arrays["part_ranges"][i]) for i, n in enumerate(names)}
    deltas = dict(zip(arrays["expression_names"].tolist(), arrays["expression_deltas"]))
    face = parts["face"]
    x, y, z = p[face, 0], p[face, 1], p[face, 2]
    lips = face[((x / 2.75) ** 2 + ((y + 3.35) / 1.45) ** 2 < 1.0) & (z > 9.3)]
    upper_face = face[(y > 1.5) & (z > 5.0)]
    jaw_move = np.linalg.norm(deltas["jawOpen"][face], axis=1)
    jaw = face[jaw_move > 0.5]
    brow_move = np.linalg.norm(sum(deltas[f"brow{k}Up_{s}"] for k in ("Inner", "Outer") for s in "LR")[face], axis=1)
    brows = face[brow_move > 0.3 * brow_move.max()]
    teeth = parts["teeth"]
    teeth_jaw = np.linalg.norm(deltas["jawOpen"][teeth], axis=1) > 1e-3
    regions = {"lips": lips, "upper_face": upper_face, "jaw": jaw, "brows": brows,
               "eyes": np.concatenate([parts["eyeball_left"], parts["eyeball_right"]]),
               "upper_teeth": teeth[~teeth_jaw], "lower_teeth": teeth[teeth_jaw]}
    regions.update(parts)
    return regions


def ict_head(channels: tuple[str, ...] | None = SPEECH_CHANNELS) -> Template:
    """The ICT head as a Template in metres with the named blendshapes (all 53 for None)."""
    arrays = ict_arrays()
    names = tuple(arrays["expression_names"].tolist())
    template = Template(arrays["neutral"] * ICT_UNIT_M, ict_triangles(), _regions(arrays), dict(ICT_LANDMARKS), names,
                        arrays["expression_deltas"] * ICT_UNIT_M)
    return template if channels is None else template.with_channels(channels)
