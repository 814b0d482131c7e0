"""`wav2sem.audio.load_audio`: formats, rates, channels -> mono float32 16 kHz; error codes."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from unprivileged import open_folder, unprivileged  # noqa: F401  (fixtures)
from w2s_helpers import SR, assert_clean_failure, sine, write_audio
from wav2sem.errors import AUDIO_EMPTY, AUDIO_NOT_FOUND, AUDIO_TOO_SHORT, AUDIO_UNREADABLE, Wav2SemError

FORMATS = {  # extension -> soundfile format / subtype
    "wav": dict(format="WAV", subtype="PCM_16"),
    "flac": dict(format="FLAC", subtype="PCM_16"),
    "ogg": dict(format="OGG", subtype="VORBIS"),
    "mp3": dict(format="MP3", subtype="MPEG_LAYER_III"),
}
SECONDS = 1.5


def can_write(ext: str) -> bool:
    spec = FORMATS[ext]
    return spec["format"] in sf.available_formats() and spec["subtype"] in sf.available_subtypes(spec["format"])


def peak_frequency(x: np.ndarray, sr: int) -> float:
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("rate,channels,freq", [(44_100, 2, 440.0), (8_000, 1, 1000.0)])
def test_formats_rates_channels_to_mono_16k(tmp_path, ext, rate, channels, freq):
    if not can_write(ext):
        pytest.skip(f"this libsndfile cannot write {ext}")
    from wav2sem.audio import load_audio

    mono = sine(freq, SECONDS, rate)
    data = np.stack([mono, 0.5 * mono], 1) if channels == 2 else mono
    path = tmp_path / f"tone.{ext}"
    try:
        write_audio(path, data, rate, **FORMATS[ext])
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:  # e.g. mp3 at 8 kHz mono unsupported
        pytest.skip(f"cannot write {ext} at {rate} Hz here: {exc}")
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    n_file = sf.info(str(path)).frames
    assert abs(len(out) - n_file * SR / rate) <= 1
    if ext != "mp3":      # mp3 decoders may add encoder delay/padding; the others are exact
        assert abs(len(out) - SECONDS * SR) <= 1
    else:
        assert abs(len(out) - SECONDS * SR) <= 0.1 * SR
    middle = out[len(out) // 4 : 3 * len(out) // 4]
    assert abs(peak_frequency(middle, SR) - freq) < 5.0
    # stereo is averaged: (1 + 0.5) / 2 = 0.75 of the original amplitude
    expected_amp = 0.5 * (0.75 if channels == 2 else 1.0)
    assert np.abs(middle).max() == pytest.approx(expected_amp, rel=0.08)


def test_16k_wav_is_read_exactly(tmp_path):
    from wav2sem.audio import load_audio

    x = (np.random.default_rng(0).uniform(-0.5, 0.5, SR)).astype(np.float32)
    write_audio(tmp_path / "f.wav", x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav"), x)


def code_of(path) -> tuple[str, str]:
    from wav2sem.audio import load_audio

    with pytest.raises(Wav2SemError) as info:
        load_audio(path)
    return info.value.code, info.value.message


def test_error_codes(tmp_path):
    assert code_of(tmp_path / "nope.wav")[0] == AUDIO_NOT_FOUND
    (tmp_path / "folder.wav").mkdir()
    code, message = code_of(tmp_path / "folder.wav")
    assert code == AUDIO_NOT_FOUND and "folder" in message
    (tmp_path / "empty.wav").write_bytes(b"")
    assert code_of(tmp_path / "empty.wav")[0] == AUDIO_EMPTY
    (tmp_path / "text.wav").write_text("this is not audio, just a renamed text file\n" * 20)
    code, message = code_of(tmp_path / "text.wav")
    assert code == AUDIO_UNREADABLE and "text.wav" in message
    write_audio(tmp_path / "short.wav", sine(300, 0.05, SR), SR)
    code, message = code_of(tmp_path / "short.wav")
    assert code == AUDIO_TOO_SHORT and "0.050" in message
    write_audio(tmp_path / "header_only.wav", np.zeros(0, np.float32), SR)
    assert code_of(tmp_path / "header_only.wav")[0] == AUDIO_EMPTY


def test_silent_audio_gives_rest_pose_with_warning(tiny_model):
    from wav2sem.inference import generate

    result = generate(tiny_model, np.zeros(2 * SR, np.float32))
    n_conv = (2 * SR - 400) // 320 + 1
    assert result.offsets.shape == (int(n_conv / 50 * 30), tiny_model.vertex_count, 3)
    assert result.offsets.dtype == np.float32
    assert not result.offsets.any()
    assert any("silent" in w.lower() for w in result.warnings)


def test_float_audio_far_beyond_full_scale_gives_finite_offsets(tmp_path, tiny_model):
    """A float WAV with 3e38 peaks (float32's edge): no overflow to inf/NaN anywhere."""
    from w2s_helpers import speechlike
    from wav2sem.audio import load_audio
    from wav2sem.inference import generate

    wave = speechlike(1.5, seed=71) / 0.3 * 3e38
    path = write_audio(tmp_path / "huge.wav", wave.astype(np.float32), SR, subtype="FLOAT")
    audio = load_audio(path)
    assert np.isfinite(audio).all() and float(np.abs(audio).max()) <= 1.0
    offsets = generate(tiny_model, audio).offsets
    assert np.isfinite(offsets).all() and np.abs(offsets).max() > 1e-4


def test_unreadable_audio_says_it_is_a_permission_problem(tmp_path, monkeypatch):
    """Opening the file refused (in-process, simulated: these tests run as root; the real case
    as an unprivileged user is below): a sentence about permissions, not libsndfile's
    "System error ... Use a WAV, FLAC, OGG or MP3 file"."""
    from wav2sem import audio

    path = write_audio(tmp_path / "locked.wav", sine(300, 0.5, SR), SR)

    def refused(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(name))

    monkeypatch.setattr(audio, "open", refused, raising=False)
    code, message = code_of(path)
    assert code == AUDIO_UNREADABLE and "locked.wav" in message
    assert "permission denied" in message and "permissions" in message and "WAV" not in message


def test_unreadable_audio_as_an_unprivileged_user(unprivileged, open_folder, tiny_bundle):
    """`wav2sem infer` run unprivileged on a file only root may read: one sentence, no traceback."""
    path = write_audio(open_folder / "locked.wav", sine(300, 0.5, SR), SR)
    path.chmod(0o600)
    out = open_folder / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    proc = unprivileged.run_wav2sem("infer", path, "-o", out / "take.npy", "--model", tiny_bundle)
    line = assert_clean_failure(proc, "locked.wav", "permission denied", "permissions")
    assert "WAV, FLAC" not in line and list(out.iterdir()) == []


def _one_hertz_wav(path):
    """3 s of 16 kHz samples whose header says 1 Hz: 48000 s (13 h) of audio, which resampled
    to 16 kHz would be 768 million samples (the server allocated about 22 GB)."""
    noise = (np.random.default_rng(0).standard_normal(48_000) * 0.1).astype(np.float32)
    sf.write(str(path), noise, 1, subtype="PCM_16")
    return path


def test_audio_past_the_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    import soxr

    from wav2sem.audio import MAX_DURATION_S

    def no_resampling(*args, **kwargs):
        raise AssertionError("audio past the limit was resampled")

    monkeypatch.setattr(soxr, "resample", no_resampling)
    code, message = code_of(_one_hertz_wav(tmp_path / "bomb.wav"))
    assert code == AUDIO_UNREADABLE and "bomb.wav" in message and "800 min" in message
    assert f"at most {MAX_DURATION_S / 60:.0f} min" in message
    # many channels: the decoded size is checked too (a header read, nothing decoded)
    from wav2sem import audio

    monkeypatch.setattr(audio, "MAX_DECODED_SAMPLES", 1000)
    wide = write_audio(tmp_path / "wide.wav", np.zeros((600, 2), np.float32), SR)
    code, message = code_of(wide)
    assert code == AUDIO_UNREADABLE and "1200 samples" in message and "mono" in message


def test_audio_past_the_limit_through_the_command_line(tmp_path, tiny_bundle):
    """The real command, its address space capped at 6 GB: refused with one sentence at once
    (before the fix, resampling needed several times that)."""
    import resource
    import subprocess

    from w2s_helpers import SUBPROCESS_ENV, wav2sem_cmd

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    path = _one_hertz_wav(tmp_path / "bomb.wav")
    proc = subprocess.run(wav2sem_cmd("infer", path, "-o", tmp_path / "take.npy", "--model", tiny_bundle),
                          capture_output=True, text=True, timeout=120, env=SUBPROCESS_ENV, preexec_fn=cap)
    assert_clean_failure(proc, "bomb.wav", "at most 60 min")
    assert not (tmp_path / "take.npy").exists()


def test_audio_in_a_folder_that_cannot_be_searched(tmp_path, monkeypatch):
    """stat() failing with PermissionError (a folder without search permission; simulated, as
    tests may run as root) is AUDIO_UNREADABLE, not a traceback."""
    import pathlib

    path = write_audio(tmp_path / "hidden.wav", sine(300, 0.5, SR), SR)
    real_stat = pathlib.Path.stat

    def stat(self, *args, **kwargs):
        if self.name == "hidden.wav":
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    code, message = code_of(path)
    assert code == AUDIO_UNREADABLE and "hidden.wav" in message and "ermission" in message
