"""The bad-input and fault matrix: fixtures shared by its tiers and the row collector.

Every test marked `@pytest.mark.matrix(tier, case, expected)` is one row of the table
(tier, case, expected, outcome, message seen). The message is what the test passed to the
`seen` fixture, else the first line of its failure. With WAV2SEM_MATRIX_RESULTS=STEM set
(benchmarks/reliability_matrix.py sets it) the table is written to STEM.md and STEM.json at
the end of the session.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from matrix_helpers import ENV, Server

import unprivileged as permissions  # noqa: E402,I001  (from tests/backend, which matrix_helpers puts on sys.path)
from unprivileged import open_folder, unprivileged  # noqa: E402,F401  (fixtures of the permission cases)

ROWS: list[dict] = []
RESULTS_ENV = "WAV2SEM_MATRIX_RESULTS"


def pytest_configure(config):
    config.addinivalue_line("markers", "matrix(tier, case, expected): one row of the reliability matrix table")


@pytest.fixture
def seen(request):
    """Call with the message the user would see; it goes into the table's row."""
    def record(message: object) -> object:
        request.node.matrix_seen = str(message)
        return message
    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    marker = item.get_closest_marker("matrix")
    if marker is None:
        return
    row = getattr(item, "matrix_row", None)
    seen_text = getattr(item, "matrix_seen", "")
    if row is None and (report.when == "call" or report.failed or report.skipped):    # a setup skip/failure too
        if report.skipped:
            outcome = "skipped"
            seen_text = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else seen_text
        else:
            outcome = "pass" if report.passed else "FAIL"
        tier, case, expected = marker.args
        item.matrix_row = row = {"tier": tier, "case": case, "expected": expected, "outcome": outcome,
                                 "message": seen_text, "seconds": round(call.duration, 2)}
        ROWS.append(row)
        if report.failed:
            row["message"] = _failure(call, report, seen_text)
    elif row is not None and report.when == "teardown" and report.failed and row["outcome"] == "pass":
        row.update(outcome="FAIL", message=_failure(call, report, seen_text))   # e.g. a file found left behind
    if row is not None:
        row["message"] = " ".join(row["message"].split())[:300]


def _failure(call, report, seen_text: str) -> str:
    text = call.excinfo.exconly() if call.excinfo else str(report.longrepr)
    first = text.removeprefix("AssertionError: ").splitlines()[0] if text else ""
    return f"{first} | seen: {seen_text}" if seen_text else first


def pytest_sessionfinish(session):
    stem = os.environ.get(RESULTS_ENV)
    if not stem or not ROWS:
        return
    write_table(Path(stem), ROWS)


def _permissions_note() -> list[str]:
    """Which way the permission cases ran (unprivileged.py), when they ran."""
    if permissions.chosen_way.cache_info().currsize == 0:
        return []
    way = permissions.chosen_way()
    return ["", f"Permission cases: run {way.description}." if isinstance(way, permissions.Way) else
            f"Permission cases: not run ({way})."]


def write_table(stem: Path, rows: list[dict]) -> None:
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("pass", "FAIL", "skipped")}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"# Reliability matrix ({time.strftime('%Y-%m-%d')}, {machine})", "",
             f"{len(rows)} cases: {counts['pass']} pass, {counts['FAIL']} fail, {counts['skipped']} skipped. "
             "Made by `benchmarks/reliability_matrix.py` (runs tests/reliability).", *_permissions_note(), "",
             "| tier | case | expected | outcome | message seen |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [r["tier"], r["case"], r["expected"], r["outcome"], r["message"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "counts": counts, "rows": rows},
                                                    indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----- shared fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def matrix_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


@pytest.fixture(scope="session")
def tiny_bundle(matrix_dir) -> Path:
    from wav2sem.testing import write_tiny_bundle

    return Path(write_tiny_bundle(matrix_dir / "bundle", seed=0, semantic=True))


@pytest.fixture(scope="session")
def fast_bundle(matrix_dir) -> Path:
    """A random non-autoregressive bundle with a small log-mel encoder: an hour of audio in
    seconds (the tiny wav2vec 2.0 bundle needs minutes for that)."""
    import torch

    from wav2sem.bundle import BundleConfig, build_model, save_bundle
    from wav2sem.models.faceformer import DecoderConfig
    from wav2sem.testing import grid_template

    encoder = {"type": "logmel", "config": {"n_mels": 40, "conv_channels": 16, "hidden_size": 16, "gru_layers": 1}}
    config = BundleConfig(name="fast-random", arch="direct", fps=30.0, subjects=("subject_0",), encoder=encoder,
                          semantic=None, decoder=DecoderConfig(vertex_count=300, n_subjects=1, feature_dim=16, period=30))
    torch.manual_seed(0)
    return Path(save_bundle(matrix_dir / "fast_bundle", config, build_model(config), grid_template(300)))


@pytest.fixture(scope="session")
def serve_tmp(matrix_dir) -> Path:
    """TMPDIR of the long-lived server: what it leaves behind is visible here."""
    folder = matrix_dir / "serve-tmp"
    folder.mkdir()
    return folder


class SharedServer:
    """The long-lived `wav2sem serve --model TINY`; started again if a case killed it (that
    case fails; the next ones still test something)."""

    def __init__(self, bundle: Path, tmp: Path):
        self.bundle, self.tmp, self.server = bundle, tmp, None

    def get(self) -> Server:
        if self.server is None or not self.server.alive():
            self.server = Server("--model", self.bundle, env={**ENV, "TMPDIR": str(self.tmp)})
            hello = self.server.final("hello", timeout=120)
            assert hello["type"] == "result", hello
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture(scope="session")
def shared_server(tiny_bundle, serve_tmp):
    shared = SharedServer(tiny_bundle, serve_tmp)
    yield shared
    shared.close()


@pytest.fixture
def live_server(shared_server):
    """The shared server (started again if an earlier case killed it)."""
    return shared_server.get()
