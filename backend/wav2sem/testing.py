"""Small random-weight model bundles for tests and demos (fast on any CPU).

Their output is not lip sync; they exercise the real code paths (encoders, Wav2Sem fusion,
cached decoder, bundle I/O, server) in seconds.

    write_tiny_bundle(dir)                       # vertex offsets on a 300-point grid head
    write_tiny_bundle(dir, blendshapes=8)        # ARKit weights: jawOpen, jawForward, mouthClose, ...
    write_tiny_bundle(dir, blendshapes=["jawOpen", "mouthFunnel"])
    write_tiny_ict_bundle(dir)                   # ARKit weights on the real ICT head (26,719 vertices)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .bundle import BundleConfig, build_model, save_bundle
from .models.faceformer import ALIGN_INTERPOLATE, ALIGN_PAIR, DecoderConfig
from .template import Template

TINY_WAV2VEC2 = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
)


def tiny_encoder_spec(kind: str = "wav2vec2", **overrides) -> dict:
    return {"type": kind, "config": {**TINY_WAV2VEC2, **overrides}}


def grid_template(vertex_count: int = 300, seed: int = 0) -> Template:
    """A bumpy sphere-like point set with lips/upper-face regions and landmarks (test-only)."""
    rng = np.random.default_rng(seed)
    golden = np.pi * (3 - np.sqrt(5))
    i = np.arange(vertex_count)
    y = 1 - 2 * (i + 0.5) / vertex_count
    r = np.sqrt(1 - y**2)
    verts = np.stack([r * np.cos(golden * i), y, r * np.sin(golden * i)], 1) * 0.1
    verts += rng.normal(scale=0.002, size=verts.shape)
    lips = np.nonzero((np.abs(verts[:, 1] + 0.03) < 0.02) & (verts[:, 2] > 0.05))[0]
    upper = np.nonzero(verts[:, 1] > 0.03)[0]
    landmarks = {"upper_lip_center": int(lips[0]) if len(lips) else 0, "nose_tip": int(np.argmax(verts[:, 2]))}
    return Template(verts.astype(np.float32), None, {"lips": lips, "upper_face": upper}, landmarks)


def channel_names(blendshapes: int | Sequence[str]) -> tuple[str, ...]:
    """K ARKit channel names: the first K of SPEECH_CHANNELS (then channel_23, ...), or the
    names given."""
    from .heads import SPEECH_CHANNELS

    if isinstance(blendshapes, int):
        return tuple(SPEECH_CHANNELS[:blendshapes]) + tuple(f"channel_{i}" for i in range(len(SPEECH_CHANNELS), blendshapes))
    return tuple(blendshapes)


def with_smooth_blendshapes(template: Template, blendshapes: int | Sequence[str], seed: int = 0,
                            scale: float = 0.05) -> Template:
    """`template` plus K smooth random displacements (each a few Gaussian bumps over the
    vertices, peaking near `scale` x the template's size) and, if missing, the lip landmarks
    upper_lip_center / lower_lip_center and a `lips` region. Test-only."""
    names = channel_names(blendshapes)
    rng = np.random.default_rng(seed + 1000)
    verts = template.vertices.astype(np.float64)
    size = float(np.ptp(verts, axis=0).max()) or 1.0
    regions = dict(template.regions)
    landmarks = dict(template.landmarks)
    front = np.argsort(-verts[:, 2])
    if "lips" not in regions or not len(regions["lips"]):
        regions["lips"] = np.sort(front[: max(2, len(verts) // 20)]).astype(np.int32)
    lips = regions["lips"]
    if "upper_lip_center" not in landmarks or "lower_lip_center" not in landmarks:
        order = lips[np.argsort(verts[lips, 1])]         # the top and the bottom of the lips (Y up)
        landmarks["upper_lip_center"], landmarks["lower_lip_center"] = int(order[-1]), int(order[0])
    deltas = np.zeros((len(names), len(verts), 3), np.float64)
    for k in range(len(names)):
        for _ in range(3):
            centre = verts[rng.choice(lips) if rng.random() < 0.7 else rng.integers(len(verts))]
            sigma = size * rng.uniform(0.15, 0.35)
            bump = np.exp(-((verts - centre) ** 2).sum(1) / (2 * sigma**2))
            deltas[k] += bump[:, None] * rng.normal(size=3) * (scale * size / 2)
    return Template(template.vertices, template.faces, regions, landmarks, names, deltas.astype(np.float32))


def write_tiny_bundle(
    directory: str | Path,
    template: Template | None = None,
    vertex_count: int | None = None,
    *,
    seed: int = 0,
    semantic: bool = True,
    alignment: str = ALIGN_INTERPOLATE,
    n_subjects: int = 3,
    encoder_spec: dict | None = None,
    semantic_spec: dict | None = None,
    feature_dim: int = 16,
    offset_scale: float = 0.05,
    blendshapes: int | Sequence[str] = 0,
    weight_scale: float = 0.3,
) -> Path:
    """Write a random-weight bundle. `offset_scale` sets how far the (otherwise zero-initialised)
    output layer moves vertices, relative to the template's size, so tests see motion.

    `blendshapes` (a count K or channel names) makes a blendshape model: it predicts K ARKit
    weights per frame (about `weight_scale` +- `weight_scale`, not clipped), and its template gets K smooth random
    displacements (`with_smooth_blendshapes`) unless the given template already carries
    exactly those channels (e.g. `wav2sem.heads.ict_head()`)."""
    if template is None:
        template = grid_template(vertex_count or 300, seed)
    channels = channel_names(blendshapes) if blendshapes else ()
    if channels and template.blendshape_names != channels:
        if template.has_blendshapes and set(channels) <= set(template.blendshape_names):
            template = template.with_channels(channels)
        else:
            template = with_smooth_blendshapes(template, channels, seed, offset_scale)
    torch.manual_seed(seed)
    fps = 25.0 if alignment == ALIGN_PAIR else 30.0
    config = BundleConfig(
        name=f"tiny-{'arkit' if channels else 'random'}-{seed}",
        decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=n_subjects, feature_dim=feature_dim,
                              period=int(fps), alignment=alignment, output_channels=len(channels)),
        fps=fps,
        subjects=tuple(f"subject_{i}" for i in range(n_subjects)),
        encoder=encoder_spec or tiny_encoder_spec(),
        semantic=(semantic_spec or tiny_encoder_spec()) if semantic else None,
        description="Random weights for tests; the output is not lip sync.",
        channels=channels,
    )
    model = build_model(config)
    if channels:
        torch.nn.init.normal_(model.vertice_map_r.weight, std=weight_scale / np.sqrt(feature_dim))
        torch.nn.init.constant_(model.vertice_map_r.bias, weight_scale)
    else:
        size = float(np.ptp(template.vertices, axis=0).max()) or 1.0
        torch.nn.init.normal_(model.vertice_map_r.weight, std=offset_scale * size / np.sqrt(feature_dim))
    return save_bundle(directory, config, model, template)


def write_tiny_ict_bundle(directory: str | Path, channels: Sequence[str] | None = None, **kwargs) -> Path:
    """A random-weight blendshape bundle on the real ICT FaceKit head (26,719 vertices, its own
    ARKit displacements; SPEECH_CHANNELS unless `channels` names others of its 53). Writing
    takes a few seconds (the template's deltas are ~7 MB)."""
    from .heads import SPEECH_CHANNELS, ict_head

    names = tuple(channels or SPEECH_CHANNELS)
    return write_tiny_bundle(directory, ict_head(None).with_channels(names), blendshapes=names, **kwargs)
