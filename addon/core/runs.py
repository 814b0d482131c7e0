"""Which runs are in progress (Generate, Fit Face, Check, Install Backend), without bpy: the
one place that says whether a job runs. ops/run.py adds and removes runs; the panels ask it
why a button is off. Main thread only.

Exclusive runs (Generate, Fit Face) never overlap; the others run one of a kind at a time.
"""
from __future__ import annotations

from typing import Any

LIP_SYNC = "Lip sync"
FIT_FACE = "Fit Face"
CHECK = "Check"
INSTALL = "Install Backend"

# (feature, exclusive, run) of the runs in progress
_ACTIVE: list[tuple[str, bool, Any]] = []


def active(feature: str | None = None) -> Any | None:
    """The run of `feature` in progress, or (None) the exclusive run in progress, else None."""
    for name, exclusive, run in _ACTIVE:
        if name == feature or (feature is None and exclusive):
            return run
    return None


def busy_reason(feature: str | None = None) -> str:
    """Why a run (an exclusive one, or one of `feature`) cannot start now, or ''."""
    for name, exclusive, _ in _ACTIVE:
        if (feature is None and exclusive) or name == feature:
            return f"{name} is running; wait for it or press Esc."
    return ""


def add(feature: str, exclusive: bool, run: Any) -> None:
    _ACTIVE.append((feature, exclusive, run))


def remove(run: Any) -> None:
    """Forget `run` (whatever happened to it)."""
    _ACTIVE[:] = [entry for entry in _ACTIVE if entry[2] is not run]


def cancel_all() -> None:
    """The add-on is disabled: ask every run to stop (its modal handler cleans up)."""
    for _, _, run in list(_ACTIVE):
        run.cancel_requested = True
        run.cancel()
