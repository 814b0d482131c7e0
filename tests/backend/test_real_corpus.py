"""The recorded-speech corpus (wav2sem.real.sources / corpus): the catalogue on the es-co prompts
that `make test-packages` fetches into corpus/packages, and the builder on a slice of them with
the real aligner: the loader reads it, resuming skips done and rejected items, a wrong
transcript is rejected, changed settings are refused, and m/b/p close the lips."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wav2sem.errors import Wav2SemError

REPO = Path(__file__).resolve().parents[2]
PACKAGES = REPO / "corpus" / "packages"
VOICE = "asterisk-prompt-es-co"
TEXTS = "asterisk-core-sounds-es"
# Prompts of the slice: short, m/b/p in "Mensaje borrado." and "Marque 4 para el mensaje
# previo.", and one to give a wrong transcript. (The es texts are the Mexican core sounds';
# these four are worded the same by the Colombian voice.)
CLIPS = ("agent-loggedoff", "auth-thankyou", "vm-deleted", "vm-prev")
WRONG = "auth-thankyou"           # "Gracias" (under a second), given a long unrelated sentence
WRONG_TEXT = "Ocho elefantes rosados cantaban tangos lentos durante toda la noche en Buenos Aires."


def _package_root() -> Path:
    if not (PACKAGES / VOICE / "usr").is_dir() or not (PACKAGES / TEXTS / "usr").is_dir():
        pytest.skip(f"{PACKAGES}/{VOICE} and {TEXTS} are not there (`make test-packages` fetches them "
                    "with apt-get download; it needs the Debian mirror)")
    return PACKAGES


@pytest.fixture(scope="module")
def packages() -> Path:
    return _package_root()


@pytest.fixture(scope="module")
def slice_root(packages, tmp_path_factory) -> Path:
    """A dpkg -x style root with four es-co prompts and their texts, one of them wrong."""
    root = tmp_path_factory.mktemp("pkgs")
    src = packages / VOICE / "usr/share/asterisk/sounds/es"
    dst = root / VOICE / "usr/share/asterisk/sounds/es"
    dst.mkdir(parents=True)
    (root / VOICE / "usr/share/doc" / VOICE).mkdir(parents=True)
    for name in CLIPS:
        shutil.copy(src / f"{name}.gsm", dst / f"{name}.gsm")
    doc = root / TEXTS / "usr/share/doc" / TEXTS
    doc.mkdir(parents=True)
    with gzip.open(packages / TEXTS / f"usr/share/doc/{TEXTS}/core-sounds-es.txt.gz", "rt", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.split(":", 1)[0] in CLIPS]
    lines = [f"{WRONG}: {WRONG_TEXT}\n" if ln.startswith(WRONG + ":") else ln for ln in lines]
    with gzip.open(doc / "core-sounds-es.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("; Core Asterisk Sounds in Spanish (test slice)\n\n" + "".join(lines))
    return root


@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("pocketsphinx", reason="the aligner needs pocketsphinx (pip install -e '.[train]')")
    from wav2sem.real import align
    return align


@pytest.fixture(scope="module")
def built(slice_root, aligner, tmp_path_factory):
    from wav2sem.real.corpus import build_real_corpus
    out = tmp_path_factory.mktemp("real")
    calls = []
    info = build_real_corpus([slice_root], out, workers=1, progress=lambda d, t: calls.append((d, t)))
    return out, info, calls


def test_catalogue_finds_the_prompts_and_their_texts(packages):
    from wav2sem.real import sources
    cat = sources.catalogue([packages])
    recs = [r for r in cat.recordings if r.speaker == "esco-es"]
    assert len(recs) > 200, len(recs)
    assert cat.packages[VOICE] == packages / VOICE
    assert all(r.language == "es" and r.source_package == VOICE and r.text for r in recs)
    by_name = {r.id.split(":", 1)[1]: r for r in recs}
    assert by_name["auth-thankyou"].text == "Gracias"
    assert "digits/1" in by_name
    # Non-speech ("[tono simple]") and names without a text entry are counted, not lost.
    assert cat.skipped[("esco-es", "non-speech")] >= 1 and cat.skipped[("esco-es", "no transcript entry")] >= 1
    assert sources.split_of("esco-es") == "test" and sources.split_of("tuxpaint-ca") == "val"
    assert sources.split_of("asterisk-fr") == "train"
    audio = sources.load_recording(by_name["agent-loggedoff"])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 < len(audio) / 16000 < 4.0                        # "Agente desconectado"
    assert 0.01 < float(np.sqrt(np.mean(audio ** 2))) < 0.5


def test_built_corpus_reads_with_the_loader(built):
    from wav2sem.dataset import open_dataset
    from wav2sem.heads import SPEECH_CHANNELS
    from wav2sem.synth.motion import frame_count
    out, info, calls = built
    assert calls[-1] == (len(CLIPS), len(CLIPS))
    assert info["items"] == len(CLIPS) - 1 and info["rejected"] == 1
    assert info["splits"] == {"train": 0, "val": 0, "test": len(CLIPS) - 1}
    ds = open_dataset(out)
    assert ds.channels == tuple(SPEECH_CHANNELS) and len(ds.channels) == 23
    test = ds.subset("test")
    assert len(test) == len(CLIPS) - 1
    for item in test:
        assert item.subject == "esco-es"
        assert item.weights.shape == (frame_count(len(item.audio) / 16000), 23)
        assert item.phonemes and item.phonemes[-1].end == pytest.approx(len(item.audio) / 16000, abs=0.05)
        assert item.transcript
    speaker = json.loads((out / "corpus.json").read_text())["speakers"][0]
    assert speaker["engine"] == "recorded" and speaker["voice"] == VOICE and speaker["variant"] == "es"
    assert 0.85 <= speaker["jaw_gain"] <= 1.15
    rows = (out / "items.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["id", "speaker", "split", "engine", "voice", "variant", "seconds", "frames"]


def test_wrong_transcript_is_rejected_and_not_retried(built, slice_root, aligner, monkeypatch):
    from wav2sem.real.corpus import build_real_corpus, read_rejected
    out, info, _ = built
    rejected = read_rejected(out)
    assert len(rejected) == 1
    (rid, why), = rejected.items()
    plan = {i["id"]: i for i in json.loads((out / "plan.json").read_text())["items"]}
    assert plan[rid]["source"] == f"esco-es:{WRONG}" and why
    assert not (out / "weights_npy" / f"{rid}.npy").exists()
    calls = []
    real = aligner.align_transcript
    monkeypatch.setattr(aligner, "align_transcript", lambda *a, **k: calls.append(a) or real(*a, **k))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "weights_npy").glob("*.npy")}
    again = build_real_corpus([slice_root], out, workers=1)
    assert calls == []                                         # done and rejected items are skipped
    assert {p.name: p.stat().st_mtime_ns for p in (out / "weights_npy").glob("*.npy")} == before
    assert again["items"] == info["items"]
    build_real_corpus([slice_root], out, workers=1, retry_rejected=True)
    assert len(calls) == 1 and read_rejected(out).keys() == {rid}


def test_resume_with_other_settings_is_refused(built, slice_root):
    from wav2sem.real.corpus import build_real_corpus
    out, _, _ = built
    with pytest.raises(Wav2SemError, match=r"--max-items all.*not.*--max-items 2.*same settings"):
        build_real_corpus([slice_root], out, max_items=2, workers=1)


def test_m_b_p_close_the_lips(built):
    from wav2sem.dataset import open_dataset
    from wav2sem.heads import ict_head
    out, _, _ = built
    head = ict_head()
    upper, lower = head.lip_centres
    ds = open_dataset(out)
    closures, vowels = [], []
    for item in ds.subset("test"):
        gap_mm = (item.vertices[:, upper, 1] - item.vertices[:, lower, 1]) * 1000.0       # (T,)
        for seg in item.phonemes:
            frames = np.arange(int(np.ceil(seg.start * 30)), int(seg.end * 30) + 1)
            frames = frames[frames < len(gap_mm)]
            if seg.arpabet in ("M", "B", "P") and seg.duration >= 0.05 and len(frames):
                closures.append(float(gap_mm[frames].min()))
            elif seg.arpabet in ("AA", "AE", "AH", "AO", "EH") and len(frames):
                vowels.append(float(gap_mm[frames].max()))
    assert len(closures) >= 2, "the slice should hold m/b/p phones"
    assert max(closures) < 1.0, closures                      # sealed: the rig closes on m/b/p
    assert np.median(vowels) > 3.0, vowels                    # and opens on the vowels around them
