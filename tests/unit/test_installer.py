"""Install Backend without bpy: a real virtual environment and pip, offline."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from wav2sem_lipsync import installer
from wav2sem_lipsync.client import managed_python

REPO = Path(__file__).resolve().parents[2]


def load_build_addon():
    spec = importlib.util.spec_from_file_location("build_addon", REPO / "build_addon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_into_a_fresh_venv_from_the_carried_source(tmp_path):
    source = load_build_addon().stage_backend_source(tmp_path / "backend_src")
    plan = installer.InstallPlan(sys.executable, str(tmp_path / "venv"), str(source),
                                 # torch & co. are not re-downloaded in the test (pip still fetches
                                 # setuptools from PyPI for the isolated build, as for a user)
                                 ("--no-deps",),
                                 check_imports=("wav2sem",))
    job = installer.Installer(plan)
    job.start()
    job.wait()
    assert job.error is None, "\n".join(job.output[-20:])
    assert job.finished and any("is installed" in line for line in job.output)
    assert job.step == "Checking the backend"
    python = managed_python(plan.venv_dir)
    where = subprocess.run([str(python), "-c", "import wav2sem; print(wav2sem.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in where          # installed, not the editable checkout


def test_too_old_python_is_refused_with_a_clear_message(tmp_path):
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 3 8\n")
    old.chmod(0o755)
    with pytest.raises(installer.InstallError, match=r"is Python 3\.8; the backend needs 3\.10 or newer"):
        installer.Installer(installer.InstallPlan(str(old), str(tmp_path / "venv"), str(tmp_path))).start()


def test_missing_interpreter_and_missing_source(tmp_path):
    with pytest.raises(installer.InstallError, match="does not run as a Python interpreter"):
        installer.Installer(installer.InstallPlan(str(tmp_path / "nope"), str(tmp_path / "v"), str(tmp_path))).start()
    with pytest.raises(installer.InstallError, match="backend source is missing"):
        installer.Installer(installer.InstallPlan(sys.executable, str(tmp_path / "v"), str(tmp_path))).start()


def test_offline_pip_failure_says_no_network(tmp_path):
    source = load_build_addon().stage_backend_source(tmp_path / "backend_src")
    # --no-index: pip finds no build backend or dependencies, exactly as without a network.
    plan = installer.InstallPlan(sys.executable, str(tmp_path / "venv"), str(source), ("--no-index",))
    job = installer.Installer(plan)
    job.start()
    job.wait()
    assert job.error is not None and job.error.startswith("pip could not download")


def test_failure_explanations():
    assert "no network" in installer.explain_failure("pip", 1, ["Failed to establish a new connection"])
    assert "cannot create virtual environments" in installer.explain_failure("venv", 1, ["No module named venv"])
    assert installer.explain_failure("Step", 2, ["a", "b"]) == "Step failed (exit code 2): a | b"
