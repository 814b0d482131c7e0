"""The add-on's layers (docs/DESIGN.md "Layout"): core/ never imports bpy, directly or through
another module; each folder imports only the layers below it; no module imports itself back
through others (no import circles, function-level imports included)."""
from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADDON = REPO / "addon"
BLENDER_ONLY = ("bpy", "bpy_extras", "mathutils", "addon_utils", "bmesh", "gpu", "aud")
# folder -> the add-on folders it may import ("" = the add-on's root files)
# core < scene < ui < ops: operators read settings (ui/), panels name operators only by id.
ALLOWED = {"core": {"core"}, "scene": {"core", "scene"}, "ui": {"core", "scene", "ui"},
           "ops": {"core", "scene", "ui", "ops"}, "": {"core", "scene", "ui", "ops", ""}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ADDON).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the file, relative ones resolved to add-on
    module names ('core.client'), absolute ones as written ('bpy.props')."""
    package = module_name(path).split(".")[:-1] if path.name != "__init__.py" else module_name(path).split(".")
    package = [p for p in package if p]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.module or "", node.lineno))
                continue
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            prefix = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None or not (ADDON.joinpath(*prefix).with_suffix(".py").exists()):
                # `from . import a, b` or `from ..core import a`: each name is a module
                found += [(".".join([*prefix, alias.name]), node.lineno) for alias in node.names
                          if ADDON.joinpath(*prefix, alias.name + ".py").exists()]
                if node.module is not None and ADDON.joinpath(*prefix, "__init__.py").exists():
                    found.append((".".join(prefix), node.lineno))
            else:
                found.append((".".join(prefix), node.lineno))
    return found


def addon_files() -> list[Path]:
    return sorted(p for p in ADDON.rglob("*.py") if "__pycache__" not in p.parts)


def test_core_imports_only_core_and_never_blender():
    problems = []
    for path in (ADDON / "core").glob("*.py"):
        for name, line in imports(path):
            top = name.split(".")[0]
            if top in BLENDER_ONLY or (name in {module_name(p) for p in addon_files()} and top != "core"):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not problems, problems


def test_each_layer_imports_only_the_layers_it_may():
    modules = {module_name(p) for p in addon_files()}
    problems = []
    for path in addon_files():
        layer = module_name(path).split(".")[0] if path.parent != ADDON else ""
        for name, line in imports(path):
            if name in modules:
                target = name.split(".")[0] if "." in name else ("" if (ADDON / f"{name}.py").exists() else name)
                if target not in ALLOWED[layer]:
                    problems.append(f"{path.relative_to(REPO)}:{line} ({layer or 'root'}) imports {name}")
    assert not problems, problems


def test_no_import_circles():
    modules = {module_name(p) for p in addon_files()}
    graph = {module_name(p): {n for n, _ in imports(p) if n in modules and n != module_name(p)}
             for p in addon_files()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_every_core_module_imports_with_blender_absent():
    """At run time too: with bpy and friends made unimportable, every core module imports
    (so none reaches bpy through another module, whatever the AST check missed)."""
    names = sorted(module_name(p) for p in (ADDON / "core").glob("*.py"))
    code = f"""
import importlib, importlib.abc, sys, types
class NoBlender(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLENDER_ONLY!r}:
            raise ImportError("core imported " + name)
sys.meta_path.insert(0, NoBlender())
package = types.ModuleType("wav2sem_lipsync"); package.__path__ = [{str(ADDON)!r}]
sys.modules["wav2sem_lipsync"] = package
for name in {names!r}:
    importlib.import_module("wav2sem_lipsync." + name)
print("imported", len({names!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"imported {len(names)}" in done.stdout and len(names) >= 15


def test_the_checks_see_a_bpy_import(tmp_path, monkeypatch):
    """The AST reader finds bpy however it is imported (so the wall test can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import bpy.props\n    from mathutils import Vector\n")
    monkeypatch.setattr(sys.modules[__name__], "ADDON", tmp_path)
    assert [n for n, _ in imports(sample)] == ["bpy.props", "mathutils"]
