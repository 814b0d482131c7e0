"""Fixtures that start fake backends (tests/fake_backend.py); import them into a test module."""
from __future__ import annotations

import sys

import pytest

from conftest import FAKE_BACKEND
from wav2sem_lipsync.client import BackendProcess


def fake_command(*switches: str) -> list[str]:
    return [sys.executable, str(FAKE_BACKEND), *switches]


@pytest.fixture
def start_fake():
    """Starts fake backends with switches; closes them after the test."""
    started: list[BackendProcess] = []

    def start(*switches: str) -> BackendProcess:
        backend = BackendProcess(sys.executable, command=fake_command(*switches))
        backend.start()
        started.append(backend)
        return backend
    yield start
    for backend in started:
        backend.close()


@pytest.fixture
def fake_python(tmp_path):
    """A 'Python' for the pool, which launches `PYTHON -m wav2sem serve`: a wrapper script
    that runs the fake backend with switches instead."""
    def make(*switches: str) -> str:
        wrapper = tmp_path / "python"
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(fake_command(*switches)) + "\n")
        wrapper.chmod(0o755)
        return str(wrapper)
    return make
