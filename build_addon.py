"""Build the Blender add-on zips in dist/ (run by `make addon`, `make demo`, `make test`).

- dist/wav2sem_lipsync-<version>.zip            legacy add-on (Blender 3.4 - 4.1: Install...)
- dist/wav2sem_lipsync-<version>-extension.zip  extension (4.2+: Install from Disk)

Both carry the backend source (pyproject.toml, README.md, backend/wav2sem) in
`backend_src/` so Install Backend can `pip install` it into a virtual environment.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON_DIR = REPO / "addon"
MODULE = "wav2sem_lipsync"
BACKEND_SOURCE_DIR = "backend_src"            # addon/installer.py reads the same name
_EXCLUDE_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_EXCLUDE_SUFFIXES = {".pyc", ".pyo"}
_ADDON_ONLY_EXCLUDE = {"mypy.ini"}
# Tiny test weights for the suite and the benchmarks: not part of what users install.
_BACKEND_TEST_ONLY = {"testing.py", "testing_codetalker.py"}


def version() -> str:
    """The add-on version from blender_manifest.toml, checked against bl_info."""
    manifest = (ADDON_DIR / "blender_manifest.toml").read_text()
    found = re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.M)
    if not found:
        raise SystemExit("addon/blender_manifest.toml has no version")
    bl_info = re.search(r'"version":\s*\(([^)]*)\)', (ADDON_DIR / "__init__.py").read_text())
    legacy = ".".join(part.strip() for part in bl_info.group(1).split(",")) if bl_info else ""
    if legacy != found.group(1):
        raise SystemExit(f"bl_info version {legacy} differs from blender_manifest.toml {found.group(1)}")
    return found.group(1)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not _EXCLUDE_DIRS.intersection(p.relative_to(root).parts)
                  and p.suffix not in _EXCLUDE_SUFFIXES and not p.name.endswith(".egg-info"))


def archive_entries() -> list[tuple[Path, str]]:
    """(source file, path inside the add-on folder) for everything the add-on ships."""
    entries = [(p, p.relative_to(ADDON_DIR).as_posix()) for p in _files(ADDON_DIR)
               if p.name not in _ADDON_ONLY_EXCLUDE]
    for name in ("pyproject.toml", "README.md"):
        entries.append((REPO / name, f"{BACKEND_SOURCE_DIR}/{name}"))
    package = REPO / "backend" / "wav2sem"
    entries += [(p, f"{BACKEND_SOURCE_DIR}/backend/wav2sem/{p.relative_to(package).as_posix()}")
                for p in _files(package) if p.relative_to(package).as_posix() not in _BACKEND_TEST_ONLY]
    return entries


def stage_backend_source(destination: Path) -> Path:
    """Copy the backend source as the zips carry it (tests use this to test Install Backend)."""
    for source, name in archive_entries():
        if name.startswith(BACKEND_SOURCE_DIR + "/"):
            target = destination / name[len(BACKEND_SOURCE_DIR) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return destination


def build(dist: Path) -> tuple[Path, Path]:
    dist.mkdir(parents=True, exist_ok=True)
    ver = version()
    legacy = dist / f"{MODULE}-{ver}.zip"
    extension = dist / f"{MODULE}-{ver}-extension.zip"
    entries = archive_entries()
    for path, prefix in ((legacy, f"{MODULE}/"), (extension, "")):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for source, name in entries:
                zf.write(source, prefix + name)
    return legacy, extension


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist")
    args = parser.parse_args(argv)
    for path in build(args.dist):
        print(f"built {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
              f"({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
