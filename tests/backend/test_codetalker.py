"""CodeTalker (issue 14): official-layout checkpoints (wav2sem.testing_codetalker, built from
the documented names and shapes) -> `wav2sem convert --arch codetalker` -> bundle; equal to the
official predict() on a recorded word; the cached loop against the official-style loop; any
length; clear conversion failures."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import assert_clean_failure, run_wav2sem, run_wav2sem_inprocess
from wav2sem.models.codetalker import CodeTalker
from wav2sem.models.motion_vq import MotionVQConfig
from wav2sem.models.talker import ALIGN_INTERPOLATE, ALIGN_PAIR, DecoderConfig
from wav2sem.testing import tiny_encoder_spec
from wav2sem.testing_codetalker import encoder_config, official_stage1, official_stage2, write_tiny_codetalker_bundle

DATA = Path(__file__).parent / "data" / "codetalker_official_reference.npz"
RECORDINGS = Path("/usr/share/ktuberling/sounds/en")
CASES = {"vocaset": ("vocaset", False), "vocaset_wav2sem": ("vocaset", True), "biwi": ("biwi", False)}


@pytest.fixture(scope="module")
def reference():
    """The official code's offsets (benchmarks/codetalker_official.py --make-reference: the
    official predict() in a scratch transformers 4.6.1 process, the Wav2Sem fusion applied as
    training applies it), and the recording they were made from."""
    data = np.load(DATA)
    meta = json.loads(str(data["meta"]))
    path = RECORDINGS / meta["recording"]
    if not path.is_file():
        pytest.skip(f"{path} is missing: install Debian's ktuberling-data (make system-deps)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != meta["recording_sha256"]:
        pytest.skip(f"{path} is not the recording the reference was made from (another ktuberling-data version)")
    return data, meta, path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, reference):
    data, _, _ = reference
    work = tmp_path_factory.mktemp("codetalker")
    np.save(work / "template.npy", data["template"])
    return {case: write_tiny_codetalker_bundle(work / case, work / "template.npy", dataset, wav2sem)
            for case, (dataset, wav2sem) in CASES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bundle_equals_the_official_predict(case, bundles, reference):
    from wav2sem.audio import load_audio, normalize
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    data, meta, path = reference
    audio = load_audio(path)
    normalised = normalize(audio)
    assert normalised.size == meta["samples"] and abs(normalised.std() - meta["input_std"]) < 1e-4
    model = load_model(bundles[case], device="cpu")
    assert model.bundle.config.arch == "codetalker"
    assert model.net.has_semantic == CASES[case][1]
    result = generate(model, audio, subject=meta["subject"])
    expected = data[case]
    got = result.offsets.reshape(result.offsets.shape[0], -1)
    assert got.shape == expected.shape
    peak = np.abs(expected).max()
    assert peak > 0.1                                     # the reference really moves
    assert np.abs(got - expected).max() <= 1e-4 * peak
    if CASES[case][1]:   # Wav2Sem changes the result; switched off it is the plain model
        assert np.abs(data["vocaset"] - expected).max() > 1e-3 * peak
        off = generate(model, audio, subject=meta["subject"], semantic=False).offsets.reshape(got.shape)
        assert np.abs(off - data["vocaset"]).max() <= 1e-4 * peak


def tiny_model(alignment: str = ALIGN_INTERPOLATE, **motion) -> CodeTalker:
    torch.manual_seed(0)
    config = DecoderConfig(vertex_count=10, n_subjects=3, feature_dim=16, period=25 if alignment == ALIGN_PAIR else 30,
                           n_layers=2, alignment=alignment)
    sizes = dict(hidden_size=32, n_layers=2, n_heads=4, intermediate_size=24, codebook_size=16, code_dim=8,
                 codes_per_frame=4)
    model = CodeTalker(config, tiny_encoder_spec(), motion_vq=MotionVQConfig(**{**sizes, **motion})).eval()
    torch.nn.init.normal_(model.feat_map.weight, std=0.5)
    torch.nn.init.normal_(model.vertice_map.weight, std=2.0)
    return model


def inputs(model: CodeTalker, frames: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n_memory = 2 * frames if model.config.alignment == ALIGN_PAIR else frames
    return torch.randn(1, n_memory, model.config.feature_dim, generator=g), model.style_embedding(torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("alignment,frames", [(ALIGN_INTERPOLATE, 1), (ALIGN_INTERPOLATE, 40), (ALIGN_PAIR, 2),
                                              (ALIGN_PAIR, 33)])
def test_cached_loop_equals_the_official_style_loop(alignment, frames):
    model = tiny_model(alignment)
    memory, style = inputs(model, frames)
    with torch.inference_mode():
        fast = model.decode(memory, style, frames)
        slow = model.decode_reference(memory, style, frames)
    assert fast.shape == (1, frames, 30)
    assert fast.abs().max() > 0.05
    assert (fast - slow).abs().max() <= 1e-4 * slow.abs().max()


def test_any_length_in_windows_and_the_feedback_window_option():
    """Past `window` frames (the official code stops at 600) the codes are decoded in
    cross-faded windows; a constant code sequence must come out constant across the seams."""
    model = tiny_model(window=12)
    codes = model.quantize(torch.randn(1, 1, 16)).repeat(1, 50, 1)
    with torch.inference_mode():
        whole = model.motion.decoder.decode(codes[:, :12])
        windowed = model.decode_codes(codes)
    assert windowed.shape == (1, 50, 30)
    torch.testing.assert_close(windowed, whole[:, :1].expand(1, 50, 30), atol=1e-5, rtol=0)
    memory, style = inputs(model, 70)
    with torch.inference_mode():
        exact = tiny_model(window=600).decode(memory, style, 70)
        long = model.decode(memory, style, 70)
        approx = tiny_model(feedback_window=8).decode(memory, style, 70)
    assert torch.isfinite(long).all() and long.shape == exact.shape == approx.shape == (1, 70, 30)
    assert (approx - exact).abs().max() > 0          # an approximation, not the same computation
    frames = []
    tiny_model(feedback_window=8).decode(memory, style, 70, on_frame=frames.append)
    assert frames == list(range(70))


def test_bundle_config_round_trip_and_refusals(tmp_path):
    from wav2sem.bundle import read_bundle

    np.save(tmp_path / "t.npy", np.zeros((40, 3), np.float32))
    bundle = write_tiny_codetalker_bundle(tmp_path / "b", tmp_path / "t.npy", "biwi", extra_args=("--feedback-window", "16"))
    config = read_bundle(bundle).config
    assert config.motion_vq.feedback_window == 16 and config.motion_vq.input_map and not config.motion_vq.output_bias
    assert (config.motion_vq.codes_per_frame, config.motion_vq.code_dim, config.motion_vq.n_heads) == (2, 8, 8)
    raw = json.loads((bundle / "config.json").read_text())
    for edit, phrase in ((lambda c: c.pop("motion_vq"), "needs a motion_vq"),
                         (lambda c: c["motion_vq"].update(codes_per_frame=0), "invalid value"),
                         (lambda c: c["motion_vq"].update(colour=1), "unknown fields")):
        broken = json.loads(json.dumps(raw))
        edit(broken)
        (bundle / "config.json").write_text(json.dumps(broken))
        with pytest.raises(Exception, match=phrase):
            read_bundle(bundle)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    work = tmp_path_factory.mktemp("ckpt")
    torch.save({"state_dict": official_stage1("vocaset")}, work / "v_stage1.pth.tar")
    torch.save({"state_dict": official_stage2("vocaset")}, work / "v_stage2.pth.tar")
    torch.save({"state_dict": official_stage1("biwi")}, work / "b_stage1.pth.tar")
    (work / "encoder").mkdir()
    (work / "encoder" / "config.json").write_text(json.dumps(encoder_config()))
    np.save(work / "t.npy", np.zeros((40, 3), np.float32))
    np.save(work / "t_wrong.npy", np.zeros((41, 3), np.float32))
    return work


def _convert(work: Path, *args: str, out: str = "out", stage2: str = "v_stage2.pth.tar"):
    return run_wav2sem_inprocess("convert", "--arch", "codetalker", "--checkpoint", str(work / stage2),
                                 "--dataset", "vocaset", "--encoder", str(work / "encoder"),
                                 "-o", str(work / out), *args)


def _stage1_with(work: Path, name: str, edit) -> Path:
    state = official_stage1("vocaset")
    edit(state)
    torch.save({"state_dict": state}, work / name)
    return work / name


@pytest.mark.parametrize("case", ["no stage1", "swapped", "other stage1", "unexpected key", "misshapen", "quant factor",
                                  "heads", "template"])
def test_conversion_failures_name_the_problem_and_write_nothing(case, checkpoints):
    w = checkpoints
    template = ("--template", str(w / "t.npy"))
    s1 = ("--stage1", str(w / "v_stage1.pth.tar"))
    if case == "no stage1":
        proc, phrase = _convert(w, *template), ("--stage1",)
    elif case == "swapped":
        proc, phrase = _convert(w, *template, "--stage1", str(w / "v_stage2.pth.tar"), stage2="v_stage1.pth.tar"), ("stage-1 checkpoint",)
    elif case == "other stage1":
        proc, phrase = _convert(w, *template, "--stage1", str(w / "b_stage1.pth.tar")), ("code values per frame",)
    elif case == "unexpected key":
        path = _stage1_with(w, "extra.pth.tar", lambda s: s.update({"decoder.extra.weight": torch.zeros(2)}))
        proc, phrase = _convert(w, *template, "--stage1", str(path)), ("decoder.extra.weight",)
    elif case == "misshapen":
        path = _stage1_with(w, "shape.pth.tar", lambda s: s.update({"decoder.expander.0.0.bias": torch.zeros(7)}))
        proc, phrase = _convert(w, *template, "--stage1", str(path)), ("motion.decoder.conv.bias",)
    elif case == "quant factor":
        path = _stage1_with(w, "qf.pth.tar", lambda s: s.update({"decoder.expander.1.0.weight": torch.zeros(1)}))
        proc, phrase = _convert(w, *template, "--stage1", str(path)), ("quant_factor",)
    elif case == "heads":
        proc, phrase = _convert(w, *template, *s1, "--stage1-heads", "5"), ("heads",)
    else:
        proc, phrase = _convert(w, "--template", str(w / "t_wrong.npy"), *s1), ("41 vertices", "40")
    assert_clean_failure(proc, *phrase)
    assert not (w / "out").exists()


def test_the_real_command_converts_and_animates(checkpoints, tmp_path):
    """A real `wav2sem convert` and `wav2sem infer` process, 25 s of audio: past the official
    600-frame limit."""
    from w2s_helpers import speechlike
    import soundfile as sf

    w = checkpoints
    out = tmp_path / "bundle"
    proc = run_wav2sem("convert", "--arch", "codetalker", "--checkpoint", w / "v_stage2.pth.tar", "--stage1",
                       w / "v_stage1.pth.tar", "--dataset", "vocaset", "--encoder", w / "encoder", "--template",
                       w / "t.npy", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "codetalker" in proc.stderr
    sf.write(tmp_path / "long.wav", speechlike(25.0), 16000)
    proc = run_wav2sem("infer", tmp_path / "long.wav", "-o", tmp_path / "long.npy", "--model", out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    offsets = np.load(tmp_path / "long.npy")
    assert offsets.shape == (749, 40, 3) and np.isfinite(offsets).all() and np.abs(offsets).max() > 0.01
