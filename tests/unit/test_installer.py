"""Install Backend without bpy: a real virtual environment and pip, offline."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from wav2sem_lipsync.core import installer
from wav2sem_lipsync.core.client import managed_python

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
    import time

    plan = installer.InstallPlan(sys.executable, str(old_venv), str(write_tiny_package(tmp_path / "src", "0.0.2")),
                                 ("--no-index",), check_imports=("wav2sem",))
    job = installer.Installer(plan)
    job.start()
    shown = []                                    # what a modal operator would draw, step by step
    while not job.finished:
        job.poll()
        shown.append((job.fraction, job.step))
        time.sleep(0.05)
    assert job.error is None, "\n".join(job.output[-20:])
    fractions = [fraction for fraction, _ in shown]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] < 0.1
    assert {step for _, step in shown} >= {"Creating the virtual environment", "Checking the backend"}
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


# --- The torch build and the progress bar (issue 9 item 12) ---

from wav2sem_lipsync.core import install_progress, torch_build  # noqa: E402

# Recorded: pip 26.3 `install --progress-bar raw sympy` from PyPI.
PIP_RAW = """\
Collecting sympy
  Downloading sympy-1.14.0-py3-none-any.whl (6.3 MB)
Progress 0 of 6299353
Progress 262144 of 6299353
Progress 6299353 of 6299353
Collecting mpmath<1.4,>=1.1.0 (from sympy)
  Downloading mpmath-1.3.0-py3-none-any.whl (536 kB)
Progress 0 of 536198
Progress 262144 of 536198
Progress 536198 of 536198
Installing collected packages: mpmath, sympy
Successfully installed mpmath-1.3.0 sympy-1.14.0""".splitlines()
# Recorded: pip 23.2.1 (a fresh Python 3.11 venv) `install --progress-bar off numpy`.
PIP_OLD = """\
Looking in links: /opt/wheels, http://127.0.0.1:8765/
Collecting numpy
  Downloading http://127.0.0.1:8765/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (16.9 MB)
Installing collected packages: numpy
Successfully installed numpy-2.4.6""".splitlines()


def fractions(lines, expected):
    progress = install_progress.PipProgress(expected)
    return [progress.feed(line) for line in lines]


def test_pip_raw_progress_lines_fill_the_bar_by_bytes():
    seen = fractions(PIP_RAW, install_progress.PipExpectation(packages=2, download_bytes=6_835_551))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert seen[PIP_RAW.index("Progress 6299353 of 6299353")] == pytest.approx(0.9 * 6299353 / 6835551)
    assert seen[PIP_RAW.index("Progress 262144 of 536198")] == pytest.approx(0.9 * (6299353 + 262144) / 6835551)
    assert seen[PIP_RAW.index("Installing collected packages: mpmath, sympy")] == pytest.approx(0.9)
    # A bigger expectation than what came: the bar waits for "Installing", it does not run ahead.
    seen = fractions(PIP_RAW, install_progress.PipExpectation(packages=10, download_bytes=200e6))
    assert seen[PIP_RAW.index("Progress 536198 of 536198")] == pytest.approx(0.9 * 2 / 10)
    assert seen[-2:] == [0.9, 1.0]


def test_old_pip_without_raw_progress_counts_packages():
    seen = fractions(PIP_OLD, install_progress.PipExpectation(packages=4, download_bytes=200e6))
    assert seen == [0.0, pytest.approx(0.9 / 4), pytest.approx(0.9 / 4), 0.9, 1.0]
    assert install_progress.progress_bar_option("pip 23.2.1 from /v/lib/python3.11/site-packages/pip (python 3.11)") \
        == "off"
    assert install_progress.progress_bar_option("pip 24.1 from /v/pip (python 3.12)") == "raw"
    assert install_progress.progress_bar_option("pip 26.3 from /v/pip (python 3.11)") == "raw"
    assert install_progress.progress_bar_option("") == "off"


def test_text_bar_for_blender_without_layout_progress():
    assert install_progress.text_bar(0.0, 10) == "[..........]   0%"
    assert install_progress.text_bar(0.42, 10) == "[####......]  42%"
    assert install_progress.text_bar(1.7, 10) == "[##########] 100%"


def test_torch_build_chosen_from_the_gpus_found():
    cpu = torch_build.choose_torch("Linux", [])
    assert cpu == torch_build.TorchChoice("torch: CPU build (no NVIDIA GPU found)", torch_build.CPU_INDEX)
    assert torch_build.choose_torch("Windows", []).index_url == torch_build.CPU_INDEX
    cuda = torch_build.choose_torch("Linux", ["NVIDIA H200"])
    assert cuda.index_url is None and cuda.description == "torch: CUDA build (NVIDIA H200)"
    assert torch_build.choose_torch("Windows", ["Tesla T4"]).description == "torch: CUDA build (NVIDIA Tesla T4)"
    assert torch_build.choose_torch("Darwin", []).index_url is None
    for args in (["--index-url", "https://mirror/simple"], ["-ihttps://m"], ["-i", "https://m"],
                 ["--extra-index-url=https://m"], ["--no-index", "--find-links", "/wheels"], ["-f", "/w"]):
        assert torch_build.choose_torch("Linux", [], args).index_url is None, args
    assert torch_build.choose_torch("Linux", [], ["--proxy", "http://p:3128", "--isolated"]).index_url is not None


def test_nvidia_detection_parsing():
    smi = ("GPU 0: NVIDIA H200 (UUID: GPU-3c1d2b3e-1111-2222-3333-444455556666)\n"
           "GPU 1: NVIDIA GeForce RTX 4090 (UUID: GPU-aaaa)\n")
    assert torch_build.parse_nvidia_smi(smi) == ["NVIDIA H200", "NVIDIA GeForce RTX 4090"]
    assert torch_build.parse_nvidia_smi("No devices were found\n") == []
    assert torch_build.parse_nvidia_smi("") == []
    info = "Model: \t\t NVIDIA A100-SXM4-80GB\nIRQ:   \t\t 42\nGPU UUID: \t GPU-x\n"
    assert torch_build.parse_proc_information(info) == "NVIDIA A100-SXM4-80GB"


def test_torch_requirement_comes_from_the_carried_pyproject(tmp_path):
    source = load_build_addon().stage_backend_source(tmp_path / "backend_src")
    assert torch_build.torch_requirement(source) == "torch>=2.1"
    assert torch_build.torch_requirement(tmp_path / "nowhere") == "torch"


def test_plan_installs_cpu_torch_first_from_the_cpu_index(tmp_path):
    plan = installer.InstallPlan("python3", str(tmp_path / "venv"), str(tmp_path / "src"), ("--proxy", "http://p"),
                                 torch=torch_build.choose_torch("Linux", []))
    venv, torch, rest = plan.steps("raw")
    assert venv.command[-1] == str(tmp_path / "venv.new")
    assert torch.title == "Installing torch: CPU build (no NVIDIA GPU found)"
    assert torch.command[torch.command.index("--index-url") + 1] == torch_build.CPU_INDEX
    assert torch.command[-1] == "torch" and "--proxy" in torch.command        # no pyproject in src: plain torch
    assert "--index-url" not in rest.command and rest.command[-1] == str(tmp_path / "src")
    assert rest.command[rest.command.index("--progress-bar") + 1] == "raw"
    assert sum(step.weight for step in (venv, torch, rest, plan.check_step())) == pytest.approx(1.0)
    cuda = installer.InstallPlan("python3", str(tmp_path / "venv"), str(tmp_path / "src"),
                                 torch=torch_build.choose_torch("Linux", ["NVIDIA H200"]))
    assert len(cuda.steps()) == 2 and sum(s.weight for s in [*cuda.steps(), cuda.check_step()]) == pytest.approx(1)
