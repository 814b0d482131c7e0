"""Shared pieces of the bad-input and fault matrix: the checks every case makes (one clear
sentence, nothing written, nothing left behind), the `wav2sem` command run in-process or as
a subprocess, and the matrix's questions to a `wav2sem serve` process. The audio generators,
command runners and the server driver are the backend tests' own (tests/backend/w2s_helpers.py).

Each test is one row of the matrix table: it carries `@pytest.mark.matrix(tier, case,
expected)` and reports the message it saw with the `seen` fixture (conftest.py records the
rows and, when asked, writes results/reliability_matrix.md + .json).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))   # the backend tests' helpers
from w2s_helpers import SR, ServerProcess, run_wav2sem, run_wav2sem_inprocess, speechlike, write_audio  # noqa: E402,F401
from w2s_helpers import SUBPROCESS_ENV as ENV  # noqa: E402

ERROR_PREFIX = "wav2sem: error:"


# ----- the checks ----------------------------------------------------------------------------
def assert_one_sentence(message: object, *names: str) -> str:
    """A message a user can act on: one line, no traceback or Python repr, naming `names`."""
    assert isinstance(message, str) and message.strip(), f"no message: {message!r}"
    text = message.strip()
    assert "Traceback" not in text, f"a traceback in the message: {text!r}"
    assert "\n" not in text, f"not one line: {text!r}"
    assert len(text) <= 400, f"too long for one sentence ({len(text)} characters): {text[:200]!r}..."
    for name in names:
        assert name.lower() in text.lower(), f"the message does not name {name!r}: {text!r}"
    return text


def assert_user_error(error: dict, *names: str, codes: tuple[str, ...] = ()) -> str:
    """A protocol error object the user can act on: not INTERNAL, one sentence naming `names`."""
    assert error.get("code") != "INTERNAL", f"INTERNAL where the user can act: {error.get('message')!r}"
    if codes:
        assert error.get("code") in codes, f"code {error.get('code')} (expected {' or '.join(codes)}): {error.get('message')!r}"
    return assert_one_sentence(error.get("message"), *names)


TORCH_CACHE = "torchinductor_"   # torch's own compile cache in TMPDIR (made by importing torch), not ours


def out_folder(parent: Path, mode: int) -> Path:
    """parent/out holding the user's earlier keep.npy, with permissions `mode` (0o777: anyone
    may write there, 0o555: no one but root)."""
    folder = parent / "out"
    folder.mkdir()
    (folder / "keep.npy").write_bytes(b"the user's earlier file")
    folder.chmod(mode)
    return folder


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time (nanoseconds), less
    torch's compile cache."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if not p.relative_to(folder).parts[0].startswith(TORCH_CACHE)}


# ----- the command line -----------------------------------------------------------------------
run_cli = run_wav2sem                     # the real command


def run_inprocess(*args) -> subprocess.CompletedProcess:
    """`wav2sem ARGS` in this process, with its log lines and any escaping traceback."""
    return run_wav2sem_inprocess(*args, as_user_sees=True)


def cli_failure(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Non-zero exit and exactly one `wav2sem: error:` sentence naming `names`; returns it."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    shown = lines[0] if len(lines) == 1 else last_line(proc.stderr)
    assert proc.returncode != 0, f"exit 0; stderr: {last_line(proc.stderr)!r}"
    assert "Traceback" not in proc.stderr, f"a traceback: {last_line(proc.stderr)!r}"
    assert len(lines) == 1, f"{len(lines)} error lines: {proc.stderr[-500:]!r}"
    assert_one_sentence(shown[len(ERROR_PREFIX):], *names)
    return shown


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ----- the server ------------------------------------------------------------------------------
class Server(ServerProcess):
    """The backend tests' `wav2sem serve` driver (binary pipes, every wait with a timeout),
    plus the matrix's questions: which error did a request end in, did a bad line get its
    `id: null` answer, does the server still serve."""

    def final(self, op: str, params: dict | None = None, timeout: float = 60) -> dict:
        """The result or error event a request ends in."""
        return self.request(op, params, timeout)[1]

    def error(self, op: str, params: dict | None = None, timeout: float = 60) -> dict:
        """The request must end in an error event; returns its error object."""
        final = self.final(op, params, timeout)
        assert final["type"] == "error", f"expected an error, got {final}"
        return final["error"]

    def null_error(self, timeout: float = 30) -> dict:
        """The next `id: null` error (the answer to a line that is not a request)."""
        _, final = self.wait_for(None, timeout)
        assert final["type"] == "error", final
        return final["error"]

    def probe(self, timeout: float = 60) -> list[dict]:
        """Send a `hello` and wait for its answer: the server still serves. Returns the other
        answers that came before it (e.g. the reply to a bad line)."""
        rid = self.send("hello")
        others = [m for m in self._held if m.get("type") != "progress"]
        self._held.clear()
        events, final = self.wait_for(rid, timeout)
        assert final["type"] == "result", f"hello failed after the case: {final}"
        others += [m for m in self._held if m.get("type") != "progress"]
        self._held.clear()
        return others
