"""The loader on VOCASET- and BIWI-style folders, and refusal of a malicious templates.pkl."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from wav2sem.dataset import REFERENCE_SUBJECTS, detect_layout, open_dataset, resample_frames
from wav2sem.errors import Wav2SemError

V = 50   # vertices of the toy templates


def _write_reference_folder(root, subjects, sentences, fps, name_fmt, seconds=1.0, sr=22050):
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    rng = np.random.default_rng(0)
    templates = {s: rng.standard_normal((V, 3)).astype(np.float64) for s in subjects}
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(templates, f, protocol=2)
    for s in subjects:
        for n in sentences:
            stem = name_fmt.format(subject=s, n=n)
            t = np.arange(int(seconds * sr)) / sr
            sf.write(root / "wav" / f"{stem}.wav", 0.3 * np.sin(2 * np.pi * 220 * t), sr)
            frames = int(seconds * fps)
            motion = templates[s][None] + 0.001 * np.arange(frames)[:, None, None]      # (T, V, 3) float64
            np.save(root / "vertices_npy" / f"{stem}.npy", motion.reshape(frames, -1))
    return templates


def test_vocaset_layout(tmp_path):
    subjects = REFERENCE_SUBJECTS["vocaset"]["train"][:2] + REFERENCE_SUBJECTS["vocaset"]["test"][:1]
    templates = _write_reference_folder(tmp_path, subjects, (1, 2, 21, 40), 60, "{subject}_sentence{n:02d}")
    assert detect_layout(tmp_path) == "vocaset"
    ds = open_dataset(tmp_path)
    assert ds.fps == 30.0 and ds.source_fps == 60.0
    train, test = ds.subset("train"), ds.subset("test")
    assert len(train) == 8 and len(test) == 2                     # test subject: sentences 21-40 only
    assert {i.rsplit("_", 1)[1] for i in test.ids} == {"sentence21", "sentence40"}
    assert ds.train_subjects == sorted(subjects[:2])
    item = train["FaceTalk_170728_03272_TA_sentence02"]
    assert item.subject == "FaceTalk_170728_03272_TA"
    assert item.audio.dtype == np.float32 and len(item.audio) == 16000          # resampled to 16 kHz
    assert item.vertices.shape == (30, V, 3) and item.vertices.dtype == np.float32   # every 2nd of 60 frames
    np.testing.assert_allclose(item.vertices[1] - item.template, 0.002, atol=1e-5)
    np.testing.assert_allclose(item.template, templates[item.subject], atol=1e-6)
    assert item.transcript is None and item.phonemes is None
    assert ds.frame_count("FaceTalk_170728_03272_TA_sentence02") == 30


def test_biwi_layout_and_split_files(tmp_path):
    subjects = ("F2", "M3")
    _write_reference_folder(tmp_path, subjects, (1, 33, 37), 25, "{subject}_e{n:02d}")
    ds = open_dataset(tmp_path)
    assert ds.layout == "biwi" and ds.fps == 25.0
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert ds.subset("val")[0].vertices.shape == (25, V, 3)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("F2_e01\nM3_e01\nF2_e33\n")
    (tmp_path / "splits" / "val.txt").write_text("")
    (tmp_path / "splits" / "test.txt").write_text("M3_e37\n")
    assert {k: len(v) for k, v in open_dataset(tmp_path).splits.items()} == {"train": 3, "val": 0, "test": 1}
    assert len(open_dataset(tmp_path, fps=50.0).item("F2_e01").vertices) == 49      # interpolated


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_templates_pkl_is_refused(tmp_path):
    _write_reference_folder(tmp_path, ("F2",), (1,), 25, "{subject}_e{n:02d}")
    marker = tmp_path / "pwned"
    with open(tmp_path / "templates.pkl", "wb") as f:
        pickle.dump({"F2": _Exploit(marker)}, f)
    with pytest.raises(Wav2SemError, match="Refused"):
        open_dataset(tmp_path)
    assert not marker.exists()
    # The same payload really runs under a plain unpickler: the test is meaningful.
    pickle.loads((tmp_path / "templates.pkl").read_bytes())
    assert marker.exists()


def test_not_a_corpus(tmp_path):
    with pytest.raises(Wav2SemError, match="wav2sem synth"):
        open_dataset(tmp_path)
    (tmp_path / "wav").mkdir()
    (tmp_path / "vertices_npy").mkdir()
    with pytest.raises(Wav2SemError, match="templates.pkl"):
        open_dataset(tmp_path)


def test_resample_frames():
    v = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)   # 7 frames at 60 fps
    assert resample_frames(v, 60, 30)[:, 0, 0].tolist() == [0, 2, 4, 6]
    np.testing.assert_allclose(resample_frames(v, 60, 40)[:, 0, 0], [0, 1.5, 3, 4.5, 6])
    assert resample_frames(v, 30, 30) is v
