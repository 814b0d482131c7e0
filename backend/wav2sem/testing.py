"""Small random-weight model bundles for tests and demos (fast on any CPU).

Their output is not lip sync; they exercise the real code paths (encoders, Wav2Sem fusion,
cached decoder, bundle I/O, server) in seconds.
"""
from __future__ import annotations

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
) -> Path:
    """Write a random-weight bundle. `offset_scale` sets how far the (otherwise zero-initialised)
    output layer moves vertices, relative to the template's size, so tests see motion."""
    if template is None:
        template = grid_template(vertex_count or 300, seed)
    torch.manual_seed(seed)
    fps = 25.0 if alignment == ALIGN_PAIR else 30.0
    config = BundleConfig(
        name=f"tiny-random-{seed}",
        decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=n_subjects, feature_dim=feature_dim,
                              period=int(fps), alignment=alignment),
        fps=fps,
        subjects=tuple(f"subject_{i}" for i in range(n_subjects)),
        encoder=encoder_spec or tiny_encoder_spec(),
        semantic=(semantic_spec or tiny_encoder_spec()) if semantic else None,
        description="Random weights for tests; the output is not lip sync.",
    )
    model = build_model(config)
    size = float(np.ptp(template.vertices, axis=0).max()) or 1.0
    torch.nn.init.normal_(model.vertice_map_r.weight, std=offset_scale * size / np.sqrt(feature_dim))
    return save_bundle(directory, config, model, template)
