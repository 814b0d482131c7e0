"""Blendshape (ARKit) models through inference, `wav2sem serve` and `wav2sem infer`
(docs/DESIGN.md, "Blendshape (ARKit) models"): the weights (T, K) with their channel names,
offsets = weights @ deltas on the model's template, `offsets: false`, `weights_output`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import ServerProcess, assert_clean_failure, run_wav2sem, run_wav2sem_inprocess

K = 8


@pytest.fixture(scope="module")
def arkit_bundle(bundle_dir) -> Path:
    from wav2sem.testing import write_tiny_bundle

    path = bundle_dir / "tiny_arkit"
    return path if path.exists() else write_tiny_bundle(path, blendshapes=K, seed=4)


@pytest.fixture(scope="module")
def arkit_model(arkit_bundle):
    from wav2sem.loaded_model import load_model

    return load_model(arkit_bundle, "cpu")


@pytest.fixture(scope="module")
def server(arkit_bundle):
    srv = ServerProcess("--model", arkit_bundle, "--device", "cpu")
    yield srv
    srv.close()
    assert srv.bad_lines == [], f"non-protocol lines on stdout: {srv.bad_lines[:5]}"


def flat(deltas: np.ndarray) -> np.ndarray:
    return deltas.reshape(deltas.shape[0], -1)


# ----- the tiny bundles -------------------------------------------------------------------
def test_tiny_blendshape_bundle_is_a_valid_arkit_bundle(arkit_bundle, arkit_model):
    from wav2sem.heads import SPEECH_CHANNELS
    from wav2sem.testing import channel_names

    config = json.loads((arkit_bundle / "config.json").read_text())
    assert config["output"] == {"type": "blendshapes", "channels": list(SPEECH_CHANNELS[:K])}
    assert arkit_model.output == "blendshapes" and arkit_model.channels == SPEECH_CHANNELS[:K]
    template = arkit_model.template
    assert template.blendshape_names == SPEECH_CHANNELS[:K]
    assert template.blendshape_deltas.shape == (K, 300, 3) and template.blendshape_deltas.dtype == np.float32
    assert np.abs(template.blendshape_deltas).max() > 1e-3
    assert {"upper_lip_center", "lower_lip_center"} <= set(template.landmarks) and len(template.regions["lips"])
    upper, lower = template.lip_centres
    assert template.vertices[upper, 1] > template.vertices[lower, 1]
    assert channel_names(2) == ("jawOpen", "jawForward")
    assert channel_names(25)[-2:] == ("channel_23", "channel_24")
    assert channel_names(["jawOpen", "mouthClose"]) == ("jawOpen", "mouthClose")


def test_vertex_models_say_so(tiny_model):
    assert tiny_model.output == "vertices" and tiny_model.channels == () and not tiny_model.predicts_weights


def test_tiny_ict_bundle(bundle_dir, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.heads import SPEECH_CHANNELS, ict_head
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.testing import write_tiny_ict_bundle

    path = write_tiny_ict_bundle(bundle_dir / "tiny_ict", semantic=False, seed=3)
    model = load_model(path, "cpu")
    head = ict_head()
    assert model.channels == SPEECH_CHANNELS and model.vertex_count == head.vertex_count
    np.testing.assert_array_equal(model.template.blendshape_deltas, head.blendshape_deltas)
    assert model.template.landmarks == head.landmarks
    result = generate(model, load_audio(speech_wav)[: 16000])
    assert result.weights.shape == (result.frames, len(SPEECH_CHANNELS))
    assert result.offsets.shape == (result.frames, head.vertex_count, 3)


# ----- inference ----------------------------------------------------------------------------
def test_generate_returns_weights_and_offsets_through_the_deltas(arkit_model, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    wave = load_audio(speech_wav)
    result = generate(arkit_model, wave, subject=1)
    assert result.channels == arkit_model.channels
    assert result.weights.dtype == np.float32 and result.weights.shape == (result.frames, K)
    assert result.offsets.dtype == np.float32 and result.offsets.shape == (result.frames, 300, 3)
    assert result.weights.std(0).min() > 1e-3                          # it moves
    expected = (result.weights.astype(np.float64) @ flat(arkit_model.template.blendshape_deltas)).reshape(-1, 300, 3)
    np.testing.assert_allclose(result.offsets, expected, atol=1e-6, rtol=0)
    lean = generate(arkit_model, wave, subject=1, offsets=False)
    assert lean.offsets is None and lean.frames == result.frames
    np.testing.assert_array_equal(lean.weights, result.weights)


def test_pair_alignment_blendshape_model(bundle_dir, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.testing import write_tiny_bundle

    model = load_model(write_tiny_bundle(bundle_dir / "tiny_arkit_pair", blendshapes=["jawOpen", "mouthClose", "mouthFunnel"],
                                         alignment="pair", semantic=False, seed=6), "cpu")
    result = generate(model, load_audio(speech_wav))
    assert result.fps == 25.0 and result.channels == ("jawOpen", "mouthClose", "mouthFunnel")
    assert result.weights.shape == (result.frames, 3) and result.offsets.shape == (result.frames, 300, 3)


def test_weights_are_not_clipped(arkit_model, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    weights = generate(arkit_model, load_audio(speech_wav), offsets=False).weights
    assert weights.min() < 0 or weights.max() > 1      # random weights stray outside 0..1 and are kept


def test_silence_is_zero_weights(arkit_model):
    from wav2sem.inference import generate

    result = generate(arkit_model, np.zeros(16000, np.float32))
    assert result.weights.shape == (result.frames, K) and not result.weights.any() and not result.offsets.any()
    assert result.warnings


def test_non_finite_weights_are_refused(arkit_model, speech_wav, monkeypatch):
    from wav2sem.audio import load_audio
    from wav2sem.errors import MODEL_INVALID, Wav2SemError
    from wav2sem.inference import generate

    real = type(arkit_model.net).decode

    def broken(self, *args, **kwargs):
        out = real(self, *args, **kwargs).clone()
        out[0, 3, 2] = float("nan")
        return out

    monkeypatch.setattr(type(arkit_model.net), "decode", broken)
    for offsets in (True, False):
        with pytest.raises(Wav2SemError) as err:
            generate(arkit_model, load_audio(speech_wav), offsets=offsets)
        assert err.value.code == MODEL_INVALID


def test_half_precision_weights(arkit_bundle, arkit_model, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    wave = load_audio(speech_wav)
    full = generate(arkit_model, wave)
    half = generate(load_model(arkit_bundle, "cpu", dtype=torch.float16), wave)
    assert half.weights.dtype == np.float32 and half.offsets.dtype == np.float32
    np.testing.assert_allclose(half.weights, full.weights, atol=0.05, rtol=0)


def test_vertex_model_result_has_no_weights(tiny_model, speech_wav):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    result = generate(tiny_model, load_audio(speech_wav), offsets=False)     # ignored: offsets are its output
    assert result.weights is None and result.channels == () and result.offsets.shape[1:] == (300, 3)


# ----- the server ---------------------------------------------------------------------------
def test_model_info(server, arkit_model):
    data = server.result("model_info", {}, timeout=60)
    assert data["output"] == "blendshapes" and data["channels"] == list(arkit_model.channels)
    deltas = np.load(data["blendshapes"], allow_pickle=False)
    assert deltas.dtype == np.float32 and deltas.shape == (K, 300, 3)
    np.testing.assert_array_equal(deltas, arkit_model.template.blendshape_deltas)
    assert data["landmarks"] == arkit_model.template.landmarks and "lower_lip_center" in data["landmarks"]
    assert set(data["regions"]) >= {"lips"} and np.load(data["template"]).shape == (300, 3)
    again = server.result("model_info", {}, timeout=60)
    assert again["blendshapes"] == data["blendshapes"]                  # written once per model


def test_generate_writes_offsets_and_weights(server, arkit_model, speech_wav, tmp_path):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    out, wout = tmp_path / "take.npy", tmp_path / "take_weights.npy"
    data = server.result("generate", {"audio": str(speech_wav), "output": str(out), "weights_output": str(wout),
                                      "subject": 1}, timeout=120)
    assert data["offsets"] == str(out) and data["weights"] == str(wout)
    assert data["channels"] == list(arkit_model.channels) and data["vertex_count"] == 300
    weights, offsets = np.load(wout, allow_pickle=False), np.load(out, allow_pickle=False)
    assert weights.dtype == offsets.dtype == np.float32
    assert weights.shape == (data["frames"], K) and offsets.shape == (data["frames"], 300, 3)
    np.testing.assert_allclose(offsets, (weights @ flat(arkit_model.template.blendshape_deltas)).reshape(offsets.shape),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(weights, generate(arkit_model, load_audio(speech_wav), subject=1).weights,
                               atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.npy", "take_weights.npy"]   # no partial files


def test_offsets_false_writes_only_weights(server, speech_wav, tmp_path):
    out = tmp_path / "never.npy"
    data = server.result("generate", {"audio": str(speech_wav), "offsets": False, "output": str(out)}, timeout=120)
    assert data["offsets"] is None and not out.exists()
    weights = Path(data["weights"])
    assert weights.name.startswith("weights-") and weights.is_file()       # the server's folder
    assert not list(weights.parent.glob("offsets-*.npy"))
    assert np.load(weights).shape == (data["frames"], K)


def test_default_outputs_pair_up(server, speech_wav):
    data = server.result("generate", {"audio": str(speech_wav), "semantic": False}, timeout=120)
    offsets, weights = Path(data["offsets"]), Path(data["weights"])
    assert offsets.parent == weights.parent
    assert offsets.name.removeprefix("offsets-") == weights.name.removeprefix("weights-")


@pytest.mark.parametrize("params,code,words", [
    ({"offsets": "no"}, "BAD_REQUEST", ['"offsets"']),
    ({"offsets": 0}, "BAD_REQUEST", ['"offsets"']),
    ({"weights_output": 5}, "BAD_REQUEST", ['"weights_output"']),
    ({"weights_output": "/tmp/w.txt"}, "BAD_REQUEST", [".npy"]),
    ({"weights_output": "/no/such/folder/w.npy"}, "OUTPUT_UNWRITABLE", ["/no/such/folder"]),
    ({"output": "SAME", "weights_output": "SAME"}, "BAD_REQUEST", ["different"]),
])
def test_bad_params_are_refused(server, speech_wav, tmp_path, params, code, words):
    params = {k: str(tmp_path / "same.npy") if v == "SAME" else v for k, v in params.items()}
    _, msg = server.request("generate", {"audio": str(speech_wav), **params}, timeout=60)
    assert msg["type"] == "error" and msg["error"]["code"] == code, msg
    message = msg["error"]["message"]
    assert all(w in message for w in words) and message.count(". ") == 0, message
    assert list(tmp_path.iterdir()) == []
    assert server.result("hello", timeout=30)["protocol"] == 1


def test_cancelled_generate_writes_neither_file(arkit_bundle, speech_wav, tmp_path):
    """In-process Server: the cancel lands on the last decode frame, so both files were
    computed and only the commit is left; neither may appear."""
    import time

    from test_server import CancelWhenWritten
    from wav2sem.serve.transport import Server

    out = CancelWhenWritten(("decode", "frame", 1.0))
    server = Server(out, str(arkit_bundle), "cpu")
    out.server = server
    try:
        server.handle_line(json.dumps({"id": "g", "op": "generate", "params": {
            "audio": str(speech_wav), "output": str(tmp_path / "o.npy"), "weights_output": str(tmp_path / "w.npy")}}))
        deadline = time.monotonic() + 120
        while not any(m["id"] == "g" and m["type"] in ("result", "error") for m in out.lines):
            assert time.monotonic() < deadline, out.lines[-3:]
            time.sleep(0.05)
        out.wait_for_the_cancel_reply()
    finally:
        server.stop()
    final = [m for m in out.lines if m["id"] == "g" and m["type"] in ("result", "error")]
    assert final[0]["type"] == "error" and final[0]["error"]["code"] == "CANCELLED", final
    assert [m["data"] for m in out.lines if m["id"] == "esc"] == [{"target": "g", "found": True}]
    assert list(tmp_path.iterdir()) == []


def test_vertex_bundle_result_has_no_weights(tiny_bundle, speech_wav, tmp_path):
    srv = ServerProcess("--model", tiny_bundle, "--device", "cpu")
    try:
        info = srv.result("model_info", {}, timeout=60)
        assert info["output"] == "vertices" and info["channels"] == [] and info["blendshapes"] is None
        wout = tmp_path / "w.npy"
        data = srv.result("generate", {"audio": str(speech_wav), "offsets": False, "weights_output": str(wout)},
                          timeout=120)
        assert data["weights"] is None and data["channels"] == [] and not wout.exists()
        assert np.load(data["offsets"]).shape == (data["frames"], 300, 3)     # offsets: false is ignored
    finally:
        srv.close()
    assert srv.bad_lines == []


# ----- wav2sem infer / info -----------------------------------------------------------------
def test_infer_writes_weights_and_channel_names(arkit_bundle, arkit_model, speech_wav, tmp_path):
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    proc = run_wav2sem("infer", speech_wav, "-o", tmp_path / "take.npy", "--model", arkit_bundle, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.npy", "take.weights.json", "take.weights.npy"]
    weights = np.load(tmp_path / "take.weights.npy")
    offsets = np.load(tmp_path / "take.npy")
    names = json.loads((tmp_path / "take.weights.json").read_text())
    assert names["channels"] == list(arkit_model.channels) and names["frames"] == weights.shape[0] == offsets.shape[0]
    assert names["fps"] == 30.0
    np.testing.assert_allclose(weights, generate(arkit_model, load_audio(speech_wav)).weights, atol=1e-5, rtol=0)
    np.testing.assert_allclose(offsets, (weights @ flat(arkit_model.template.blendshape_deltas)).reshape(offsets.shape),
                               atol=1e-6, rtol=0)
    assert "blendshape weights" in proc.stderr and proc.stdout == ""


def test_infer_no_offsets_and_weights_out(arkit_bundle, speech_wav, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = run_wav2sem_inprocess("infer", speech_wav, "--no-offsets", "--model", arkit_bundle)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.weights.json", "speech.weights.npy"]
    (tmp_path / "sub").mkdir()
    proc = run_wav2sem_inprocess("infer", speech_wav, "-o", tmp_path / "sub" / "o.npy", "--weights-out",
                                 tmp_path / "sub" / "w.npy", "--model", arkit_bundle)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["o.npy", "w.json", "w.npy"]


def test_infer_refusals(arkit_bundle, tiny_bundle, speech_wav, tmp_path):
    cases = [
        (("infer", speech_wav, "--model", arkit_bundle), ["-o"]),
        (("infer", speech_wav, "--no-offsets", "--model", tiny_bundle), ["vertex offsets", "--no-offsets"]),
        (("infer", speech_wav, "-o", tmp_path / "o.npy", "--weights-out", tmp_path / "w.npy", "--model", tiny_bundle),
         ["vertex offsets", "--weights-out"]),
        (("infer", speech_wav, "-o", tmp_path / "o.npy", "--weights-out", tmp_path / "w.txt", "--model", arkit_bundle),
         [".npy"]),
        (("infer", speech_wav, "-o", tmp_path / "o.npy", "--weights-out", tmp_path / "o.npy", "--model", arkit_bundle),
         ["same file"]),
    ]
    for args, words in cases:
        assert_clean_failure(run_wav2sem_inprocess(*args), *words)
    assert list(tmp_path.iterdir()) == []


def test_info_shows_the_output(arkit_bundle, tiny_bundle):
    proc = run_wav2sem_inprocess("info", "--models", arkit_bundle, tiny_bundle, "--json")
    assert proc.returncode == 0, proc.stderr
    by_path = {m["path"]: m for m in json.loads(proc.stdout)["models"]}
    assert by_path[str(arkit_bundle)]["output"] == "blendshapes"
    assert by_path[str(arkit_bundle)]["channels"][:3] == ["jawOpen", "jawForward", "mouthClose"]
    assert by_path[str(tiny_bundle)]["output"] == "vertices" and by_path[str(tiny_bundle)]["channels"] == []
    text = run_wav2sem_inprocess("info", "--models", arkit_bundle).stdout
    assert f"blendshapes: {K} channels (jawOpen" in text
