"""build_addon.py: both zips, their layout, and the backend source they carry."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_legacy_and_extension_zips(tmp_path):
    spec = importlib.util.spec_from_file_location("build_addon", REPO / "build_addon.py")
    build_addon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_addon)
    legacy, extension = build_addon.build(tmp_path)
    version = build_addon.version()
    assert legacy.name == f"wav2sem_lipsync-{version}.zip"
    assert extension.name == f"wav2sem_lipsync-{version}-extension.zip"
    legacy_names = set(zipfile.ZipFile(legacy).namelist())
    extension_names = set(zipfile.ZipFile(extension).namelist())
    # Legacy: one top folder named after the module. Extension: the manifest at the root.
    assert all(n.startswith("wav2sem_lipsync/") for n in legacy_names)
    assert {n[len("wav2sem_lipsync/"):] for n in legacy_names} == extension_names
    for name in ("__init__.py", "blender_manifest.toml", "batch.py", "core/client.py", "core/protocol.py",
                 "scene/versions.py", "ops/run.py", "ui/panels.py", "backend_src/pyproject.toml",
                 "backend_src/README.md", "backend_src/backend/wav2sem/__main__.py"):
        assert name in extension_names, name
    assert not any("__pycache__" in n or n.endswith(".pyc") or "egg-info" in n for n in extension_names)
    assert "mypy.ini" not in extension_names
    # The test-only tiny weights stay out of what users install.
    assert not any(n.endswith(("/testing.py", "/testing_codetalker.py")) for n in extension_names)
    # The protocol exists once: the add-on carries the backend's module, byte for byte.
    with zipfile.ZipFile(extension) as zf:
        assert zf.read("core/protocol.py") == (REPO / "backend" / "wav2sem" / "protocol.py").read_bytes()
        assert zf.read("core/protocol.py") == zf.read("backend_src/backend/wav2sem/protocol.py")
