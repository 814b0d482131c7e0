"""Under CI a test that cannot run is an error; locally it is a skip that says so.

`make test` installs everything the suite needs (torch, bpy, Debian's blender, festival and
espeak-ng, KTuberling's recordings, the packages `make test-packages` fetches), so under CI a
skip for a missing piece hides a defect: a whole tier could vanish and the run stay green.
CI is on when the environment variable CI is true (.ci/run sets it; so do the usual CI services).
The hooks that apply this to every test are in tests/conftest.py.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI_NOTE = "under CI this is an error"
# A skip reason that tells the user how to install the missing piece names something
# `make test` installs, hence something CI has: such a skip is an error under CI.
INSTALL_HINTS = ("make system-deps", "make test-packages", "Debian package", "pip install -e")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def cannot_run(reason: str) -> NoReturn:
    """Stops a test, a module or a whole tier (callable at module level) that cannot run:
    `reason` is one sentence naming what cannot run and why."""
    if under_ci():
        pytest.fail(f"{reason}; {CI_NOTE} (CI={os.environ['CI']})", pytrace=False)
    pytest.skip(f"{reason}; {CI_NOTE}", allow_module_level=True)


def names_an_install(reason: str) -> bool:
    return any(hint in reason for hint in INSTALL_HINTS)


def tier_cannot_run(reason: str):
    """For a tier's conftest.py that finds its tier cannot run, as
    `pytest_pycollect_makemodule = tier_cannot_run(reason)`: the tier's first test module stops
    the collection of its folder, once, with `reason`. (cannot_run() at the conftest's import would
    do so too, but pytest imports the conftest of a folder named on its command line before
    collecting, and there a skip or failure is a bare traceback.)"""
    def pytest_pycollect_makemodule(module_path, parent):
        cannot_run(reason)
    return pytest_pycollect_makemodule
