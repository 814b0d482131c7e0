"""Suite-wide policy: under CI no test, module or tier vanishes silently (tests/ci_policy.py says why).

Under CI (CI=true):
- a module or folder skipped while collecting (a module-level skip, importorskip) is a collection error;
- a test skipped for a missing piece its reason says how to install ("make system-deps",
  "make test-packages", "Debian package", "pip install -e") fails;
- a tier (a folder of tests/) with tests selected of which none passed fails the run: the net
  for skips the two rules above do not recognise.
Locally these stay skips, and their reasons end with "under CI this is an error".
Tests marked gpu are exempt: they skip without CUDA everywhere (skipif per test, never a module skip).
"""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from ci_policy import CI_NOTE, names_an_install, under_ci

TESTS = Path(__file__).resolve().parent
SELECTED = pytest.StashKey[collections.Counter]()   # tier -> tests selected (gpu ones left out)
PASSED = pytest.StashKey[collections.Counter]()     # tier -> tests passed
SILENT = pytest.StashKey[list]()                    # tiers that passed nothing, found at the end


def tier_of(path: Path) -> str | None:
    """'blender' for tests/blender/test_x.py; None outside tests/ or for a file directly in it."""
    path = Path(path).resolve()
    parts = path.relative_to(TESTS).parts if path.is_relative_to(TESTS) else ()
    return parts[0] if len(parts) > 1 else None


def skip_reason(report) -> str:
    """The reason a skip report carries: its longrepr is (path, line, "Skipped: reason")."""
    message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return message.removeprefix("Skipped: ")


def with_ci_note(report, reason: str) -> None:
    if CI_NOTE not in reason and isinstance(report.longrepr, tuple):
        path, line, _ = report.longrepr
        report.longrepr = (path, line, f"Skipped: {reason}; {CI_NOTE}")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.skipped:
        reason = skip_reason(report)
        if under_ci():
            report.outcome = "failed"
            report.longrepr = f"{report.nodeid or collector.name} cannot run: {reason}; {CI_NOTE}"
        else:
            with_ci_note(report, reason)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    tier = tier_of(item.path)
    if report.when == "call" and report.passed and tier is not None:
        item.config.stash.setdefault(PASSED, collections.Counter())[tier] += 1
    skipped = report.skipped and not hasattr(report, "wasxfail")
    if skipped and item.get_closest_marker("gpu") is None and names_an_install(reason := skip_reason(report)):
        if under_ci():
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} cannot run: {reason}; {CI_NOTE} (CI installs it)"
        else:
            with_ci_note(report, reason)
    return report


def pytest_collection_finish(session):
    session.config.stash[SELECTED] = collections.Counter(
        tier for item in session.items
        if item.get_closest_marker("gpu") is None and (tier := tier_of(item.path)) is not None)


def pytest_sessionfinish(session, exitstatus):
    if not under_ci() or session.config.option.collectonly or exitstatus != pytest.ExitCode.OK:
        return
    passed = session.config.stash.get(PASSED, collections.Counter())
    silent = [tier for tier in sorted(session.config.stash.get(SELECTED, {})) if passed[tier] == 0]
    if silent:
        session.config.stash[SILENT] = silent
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    for tier in config.stash.get(SILENT, []):
        selected = config.stash[SELECTED][tier]
        terminalreporter.write_line(f"ERROR tests/{tier}: none of its {selected} selected tests passed "
                                    f"(all skipped?); {CI_NOTE}", red=True)
