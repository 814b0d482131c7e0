"""Benchmark: how well wav2sem.fit.fit_face finds a face and transfers the ARKit shapes.

Heads (tests/fit_heads.py): the ICT head decimated to a third in Blender's axes and
centimetres (ict_decimated), the same turned and pitched (ict_tilted), the ICT head
stylised and decimated at an odd scale (ict_stylised), the project's procedural head
(synthetic), a decimated ICT head on a crude body (full_body, ~176k vertices), a cube and a
UV sphere (which must be refused with NoFaceError).

For each head: the time of fit_face (automatic landmarks), the error of its landmarks against
the hand-placed ones (mm on the source head's scale, and relative to the eye-to-mouth
distance), and for ICT-derived heads, per transferred shape: rel. RMS = RMS over the vertices
the true shape moves (|truth| > MOVED_MM) of |transferred - truth| / RMS of |truth| there;
the error on the lip vertices (95th percentile and largest, mm; whether the largest is at a
mouth corner, where the truth itself changes fastest); `leak`: the largest motion (mm) of a
head vertex the true shape does not move (|truth| < STILL_MM), on which ICT part, and how
many such vertices move more than 1 mm; and the largest motion of the back of the head
(behind the ears, where no ICT shape moves) and (full_body) of the body over all shapes.
Every head is also fitted from the hand-placed landmarks (`hand`), which separates the
transfer from the landmark guess; a head fit_face refuses is measured on that fit (the
user's way out of NO_FACE), and its NO_FACE guess against the hand landmarks.

The synthetic head has no ARKit truth: its own rig (wav2sem.synth.rig) moves it for an
articulator pose, and arkit_rig gives the ARKit weights of the same pose on the ICT head; the
transferred shapes mixed by those weights are compared with the rig's motion for jaw open,
closure (with the jaw half open) and round (rel. RMS over the vertices the rig moves, and the
midline lip gap). The two rigs were tuned independently to similar lip gaps, so this is a
plausibility check (the same kind of motion, similar size), not a truth.

Contact sheets (results/fit_face/sheet_<head>.png, Blender Workbench): rest, jawOpen,
jawOpen + mouthClose, mouthFunnel, mouthPucker and mouthRollLower at weight 1: front and 3/4
mouth close-ups and a full-head profile of the transferred shape, and (ICT heads) the truth
from the front.

Without wav2sem.fit (or with --truth) the "fit" is the truth itself (the hand landmarks and
the true deltas), to check this script and the renders.

Run: .venv/bin/python benchmarks/fit_face_quality.py [--heads a,b] [--no-sheets] [--truth] [--no-hand]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "fit_face"
sys.path.insert(0, str(REPO / "tests"))

import fit_heads  # noqa: E402
from fit_heads import FIT_LANDMARKS, FitHead  # noqa: E402

MOVED_MM = 0.2          # a true shape moves a vertex: |truth| above this (mm)
STILL_MM = 0.05         # ... does not move it: below this
HEAD_ORDER = ("ict_decimated", "ict_eyes", "ict_tilted", "ict_stylised", "synthetic", "full_body", "cube", "uv_sphere")
SHEET_HEADS = ("ict_decimated", "ict_stylised", "synthetic", "full_body")
SHEET_POSES = (("rest", {}), ("jawOpen", {"jawOpen": 1.0}), ("jawOpen + mouthClose", {"jawOpen": 1.0, "mouthClose": 1.0}),
               ("mouthFunnel", {"mouthFunnel": 1.0}), ("mouthPucker", {"mouthPucker": 1.0}),
               ("mouthRollLower", {"mouthRollLower": 1.0}))
SYNTH_POSES = (("jaw open", {"jaw_open": 1.0}), ("closure (jaw 0.5)", {"jaw_open": 0.5, "lip_close": 1.0}),
               ("round", {"lip_round": 1.0}))
SKIN, LIP, INTERIOR, TEETH_C, BODY_C = (0.86, 0.69, 0.58), (0.70, 0.38, 0.38), (0.45, 0.15, 0.15), (0.93, 0.91, 0.84), (0.62, 0.66, 0.72)


# --- names ------------------------------------------------------------------------------

def ict_names() -> tuple[str, ...]:
    from wav2sem.heads import ict_arrays

    return tuple(ict_arrays()["expression_names"].tolist())


def to_ict(name: str) -> list[str] | None:
    """A transferred shape's name (ARKit or ICT spelling) -> the ICT shapes it equals (summed)."""
    names = set(ict_names())
    if name in names:
        return [name]
    for word, side in (("Left", "_L"), ("Right", "_R")):
        if name.endswith(word) and name[: -len(word)] + side in names:
            return [name[: -len(word)] + side]
    if name + "_L" in names and name + "_R" in names:
        return [name + "_L", name + "_R"]
    return None


class Fit:
    """What a fit gave: names, deltas (K, V, 3) in the mesh's space, landmarks, report."""

    def __init__(self, names, deltas, landmarks, report, seconds):
        self.names = tuple(names)
        self.deltas = np.asarray(deltas)
        self.landmarks = {k: np.asarray(v, dtype=np.float64) for k, v in landmarks.items()}
        self.report = report
        self.seconds = seconds

    def delta(self, ict_name: str) -> np.ndarray | None:
        """The transferred delta that is this ICT shape (or half of a merged L/R one)."""
        for i, n in enumerate(self.names):
            parts = to_ict(n)
            if parts == [ict_name]:
                return self.deltas[i].astype(np.float64)
            if parts and ict_name in parts:
                return self.deltas[i].astype(np.float64) / len(parts)
        return None

    def mix(self, weights: dict[str, float]) -> np.ndarray:
        out = np.zeros(self.deltas.shape[1:])
        for name, w in weights.items():
            d = self.delta(name)
            if d is not None and w:
                out += w * d
        return out


def run_fit(head: FitHead, truth: bool, landmarks=None):
    """fit_face on the head (or the truth when `truth`). -> Fit, or the NoFaceError."""
    if truth:
        if head.kind == "none":
            return RuntimeError("truth mode: a non-head has no truth")
        names = ict_names() if head.kind == "ict" else ()
        deltas = head.truth_deltas(names) if names else np.zeros((0, head.vertex_count, 3), np.float32)
        return Fit(names, deltas, head.landmarks, {"mode": "truth"}, 0.0)
    from wav2sem.fit import NoFaceError, fit_face

    t0 = time.perf_counter()
    try:
        res = fit_face(head.vertices, head.loop_totals, head.loop_vertices, object_ids=head.object_ids,
                       landmarks=landmarks, include_eyes=False, progress=None)
    except NoFaceError as error:
        error.seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
        return error
    return Fit(res.names, res.deltas, res.landmarks, res.report, time.perf_counter() - t0)


# --- measures ---------------------------------------------------------------------------

def landmark_errors(head: FitHead, fit: Fit) -> dict:
    per = {}
    for n in FIT_LANDMARKS:
        if n in fit.landmarks and n in head.landmarks:
            per[n] = float(head.mm(np.linalg.norm(fit.landmarks[n] - head.landmarks[n])))
    e2m = float(head.mm(head.eye_to_mouth))
    vals = np.array(list(per.values())) if per else np.array([np.nan])
    return {"per_landmark_mm": per, "mean_mm": float(vals.mean()), "max_mm": float(vals.max()),
            "worst": max(per, key=per.get) if per else None, "eye_to_mouth_mm": e2m,
            "mean_rel": float(vals.mean() / e2m), "max_rel": float(vals.max() / e2m)}


def transfer_errors(head: FitHead, fit: Fit) -> dict:
    """Per ICT shape that the fit transferred: rel RMS, lip max error, leak; and the back of
    the head's and the body's largest motion over all shapes."""
    names = [n for n in ict_names() if fit.delta(n) is not None]
    truth = head.truth_deltas(names).astype(np.float64)
    per = {}
    back_max = body_max = 0.0
    body = ~head.head
    parts = kit_parts(head)
    for k, name in enumerate(names):
        got = fit.delta(name)
        t = truth[k]
        tn = head.mm(np.linalg.norm(t, axis=1))
        err = head.mm(np.linalg.norm(got - t, axis=1))
        moved = (tn > MOVED_MM) & head.head
        still = (tn < STILL_MM) & head.head
        moving = head.mm(np.linalg.norm(got, axis=1))
        rel = float(np.sqrt(np.mean(err[moved] ** 2)) / np.sqrt(np.mean(tn[moved] ** 2))) if moved.any() else float("nan")
        leak = np.where(still, moving, 0.0)
        per[name] = {"moved": int(moved.sum()), "rel_rms": rel,
                     "truth_max_mm": float(tn.max()),
                     "lip_max_err_mm": float(err[head.lips].max()) if head.lips.any() else float("nan"),
                     "lip_p95_err_mm": float(np.percentile(err[head.lips], 95)) if head.lips.any() else float("nan"),
                     "lip_max_at": _where_on_lips(head, int(np.argmax(np.where(head.lips, err, -1.0)))),
                     "err_over_5mm": int((err[head.head] > 5.0).sum()),
                     "leak_mm": float(leak.max()),
                     "leak_over_1mm": int((leak > 1.0).sum()),
                     "leak_part": parts[int(np.argmax(leak))] if leak.max() > 0 else None,
                     "err_max_mm": float(err[head.head].max()),
                     "err_max_part": parts[int(np.argmax(np.where(head.head, err, 0.0)))],
                     "back_max_mm": float(moving[head.back].max()) if head.back.any() else 0.0}
        back_max = max(back_max, per[name]["back_max_mm"])
        if body.any():
            body_max = max(body_max, float(moving[body].max()))
    from wav2sem.heads import SPEECH_CHANNELS

    speech = [n for n in SPEECH_CHANNELS if n in per]
    rels = np.array([per[n]["rel_rms"] for n in names])
    srels = np.array([per[n]["rel_rms"] for n in speech])
    return {"shapes": per, "count": len(names), "median_rel_rms": float(np.nanmedian(rels)),
            "speech_median_rel_rms": float(np.nanmedian(srels)) if speech else float("nan"),
            "speech_worst": max(speech, key=lambda n: per[n]["rel_rms"]) if speech else None,
            "speech_lip_max_err_mm": float(max(per[n]["lip_max_err_mm"] for n in speech)) if speech else float("nan"),
            "speech_lip_p95_err_mm": float(max(per[n]["lip_p95_err_mm"] for n in speech)) if speech else float("nan"),
            "speech_leak_over_1mm": int(max(per[n]["leak_over_1mm"] for n in speech)) if speech else 0,
            "speech_err_over_5mm": int(max(per[n]["err_over_5mm"] for n in speech)) if speech else 0,
            "speech_leak_max_mm": float(max(per[n]["leak_mm"] for n in speech)) if speech else float("nan"),
            "speech_leak_worst": (lambda n: f"{n} on {per[n]['leak_part']}")(max(speech, key=lambda n: per[n]["leak_mm"]))
            if speech else None,
            "back_max_mm": back_max, "body_max_mm": body_max if body.any() else None}


def _where_on_lips(head: FitHead, v: int) -> str:
    """'corner' if a lip vertex is within 4 mm of a mouth corner landmark, else 'lips'."""
    d = min(np.linalg.norm(head.vertices[v] - head.landmarks[n]) for n in ("mouth_corner_left", "mouth_corner_right"))
    return "corner" if head.mm(d) < 4.0 else "lips"


def kit_parts(head: FitHead) -> list[str]:
    """The ICT part each vertex's truth lies on ("body" for a body's vertices)."""
    from wav2sem.heads import ict_arrays, ict_triangles

    a = ict_arrays()
    part = np.empty(len(a["neutral"]), dtype=object)
    for n, (s0, e0) in zip(a["part_names"].tolist(), a["part_ranges"]):
        part[s0:e0] = n
    out = np.full(head.vertex_count, "body", dtype=object)
    has = head.ict_tri >= 0
    nearest = ict_triangles()[head.ict_tri[has], np.argmax(head.ict_bary[has], axis=1)]
    out[has] = part[nearest]
    return out.tolist()


def evaluate(head: FitHead, fit: Fit) -> dict:
    out = {"landmarks": landmark_errors(head, fit)}
    if head.kind == "ict":
        out["transfer"] = transfer_errors(head, fit)
    elif head.kind == "synthetic":
        out["synthetic_rig"] = synthetic_comparison(head, fit)
    return out


def source_normals(head: FitHead, vertices: np.ndarray | None = None) -> np.ndarray:
    v = head.to_source(head.vertices if vertices is None else vertices)
    return fit_heads.vertex_normals(v, head.triangles())


def lip_centre_vertices(head: FitHead) -> tuple[int, int]:
    """The vertices at the upper and lower lip centre landmarks, on their own lip (the upper
    one's normal points down, the lower one's up, in the head's frame)."""
    n = source_normals(head)
    up_axis = 1
    out = []
    for name, sign in (("upper_lip_center", -1.0), ("lower_lip_center", 1.0)):
        ok = (sign * n[:, up_axis] > 0.3) & head.head
        d = np.linalg.norm(head.vertices - head.landmarks[name], axis=1)
        d[~ok] = np.inf
        out.append(int(np.argmin(d)))
    return out[0], out[1]


def midline_gap_mm(head: FitHead, vertices: np.ndarray, pair: tuple[int, int]) -> float:
    s = head.to_source(vertices[list(pair)])
    return float((s[0, 1] - s[1, 1]) * 1000.0)


def synthetic_comparison(head: FitHead, fit: Fit) -> dict:
    from wav2sem.synth.arkit_rig import arkit_weights
    from wav2sem.synth.rig import ARTICULATORS
    from wav2sem.heads import SPEECH_CHANNELS

    hm_landmarks = _synth_lip_pair()
    out = {}
    for title, values in SYNTH_POSES:
        track = np.array([[values.get(a, 0.0) for a in ARTICULATORS]])
        rig = fit_heads.synthetic_rig_motion(head, track)[0]
        w = arkit_weights(track)[0]
        weights = {n: float(x) for n, x in zip(SPEECH_CHANNELS, w) if x > 1e-4}
        got = fit.mix(weights)
        rn = head.mm(np.linalg.norm(rig, axis=1))
        err = head.mm(np.linalg.norm(got - rig, axis=1))
        moved = rn > MOVED_MM
        out[title] = {"weights": {k: round(v, 3) for k, v in weights.items()},
                      "rel_rms": float(np.sqrt(np.mean(err[moved] ** 2)) / np.sqrt(np.mean(rn[moved] ** 2))),
                      "rig_max_mm": float(rn.max()), "fit_max_mm": float(head.mm(np.linalg.norm(got, axis=1)).max()),
                      "gap_rest_mm": midline_gap_mm(head, head.vertices, hm_landmarks),
                      "gap_rig_mm": midline_gap_mm(head, head.vertices + rig, hm_landmarks),
                      "gap_fit_mm": midline_gap_mm(head, head.vertices + got, hm_landmarks)}
    return out


def _synth_lip_pair() -> tuple[int, int]:
    from wav2sem.synth.head import build_head

    return build_head().template.lip_centres  # type: ignore[return-value]


# --- contact sheets ---------------------------------------------------------------------

def vertex_colours(head: FitHead) -> np.ndarray:
    colours = np.tile(np.array(SKIN), (head.vertex_count, 1))
    if head.kind == "ict":
        from wav2sem.heads import ict_head, ict_triangles
        from wav2sem.synth.render_ict import vertex_colours as ict_colours

        kit = ict_colours(ict_head(None))
        has = head.ict_tri >= 0
        corners = ict_triangles()[head.ict_tri[has]]
        colours[has] = np.einsum("hj,hjc->hc", head.ict_bary[has], kit[corners])
        colours[~head.head] = BODY_C
    elif head.kind == "synthetic":
        from wav2sem.synth.head import build_head

        t = build_head().template
        colours[head.lips] = LIP
        colours[t.regions["eyes"]] = (0.93, 0.93, 0.93)
    return colours


def sheet_rows(head: FitHead, fit: Fit, with_truth: bool) -> list[tuple[str, np.ndarray, np.ndarray | None, str]]:
    """(title, fitted delta, reference delta or None, reference label) per sheet row: the
    ARKit poses (reference: the truth on ICT heads), and on the synthetic head the rig poses
    (the transferred shapes mixed by arkit_rig's weights; reference: the head's own rig)."""
    rows = []
    for title, weights in SHEET_POSES:
        ref = None
        if with_truth:
            ref = np.zeros_like(head.vertices)
            for n, w in weights.items():
                ref += w * head.truth_deltas([n])[0]
        rows.append((title, fit.mix(weights), ref, "truth"))
    if head.kind == "synthetic":
        from wav2sem.heads import SPEECH_CHANNELS
        from wav2sem.synth.arkit_rig import arkit_weights
        from wav2sem.synth.rig import ARTICULATORS

        for title, values in SYNTH_POSES:
            track = np.array([[values.get(a, 0.0) for a in ARTICULATORS]])
            w = dict(zip(SPEECH_CHANNELS, arkit_weights(track)[0].tolist()))
            rows.append((f"rig pose: {title}", fit.mix(w), fit_heads.synthetic_rig_motion(head, track)[0], "own rig"))
    return rows


def render_sheet(head: FitHead, fit: Fit, out_png: Path, with_truth: bool, label: str) -> list[str]:
    """Renders the sheet; returns notes (midline gaps) for the report."""
    pair = lip_centre_vertices(head) if head.kind == "ict" else _synth_lip_pair()
    e2m = head.eye_to_mouth / head.scale
    mouth = head.to_source(0.5 * (head.landmarks["upper_lip_center"] + head.landmarks["lower_lip_center"]))
    centre = mouth + np.array([0.0, 0.75 * e2m, -1.5 * e2m])
    views = np.array([[0.0, 0.0, *mouth, 1.3 * e2m], [35.0, -8.0, *mouth, 1.3 * e2m],
                      [90.0, 0.0, *centre, 4.3 * e2m]])
    rows = sheet_rows(head, fit, with_truth)
    columns = 4 if any(r[2] is not None for r in rows) else 3
    poses, jobs, titles, notes = [], [], [], []
    for title, delta, ref, ref_label in rows:
        verts = head.vertices + delta
        gap = midline_gap_mm(head, verts, pair)
        note = f"{title}: midline gap {gap:.1f} mm ({label})"
        poses.append(head.to_source(verts))
        p = len(poses) - 1
        jobs += [(p, 0), (p, 1), (p, 2)]
        titles += [f"{title}\n{label}, gap {gap:.1f} mm", f"{title}, 3/4", f"{title}, profile"]
        if ref is not None:
            rv = head.vertices + ref
            rgap = midline_gap_mm(head, rv, pair)
            note += f", {rgap:.1f} mm ({ref_label})"
            poses.append(head.to_source(rv))
            jobs.append((len(poses) - 1, 0))
            titles.append(f"{title}\n{ref_label}, gap {rgap:.1f} mm")
        elif columns == 4:
            jobs.append((-1, -1))
            titles.append("")
        notes.append(note)
    with tempfile.TemporaryDirectory(prefix="fit_sheet_") as tmp:
        job = Path(tmp) / "job.npz"
        real = [j for j in jobs if j[0] >= 0]
        np.savez(job, triangles=head.triangles(), colours=vertex_colours(head), poses=np.stack(poses).astype(np.float32),
                 views=views, jobs=np.array(real))
        env = {**os.environ, "HOME": tmp}
        r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fit_face_render.py"), str(job), tmp + "/png"],
                           env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"render failed:\n{r.stderr[-3000:]}")
        tiles, k = [], 0
        for j, t in zip(jobs, titles):
            if j[0] < 0:
                tiles.append(("", None))
            else:
                tiles.append((t, f"{tmp}/png/{k}.png"))
                k += 1
        _sheet(tiles, out_png, columns, f"{head.name}: {head.description}")
    return notes


def _sheet(tiles, out_png: Path, columns: int, suptitle: str, tile_in: float = 2.7) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(tiles) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * tile_in, rows * tile_in * 1.1), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, path) in zip(axes.ravel(), tiles):
        if path is None:
            continue
        ax.imshow(mpimg.imread(path))
        ax.set_title(title, fontsize=8)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (rows * tile_in * 1.1)))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    from PIL import Image                   # 256 colours: a third of the size, no visible banding

    Image.open(out_png).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out_png, optimize=True)


# --- report -----------------------------------------------------------------------------

def _f(x, digits=2):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# Fit Face quality ({meta['mode']})", "",
             f"Commit {meta['commit']}. Machine: {meta['machine']}, load average {meta['load']:.1f} at the end "
             "(shared: fit times vary by 2x). "
             f"Transfer: rel. RMS over the vertices the true shape moves (|truth| > {MOVED_MM} mm); "
             f"leak: largest motion where the true shape moves < {STILL_MM} mm; mm on the source head's scale. "
             "Landmarks: automatic guess vs hand-placed; rel. = / eye-to-mouth distance.", "",
             "| head | vertices | tri / quad / ngon | fit (s) | landmarks mean / max (mm) | max rel. | worst landmark "
             "| shapes | rel. RMS median (all / speech) | worst speech shape | lip err p95 / max (mm) | speech leak max (mm), vertices > 1 mm "
             "| back of head (mm) | body (mm) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        poly = r["polygons"]
        polys = f"{poly['triangles']} / {poly['quads']} / {poly['ngons']}"
        if r.get("refused"):
            g = r.get("guess_landmarks")
            guess = f" (its guess: {_f(g['mean_mm'], 1)} / {_f(g['max_mm'], 1)})" if g else ""
            lines.append(f"| {name} | {r['vertices']} | {polys} | {_f(r['fit_seconds'])} | refused: "
                         f"{r['refused']}{guess} | {_f(g['max_rel'], 3) if g else ''} | {g['worst'] if g else ''} "
                         f"| | | | | | | |")
            continue
        if r.get("error"):
            lines.append(f"| {name} | {r['vertices']} | {polys} | - | {r['error']} | | | | | | | | | |")
            continue
        lm, tr = r["landmarks"], r.get("transfer")
        cells = [name, str(r["vertices"]), polys, _f(r["fit_seconds"]), f"{_f(lm['mean_mm'], 1)} / {_f(lm['max_mm'], 1)}",
                 _f(lm["max_rel"], 3), str(lm["worst"])]
        if tr:
            worst = tr["speech_worst"]
            cells += [str(tr["count"]), f"{_f(tr['median_rel_rms'], 3)} / {_f(tr['speech_median_rel_rms'], 3)}",
                      f"{worst} ({_f(tr['shapes'][worst]['rel_rms'], 3)})" if worst else "-",
                      f"{_f(tr['speech_lip_p95_err_mm'], 1)} / {_f(tr['speech_lip_max_err_mm'], 1)}",
                      f"{_f(tr['speech_leak_max_mm'], 1)} ({tr['speech_leak_worst']}), {tr['speech_leak_over_1mm']}",
                      _f(tr["back_max_mm"], 2),
                      _f(tr["body_max_mm"], 2)]
        else:
            cells += [str(r.get("shape_count", "-")), "-", "-", "-", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    hand = {n: r["hand"] for n, r in results.items() if r.get("hand", {}).get("transfer")}
    if hand:
        lines += ["", "Fitted from the hand-placed landmarks (the transfer alone):", "",
                  "| head | fit (s) | rel. RMS median (all / speech) | worst speech shape | lip err p95 / max (mm) "
                  "| speech leak max (mm), vertices > 1 mm | back of head (mm) | body (mm) |",
                  "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        for name, h in hand.items():
            tr = h["transfer"]
            worst = tr["speech_worst"]
            if results[name].get("refused"):
                name = f"{name} (automatic: refused)"
            lines.append(f"| {name} | {_f(h['fit_seconds'])} | {_f(tr['median_rel_rms'], 3)} / {_f(tr['speech_median_rel_rms'], 3)} "
                         f"| {worst} ({_f(tr['shapes'][worst]['rel_rms'], 3)}) | {_f(tr['speech_lip_p95_err_mm'], 1)} / {_f(tr['speech_lip_max_err_mm'], 1)} "
                         f"| {_f(tr['speech_leak_max_mm'], 1)} ({tr['speech_leak_worst']}), {tr['speech_leak_over_1mm']} "
                         f"| {_f(tr['back_max_mm'], 2)} | {_f(tr['body_max_mm'], 2)} |")
    from wav2sem.heads import SPEECH_CHANNELS

    ict = [n for n, r in results.items() if r.get("transfer") or r.get("hand", {}).get("transfer")]
    if ict:
        lines += ["", "Per speech shape (automatic landmarks; a refused head: from hand landmarks): rel. RMS / "
                      "lip error p95, max (mm; c = the max is at a mouth corner) / leak max (mm, on which ICT part), "
                      "vertices > 1 mm", "",
                  "| shape | " + " | ".join(ict) + " |", "| --- |" + " ---: |" * len(ict)]
        for s in SPEECH_CHANNELS:
            row = [s]
            for n in ict:
                tr = results[n].get("transfer") or results[n]["hand"]["transfer"]
                e = tr["shapes"].get(s)
                if not e:
                    row.append("-")
                    continue
                corner = " c" if e["lip_max_at"] == "corner" else ""
                leak = f" ({e['leak_part']}), {e['leak_over_1mm']}" if e["leak_mm"] > 1.0 else ""
                row.append(f"{_f(e['rel_rms'], 3)} / {_f(e['lip_p95_err_mm'], 1)}, {_f(e['lip_max_err_mm'], 1)}{corner}"
                           f" / {_f(e['leak_mm'], 1)}{leak}")
            lines.append("| " + " | ".join(row) + " |")
    for name, r in results.items():
        fits = [("automatic", r.get("synthetic_rig")), ("hand landmarks", r.get("hand", {}).get("synthetic_rig"))]
        fits = [(k, c) for k, c in fits if c]
        if not fits:
            continue
        lines += ["", f"{name}: transferred shapes mixed by arkit_rig's weights vs the synthetic head's own rig "
                      "(plausibility, not truth):", "",
                  "| fit | pose | rel. RMS | rig max (mm) | fit max (mm) | midline gap rest / rig / fit (mm) | weights |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for kind, comp in fits:
            for pose, c in comp.items():
                w = ", ".join(f"{k} {v:g}" for k, v in c["weights"].items())
                lines.append(f"| {kind} | {pose} | {_f(c['rel_rms'], 3)} | {_f(c['rig_max_mm'], 1)} | {_f(c['fit_max_mm'], 1)} "
                             f"| {_f(c['gap_rest_mm'], 1)} / {_f(c['gap_rig_mm'], 1)} / {_f(c['gap_fit_mm'], 1)} | {w} |")
    sheets = [(n, r[k]) for n, r in results.items() for k in ("sheet", "sheet_hand") if r.get(k)]
    if sheets:
        lines += ["", "Contact sheets: " + ", ".join(f"[{Path(s['png']).stem}]({Path(s['png']).name})"
                                                     + (f" ({s['of']})" if s.get("of") else " (hand landmarks)")
                                                     for n, s in sheets)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", default=",".join(HEAD_ORDER))
    parser.add_argument("--sheets", default=",".join(SHEET_HEADS), help="heads to render ('' for none)")
    parser.add_argument("--no-sheets", action="store_true")
    parser.add_argument("--truth", action="store_true", help="use the truth as the fit (checks this script)")
    parser.add_argument("--no-hand", action="store_true", help="skip the fits from hand-placed landmarks")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    out = Path(args.out)
    truth = args.truth
    if not truth:
        try:
            import wav2sem.fit  # noqa: F401
            from wav2sem.fit import fit_face  # noqa: F401
        except ImportError:
            print("wav2sem.fit.fit_face is not available: using the truth as the fit")
            truth = True
    sheets = set() if args.no_sheets else set(filter(None, args.sheets.split(",")))
    commit = _commit()                      # the code the fits run (it may change during a run)
    results = {}
    for name in args.heads.split(","):
        t0 = time.perf_counter()
        head = fit_heads.HEADS[name]()
        build = time.perf_counter() - t0
        r: dict = {"description": head.description, "vertices": head.vertex_count,
                   "polygons": fit_heads.polygon_sizes(head), "build_seconds": build}
        results[name] = r
        if head.kind == "none" and truth:
            r["error"] = "no truth mode for a non-head"
            continue
        fit = run_fit(head, truth)
        shown, shown_label = fit, "truth" if truth else "fit"
        if isinstance(fit, Exception):
            r["fit_seconds"] = getattr(fit, "seconds", None)
            r["refused"] = type(fit).__name__
            r["refusal"] = str(fit)
            guess = getattr(fit, "landmarks", None)
            if guess and head.landmarks:
                r["guess_landmarks"] = landmark_errors(head, Fit((), np.zeros((0, 1, 3)), guess, {}, 0.0))
            print(f"{name}: refused ({type(fit).__name__}: {fit})", flush=True)
            if head.kind == "none":
                continue
            shown = None
        else:
            r["fit_seconds"] = fit.seconds
            r["shape_count"] = len(fit.names)
            r["report"] = _jsonable(fit.report)
            r["names"] = list(fit.names)
            if head.kind == "none":
                r["error"] = "NOT REFUSED: fit_face fitted a non-head"
                print(f"{name}: NOT refused", flush=True)
                continue
            r.update(evaluate(head, fit))
            r["fit_landmarks"] = {k: v.tolist() for k, v in fit.landmarks.items()}
        if not truth and not args.no_hand:
            hand = run_fit(head, False, landmarks={k: v.copy() for k, v in head.landmarks.items()})
            if isinstance(hand, Exception):
                r["hand"] = {"fit_seconds": getattr(hand, "seconds", None), "refused": type(hand).__name__,
                             "refusal": str(hand)}
            else:
                r["hand"] = {"fit_seconds": hand.seconds, "report": _jsonable(hand.report), **evaluate(head, hand)}
                if shown is None:
                    shown, shown_label = hand, "fit from hand landmarks"
        if name in sheets and shown is not None:
            png = out / f"sheet_{name}.png"
            t1 = time.perf_counter()
            notes = render_sheet(head, shown, png, with_truth=head.kind == "ict" and not truth, label=shown_label)
            r["sheet"] = {"png": str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png),
                          "notes": notes, "seconds": time.perf_counter() - t1, "of": shown_label}
            if head.kind == "synthetic" and isinstance(r.get("hand"), dict) and "synthetic_rig" in r["hand"]:
                png = out / f"sheet_{name}_hand.png"
                notes = render_sheet(head, hand, png, with_truth=False, label="fit from hand landmarks")
                r["sheet_hand"] = {"png": str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png),
                                   "notes": notes}
        lm = r.get("landmarks", {})
        print(f"{name}: fit {_f(r.get('fit_seconds'))} s, landmarks mean {_f(lm.get('mean_mm'), 1)} mm, "
              f"speech rel RMS median {_f(r.get('transfer', {}).get('speech_median_rel_rms'), 3)}, "
              f"hand {_f(r.get('hand', {}).get('transfer', {}).get('speech_median_rel_rms'), 3)}", flush=True)
    meta = {"mode": "truth (no fit_face)" if truth else "fit_face", "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs", "load": os.getloadavg()[0],
            "moved_mm": MOVED_MM, "still_mm": STILL_MM, "commit": commit}
    text = markdown(results, meta)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(text)
    (out / "quality.json").write_text(json.dumps({"meta": meta, "heads": _jsonable(results)}, indent=1))


def _commit() -> str:
    """HEAD, and '+ local changes' when wav2sem.fit differs from it."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "backend/wav2sem/fit")
    return head + (" + local changes to wav2sem.fit" if dirty else "")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    main()
