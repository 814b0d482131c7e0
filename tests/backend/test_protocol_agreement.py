"""The protocol exists once (backend/wav2sem/protocol.py, carried by the add-on as the same
file), and the real server, the fake backends and the add-on's decoder agree on it.

The same requests go to the real `wav2sem serve` and to tests/fake_backend.py; every line
either sends is parsed strictly with the add-on's decoder (protocol.decode_event, then the
result's dataclass): a key the dataclass does not declare, or one it declares that is
missing, fails, as does any value that does not survive from_dict -> to_dict unchanged.
Then the key sets of real and fake must match, request by request."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from w2s_helpers import SUBPROCESS_ENV, wav2sem_cmd
from wav2sem import protocol

REPO = Path(__file__).resolve().parents[2]
FAKE_BACKEND = REPO / "tests" / "fake_backend.py"
FAKE_FIT_BACKEND = REPO / "tests" / "fake_fit_backend.py"

EVENT_KEYS = {"progress": {"id", "type", "stage", "fraction", "message"},
              "result": {"id", "type", "data"}, "error": {"id", "type", "error"}}
RESULT_TYPES = {"hello": protocol.Hello, "model_info": protocol.ModelInfo, "generate": protocol.GenerateResult,
                "cancel": protocol.CancelResult, "fit_face": protocol.FitResult}
ERROR_DETAILS = {protocol.NO_FACE: {"landmarks"}}          # error objects' fields beyond code and message
CODES = {value for name, value in vars(protocol).items() if name.isupper() and value == name}


def sequence(audio: Path) -> list[tuple[str | None, str, str]]:
    """(id, op, line): hello, model_info, generate, a cancel of an unknown id, a bad line."""
    requests = [("h", "hello", {}), ("m", "model_info", {}), ("g", "generate", {"audio": str(audio)}),
                ("c", "cancel", {"target": "nobody"})]
    lines = [(rid, op, json.dumps({"id": rid, "op": op, "params": params})) for rid, op, params in requests]
    return lines + [(None, "bad line", "this is not a request")]


def exchange(command: list[str], lines: list[str]) -> list[str]:
    """Send the lines, close stdin (both servers then finish what was asked and exit), and
    return every stdout line: no waiting on time, so no race."""
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300,
                          env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def parse_strictly(line: str, ops: dict) -> tuple:
    """One stdout line through the add-on's decoder, refusing anything the protocol module
    does not define. Returns its shape: (id, type, keys of the data or error object)."""
    raw = json.loads(line)
    event = protocol.decode_event(line)
    assert set(raw) == EVENT_KEYS[raw["type"]], f"event keys {sorted(raw)}: {line}"
    assert event.to_dict() == raw, f"the event does not survive decode -> encode: {line}"
    if isinstance(event, protocol.Progress):
        assert 0.0 <= event.fraction <= 1.0 and event.stage
        return event.id, "progress", frozenset()
    if isinstance(event, protocol.Error):
        assert event.code in CODES, f"error code {event.code!r} is not defined in protocol.py"
        expected = {"code", "message"} | ERROR_DETAILS.get(event.code, set())
        expected |= {"traceback"} if event.code == protocol.INTERNAL else set()
        assert set(raw["error"]) == expected, f"error keys {sorted(raw['error'])}: {line}"
        assert event.message
        return event.id, "error", frozenset(raw["error"])
    assert isinstance(event, protocol.Result)
    op = ops[event.id]
    if op == "shutdown":
        assert event.data == {}
        return event.id, "result", frozenset()
    cls = RESULT_TYPES[op]
    assert set(event.data) == field_names(cls), \
        f"{op} result keys differ from protocol.{cls.__name__}: {sorted(set(event.data) ^ field_names(cls))}"
    assert cls.from_dict(event.data).to_dict() == event.data, f"{op} result does not survive from_dict -> to_dict"
    return event.id, "result", frozenset(event.data)


def shapes(lines: list[str], ops: dict) -> dict:
    """{request id: the set of (type, keys) its lines had}."""
    found: dict = {}
    for line in lines:
        rid, kind, keys = parse_strictly(line, ops)
        found.setdefault(rid, set()).add((kind, keys))
    return found


def test_the_add_on_carries_the_backend_s_protocol_file():
    ours = Path(protocol.__file__)
    copies = sorted((REPO / "addon").rglob("protocol.py"))
    assert copies, "the add-on has no protocol.py"
    for copy in copies:
        assert copy.samefile(ours), f"{copy} is not backend/wav2sem/protocol.py"
    text = ours.read_text(encoding="utf-8")
    for module in ("torch", "numpy", "bpy"):
        assert f"import {module}" not in text, f"protocol.py imports {module}: the add-on cannot run it"


def test_real_server_and_fake_backend_agree_line_by_line(tiny_bundle, speech_wav):
    steps = sequence(speech_wav)
    ops = {rid: op for rid, op, _ in steps}
    lines = [line for _, _, line in steps]
    real = shapes(exchange(wav2sem_cmd("serve", "--model", tiny_bundle, "--device", "cpu"), lines), ops)
    fake = shapes(exchange([sys.executable, str(FAKE_BACKEND)], lines), ops)
    assert set(real) == set(fake) == set(ops), (sorted(map(str, real)), sorted(map(str, fake)))
    for rid, op in ops.items():
        assert real[rid] == fake[rid], f"{op}: real {real[rid]} vs fake {fake[rid]}"
    assert ("result", frozenset(field_names(protocol.GenerateResult))) in real["g"]
    assert {kind for kind, _ in real["g"]} == {"progress", "result"}
    assert real[None] == {("error", frozenset({"code", "message"}))}         # the bad line: id null


# ----- the errors the short sequence cannot provoke: NO_FACE and INTERNAL -----------------------
class Lines:
    """The `out` of an in-process Server."""

    def __init__(self):
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


def in_process(monkeypatch, op: str, exc: Exception) -> list[str]:
    """The lines an in-process Server sends when operation `op` raises `exc`."""
    from wav2sem.serve.operations import Operations
    from wav2sem.serve.transport import Server

    def fail(self, params, request):
        raise exc

    monkeypatch.setattr(Operations, op, fail)
    out = Lines()
    server = Server(out)
    server.handle_line(json.dumps({"id": 1, "op": op, "params": {}}))
    server.stop(drain=True)           # the worker finishes the request before it ends
    return out.lines


def fake_fit_lines(mode: str, tmp_path: Path) -> list[str]:
    mesh = tmp_path / "mesh.npz"
    grid = np.stack(np.meshgrid(np.linspace(-0.1, 0.1, 4), np.linspace(-0.1, 0.1, 4), [0.0, 0.2]), -1).reshape(-1, 3)
    np.savez(mesh, vertices=grid, loop_totals=np.full(len(grid) // 4, 4), loop_vertices=np.arange(len(grid) // 4 * 4),
             object_ids=np.zeros(len(grid), np.int32))
    requests = [{"id": 1, "op": "fit_face", "params": {"mesh": str(mesh), "output": str(tmp_path / "keys.npz")}},
                {"id": 2, "op": "hello"}, {"id": 3, "op": "cancel", "params": {"target": 99}}]
    lines = exchange([sys.executable, str(FAKE_FIT_BACKEND), mode], [json.dumps(r) for r in requests])
    return lines


@pytest.mark.parametrize("mode,code", [("no_face", protocol.NO_FACE), ("internal", protocol.INTERNAL)])
def test_fit_face_errors_agree_between_the_real_server_and_the_fake(mode, code, monkeypatch, tmp_path):
    from wav2sem.fit import NoFaceError

    raised = NoFaceError("No face found.", {name: np.zeros(3, np.float32) for name in protocol.FIT_LANDMARKS}) \
        if code == protocol.NO_FACE else RuntimeError("boom")
    ops = {1: "fit_face", 2: "hello", 3: "cancel"}
    real = shapes(in_process(monkeypatch, "fit_face", raised), ops)
    fake = shapes(fake_fit_lines(mode, tmp_path), ops)
    assert ("error", frozenset(ERROR_DETAILS.get(code, set()) | {"code", "message"}
                               | ({"traceback"} if code == protocol.INTERNAL else set()))) in real[1]
    assert {s for s in real[1] if s[0] == "error"} == {s for s in fake[1] if s[0] == "error"}


def test_fake_fit_backend_results_parse_strictly(tmp_path):
    found = shapes(fake_fit_lines("ok", tmp_path), {1: "fit_face", 2: "hello", 3: "cancel"})
    assert ("result", frozenset(field_names(protocol.FitResult))) in found[1]
    assert found[2] == {("result", frozenset(field_names(protocol.Hello)))}
    assert found[3] == {("result", frozenset({"target", "found"}))}
