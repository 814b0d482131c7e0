"""A tiny real corpus: written by `wav2sem synth`, read back through the one dataset loader."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from wav2sem.cli import main as cli_main
from wav2sem.dataset import open_dataset, subject_of
from wav2sem.errors import Wav2SemError
from wav2sem.synth.corpus import generate

from synth_helpers import needs_espeak, needs_festival

HOURS = 0.006          # about 22 s of speech, ~8 clips


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    rc = cli_main(["synth", "--out", str(out), "--hours", str(HOURS), "--seed", "7", "--workers", "2", "--no-progress",
                   "--head", "synthetic"])
    assert rc == 0
    return out


pytestmark = [needs_espeak, needs_festival]


def test_layout_and_metadata(corpus, head):
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["fps"] == 30 and info["sample_rate"] == 16000 and info["vertex_count"] == head.template.vertex_count
    assert abs(info["hours"] - HOURS) < HOURS * 0.5
    ids = [p.stem for p in (corpus / "vertices_npy").glob("*.npy")]
    assert len(ids) == info["items"] >= 4
    for item_id in ids:
        for sub, ext in (("wav", "wav"), ("text", "txt"), ("phonemes", "tsv")):
            assert (corpus / sub / f"{item_id}.{ext}").is_file()
        assert sf.info(str(corpus / "wav" / f"{item_id}.wav")).samplerate == 16000
        flat = np.load(corpus / "vertices_npy" / f"{item_id}.npy")
        assert flat.dtype == np.float32 and flat.ndim == 2 and flat.shape[1] == 3 * head.template.vertex_count
    assert not list(corpus.rglob("*.tmp*"))


def test_round_trip_through_loader(corpus, head):
    ds = open_dataset(corpus)
    assert ds.layout == "wav2sem" and ds.fps == 30.0 and ds.template.vertex_count == head.template.vertex_count
    assert set(ds.template.regions) >= {"lips", "upper_face"}
    assert sorted(ds.ids) == sorted(p.stem for p in (corpus / "vertices_npy").glob("*.npy"))
    for item in ds:
        duration = len(item.audio) / 16000
        assert item.audio.dtype == np.float32 and item.audio.ndim == 1
        assert item.vertices.shape == (round(duration * 30), head.template.vertex_count, 3)
        assert item.vertices.dtype == np.float32
        assert item.transcript == (corpus / "text" / f"{item.id}.txt").read_text().strip()
        assert item.phonemes and abs(item.phonemes[-1].end - duration) < 0.01
        assert item.subject == subject_of(item.id)
        assert ds.frame_count(item.id) == len(item.vertices)
        gap = item.vertices[:, ds.template.landmarks["upper_lip_center"], 1] - \
            item.vertices[:, ds.template.landmarks["lower_lip_center"], 1]
        assert gap.min() < 0.0005 or not any(p.arpabet in ("P", "B", "M") for p in item.phonemes)
        assert np.abs(item.offsets[:, ds.template.regions["lips"]]).max() > 0.002   # the lips move
        assert np.abs(item.offsets).max() < 0.05


def test_corpus_statistics(corpus):
    from wav2sem.synth.check import corpus_stats

    stats = corpus_stats(str(corpus), items=100)
    closed, total = map(int, stats["bilabials_closed"].split("/"))
    assert total >= 3 and closed == total
    assert stats["phones"] >= 25


def test_phone_timings_match_the_audio(corpus):
    """On clips without noise or reverb, speech starts and ends where the phones say."""
    from wav2sem.synth.prosody import energy_db

    plan = {d["id"]: d for d in json.loads((corpus / "plan.json").read_text())["items"]}
    ds = open_dataset(corpus)
    checked = 0
    for item in ds:
        aug = plan[item.id]["augmentation"]
        if aug["noise_kind"] != "none" or aug["reverb_rt60_s"] > 0:
            continue
        n = int(len(item.audio) / 16000 * 100)
        level = energy_db(item.audio, 16000, n, 100.0)                      # 10 ms frames
        loud = np.where(level > level.max() - 35)[0] / 100
        speech = [p for p in item.phonemes if p.arpabet != "SIL"]
        assert abs(loud[0] - speech[0].start) < 0.08 and abs(loud[-1] - speech[-1].end) < 0.16
        checked += 1
    assert checked >= 1


def test_splits_are_by_voice(corpus):
    ds = open_dataset(corpus)
    subjects = {s: {subject_of(i) for i in ds.splits[s]} for s in ("train", "val", "test")}
    assert not subjects["train"] & subjects["test"] and not subjects["train"] & subjects["val"]
    speakers = {s["id"]: s for s in json.loads((corpus / "corpus.json").read_text())["speakers"]}
    by_split = {split: {speakers[x]["voice"] for x in speakers if speakers[x]["split"] == split} for split in ("train", "test")}
    assert not by_split["train"] & by_split["test"]                           # base voices held out too
    variants = {split: {speakers[x]["variant"] for x in speakers if speakers[x]["split"] == split} - {None}
                for split in ("train", "test")}
    assert not variants["train"] & variants["test"]
    assert len(ds.subset("train")) + len(ds.subset("val")) + len(ds.subset("test")) == len(ds)
    assert ds.train_subjects == sorted(subjects["train"])


def test_resume_regenerates_only_missing_items_identically(corpus):
    """Deleted items come back bit-identical, whatever else their worker or batch made before."""
    ids = sorted(p.stem for p in (corpus / "vertices_npy").glob("*.npy"))
    victims = [next(i for i in ids if i.startswith(engine)) for engine in ("espeak", "festival")]
    before = {i: (np.load(corpus / "vertices_npy" / f"{i}.npy"), sf.read(corpus / "wav" / f"{i}.wav")[0])
              for i in victims}
    kept = corpus / "vertices_npy" / f"{next(i for i in ids if i not in victims)}.npy"
    mtime = kept.stat().st_mtime_ns
    for item_id in victims:
        os.remove(corpus / "vertices_npy" / f"{item_id}.npy")
    generate(corpus, HOURS, seed=7, workers=1, head="synthetic")
    for item_id, (verts, wav) in before.items():
        np.testing.assert_array_equal(np.load(corpus / "vertices_npy" / f"{item_id}.npy"), verts)
        np.testing.assert_array_equal(sf.read(corpus / "wav" / f"{item_id}.wav")[0], wav)
    assert kept.stat().st_mtime_ns == mtime                                  # done items untouched


def test_refuses_other_settings_in_same_folder(corpus):
    with pytest.raises(Wav2SemError, match="same settings"):
        generate(corpus, HOURS, seed=8, workers=1, head="synthetic")


# --- the default head: ARKit weights on the ICT FaceKit head ----------------------------

@pytest.fixture(scope="module")
def ict_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("ict_corpus")
    rc = cli_main(["synth", "--out", str(out), "--hours", str(HOURS), "--seed", "7", "--workers", "2", "--no-progress"])
    assert rc == 0
    return out


def test_ict_is_the_default_and_writes_weights(ict_corpus):
    from wav2sem.heads import SPEECH_CHANNELS
    from wav2sem.template import LANDMARK_NAMES, Template

    info = json.loads((ict_corpus / "corpus.json").read_text())
    assert info["version"] == 2 and info["head"] == "ict" and info["target"] == "blendshapes"
    assert info["channels"] == list(SPEECH_CHANNELS) and info["vertex_count"] == 26719
    assert not (ict_corpus / "vertices_npy").exists()
    template = Template.load(ict_corpus / "template.npz")
    assert template.blendshape_names == SPEECH_CHANNELS and template.vertex_count == 26719
    assert set(LANDMARK_NAMES) <= set(template.landmarks) and {"lips", "upper_face"} <= set(template.regions)
    rows = [r.split("\t") for r in (ict_corpus / "items.tsv").read_text().splitlines()[1:]]
    assert rows
    for row in rows:
        w = np.load(ict_corpus / "weights_npy" / f"{row[0]}.npy")
        seconds = sf.info(str(ict_corpus / "wav" / f"{row[0]}.wav")).duration
        assert w.dtype == np.float32 and w.shape == (int(row[7]), len(SPEECH_CHANNELS))
        assert w.shape[0] == round(seconds * 30)
        assert w.min() >= 0.0 and w.max() <= 1.0 and w[:, SPEECH_CHANNELS.index("jawOpen")].max() > 0.1


def test_ict_check_statistics(ict_corpus):
    from wav2sem.synth.check import corpus_stats

    stats = corpus_stats(str(ict_corpus), items=50)
    closed, bilabials = map(int, stats["bilabials_closed"].split("/"))
    opened, vowels = map(int, stats["open_vowels_open"].split("/"))
    assert bilabials > 0 and closed == bilabials
    assert vowels > 0 and opened >= 0.7 * vowels


def test_ict_resume_and_refusal(ict_corpus):
    ids = sorted(p.stem for p in (ict_corpus / "weights_npy").glob("*.npy"))
    victim = ids[0]
    before = np.load(ict_corpus / "weights_npy" / f"{victim}.npy")
    os.remove(ict_corpus / "weights_npy" / f"{victim}.npy")
    generate(ict_corpus, HOURS, seed=7, workers=1)
    np.testing.assert_array_equal(np.load(ict_corpus / "weights_npy" / f"{victim}.npy"), before)
    with pytest.raises(Wav2SemError, match="--head ict"):
        generate(ict_corpus, HOURS, seed=7, workers=1, head="synthetic")
