"""Protocol framing and messages, in memory (no process)."""
from __future__ import annotations

import json

import pytest

from wav2sem_lipsync.core import protocol


def test_request_line_is_one_json_object():
    line = protocol.encode(protocol.Request(7, "generate", {"audio": "/tmp/é.wav"}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": 7, "op": "generate", "params": {"audio": "/tmp/é.wav"}}


@pytest.mark.parametrize("event", [
    protocol.Progress(3, "encode", 0.25, "Encoding"),
    protocol.Result(3, {"offsets": "/x.npy"}),
    protocol.Error(None, "BAD_REQUEST", "not a request"),
    protocol.Error(4, "INTERNAL", "boom", "Traceback (most recent call last):\nValueError"),
])
def test_events_round_trip(event):
    assert protocol.decode_event(protocol.encode(event)) == event


@pytest.mark.parametrize("line", [b"hello\n", b"[1, 2]\n", b'{"id": 1, "type": "nonsense"}\n',
                                  b'{"id": 1, "type": "error"}\n', b'{"id": 1, "type": "result", "data": 3}\n'])
def test_invalid_lines_are_rejected(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_event(line)


def test_progress_fraction_is_clamped():
    assert protocol.decode_event(b'{"id":1,"type":"progress","stage":"decode","fraction":1.7}').fraction == 1.0


def test_typed_results_round_trip():
    info = protocol.ModelInfo("m", 30.0, 5023, "/t.npy", None, ("A",), {"lips": "/l.npy"}, {"chin": 3})
    assert protocol.ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    result = protocol.GenerateResult("/o.npy", 90, 30.0, 5023, "m", 1.5, ("The audio is silent.",))
    assert protocol.GenerateResult.from_dict(result.to_dict()) == result
    hello = protocol.Hello(1, "0.1.0", "2.13", ("cpu",))
    assert protocol.Hello.from_dict(hello.to_dict()) == hello
    assert "cpu" in hello.summary()


def test_requests_are_ascii_so_no_code_page_misreads_them():
    line = protocol.encode(protocol.Request(1, "generate", {"audio": "C:\\Stimme äöü\\日本 😀.wav"}))
    assert line.decode("cp1252").encode("cp1252") == line and line.isascii()
    assert json.loads(line.decode("cp1252"))["params"]["audio"] == "C:\\Stimme äöü\\日本 😀.wav"


def test_blendshape_fields_round_trip_and_default_for_vertex_models():
    info = protocol.ModelInfo("m", 30.0, 26719, "/t.npy", None, (), {}, {}, "blendshapes", ("jawOpen", "mouthClose"),
                              "/b.npy")
    assert protocol.ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info and info.predicts_weights
    old = protocol.ModelInfo.from_dict({"name": "m", "fps": 30, "vertex_count": 5, "template": "/t.npy"})
    assert old.output == "vertices" and old.channels == () and old.blendshapes is None and not old.predicts_weights
    with pytest.raises(ValueError, match="unknown model output"):
        protocol.ModelInfo.from_dict({"name": "m", "fps": 30, "vertex_count": 5, "template": "/t", "output": "bones"})
    result = protocol.GenerateResult(None, 90, 30.0, 26719, "m", 1.0, (), "/w.npy", ("jawOpen",))
    assert protocol.GenerateResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(KeyError):
        protocol.GenerateResult.from_dict({"offsets": None, "weights": None, "frames": 1, "fps": 30, "vertex_count": 5})


def test_generate_params_without_offsets():
    from wav2sem_lipsync.core.jobs import GenerateRequest
    params = GenerateRequest("/a.wav", output="/o.npy", offsets=False, weights_output="/w.npy").generate_params()
    assert params["offsets"] is False and params["weights_output"] == "/w.npy" and "output" not in params
    assert "offsets" not in GenerateRequest("/a.wav").generate_params()


def test_factored_fields_round_trip_and_are_absent_from_older_backends():
    info = protocol.ModelInfo("m", 30.0, 5023, "/t.npy", output_basis="/basis.npy")
    assert protocol.ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info and info.factored
    old = protocol.ModelInfo.from_dict({"name": "m", "fps": 30, "vertex_count": 5, "template": "/t.npy"})
    assert old.output_basis is None and not old.factored
    result = protocol.GenerateResult(None, 90, 30.0, 5023, "m", 1.0, coefficients="/c.npy")
    assert protocol.GenerateResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    older = protocol.GenerateResult.from_dict({"offsets": "/o.npy", "frames": 1, "fps": 30, "vertex_count": 5})
    assert older.coefficients is None


def test_generate_params_asking_for_factors():
    from wav2sem_lipsync.core.jobs import GenerateRequest
    params = GenerateRequest("/a.wav", output="/o.npy", offsets=False, factors=True,
                             coefficients_output="/c.npy").generate_params()
    assert params["factors"] is True and params["offsets"] is False and params["coefficients_output"] == "/c.npy"
    assert "output" not in params
    plain = GenerateRequest("/a.wav", output="/o.npy").generate_params()
    assert "factors" not in plain and "coefficients_output" not in plain      # requests as before
