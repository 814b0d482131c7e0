"""Under CI (CI=true) a test, module or tier that cannot run fails the run; locally it skips and
says so (tests/conftest.py, tests/ci_policy.py). Each case runs pytest in a subprocess: on a
small arrangement of tiers with a copy of the suite's conftest, or on the real bpy and
blender -b tiers with bpy made unimportable or blender missing or broken."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI_NOTE = "under CI this is an error"

# A tier that passes, and one case per rule: folder name -> {file name: source}.
TIERS = {
    "ok": {"test_ok.py": "def test_passes():\n    pass\n"},
    "gone": {"test_gone.py": """
        import pytest
        pytest.importorskip("wav2sem_no_such_module")
        def test_never_collected():
            pass
        """},
    "hinted": {"test_hinted.py": """
        import pytest
        def test_passes():
            pass
        def test_needs_espeak():
            pytest.skip("espeak-ng is not installed (make system-deps)")
        """},
    "silent": {"test_silent.py": """
        import pytest
        @pytest.mark.parametrize("n", [1, 2])
        def test_skips(n):
            pytest.skip("some reason no rule recognises")
        """},
    "gpu": {"test_gpu.py": """
        import pytest
        @pytest.mark.gpu
        def test_needs_cuda():
            pytest.skip("needs a CUDA GPU (Debian package nvidia-driver)")
        """},
}


@pytest.fixture(scope="module")
def arrangement(tmp_path_factory) -> Path:
    """A project whose tests/ holds the suite's own conftest.py and ci_policy.py, and TIERS."""
    root = tmp_path_factory.mktemp("tiers")
    tests = root / "tests"
    tests.mkdir()
    for name in ("conftest.py", "ci_policy.py"):
        shutil.copy(REPO / "tests" / name, tests / name)
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    for tier, files in TIERS.items():
        (tests / tier).mkdir()
        for name, source in files.items():
            (tests / tier / name).write_text(textwrap.dedent(source))
    return root


def run_pytest(cwd: Path, *args: str, ci: bool, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    environment.update(env, **({"CI": "true"} if ci else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_the_passing_tier_passes_under_ci(arrangement):
    result = run_pytest(arrangement, "tests/ok", ci=True)
    assert result.returncode == 0, output(result)


def test_a_module_skipped_at_collection_is_an_error_under_ci(arrangement):
    result = run_pytest(arrangement, "tests/ok", "tests/gone", ci=True)
    assert result.returncode == pytest.ExitCode.INTERRUPTED, output(result)
    assert (f"tests/gone/test_gone.py cannot run: could not import 'wav2sem_no_such_module': "
            f"No module named 'wav2sem_no_such_module'; {CI_NOTE}") in result.stdout


def test_a_module_skipped_at_collection_skips_locally_saying_so(arrangement):
    result = run_pytest(arrangement, "tests/ok", "tests/gone", ci=False)
    assert result.returncode == 0, output(result)
    assert f"could not import 'wav2sem_no_such_module': No module named 'wav2sem_no_such_module'; {CI_NOTE}" \
        in result.stdout
    assert "1 passed, 1 skipped" in result.stdout


def test_a_skip_for_something_make_installs_fails_under_ci(arrangement):
    result = run_pytest(arrangement, "tests/hinted", ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output(result)
    assert (f"tests/hinted/test_hinted.py::test_needs_espeak cannot run: espeak-ng is not installed "
            f"(make system-deps); {CI_NOTE} (CI installs it)") in result.stdout
    assert "1 failed, 1 passed" in result.stdout


def test_a_skip_for_something_make_installs_skips_locally_saying_so(arrangement):
    result = run_pytest(arrangement, "tests/hinted", ci=False)
    assert result.returncode == 0, output(result)
    assert f"espeak-ng is not installed (make system-deps); {CI_NOTE}" in result.stdout


def test_a_tier_that_passes_nothing_fails_under_ci(arrangement):
    result = run_pytest(arrangement, "tests/ok", "tests/silent", ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output(result)
    assert f"ERROR tests/silent: none of its 2 selected tests passed (all skipped?); {CI_NOTE}" in result.stdout
    assert "ERROR tests/ok" not in result.stdout


@pytest.mark.parametrize("args", [("tests/ok", "tests/silent", "--collect-only"), ("tests/ok", "tests/gpu")],
                         ids=["collect-only", "gpu"])
def test_collection_alone_and_gpu_skips_pass_under_ci(arrangement, args):
    result = run_pytest(arrangement, *args, ci=True)
    assert result.returncode == 0, output(result)


def test_a_silent_tier_passes_locally(arrangement):
    result = run_pytest(arrangement, "tests/ok", "tests/silent", ci=False)
    assert result.returncode == 0, output(result)
    assert "1 passed, 2 skipped" in result.stdout


@pytest.fixture
def unimportable_bpy(tmp_path) -> Path:
    """A folder whose bpy.py fails to import, as a bpy without its shared libraries does."""
    (tmp_path / "bpy.py").write_text('raise ImportError("libXi.so.6: cannot open shared object file")\n')
    return tmp_path


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_the_bpy_tier_without_bpy(unimportable_bpy, ci):
    result = run_pytest(REPO, "tests/blender", ci=ci, PYTHONPATH=str(unimportable_bpy))
    reason = ("the bpy tier (tests/blender) cannot run: the bpy module does not import (ImportError: "
              f"libXi.so.6: cannot open shared object file; `make setup` installs it); {CI_NOTE}")
    assert reason in result.stdout, output(result)
    if ci:
        assert result.returncode == pytest.ExitCode.INTERRUPTED, output(result)
        assert "1 error" in result.stdout
    else:   # the tier alone: its one skip, no test
        assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, output(result)
        assert "1 skipped" in result.stdout


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_the_blender_cli_tier_without_blender(tmp_path, ci):
    result = run_pytest(REPO, "tests/blender_cli", ci=ci, PATH=str(tmp_path))
    reason = ("the blender_cli tier (tests/blender_cli) cannot run: Debian's blender is not on PATH "
              f"(make system-deps installs it); {CI_NOTE}")
    assert reason in result.stdout, output(result)
    assert result.returncode == (pytest.ExitCode.INTERRUPTED if ci else pytest.ExitCode.NO_TESTS_COLLECTED), \
        output(result)


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_the_blender_cli_tier_with_a_blender_that_does_not_start(tmp_path, ci):
    fake = tmp_path / "blender"
    fake.write_text("#!/bin/sh\necho 'blender: error while loading shared libraries: libOpenImageIO.so.2.4' >&2\n"
                    "exit 127\n")
    fake.chmod(0o755)
    test = "tests/blender_cli/test_headless.py::test_headless_error_gives_message_and_exit_code"
    result = run_pytest(REPO, test, ci=ci, PATH=f"{tmp_path}:{os.environ['PATH']}")
    reason = (f"the blender_cli tier (tests/blender_cli) cannot run: `{fake} -b` failed to start (exit status 127: "
              f"blender: error while loading shared libraries: libOpenImageIO.so.2.4); {CI_NOTE}")
    assert reason in result.stdout, output(result)
    if ci:
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, output(result)
        assert "1 error" in result.stdout
    else:
        assert result.returncode == pytest.ExitCode.OK, output(result)
        assert "1 skipped" in result.stdout
