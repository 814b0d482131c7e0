"""Training recipe end to end on a tiny synthetic corpus: both stages, a usable bundle,
resuming, and the same command under torchrun (2 processes, gloo)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TINY = [
    "--set", 'encoder={"type": "logmel", "config": {"n_mels": 40, "conv_channels": 16, "hidden_size": 16, "gru_layers": 1, '
             '"input_norm": "frame+energy"}}',
    "--set", 'semantic_encoder={"type": "logmel", "config": {"n_mels": 40, "conv_channels": 16, "hidden_size": 384, '
             '"gru_size": 16, "gru_layers": 1, "downsample": 4}}',
    "--set", "decoder.feature_dim=8",
    "--set", "semantic_training.epochs=1",
    "--set", "animation_training.val_items=3",
]


def _wav2sem(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wav2sem", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    out = tmp_path_factory.mktemp("train") / "corpus"
    done = _wav2sem("synth", "--out", str(out), "--hours", "0.012", "--seed", "3", "--engines", "espeak", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_default_recipe_trains_resumes_and_writes_a_usable_bundle(corpus, tmp_path):
    run = tmp_path / "run"
    first = _wav2sem("train", "default", "--corpus", str(corpus), "--out", str(run), *TINY,
                     "--set", "animation_training.epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("config.json", "train.log", "semantic_encoder.safetensors", "semantic_metrics.json",
                 "animation_checkpoint.pt", "animation_metrics.json", "bundle/model.safetensors"):
        assert (run / name).is_file(), name
    semantic = json.loads((run / "semantic_metrics.json").read_text())["final"]
    assert -1.0 <= semantic["val_cosine"] <= 1.0 and 0.0 < semantic["baseline_cosine"] <= 1.0
    history = json.loads((run / "animation_metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    # validation logs the lip closure on m/b/p (every clip of this corpus has some)
    assert all(np.isfinite(row["val_bilabial_gap_mm"]) and row["val_bilabial_gap_mm"] >= 0 for row in history)
    assert "lr 0.001," in (run / "train.log").read_text()          # the shipped recipe's cosine schedule starts at lr

    # Asking for one more epoch resumes after the two finished ones instead of starting over.
    again = _wav2sem("train", "animation", "--corpus", str(corpus), "--out", str(run), *TINY,
                     "--semantic", str(run / "semantic_encoder.safetensors"), "--set", "animation_training.epochs=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed animation training at epoch 2" in (run / "train.log").read_text()
    assert [r["epoch"] for r in json.loads((run / "animation_metrics.json").read_text())["history"]] == [0, 1, 2]

    # The bundle is what infer and the server take.
    from wav2sem.dataset import open_dataset
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    model = load_model(run / "bundle", "cpu")
    assert model.net.has_semantic and model.bundle.config.arch == "direct"
    # recipe 0.3 on the (default) ICT corpus: a model of the corpus's ARKit channels
    dataset = open_dataset(corpus, split="test")
    assert model.bundle.config.output_type == "blendshapes" and model.bundle.config.channels == dataset.channels
    assert model.bundle.template.blendshape_names == dataset.channels
    assert {"lips", "upper_face"} <= set(model.bundle.template.regions) and model.bundle.template.lip_centres
    item = dataset[0]
    result = generate(model, item.audio)
    offsets = result.offsets
    assert offsets.shape[1:] == item.vertices.shape[1:] and abs(len(offsets) - len(item.vertices)) <= 2
    assert np.isfinite(offsets).all() and np.abs(offsets).max() > 0
    assert result.weights.shape == (len(offsets), len(dataset.channels))

    # Fine-tuning from a run's weights: a missing file or another network's weights get a
    # one-line error, not a traceback.
    for init, expected in (("/nonexistent/animation_best.pt", "not found"), (str(run / "animation_best.pt"), "does not fit")):
        bad = _wav2sem("train", "animation", "--corpus", str(corpus), "--out", str(tmp_path / "ft"), *TINY,
                       "--no-semantic", "--set", "decoder.feature_dim=12", "--set", f"animation_training.init_weights={init}")
        assert bad.returncode == 1 and expected in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-2000:]

    # `wav2sem eval` reports the reference metrics and the lip closure next to the ground truth's.
    scored = _wav2sem("eval", "--model", str(run / "bundle"), "--corpus", str(corpus), "--limit", "1",
                      "-o", str(tmp_path / "eval.json"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["sequences"] == 1 and result["lve"] > 0 and result["bilabial_phones"] > 0
    assert result["bilabial_gap_mm_median_gt"] < 1.0 < result["open_vowel_gap_mm_median_gt"]
    assert "m/b/p: median smallest lip gap" in scored.stderr


def test_the_synthetic_head_still_trains_a_vertex_model_with_recipe_0_2(tmp_path):
    """The project's own head (vertices_npy) and 0.2's recipe still make a vertex-offset model;
    the 0.3 recipe refuses that corpus before training, in one line."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    corpus = tmp_path / "corpus"
    done = _wav2sem("synth", "--out", str(corpus), "--hours", "0.006", "--seed", "4", "--engines", "espeak",
                    "--head", "synthetic", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    recipe = Path(__file__).resolve().parents[2] / "results" / "default_model" / "recipe_0.2.json"
    run = tmp_path / "run"
    trained = _wav2sem("train", "animation", "--corpus", str(corpus), "--out", str(run), "--config", str(recipe),
                       "--no-semantic", *TINY, "--set", "animation_training.epochs=1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    config = json.loads((run / "bundle" / "config.json").read_text())
    assert "output" not in config and config["format_version"] == 1 and config["name"] == "wav2sem-default-0.2"
    refused = _wav2sem("train", "animation", "--corpus", str(corpus), "--out", str(tmp_path / "r03"), "--no-semantic",
                       *TINY, "--set", "animation_training.epochs=1")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "blendshapes output" in refused.stderr and "--set output=vertices" in refused.stderr
    assert not (tmp_path / "r03" / "bundle").exists()


def test_torchrun_two_processes_with_gloo(corpus, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not next to this Python; it comes with torch (pip install -e '.[test,train]')")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", "-m", "wav2sem",
                           "train", "animation", "--corpus", str(corpus), "--out", str(tmp_path / "ddp"),
                           "--no-semantic", *TINY, "--set", "animation_training.epochs=1", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ddp" / "bundle" / "model.safetensors").is_file()
    assert len(json.loads((tmp_path / "ddp" / "animation_metrics.json").read_text())["history"]) == 1


def test_minimal_set_coupling_measures_the_semantic_vector(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    import torch

    from wav2sem.loaded_model import load_model
    from wav2sem.testing import write_tiny_bundle
    from wav2sem.train.coupling import minimal_set_coupling

    model = load_model(write_tiny_bundle(tmp_path / "b"), "cpu")
    sets = [("fin", "thin", "pin")]
    base = minimal_set_coupling(model, sets=sets, voices=("en-us",))
    assert base["word_pairs"] == 3
    assert -1.0 <= base["coupling_with_semantic"] <= 1.0 and -1.0 <= base["coupling_without_semantic"] <= 1.0
    with torch.no_grad():        # a zero fusion layer adds nothing: both scores agree
        model.net.semantic_fusion.weight.zero_()
        model.net.semantic_fusion.bias.zero_()
    zero = minimal_set_coupling(model, sets=sets, voices=("en-us",))
    assert zero["coupling_with_semantic"] == pytest.approx(zero["coupling_without_semantic"], abs=1e-6)
    assert zero["coupling_without_semantic"] == pytest.approx(base["coupling_without_semantic"], abs=1e-6)


def test_bundle_onto_a_folder_of_other_files_is_refused_before_training(tmp_path):
    """`train --bundle runs` (a folder with earlier runs in it) is refused in one sentence
    before any data is read or any epoch runs, and nothing in it is touched."""
    from w2s_helpers import assert_clean_failure, run_wav2sem_inprocess

    runs = tmp_path / "runs"
    (runs / "old_run").mkdir(parents=True)
    (runs / "old_run" / "animation_best.pt").write_bytes(b"weights")
    (runs / "notes.txt").write_text("keep")
    before = sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
    for stage in ("animation", "default"):
        proc = run_wav2sem_inprocess("train", stage, "--corpus", tmp_path / "no_corpus_yet", "--out", tmp_path / "new",
                                     "--bundle", runs, "--device", "cpu")
        assert "not a model bundle" in assert_clean_failure(proc, str(runs))
    assert sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) == before
    assert (runs / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "new").exists()


def test_recipe_overrides_reject_unknown_keys_and_suggest_the_closest(tmp_path):
    from w2s_helpers import assert_clean_failure, run_wav2sem_inprocess
    from wav2sem.errors import Wav2SemError
    from wav2sem.train.config import load_config

    for typo, suggestion in (("animation_training.epoch", "animation_training.epochs"), ("seeed", "seed"),
                             ("encoder.config.n_mel", "encoder.config.n_mels"),
                             ("animation_training.augment.snr", "animation_training.augment.snr_db"),
                             ("semantic_trainin.epochs", "semantic_training")):
        with pytest.raises(Wav2SemError) as info:
            load_config(None, {typo: 3})
        message = info.value.message
        assert typo in message and suggestion in message and "\n" not in message, message
    with pytest.raises(Wav2SemError) as info:
        load_config(None, {"decoder.feature_dim.size": 3})      # a number has no keys
    assert "decoder.feature_dim" in info.value.message
    with pytest.raises(Wav2SemError) as info:
        load_config(None, {"animation_training.epoch": 3})
    assert "epochs" in info.value.message and "lr" in info.value.message      # names the keys that exist
    # keys the trainers read with a default are accepted although the shipped recipe omits them
    config = load_config(None, {"animation_training.val_items": 3, "animation_training.init_weights": "x.pt",
                                "animation_training.epochs": 4, "encoder.config.downsample": 2,
                                "semantic_training.batch_seconds": 30.0, "encoder.pretrained": "/enc"})
    assert config["animation_training"]["epochs"] == 4 and config["animation_training"]["val_items"] == 3
    assert config["encoder"]["config"]["downsample"] == 2
    # a whole replaced encoder spec is checked as replaced (a transformers config takes any key)
    config = load_config(None, {"encoder": {"type": "wav2vec2", "config": {}}, "encoder.config.num_hidden_layers": 2})
    assert config["encoder"]["config"] == {"num_hidden_layers": 2}

    proc = run_wav2sem_inprocess("train", "animation", "--corpus", tmp_path / "none", "--out", tmp_path / "run",
                                 "--set", "animation_training.epoch=3")
    assert "animation_training.epochs" in assert_clean_failure(proc, "animation_training.epoch")


def test_unreadable_recipe_file_is_one_sentence(tmp_path):
    from wav2sem.errors import Wav2SemError
    from wav2sem.train.config import load_config

    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "broken.json").write_text("{")
    for name in ("missing.json", "list.json", "broken.json"):
        with pytest.raises(Wav2SemError) as info:
            load_config(tmp_path / name)
        assert name in info.value.message and "\n" not in info.value.message


def _text_corpus(root: Path, clips: int = 4) -> Path:
    """A minimal corpus in the wav2sem layout, written here: speech-like audio, still faces and
    transcripts; the last clip is the validation split."""
    from w2s_helpers import speechlike, write_audio
    from wav2sem.testing import grid_template

    for folder in ("wav", "vertices_npy", "text", "splits"):
        (root / folder).mkdir(parents=True)
    grid_template(30).save(root / "template.npz")
    (root / "corpus.json").write_text('{"fps": 30}')
    ids = [f"spk_{i}" for i in range(clips)]
    for i, item in enumerate(ids):
        write_audio(root / "wav" / f"{item}.wav", speechlike(0.6 + 0.1 * i, seed=i))
        np.save(root / "vertices_npy" / f"{item}.npy", np.zeros((18, 90), np.float32))
        (root / "text" / f"{item}.txt").write_text(["a cat sat", "the dog ran", "we may go", "it is blue"][i % 4])
    (root / "splits" / "train.txt").write_text("\n".join(ids[:-1]))
    (root / "splits" / "val.txt").write_text(ids[-1])
    (root / "splits" / "test.txt").write_text("")
    return root


def test_resumed_semantic_training_has_the_learning_rate_of_an_unbroken_run(tmp_path):
    """StepLR halving every epoch: a run stopped after epoch 0 and resumed must train epochs
    1 and 2 at the same learning rates (and end with the same weights) as one unbroken run."""
    import torch
    from safetensors.torch import load_file

    from wav2sem.train.config import load_config
    from wav2sem.train.semantic import train_semantic

    corpus = _text_corpus(tmp_path / "corpus")

    def recipe(epochs: int) -> dict:
        return load_config(None, {
            "semantic_encoder": {"type": "logmel", "config": {"n_mels": 40, "conv_channels": 8, "hidden_size": 384,
                                                              "gru_size": 8, "gru_layers": 1, "downsample": 4}},
            "semantic_training.epochs": epochs, "semantic_training.step_epochs": 1, "semantic_training.gamma": 0.5,
            "semantic_training.lr": 0.01})

    train_semantic(recipe(3), corpus, tmp_path / "unbroken", "cpu", resume=False)
    train_semantic(recipe(1), corpus, tmp_path / "resumed", "cpu", resume=False)
    train_semantic(recipe(3), corpus, tmp_path / "resumed", "cpu", resume=True)

    def lrs(run: str) -> tuple[list, float]:
        history = json.loads((tmp_path / run / "semantic_metrics.json").read_text())["history"]
        state = torch.load(tmp_path / run / "semantic_checkpoint.pt", weights_only=True)
        return [row["lr"] for row in history], state["optimizer"]["param_groups"][0]["lr"]

    assert lrs("unbroken") == lrs("resumed") == ([0.01, 0.005, 0.0025], 0.0025)
    a = load_file(str(tmp_path / "unbroken" / "semantic_encoder.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "semantic_encoder.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
