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


# --- The working environment survives a failed, cancelled or interrupted install (issue 9 item 2) ---

from tiny_package import write_tiny_package  # noqa: E402


def install(venv: Path, source: Path, *pip_args: str) -> installer.Installer:
    plan = installer.InstallPlan(sys.executable, str(venv), str(source), pip_args, check_imports=("wav2sem",))
    job = installer.Installer(plan)
    job.start()
    job.wait()
    return job


def backend_version(venv: Path) -> str:
    """`python -m wav2sem --version` in the environment (how the add-on runs the backend)."""
    return subprocess.run([str(managed_python(venv)), "-m", "wav2sem", "--version"], capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def working_venv(tmp_path_factory):
    """An environment with wav2sem 0.0.1 made by Install Backend; tests get a copy of it."""
    work = tmp_path_factory.mktemp("working")
    job = install(work / "venv", write_tiny_package(work / "src-0.0.1", "0.0.1"), "--no-index")
    assert job.error is None, "\n".join(job.output[-20:])
    return work / "venv"


@pytest.fixture
def old_venv(working_venv, tmp_path):
    import shutil

    venv = tmp_path / "venv"
    shutil.copytree(working_venv, venv, symlinks=True)
    assert backend_version(venv) == "wav2sem 0.0.1"
    return venv


def siblings(venv: Path) -> list[str]:
    return sorted(p.name for p in venv.parent.iterdir() if p.name.startswith(venv.name))


def test_pip_failure_leaves_the_working_environment_untouched(old_venv, tmp_path):
    before = tree(old_venv)
    source = write_tiny_package(tmp_path / "src-0.0.2", "0.0.2")
    job = install(old_venv, source, "--no-index", "wav2sem-no-such-package")
    assert job.error is not None and "pip could not download" in job.error
    assert tree(old_venv) == before
    assert backend_version(old_venv) == "wav2sem 0.0.1"
    assert siblings(old_venv) == ["venv"]                 # the half-built environment is gone


def test_success_replaces_the_environment_and_it_still_runs_after_the_rename(old_venv, tmp_path):
    job = install(old_venv, write_tiny_package(tmp_path / "src-0.0.2", "0.0.2"), "--no-index")
    assert job.error is None, "\n".join(job.output[-20:])
    assert backend_version(old_venv) == "wav2sem 0.0.2"
    pip = subprocess.run([str(managed_python(old_venv)), "-m", "pip", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert pip.returncode == 0 and str(old_venv) in pip.stdout, pip.stdout + pip.stderr
    assert siblings(old_venv) == ["venv"]
    assert job.fraction == 1.0


def test_cancel_while_pip_runs_leaves_the_old_environment(old_venv, tmp_path, monkeypatch):
    import time

    before = tree(old_venv)
    signal = tmp_path / "building"
    monkeypatch.setenv("TINY_BUILD_SIGNAL", str(signal))
    plan = installer.InstallPlan(sys.executable, str(old_venv), str(write_tiny_package(tmp_path / "src", "0.0.2")),
                                 ("--no-index",), check_imports=("wav2sem",))
    job = installer.Installer(plan)
    job.start()
    deadline = time.monotonic() + 120
    while not (signal.is_file() and signal.read_text()) and time.monotonic() < deadline and not job.done:
        time.sleep(0.1)
    assert signal.is_file(), "\n".join(job.output[-20:])
    build_pid = int(signal.read_text())
    started = time.monotonic()
    job.cancel()
    job.wait()
    assert time.monotonic() - started < 20
    assert job.error == "Install Backend was cancelled."
    assert tree(old_venv) == before and backend_version(old_venv) == "wav2sem 0.0.1"
    assert siblings(old_venv) == ["venv"]
    time.sleep(0.5)
    assert not running(build_pid)                  # pip's build process went with it


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan that nobody reaps here is dead all the same)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_crashed_install_is_recovered_at_the_next_install(old_venv, tmp_path):
    # Crash between the two renames: the old environment is aside, a half-built one is beside it.
    old_venv.rename(old_venv.with_name("venv.old"))
    stale = old_venv.with_name("venv.new")
    stale.mkdir()
    (stale / "half-written").write_text("x")
    job = install(old_venv, write_tiny_package(tmp_path / "src", "0.0.2"), "--no-index", "wav2sem-no-such-package")
    assert job.error is not None
    assert backend_version(old_venv) == "wav2sem 0.0.1"
    assert siblings(old_venv) == ["venv"]
