"""Forced alignment (wav2sem.real.align), phonemization and the free phone baseline, on
espeak-ng speech whose phone timings are known."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed", allow_module_level=True)

from wav2sem.real.align import AlignmentError, align_transcript, boundary_errors  # noqa: E402
from wav2sem.real.phone_baseline import recognize_phones  # noqa: E402
from wav2sem.real.phonemize import LANGUAGES, ipa_to_arpabet, phonemize, words_of  # noqa: E402
from wav2sem.synth.phonemes import PHONEMES, VOWELS  # noqa: E402
from wav2sem.synth.timing import PhoneSegment  # noqa: E402

SR = 16000
PAD_S = 0.3
EN_TEXTS = ("The quick brown fox jumps over the lazy dog by the river.",
            "My mother bought a big blue umbrella in Bombay.",
            "She sells fresh fish and shellfish by the shore each morning.")
FR_TEXT = "Le petit chat noir dort sur le canapé rouge."


def _clip(text: str, voice: str = "en-us"):
    """espeak-ng speech at 16 kHz with 0.3 s of silence either side, and its phone timings."""
    import soxr
    from wav2sem.synth.tts.espeak import EspeakEngine

    clip = EspeakEngine.get().synthesize(text, voice)
    audio = soxr.resample(clip.audio, clip.sample_rate, SR, quality="HQ").astype(np.float32)
    pad = np.zeros(int(PAD_S * SR), np.float32)
    segments = [PhoneSegment("_", "SIL", 0.0, PAD_S)] + [
        PhoneSegment(s.symbol, s.arpabet, s.start + PAD_S, s.end + PAD_S) for s in clip.segments]
    return np.concatenate([pad, audio, pad]), segments


@pytest.fixture(scope="module")
def english():
    return [(_clip(t), t) for t in EN_TEXTS]


def _assert_tiles(segments, duration):
    assert segments[0].start == 0.0
    assert segments[-1].end == pytest.approx(duration)
    for a, b in zip(segments, segments[1:]):
        assert a.end == b.start
    assert all(s.end > s.start for s in segments)
    assert all(s.arpabet in PHONEMES for s in segments)


def test_english_boundaries_match_known_timings(english):
    errors = []
    for (audio, truth), text in english:
        segments = align_transcript(audio, text, "en")
        _assert_tiles(segments, len(audio) / SR)
        assert segments[0].arpabet == "SIL" and segments[-1].arpabet == "SIL"   # the padding
        errors += boundary_errors(truth, segments)
    # Measured: median 11-17 ms per clip, p90 about 50 ms (benchmarks/alignment_accuracy.py).
    assert np.median(errors) < 0.030
    assert np.percentile(errors, 90) < 0.090


def test_french_aligns_and_covers_the_clip():
    audio, truth = _clip(FR_TEXT, LANGUAGES["fr"])
    segments = align_transcript(audio, FR_TEXT, "fr")
    _assert_tiles(segments, len(audio) / SR)
    assert {"ʃ", "ʁ", "y"} <= {s.symbol for s in segments}          # IPA symbols kept
    # espeak-ng's French symbols are not ARPAbet: match by position. Measured median 15-18 ms.
    assert np.median(boundary_errors(truth, segments, use_labels=False)) < 0.040


def test_mismatched_transcript_is_rejected(english):
    (audio, _), _ = english[0]
    with pytest.raises(AlignmentError, match="does not match the audio"):
        align_transcript(audio, EN_TEXTS[1], "en")


def test_silence_is_rejected():
    with pytest.raises(AlignmentError, match="no speech"):
        align_transcript(np.zeros(SR, np.float32), "hello world", "en")


def test_short_clip_is_rejected(english):
    (audio, _), _ = english[0]
    with pytest.raises(AlignmentError, match="at least 0.1 s"):
        align_transcript(audio[int(0.35 * SR): int(0.40 * SR)], "the", "en")


@pytest.mark.parametrize("text", ["", "  ...  ", "[ascending tones] (ahooga)"])
def test_empty_transcript_is_rejected(english, text):
    (audio, _), _ = english[0]
    with pytest.raises(AlignmentError, match="no speakable words"):
        align_transcript(audio, text, "en")


def test_punctuation_and_brackets_are_ignored(english):
    (audio, truth), text = english[1]
    noisy = "[music] My mother — bought a big, blue umbrella (ahooga) in Bombay!!"
    segments = align_transcript(audio, noisy, "en")
    assert [s.arpabet for s in segments] == [s.arpabet for s in align_transcript(audio, text, "en")]


def test_words_of_normalises():
    assert words_of("[ascending tones] Hello, World! (ahooga) It's 42.", "en") == ["hello", "world", "it's", "42"]
    assert words_of("L'homme peut-être…", "fr") == ["l'homme", "peut", "être"]


@pytest.mark.parametrize("language, words", [
    ("fr", ["bonjour", "huit", "peur", "vin", "grenouille"]),
    ("ru", ["щука", "мягкий", "привет", "съела"]),
    ("el", ["θάλασσα", "γεια", "χέρι", "δέντρο"]),
])
def test_phonemize_gives_rig_symbols_only(language, words):
    prons = phonemize(words, language)
    assert len(prons) == len(words)
    for pron in prons:
        assert pron and all(p in PHONEMES and p != "SIL" for p in pron)
    if language == "el":
        assert prons[0][0] == "TH"                        # θ
    if language == "fr":
        assert prons[1][0] in ("UW", "W")                  # huit: rounded /y/ or /ɥ/, not spread


def test_phonemize_english_uses_the_cmu_dictionary():
    assert phonemize(["hello", "zyxwv"], "en")[0] == ["HH", "AH", "L", "OW"]
    assert phonemize(["zyxwv"], "en")[0]                  # not in the dictionary: espeak-ng


def test_espeak_markers_are_not_phones(caplog):
    """espeak-ng's '^' and '"' in its IPA output are skipped silently, not warned about per word."""
    with caplog.at_level("WARNING"):
        assert [a for _, a in ipa_to_arpabet('^ba"m')] == ["B", "AA", "M"]
    assert not caplog.records


def test_recognize_phones_gives_vowels_and_covers_the_clip(english):
    (audio, _), _ = english[0]
    segments = recognize_phones(audio)
    _assert_tiles(segments, len(audio) / SR)
    assert sum(s.arpabet in VOWELS for s in segments) >= 5
