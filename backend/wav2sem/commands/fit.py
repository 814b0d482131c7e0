"""`wav2sem fit MESH -o KEYS.npz`: ARKit shapes for a head mesh that has none (Fit Face on
the command line): MESH is an .obj, .ply or the add-on's .npz; the keys file holds the
shapes' names and deltas in the mesh's own space, and where the landmarks went."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mesh", help="the head mesh (.obj, .ply, or the add-on's .npz)")
    parser.add_argument("-o", "--output", help="keys file to write (default: MESH_STEM.keys.npz in the current folder)")
    parser.add_argument("--landmarks", help="JSON file {name: [x, y, z]} to fit from instead of the automatic guess")
    parser.add_argument("--include-eyes", action="store_true", help="also make the eye shapes (blinks, looks)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..errors import BAD_REQUEST, Wav2SemError
    from ..fit import fit_face
    from ..fit.files import read_mesh, write_keys
    from ..outputs import check_output_path

    output = Path(args.output) if args.output else Path.cwd() / f"{Path(args.mesh).stem}.keys.npz"
    check_output_path(output, ".npz")
    landmarks = None
    if args.landmarks:
        try:
            landmarks = json.loads(Path(args.landmarks).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise Wav2SemError(BAD_REQUEST, f"Cannot read the landmarks file {args.landmarks}: {exc}") from exc
    mesh = read_mesh(args.mesh)
    last = {"tenth": -1}

    def progress(fraction: float, message: str) -> None:
        tenth = int(fraction * 10)
        if tenth != last["tenth"]:
            last["tenth"] = tenth
            print(f"  {message}: {fraction:4.0%}", file=sys.stderr, flush=True)

    result = fit_face(mesh["vertices"], mesh["loop_totals"], mesh["loop_vertices"], mesh["object_ids"],
                      landmarks=landmarks, include_eyes=args.include_eyes, progress=progress)
    write_keys(output, result.names, result.deltas, result.landmarks)
    if args.json:
        print(json.dumps({"keys": str(output), **result.report}))
    else:
        print(f"{len(result.names)} shapes for {len(mesh['vertices'])} vertices in {result.report['seconds']:.1f} s "
              f"-> {output}")
    return 0
