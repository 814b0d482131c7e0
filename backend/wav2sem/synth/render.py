"""Quick shaded renders of the template head for contact sheets (matplotlib, no Blender).

Orthographic projection, Lambert shading, painter's algorithm (faces sorted back to front);
back-facing triangles are drawn dark so the open mouth reads as a cavity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..template import Template

SKIN = np.array([0.87, 0.71, 0.60])
LIP = np.array([0.76, 0.40, 0.40])
BROW = np.array([0.55, 0.42, 0.34])
EYE = np.array([0.93, 0.93, 0.95])
CAVITY = np.array([0.16, 0.05, 0.05])
LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])

VIEWS = {"front": 0.0, "three_quarter": 35.0, "side": 90.0}   # degrees about +Y


IRIS = np.array([0.25, 0.17, 0.12])
IRIS_RADIUS = 0.0055   # metres around the front-most point of each eye


def _vertex_colours(template: Template) -> np.ndarray:
    """Per-vertex RGB in 0..1: skin, with brows, lips, eye whites and irises. -> (V, 3)"""
    colours = np.tile(SKIN, (template.vertex_count, 1))
    for name, colour in (("brows", BROW), ("lips", LIP), ("eyes", EYE)):
        if name in template.regions:
            colours[template.regions[name]] = colour
    eyes = template.regions.get("eyes", np.zeros(0, dtype=np.int32))
    for side in (-1, 1):
        own = eyes[np.sign(template.vertices[eyes, 0]) == side]
        if len(own):
            front = template.vertices[own[np.argmax(template.vertices[own, 2])]]
            near = np.linalg.norm(template.vertices[own] - front, axis=1) < IRIS_RADIUS
            colours[own[near]] = IRIS
    return colours


def draw_head(ax, template: Template, vertices: np.ndarray | None = None, view: str = "front",
              zoom_mouth: bool = False) -> None:
    """Draw the head (optionally deformed: `vertices` (V, 3)) into a matplotlib axis."""
    from matplotlib.collections import PolyCollection

    v = template.vertices if vertices is None else np.asarray(vertices, dtype=np.float64)
    angle = np.radians(VIEWS[view])
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    p = v @ rot.T                                                            # (V, 3), camera at +Z
    tri = p[template.faces]                                                  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    facing = normal[:, 2] > 0
    shade = 0.25 + 0.75 * np.clip(normal @ LIGHT, 0.0, 1.0)
    colour = _vertex_colours(template)[template.faces].mean(axis=1) * shade[:, None]
    colour[~facing] = CAVITY
    order = np.argsort(tri[:, :, 2].mean(axis=1))                            # far to near
    polys = PolyCollection(tri[order][:, :, :2], facecolors=np.clip(colour[order], 0, 1),
                           edgecolors="none", antialiased=False)
    ax.add_collection(polys)
    if zoom_mouth and view == "side":   # profile of the lower face
        ax.set_xlim(0.02, 0.13)
        ax.set_ylim(-0.13, 0.0)
    elif zoom_mouth:
        ax.set_xlim(-0.045, 0.045)
        ax.set_ylim(-0.105, -0.015)
    else:
        ax.set_xlim(-0.13, 0.13)
        ax.set_ylim(-0.23, 0.13)
    ax.set_aspect("equal")
    ax.axis("off")


def contact_sheet(path: str | Path, template: Template, panels: Sequence[tuple[str, np.ndarray | None, str, bool]],
                  columns: int = 4, panel_size: float = 3.0) -> None:
    """Save a grid of renders; each panel is (title, vertices or None, view, zoom_mouth)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * panel_size, rows * panel_size * 1.15), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, verts, view, zoom) in zip(axes.ravel(), panels):
        draw_head(ax, template, verts, view, zoom)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
