"""Summarise a with/without-Wav2Sem study: `wav2sem eval -o` results named
`sem-<seed>.json` and `nosem-<seed>.json` in one folder -> table (Markdown) and plot; where
`python -m wav2sem.real.evaluate -o real_<variant>-<seed>` results sit beside them (recorded
test speakers), a second table of their lip-gap measures.

    python -m wav2sem.train.ablation_report results/default_model/ablation
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

METRICS = (("lve", "LVE (m^2)"), ("minimal_pair_lve", "minimal-pair LVE (m^2)"), ("fdd", "FDD (m^2)"),
           ("mve", "MVE (m)"))
VARIANTS = (("sem", "with Wav2Sem"), ("nosem", "without Wav2Sem"))


def load(folder: Path) -> dict[str, list[dict]]:
    return {key: [json.loads(p.read_text()) for p in sorted(folder.glob(f"{key}-[0-9]*.json"))] for key, _ in VARIANTS}


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| variant | seeds | " + " | ".join(label for _, label in METRICS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |"]
    for key, label in VARIANTS:
        runs = results[key]
        cells = []
        for metric, _ in METRICS:
            values = np.array([r[metric] for r in runs], float)
            cells.append(f"{values.mean():.3e} ± {values.std():.1e}" if len(values) else "-")
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


REAL_METRICS = (("auc", "AUC open vs m/b/p", "{:.3f}"), ("closure_mm", "m/b/p closure (mm)", "{:.2f}"),
                ("opening_mm", "open vowels (mm)", "{:.1f}"), ("pause_mm", "pauses (mm)", "{:.2f}"))


def real_table(folder: Path) -> str | None:
    """Mean ± std over seeds of the recorded-speech measures (clean audio, all speakers)."""
    runs = {key: [json.loads(p.read_text()) for p in sorted(folder.glob(f"real_{key}-[0-9]*.json"))] for key, _ in VARIANTS}
    if not any(runs.values()):
        return None
    lines = ["| variant (recorded test speakers) | seeds | " + " | ".join(label for _, label, _ in REAL_METRICS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in REAL_METRICS) + " |"]
    for key, label in VARIANTS:
        scores = [next(iter(r["results"][name]["clean"]["all"] for name in r["results"] if name != "target"))
                  for r in runs[key]]
        cells = []
        for metric, _, fmt in REAL_METRICS:
            values = np.array([s[metric] for s in scores], float)
            cells.append(f"{fmt.format(values.mean())} ± {fmt.format(values.std())}" if len(values) else "-")
        lines.append(f"| {label} | {len(scores)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    for ax, (metric, label) in zip(axes, METRICS):
        for i, (key, name) in enumerate(VARIANTS):
            values = [r[metric] for r in results[key]]
            ax.scatter([i] * len(values), values, s=30)
            if values:
                ax.plot([i - 0.2, i + 0.2], [np.mean(values)] * 2, "k-")
        ax.set_xticks(range(len(VARIANTS)), [name for _, name in VARIANTS])
        ax.set_xlim(-0.6, len(VARIANTS) - 0.4)
        ax.set_title(label, fontsize=10)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.suptitle("Held-out voices, one dot per seed, bar = mean", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def coupling_table(coupling: dict[str, dict]) -> str:
    """From coupling.json (model name -> minimal_set_coupling result)."""
    rows = {"model trained with Wav2Sem, vector added": ("sem", "coupling_with_semantic"),
            "model trained with Wav2Sem, vector left out": ("sem", "coupling_without_semantic"),
            "model trained without Wav2Sem": ("nosem", "coupling_without_semantic")}
    lines = ["| speech features of minimal-set words | seeds | centred within-set cosine |", "| --- | ---: | ---: |"]
    for label, (prefix, key) in rows.items():
        values = np.array([v[key] for name, v in coupling.items() if name.split("-")[0] == prefix])
        if len(values):
            lines.append(f"| {label} | {len(values)} | {values.mean():.3f} ± {values.std():.3f} |")
    return "\n".join(lines)


def _coupling_results(folder: Path, results: dict[str, list[dict]]) -> dict[str, dict]:
    """coupling.json when present, else the coupling fields of `wav2sem eval --coupling` results."""
    if (folder / "coupling.json").is_file():
        return json.loads((folder / "coupling.json").read_text())
    return {f"{key}-{i}": r for key, _ in VARIANTS for i, r in enumerate(results[key])
            if "coupling_without_semantic" in r}


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "results/default_model/ablation")
    results = load(folder)
    text = table(results)
    real = real_table(folder)
    if real:
        text += "\n\n" + real
    coupling = _coupling_results(folder, results)
    if coupling:
        text += "\n\n" + coupling_table(coupling)
    print(text)
    (folder / "summary.md").write_text(text + "\n")
    plot(results, folder / "summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
