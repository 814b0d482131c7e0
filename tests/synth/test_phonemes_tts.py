"""Phoneme tables, TTS engines (real synthesis) and their missing-engine messages."""
from __future__ import annotations

import numpy as np
import pytest

from wav2sem.errors import Wav2SemError
from wav2sem.synth import phonemes
from wav2sem.synth.phonemes import PHONEMES, VISEMES, normalise
from wav2sem.synth.sentences import MINIMAL_SETS, make_sentences

from synth_helpers import needs_espeak, needs_festival

ARPABET_39 = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH").split()


def test_tables_cover_english():
    assert set(ARPABET_39) <= set(PHONEMES)
    for parts in PHONEMES.values():
        for part in parts:
            assert set(part.values) == set(phonemes.SPEECH_ARTICULATORS)
            assert all(0 <= v <= 1 for v in part.values.values()) and all(d > 0 for d in part.dominance.values())
    assert {p for members in VISEMES.values() for p in members} <= set(PHONEMES)
    for symbol, arpabet in phonemes._ESPEAK.items():
        assert arpabet in PHONEMES, symbol


@pytest.mark.parametrize("symbol,symbol_set,expected", [
    ("m", "espeak", "M"), ("T", "espeak", "TH"), ("D", "espeak", "DH"), ("S", "espeak", "SH"), ("aI", "espeak", "AY"),
    ("'oU", "espeak", "OW"), ("_:", "espeak", "SIL"), ("3:", "espeak", "ER"), ("tS", "espeak", "CH"),
    ("pau", "festival", "SIL"), ("ax", "festival", "AX"), ("th", "festival", "TH"), ("hh", "festival", "HH"),
    ("AH0", "arpabet", "AH"), ("ZH", "arpabet", "ZH"), ("xyz", "festival", "SIL"),
])
def test_normalise(symbol, symbol_set, expected):
    assert normalise(symbol, symbol_set) == expected


def test_sentences_are_deterministic_and_have_minimal_pairs():
    a, b = make_sentences(200, seed=1), make_sentences(200, seed=1)
    assert a == b and a != make_sentences(200, seed=2)
    words = {w.strip(".,?").lower() for s in a for w in s.split()}
    pairs = [("fin", "thin"), ("bat", "pat", "mat", "fat"), ("vet", "bet", "wet"), ("map", "nap"), ("sip", "ship")]
    assert all(any(w in words for w in group) for group in pairs)
    assert all(s[0].isupper() and s[-1] in ".?" for s in a)
    assert len({w for group in MINIMAL_SETS for w in group} & words) > 60


@needs_espeak
def test_espeak_synthesis_and_phone_coverage():
    from wav2sem.synth.tts.espeak import VARIANTS, VOICES, EspeakEngine

    engine = EspeakEngine.get()
    seen = set()
    for i, text in enumerate(make_sentences(60, seed=0)):
        clip = engine.synthesize(text, VOICES[i % len(VOICES)], VARIANTS[i % len(VARIANTS)], 160 + i)
        assert clip.sample_rate == 22050 and clip.audio.dtype == np.float32
        assert 0.05 < np.abs(clip.audio).max() <= 1.0
        starts = [s.start for s in clip.segments]
        assert starts == sorted(starts) and clip.segments[0].start == 0.0
        assert abs(clip.segments[-1].end - clip.duration) < 1e-6
        seen |= {s.arpabet for s in clip.segments}
    assert set(ARPABET_39) - {"ZH", "OY"} <= seen                      # broad phonetic coverage
    slow = engine.synthesize("a test of the speaking rate", "en-us", None, 100)
    fast = engine.synthesize("a test of the speaking rate", "en-us", None, 300)
    assert fast.duration < 0.6 * slow.duration


@needs_festival
def test_festival_voices_and_timings():
    from wav2sem.synth.tts.festival import VOICES, synthesize_batch

    for voice in VOICES:
        clip, = synthesize_batch(['She said "ship", not sip.'], voice)
        arpabet = [s.arpabet for s in clip.segments if s.arpabet != "SIL"]
        assert arpabet[:4] == ["SH", "IY", "S", "EH"] and "P" in arpabet
        assert abs(clip.segments[-1].end - clip.duration) < 0.02
        assert np.abs(clip.audio).max() > 0.05


def test_missing_festival_names_debian_package(monkeypatch):
    from wav2sem.synth.tts import festival

    monkeypatch.setattr(festival.shutil, "which", lambda name: None)
    with pytest.raises(Wav2SemError, match=r"apt-get install festival"):
        festival.check_voice("kal_diphone")
    monkeypatch.setattr(festival.shutil, "which", lambda name: "/usr/bin/festival")
    monkeypatch.setattr(festival, "VOICE_ROOT", festival.VOICE_ROOT / "nowhere")
    with pytest.raises(Wav2SemError, match=r"festvox-us-slt-hts"):
        festival.check_voice("cmu_us_slt_arctic_hts")


def test_missing_espeak_names_debian_package(monkeypatch):
    from wav2sem.synth.tts import espeak

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(espeak.ctypes, "CDLL", no_library)
    monkeypatch.setattr(espeak.EspeakEngine, "_instance", None)
    with pytest.raises(Wav2SemError, match=r"libespeak-ng1"):
        espeak.EspeakEngine.get()


def test_synth_command_reports_missing_engine(monkeypatch, tmp_path, capsys):
    from wav2sem.cli import main as cli_main
    from wav2sem.synth.tts import festival

    monkeypatch.setattr(festival.shutil, "which", lambda name: None)
    rc = cli_main(["synth", "--out", str(tmp_path / "c"), "--hours", "0.01", "--engines", "festival", "--no-progress"])
    assert rc == 1
    assert "apt-get install festival" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()                                    # nothing written
    assert cli_main(["synth", "--out", str(tmp_path / "c"), "--hours", "0.01", "--engines", "klingon"]) == 1
