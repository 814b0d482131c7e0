"""core/runs.py: the one place that says which runs are in progress and why another cannot
start (Generate and Fit Face never overlap; Check and Install run one of a kind at a time)."""
from __future__ import annotations

import pytest

from wav2sem_lipsync.core import runs


class FakeRun:
    cancel_requested = False
    cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


@pytest.fixture(autouse=True)
def empty():
    runs._ACTIVE.clear()
    yield
    runs._ACTIVE.clear()


def test_exclusive_runs_block_each_other_but_not_a_check():
    fit = FakeRun()
    runs.add(runs.FIT_FACE, True, fit)
    assert runs.active() is fit and runs.active(runs.FIT_FACE) is fit and runs.active(runs.LIP_SYNC) is None
    assert runs.busy_reason() == "Fit Face is running; wait for it or press Esc."     # Generate may not start
    assert runs.busy_reason(runs.CHECK) == ""                                          # a Check may
    check = FakeRun()
    runs.add(runs.CHECK, False, check)
    assert runs.busy_reason(runs.CHECK) == "Check is running; wait for it or press Esc."
    assert runs.active() is fit                  # a Check is never the exclusive run
    runs.remove(fit)
    assert runs.active() is None and runs.busy_reason() == "" and runs.active(runs.CHECK) is check


def test_cancel_all_asks_every_run_to_stop():
    first, second = FakeRun(), FakeRun()
    runs.add(runs.LIP_SYNC, True, first)
    runs.add(runs.INSTALL, False, second)
    runs.cancel_all()
    assert first.cancel_requested and second.cancel_requested and first.cancelled == second.cancelled == 1
