"""The recorded-speech evaluation (wav2sem.real.evaluate) and training on a mix of corpora."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wav2sem.cli import main as cli_main
from wav2sem.errors import Wav2SemError
from wav2sem.real import evaluate as ev
from wav2sem.synth.timing import PhoneSegment


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "a"
    assert cli_main(["synth", "--out", str(out), "--hours", "0.006", "--seed", "4", "--engines", "espeak",
                     "--no-progress"]) == 0
    return out


def test_roc_auc_is_the_share_of_ordered_pairs():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 30)
    pos[:5] = neg[:5]                                              # ties count half
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert ev.roc_auc(pos, neg) == pytest.approx(brute)
    assert ev.roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert ev.roc_auc(np.array([]), neg) is None


def test_frame_labels_and_pauses():
    segments = [PhoneSegment("_", "SIL", 0.0, 0.5), PhoneSegment("m", "M", 0.5, 0.6),
                PhoneSegment("a", "AA", 0.6, 0.8), PhoneSegment("_", "SIL", 0.8, 0.9), PhoneSegment("t", "T", 0.9, 1.0)]
    times = np.arange(30) / 30.0
    labels = ev.frame_labels(times, segments)
    assert set(np.flatnonzero(labels == "bilabial")) == {15, 16, 17}
    assert set(np.flatnonzero(labels == "open")) == {18, 19, 20, 21, 22, 23}
    pauses = np.flatnonzero(ev.pause_frames(times, segments))
    assert pauses.min() == 3 and pauses.max() == 12                 # 0.1 s inside the 0.5 s silence only


def test_noise_is_added_at_the_asked_snr_over_speech():
    rng = np.random.default_rng(1)
    audio = np.concatenate([np.zeros(8000), 0.3 * rng.standard_normal(16000)]).astype(np.float32)
    segments = [PhoneSegment("_", "SIL", 0.0, 0.5), PhoneSegment("a", "AA", 0.5, 1.5)]
    for snr in (20.0, 10.0):
        noisy = ev.add_noise(audio, rng.standard_normal(5000), snr, segments)     # looped to length
        noise = noisy - audio
        measured = 10 * np.log10(np.mean(audio[8000:].astype(np.float64) ** 2) / np.mean(noise ** 2))
        assert measured == pytest.approx(snr, abs=0.3)
    mix = ev.babble([rng.standard_normal(3000) for _ in range(8)], 1.0, rng)
    assert mix.shape == (16000,) and np.isfinite(mix).all()


def test_evaluate_real_scores_the_default_model_and_the_rig(corpus, tmp_path):
    out = tmp_path / "eval"
    assert ev.main(["--corpus", str(corpus), "--split", "train", "--limit", "3", "--noise", "-o", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    target = result["results"]["target"]["clean"]["all"]
    assert target["auc"] > 0.95 and target["closure_mm"] < 0.5       # the rig seals m/b/p and opens on vowels
    model = result["results"]["default"]
    assert set(model) == {name for name, _, _ in ev.NOISE_CONDITIONS}
    clean = model["clean"]["all"]
    assert 0.7 < clean["auc"] <= 1.0 and clean["rtf"] > 0
    assert clean["opening_mm"] > clean["closure_mm"]
    assert "| default |" in out.with_suffix(".md").read_text()


def test_training_data_from_a_mix_of_corpora(corpus, tmp_path):
    from wav2sem.train.data import load_examples, load_template

    other = tmp_path / "b"
    assert cli_main(["synth", "--out", str(other), "--hours", "0.004", "--seed", "5", "--engines", "espeak",
                     "--no-progress"]) == 0
    one = load_examples(corpus, "train", True, 12.0)
    both = load_examples([corpus, other], "train", True, 12.0)
    assert len(both) == len(one) + len(load_examples(other, "train", True, 12.0)) > len(one)
    assert load_template([corpus, other]).vertex_count == load_template(corpus).vertex_count
    synthetic = tmp_path / "c"
    assert cli_main(["synth", "--out", str(synthetic), "--hours", "0.002", "--seed", "6", "--engines", "espeak",
                     "--head", "synthetic", "--no-progress"]) == 0
    with pytest.raises(Wav2SemError, match="different heads"):
        load_template([corpus, synthetic])


def test_style_embedding_is_carried_over_by_subject_name(tmp_path):
    from wav2sem.train.animation import _map_styles, subjects_file

    class Net(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.obj_vector = torch.nn.Linear(n, 4, bias=False)

    old = torch.arange(12.0).reshape(4, 3)                         # columns: a, b, c
    path = tmp_path / "animation_init.pt"
    subjects_file(path).write_text(json.dumps(["a", "b", "c"]))
    state = {"obj_vector.weight": old.clone()}
    _map_styles(state, Net(4), path, ["c", "new", "a", "b"])
    mapped = state["obj_vector.weight"]
    assert torch.equal(mapped[:, 0], old[:, 2]) and torch.equal(mapped[:, 2], old[:, 0])
    assert torch.allclose(mapped[:, 1], old.mean(dim=1))             # a new speaker starts at the mean style


def test_babble_augmentation_mixes_other_clips_and_leaves_older_recipes_alone():
    from wav2sem.train.augmentation import babble, perturber

    rng = np.random.default_rng(3)
    pool = [rng.standard_normal(4000).astype(np.float32) for _ in range(5)]
    mix = babble(pool, 10000, 4, rng)
    assert mix.shape == (10000,) and np.sqrt(np.mean(mix ** 2)) == pytest.approx(1.0, rel=1e-3)
    clip = np.sin(np.arange(8000) / 10.0).astype(np.float32)
    old = perturber({"noise_prob": 0.5, "tilt_prob": 0.5}, np.random.default_rng(9))
    same = perturber({"noise_prob": 0.5, "tilt_prob": 0.5, "babble_prob": 0.0}, np.random.default_rng(9), pool)
    assert all(np.array_equal(old(clip), same(clip)) for _ in range(6))
    loud = perturber({"babble_prob": 1.0, "babble_snr_db": [0, 0]}, np.random.default_rng(9), pool)
    noisy = loud(clip)
    assert np.sqrt(np.mean((noisy - clip) ** 2)) == pytest.approx(np.sqrt(np.mean(clip ** 2)), rel=0.05)


def test_a_frozen_encoder_gets_no_gradient_and_stays_in_eval_mode():
    from wav2sem.heads import SPEECH_CHANNELS, ict_head
    from wav2sem.train.animation import build_network, encoder_trains
    from wav2sem.train.config import load_config

    template = ict_head(SPEECH_CHANNELS)
    config = load_config(overrides={"encoder.freeze": True})
    _, net = build_network(config, template, ["a", "b"], use_semantic=False)
    assert not encoder_trains(net)
    assert all(p.requires_grad for p in net.obj_vector.parameters())
    _, trainable = build_network(load_config(), template, ["a", "b"], use_semantic=False)
    assert encoder_trains(trainable)


def test_a_bundle_can_store_its_frozen_encoder_in_half_precision(tmp_path):
    from safetensors import safe_open

    from wav2sem.bundle import save_bundle
    from wav2sem.heads import SPEECH_CHANNELS, ict_head
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.train.animation import build_network
    from wav2sem.train.config import load_config

    template = ict_head(SPEECH_CHANNELS)
    config, net = build_network(load_config(), template, ["a"], use_semantic=False)
    save_bundle(tmp_path / "b", config, net.eval(), template, half_prefixes=("audio_encoder.",))
    with safe_open(str(tmp_path / "b" / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert {d for k, d in dtypes.items() if k.startswith("audio_encoder.")} == {torch.float16}
    assert {d for k, d in dtypes.items() if not k.startswith("audio_encoder.")} == {torch.float32}
    model = load_model(tmp_path / "b", device="cpu")
    loaded = dict(model.net.audio_encoder.named_parameters())
    for name, p in net.audio_encoder.named_parameters():
        assert loaded[name].dtype == torch.float32
        assert torch.equal(loaded[name], p.detach().half().float())
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert generate(model, audio, offsets=False).weights.shape[1] == len(SPEECH_CHANNELS)


def test_the_study_report_adds_the_recorded_speech_table(tmp_path):
    from wav2sem.train import ablation_report

    for variant, auc in (("sem", 0.9), ("nosem", 0.8)):
        for seed in range(2):
            coupling = {"coupling_without_semantic": 0.5 + 0.1 * seed,
                        "coupling_with_semantic": (0.3 if variant == "sem" else 0.5) + 0.1 * seed}
            (tmp_path / f"{variant}-{seed}.json").write_text(json.dumps(
                {"lve": 1e-5, "minimal_pair_lve": 2e-5, "fdd": 1e-7, "mve": 4e-4, **coupling}))
            scores = {"auc": auc + 0.01 * seed, "closure_mm": 0.2, "opening_mm": 9.0, "pause_mm": 1.0}
            (tmp_path / f"real_{variant}-{seed}.json").write_text(json.dumps(
                {"results": {"target": {"clean": {"all": {**scores, "auc": 1.0}}},
                             f"{variant}-{seed}": {"clean": {"all": scores}}}}))
    assert ablation_report.main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| with Wav2Sem (recorded test speakers)" not in summary
    assert "| with Wav2Sem | 2 | 0.905 ± 0.005 |" in summary and "| without Wav2Sem | 2 | 0.805 ± 0.005 |" in summary
    # the coupling of `wav2sem eval --coupling` results, per variant
    assert "| model trained with Wav2Sem, vector added | 2 | 0.350 ± 0.050 |" in summary
    assert "| model trained without Wav2Sem | 2 | 0.550 ± 0.050 |" in summary
