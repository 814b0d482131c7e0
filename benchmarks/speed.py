"""Issue 13's speed figures side by side, from one run: each part is one of the benchmarks
beside this file, run as a subprocess in turn (so that none inherits another's imports or
threads), its tables saved under results/speed/, and one summary table built from them:

- the project's FaceFormer path against the official FaceFormer code at 5, 10 and 20 s,
  1 and 2 threads (faceformer_official.py; skipped, and said so, without a local copy of the
  official code: --official DIR or $FACEFORMER_DIR);
- the cached FaceFormer decoder against the reference full-prefix loop and its arithmetic
  bound at 600 frames, one thread (decoder_speed.py);
- click to result with the default model, 10 s and 60 s of speech: a cold server (spawn to
  result, no prewarm), a warm server, and the add-on in Blender 5.0 after its prewarm
  (startup.py, threads auto);
- bundle loading, default and base-size bundles, against the old random-init path
  (bundle_load.py);
- peak memory of load + 20 s generate, base-size FaceFormer, against the official code
  (faceformer_memory.py; skipped like the first part).

Every part alternates its A/B rounds and quotes medians; the load average is noted per part.

    .venv/bin/python benchmarks/speed.py [--rounds 3] [--official DIR] [--busy N] [--skip PART ...]

Prints the summary and saves results/speed.md (+ .json); the parts' own tables are in
results/speed/. `--busy N` runs N other busy processes during the start-up part, as
startup.py does.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = ROOT / "results"
PARTS = ("official", "decoder", "startup", "load", "memory")
GOALS = {"official": 10.0, "decoder_ratio": 50.0, "decoder_bound": 3.0, "cold_click": 1.5, "warm_click": 0.3,
         "load": 1.0}


def run_part(name: str, args: list[str], one_thread: bool) -> tuple[float, list[float], list[float]]:
    """Run benchmarks/<name>.py with args (OMP_NUM_THREADS=1 if one_thread, as its docstring
    asks); wall seconds and the load average before and after."""
    before = [round(v, 2) for v in os.getloadavg()]
    start = time.perf_counter()
    print(f"== {name} {' '.join(args)}", file=sys.stderr, flush=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if one_thread else {})}
    subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, before, [round(v, 2) for v in os.getloadavg()]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _s(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def summary_rows(out: Path) -> list[tuple[str, str, str, str, str, str]]:
    """(measure, project, against, ratio, goal, met) from the parts' JSON files."""
    rows = []
    official = _read(out / "faceformer_official.json")
    if official:
        for key, r in official["runs"].items():
            goal = GOALS["official"] if r["seconds"] == official["goal"]["seconds"] else None
            rows.append((f"FaceFormer base, Wav2Sem off, {r['seconds']:g} s, {r['threads']} thread(s): project vs "
                         "official predict()", _s(r["median_project"]), _s(r["median_official"]),
                         f"{r['ratio']:.1f}x", f">= {goal:g}x" if goal else "",
                         ("yes" if r["ratio"] >= goal else "no") if goal else ""))
    decoder = _read(out / "decoder_speed.json")
    if decoder:
        for r in decoder["rows"]:
            m = r["median_s"]
            if "reference" in m:
                ratio = r["reference_over_cached"]
                rows.append((f"cached decoder vs reference loop, {r['frames']} frames, {r['threads']} thread",
                             _s(m["cached"]), _s(m["reference"]), f"{ratio:.0f}x", f">= {GOALS['decoder_ratio']:g}x",
                             "yes" if ratio >= GOALS["decoder_ratio"] else "no"))
            over = r["cached_over_bound"]
            rows.append((f"cached decoder vs its arithmetic bound, {r['frames']} frames, {r['threads']} thread",
                         _s(m["cached"]), _s(r["bound_s"]), f"{over:.1f}x the bound",
                         f"<= {GOALS['decoder_bound']:g}x", "yes" if over <= GOALS["decoder_bound"] else "no"))
    startup = _read(out / "startup.json")
    if startup:
        for mode, med in startup["medians_s"].items():
            where = f"default model, threads {mode}"
            for key, name, goal in (
                    ("cold_result_10", "cold server, spawn -> first result, 10 s", "cold_click"),
                    ("click_first", "add-on, first Generate after the prewarm, 10 s (click -> take)", "cold_click"),
                    ("warm_10", "warm server request, 10 s", "warm_click"),
                    ("click_warm", "add-on, later Generate, 10 s (click -> take)", "warm_click"),
                    ("cold_result_60", "cold server, spawn -> first result, 60 s", None),
                    ("warm_60", "warm server request, 60 s", None),
                    ("prewarm_ready", "prewarm: spawn -> model loaded", None)):
                if key in med:
                    limit = GOALS.get(goal) if goal else None
                    rows.append((f"{name} ({where})", _s(med[key]), "", "", f"< {_s(limit)}" if limit else "",
                                 ("yes" if med[key] < limit else "no") if limit else ""))
    load = _read(out / "bundle_load.json")
    if load:
        for r in load["rows"]:
            o, n = r["median"]["old"], r["median"]["new"]
            rows.append((f"bundle load, {r['bundle']}: new vs old (random init + copy)", _s(n["seconds"]),
                         _s(o["seconds"]), f"{r['time_ratio']:.1f}x", f"< {_s(GOALS['load'])}",
                         "yes" if n["seconds"] < GOALS["load"] else "no"))
            rows.append((f"bundle load, {r['bundle']}: peak memory growth, new vs old",
                         f"{n['peak_growth_mb']:.0f} MB", f"{o['peak_growth_mb']:.0f} MB",
                         f"{r['peak_growth_ratio']:.2f}x", "", ""))
    memory = _read(out / "faceformer_memory.json")
    if memory:
        o, p = memory["median"]["official"], memory["median"]["project"]
        rows.append((f"peak memory, load + {memory['seconds']:g} s generate, FaceFormer base: project vs official",
                     f"{p['peak_mb']:.0f} MB", f"{o['peak_mb']:.0f} MB", f"{p['peak_mb'] / o['peak_mb']:.2f}x",
                     "no higher", "yes" if memory["goal_met"] else "no"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--official", help="local copy of the official FaceFormer code")
    parser.add_argument("--busy", type=int, default=0, help="other busy processes during the start-up part")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    args = parser.parse_args()
    out = RESULTS / "speed"
    out.mkdir(parents=True, exist_ok=True)
    rounds = str(args.rounds)
    commands = {
        "official": ("faceformer_official", ["--rounds", rounds, "--out", str(out / "faceformer_official")]
                     + (["--official", args.official] if args.official else [])),
        "decoder": ("decoder_speed", ["--frames", "600", "--threads", "1", "--rounds", rounds,
                                      "--reference-rounds", rounds, "--output", "speed/decoder_speed"]),
        "startup": ("startup", ["--rounds", rounds, "--modes", "auto", "--no-phases", "--busy", str(args.busy),
                                "--label", "speed/startup"]),
        "load": ("bundle_load", ["--rounds", rounds, "--output", "speed/bundle_load"]),
        "memory": ("faceformer_memory", ["--out", str(out / "faceformer_memory")]
                   + (["--official", args.official] if args.official else [])),
    }
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = {}
    for part, (script, script_args) in commands.items():
        for old in out.glob(f"{script}.*"):         # the summary is built from this run's files only
            old.unlink()
        if part in args.skip:
            continue
        wall, before, after = run_part(script, script_args, one_thread=part in ("decoder", "load", "memory"))
        parts[part] = {"script": f"benchmarks/{script}.py", "args": script_args, "wall_s": wall,
                       "load_average_before": before, "load_average_after": after}
    for part, name in (("official", "faceformer_official"), ("memory", "faceformer_memory")):
        if part in parts and not (out / f"{name}.json").is_file():
            parts[part]["skipped"] = "no local copy of the official FaceFormer code (--official DIR)"
    rows = summary_rows(out)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, CPU"
    lines = [f"# Speed, side by side ({started}, {machine})", "",
             "One run of `benchmarks/speed.py`; every part alternates its rounds and quotes medians "
             f"({args.rounds} rounds). The parts' own tables: results/speed/.", "",
             "| part | load average before -> after | wall |", "| --- | --- | ---: |"]
    for part, info in parts.items():
        lines.append(f"| {info['script']} | {tuple(info['load_average_before'])} -> "
                     f"{tuple(info['load_average_after'])} | {info['wall_s']:.0f} s |"
                     + (f" skipped: {info['skipped']}" if "skipped" in info else ""))
    if args.busy:
        lines += ["", f"The start-up part ran with {args.busy} other busy processes (startup.py --busy)."]
    lines += ["", "| measure | project | against | ratio | goal (issue 13) | met |", "| --- | ---: | ---: | ---: | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "speed.md").write_text(text, encoding="utf-8")
    (RESULTS / "speed.json").write_text(json.dumps({"started": started, "machine": machine, "parts": parts,
                                                    "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
