"""Blendshape (ARKit weight) models end to end on a tiny corpus written here: the corpus
layout (weights_npy + a template with blendshapes) is read with vertices computed from the
weights; the Gram-matrix loss is the vertex loss exactly; training lowers it and writes a
bundle that carries the template's blendshapes, regions and landmarks; evaluation and
validation measure vertices of the regions they need from the weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from w2s_helpers import speechlike, write_audio

CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "browInnerUp")
FPS = 30
LIP_REST_GAP = 0.0006          # metres between the lip-centre landmarks at rest (as the ICT head)

TINY_RECIPE = {
    "encoder": {"type": "logmel", "config": {"n_mels": 40, "conv_channels": 16, "hidden_size": 16, "gru_layers": 1,
                                             "input_norm": "frame+energy"}},
    "semantic_encoder": {"type": "logmel", "config": {"n_mels": 40, "conv_channels": 16, "hidden_size": 384,
                                                      "gru_size": 16, "gru_layers": 1, "downsample": 4}},
    "decoder.feature_dim": 8,
    "semantic_training.epochs": 1,
    "animation_training.val_items": 2,
    "animation_training.lr": 3e-3,
    "animation_training.lr_schedule": "constant",
    "animation_training.augment": {"noise_prob": 0.0, "snr_db": [10, 40], "tilt_prob": 0.0},
}


def blendshape_template(vertex_count: int = 150, channels=CHANNELS, seed: int = 0):
    """grid_template with lip-centre landmarks LIP_REST_GAP apart and smooth blendshapes:
    jawOpen moves the lower face down (and opens the lips 1 cm), mouthClose brings the lower
    lip up by the same amount, the others are smooth random fields of a few mm."""
    from wav2sem.template import Template
    from wav2sem.testing import grid_template

    base = grid_template(vertex_count, seed)
    verts = base.vertices.copy()
    lips = base.regions["lips"]
    upper, lower = int(lips[0]), int(lips[1])
    verts[lower] = verts[upper] - np.array([0.0, LIP_REST_GAP, 0.0], np.float32)
    rng = np.random.default_rng(seed)
    deltas = []
    for name in channels:
        centre = verts[rng.integers(vertex_count)]
        falloff = np.exp(-np.sum((verts - centre) ** 2, axis=1) / 0.05 ** 2)[:, None]
        field = falloff * rng.normal(scale=0.004, size=3)
        if name == "jawOpen":
            field = np.where((verts[:, 1] < verts[upper, 1] - 1e-4)[:, None], [0.0, -0.01, 0.0], 0.0) * np.ones((1, 3))
            field[lower] = [0.0, -0.01, 0.0]
        elif name == "mouthClose":
            field = np.zeros_like(verts)
            field[lower] = [0.0, 0.01, 0.0]
        deltas.append(field)
    landmarks = {**base.landmarks, "upper_lip_center": upper, "lower_lip_center": lower}
    return Template(verts, None, dict(base.regions), landmarks, tuple(channels), np.stack(deltas).astype(np.float32))


def smooth_weights(frames: int, k: int, rng) -> np.ndarray:
    """Random smooth weight curves in 0..1 (T, K); the first channel (jawOpen) follows a
    syllable rhythm and is 0 on some frames, so both closed and open lips occur."""
    t = np.arange(frames) / FPS
    w = np.empty((frames, k), np.float32)
    for c in range(k):
        phase, rate = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 4.0)
        w[:, c] = 0.5 + 0.5 * np.sin(2 * np.pi * rate * t + phase)
    w[:, 0] = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None)
    return w


def write_blendshape_corpus(root: Path, template=None, clips: int = 6, corpus_channels=None) -> Path:
    """A corpus in the blendshapes layout: wav/, weights_npy/ (T, K), template.npz with the
    blendshapes, corpus.json with target/channels, text/, phonemes/ (an m and an open vowel
    per clip), splits/ (two held-out voices)."""
    from wav2sem.synth.timing import PhoneSegment, write_segments

    template = template or blendshape_template()
    channels = tuple(corpus_channels or template.blendshape_names)
    for folder in ("wav", "weights_npy", "text", "phonemes", "splits"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    template.save(root / "template.npz")
    (root / "corpus.json").write_text(json.dumps({"format": "wav2sem-synth", "version": 2, "fps": FPS,
                                                  "target": "blendshapes", "channels": list(channels)}))
    rng = np.random.default_rng(1)
    ids = [f"voice{i % 3}_{i:03d}" for i in range(clips)]
    for i, item in enumerate(ids):
        seconds = 1.2 + 0.1 * i
        write_audio(root / "wav" / f"{item}.wav", speechlike(seconds, seed=i))
        weights = smooth_weights(int(seconds * FPS), len(channels), rng)
        np.save(root / "weights_npy" / f"{item}.npy", weights)                     # in the corpus's channel order
        (root / "text" / f"{item}.txt").write_text(["a cat sat", "the map ran", "we met him"][i % 3])
        write_segments(root / "phonemes" / f"{item}.tsv", [
            PhoneSegment("_", "SIL", 0.0, 0.2), PhoneSegment("m", "M", 0.2, 0.3),
            PhoneSegment("A:", "AA", 0.3, 0.5), PhoneSegment("_", "SIL", 0.5, seconds)])
    train = [i for i in ids if not i.startswith("voice2")]
    held = [i for i in ids if i.startswith("voice2")]
    (root / "splits" / "train.txt").write_text("\n".join(train))
    (root / "splits" / "val.txt").write_text(held[0])
    (root / "splits" / "test.txt").write_text("\n".join(held))
    return root


# ----- the corpus ------------------------------------------------------------------------------
def test_blendshape_corpus_items_carry_weights_and_compute_vertices_from_them(tmp_path):
    from wav2sem.dataset import open_dataset

    template = blendshape_template()
    # the corpus lists its channels in another order than the template stores them
    reordered = ("mouthFunnel", "jawOpen", "browInnerUp", "mouthClose")
    root = write_blendshape_corpus(tmp_path / "c", template, corpus_channels=reordered)
    ds = open_dataset(root)
    assert ds.is_blendshape and ds.channels == reordered
    assert ds.template.blendshape_names == reordered          # the template follows the corpus order
    assert ds.subset("test").template.blendshape_names == reordered
    item = ds["voice0_000"]
    assert item.weights.shape == (item.frames, 4) and item.weights.dtype == np.float32
    assert ds.frame_count(item.id) == item.frames
    full = template.with_channels(reordered).offsets_from_weights(item.weights)
    lips = ds.template.regions["lips"]
    np.testing.assert_allclose(item.offsets_at(lips), full[:, lips], atol=1e-7)
    np.testing.assert_allclose(item.offsets, full, atol=1e-7)
    np.testing.assert_allclose(item.vertices, template.vertices[None] + full, atol=1e-7)
    assert "weights" in repr(item)


def test_blendshape_corpus_with_bad_channels_is_refused(tmp_path):
    from wav2sem.dataset import open_dataset
    from wav2sem.errors import MODEL_INVALID, Wav2SemError

    root = write_blendshape_corpus(tmp_path / "c", clips=3)
    info = json.loads((root / "corpus.json").read_text())
    for channels, expected in ((["jawOpen", "tongueOut"], "tongueOut"), ([], "channels"), (["a", "a"], "channels")):
        (root / "corpus.json").write_text(json.dumps({**info, "channels": channels}))
        with pytest.raises(Wav2SemError) as err:
            open_dataset(root)
        assert err.value.code == MODEL_INVALID and expected in err.value.message and "\n" not in err.value.message


def test_vertex_corpora_still_read_as_before(tmp_path):
    from wav2sem.dataset import open_dataset
    from wav2sem.testing import grid_template

    root = tmp_path / "v"
    for folder in ("wav", "vertices_npy", "splits"):
        (root / folder).mkdir(parents=True)
    template = grid_template(40)
    template.save(root / "template.npz")
    (root / "corpus.json").write_text('{"fps": 30}')
    write_audio(root / "wav" / "s_0.wav", speechlike(0.5))
    motion = template.vertices[None] + np.random.default_rng(0).normal(scale=1e-3, size=(15, 40, 3)).astype(np.float32)
    np.save(root / "vertices_npy" / "s_0.npy", motion.reshape(15, -1))
    for split in ("train", "val", "test"):
        (root / "splits" / f"{split}.txt").write_text("s_0" if split == "train" else "")
    ds = open_dataset(root)
    item = ds[0]
    assert not ds.is_blendshape and ds.channels == () and item.weights is None
    np.testing.assert_allclose(item.vertices, motion)
    np.testing.assert_allclose(item.offsets_at(np.array([1, 2])), (motion - template.vertices[None])[:, [1, 2]], atol=1e-7)


# ----- the loss ---------------------------------------------------------------------------------
def _objective(template, blendshapes: bool, closure_weight=5.0, gap_weight=0.5, weight_loss=0.0, **kwargs):
    from wav2sem.train.animation import AnimationObjective

    weights = torch.ones(template.vertex_count)
    weights[torch.from_numpy(template.regions["lips"]).long()] = 10.0
    pair = template.lip_centres
    return AnimationObjective(torch.nn.Identity(), FPS, 0.003, 0.1, weights, pair,
                              torch.from_numpy(template.vertices[list(pair)]), gap_weight, closure_weight,
                              torch.from_numpy(template.blendshape_deltas) if blendshapes else None, 0.3, weight_loss,
                              **kwargs)


def test_closure_mm_sets_which_target_frames_count_as_closed():
    template = blendshape_template()
    rng = np.random.default_rng(5)
    target = torch.tensor(smooth_weights(40, 4, rng)[None], dtype=torch.float32)
    predicted = target + 0.1
    gaps = _objective(template, True).lip_gap(target)
    plain = float(_objective(template, True, 1.0, 0.0).reconstruction_loss(predicted, target))
    none_closed = _objective(template, True, 5.0, 0.0, closure_mm=-1e6)         # no frame is that closed
    assert float(none_closed.reconstruction_loss(predicted, target)) == pytest.approx(plain, rel=1e-6)
    middle = float(gaps.median()) * 1000.0                                       # about half the frames
    some = float(_objective(template, True, 5.0, 0.0, closure_mm=middle).reconstruction_loss(predicted, target))
    assert some > plain * 1.2


def test_gram_loss_equals_the_explicit_vertex_loss_on_random_data():
    template = blendshape_template()
    rng = np.random.default_rng(4)
    target = smooth_weights(40, 4, rng)[None].repeat(2, 0)                      # (2, 40, 4)
    target[1] = rng.uniform(0, 1, size=target[1].shape)
    predicted = target + rng.normal(scale=0.2, size=target.shape)
    w_target, w_pred = torch.tensor(target, dtype=torch.float32), torch.tensor(predicted, dtype=torch.float32)
    as_offsets = lambda w: torch.from_numpy(template.offsets_from_weights(w.numpy()).reshape(w.shape[0], w.shape[1], -1))
    for closure, gap in ((1.0, 0.0), (5.0, 0.0), (5.0, 0.5)):
        vertex_obj = _objective(template, False, closure, gap)
        blend_obj = _objective(template, True, closure, gap)
        closed = vertex_obj.lip_gap(as_offsets(w_target)) < 1e-3
        assert 0 < int(closed.sum()) < closed.numel()                # both kinds of frames are in the data
        torch.testing.assert_close(blend_obj.lip_gap(w_target), vertex_obj.lip_gap(as_offsets(w_target)),
                                   rtol=1e-5, atol=1e-8)
        explicit = vertex_obj.reconstruction_loss(as_offsets(w_pred), as_offsets(w_target))
        gram = blend_obj.reconstruction_loss(w_pred, w_target)
        torch.testing.assert_close(gram, explicit, rtol=1e-4, atol=0)
    # by hand: lips x10, normalised to mean weight 1, mean over frames and coordinates
    offsets_error = template.offsets_from_weights(predicted - target).astype(np.float64)      # (2, 40, V, 3)
    w = np.ones(template.vertex_count)
    w[template.regions["lips"]] = 10.0
    by_hand = np.mean(offsets_error ** 2 * (w / w.mean())[None, None, :, None])
    assert float(_objective(template, True, 1.0, 0.0).reconstruction_loss(w_pred, w_target)) == pytest.approx(by_hand, rel=1e-4)
    # the weight term adds lambda x mean eigenvalue x weight MSE
    plain = float(_objective(template, True, 1.0, 0.0).reconstruction_loss(w_pred, w_target))
    with_term = _objective(template, True, 1.0, 0.0, weight_loss=0.5)
    extra = 0.5 * with_term.weight_loss_scale * float(np.mean((predicted - target) ** 2))
    assert float(with_term.reconstruction_loss(w_pred, w_target)) == pytest.approx(plain + extra, rel=1e-4)


# ----- the model ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["faceformer", "direct"])
def test_a_blendshape_decoder_outputs_one_weight_per_channel(arch):
    from wav2sem.bundle import BundleConfig, build_model
    from wav2sem.models.talker import DecoderConfig
    from wav2sem.testing import tiny_encoder_spec

    config = BundleConfig(name="b", decoder=DecoderConfig(vertex_count=150, n_subjects=2, feature_dim=16, output_channels=4),
                          fps=30.0, subjects=("a", "b"), encoder=tiny_encoder_spec(), arch=arch, channels=CHANNELS)
    torch.manual_seed(0)
    net = build_model(config).eval()
    torch.nn.init.normal_(net.vertice_map_r.weight, std=0.1)
    assert net.vertice_map_r.out_features == 4
    memory, style = torch.randn(1, 12, 16), torch.randn(1, 1, 16)
    with torch.no_grad():
        out = net.decode(memory, style, 12)
        assert out.shape == (1, 12, 4)
        assert net.decode_teacher_forced(memory, style, torch.randn(1, 12, 4)).shape == (1, 12, 4)
        if arch == "faceformer":            # the cached decoder still matches the reference loop
            torch.testing.assert_close(out, net.decode_reference(memory, style, 12), rtol=1e-4, atol=1e-5)


# ----- training, bundle, inference, evaluation ----------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny corpus, both training stages in this process, and the run folder."""
    from wav2sem.train.animation import train_animation
    from wav2sem.train.config import load_config
    from wav2sem.train.semantic import WEIGHTS, train_semantic

    base = tmp_path_factory.mktemp("blend")
    corpus = write_blendshape_corpus(base / "corpus")
    run = base / "run"
    config = load_config(None, {**TINY_RECIPE, "animation_training.epochs": 6})
    train_semantic(config, corpus, run, "cpu", True)
    best = train_animation(config, corpus, run, run / WEIGHTS, "cpu", True)
    return corpus, run, best


def test_training_a_blendshape_model_lowers_the_loss_and_writes_its_bundle(trained):
    from wav2sem.bundle import load_weights, read_bundle
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.dataset import open_dataset

    corpus, run, best = trained
    history = json.loads((run / "animation_metrics.json").read_text())["history"]
    losses = [row["train_loss"] for row in history]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0], losses
    assert all(np.isfinite(row["val_lve"]) and np.isfinite(row["val_bilabial_gap_mm"]) for row in history)

    bundle = read_bundle(run / "bundle")
    config = json.loads((run / "bundle" / "config.json").read_text())
    assert config["output"] == {"type": "blendshapes", "channels": list(CHANNELS)}
    assert config["decoder"]["output_channels"] == 4 and config["name"] == "wav2sem-default-0.3"
    assert config["semantic"] is not None                      # the Wav2Sem fusion is kept
    source = open_dataset(corpus).template
    assert bundle.template.blendshape_names == CHANNELS
    np.testing.assert_array_equal(bundle.template.blendshape_deltas, source.blendshape_deltas)
    assert bundle.template.landmarks == source.landmarks
    assert sorted(bundle.template.regions) == sorted(source.regions)
    assert load_weights(bundle).vertice_map_r.out_features == 4

    model = load_model(run / "bundle", "cpu")
    item = open_dataset(corpus, split="test")[0]
    for semantic in (True, False):                             # the Wav2Sem switch works on a blendshape model
        result = generate(model, item.audio, semantic=semantic)
        assert result.weights.shape[1] == 4 and abs(len(result.weights) - item.frames) <= 2
        np.testing.assert_allclose(result.offsets, bundle.template.offsets_from_weights(result.weights), atol=1e-6)


def test_resuming_blendshape_training_continues_after_the_finished_epochs(trained, tmp_path):
    import shutil

    from wav2sem.train.animation import train_animation
    from wav2sem.train.config import load_config
    from wav2sem.train.semantic import WEIGHTS

    corpus, run, _ = trained
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    config = load_config(None, {**TINY_RECIPE, "animation_training.epochs": 7})
    train_animation(config, corpus, copy, copy / WEIGHTS, "cpu", True)
    history = json.loads((copy / "animation_metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(7))


def test_eval_of_a_blendshape_model_equals_the_metrics_on_full_offsets(trained):
    from wav2sem import metrics
    from wav2sem.dataset import open_dataset
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model
    from wav2sem.train.evaluate import ClosureStats, evaluate

    corpus, run, _ = trained
    result = evaluate(run / "bundle", corpus, "test")
    assert result["output"] == "blendshapes" and result["sequences"] == 2
    assert all(np.isfinite(result[k]) for k in ("lve", "fdd", "mve", "minimal_pair_lve"))
    assert result["bilabial_phones"] == 2 and np.isfinite(result["bilabial_gap_mm_median_gt"])

    # the same numbers from whole-head offsets, the way a vertex model is measured
    model = load_model(run / "bundle", "cpu")
    template = model.bundle.template
    lve, fdd, mve = [], [], []
    closure = ClosureStats(template)
    everyone = {i: 1.0 for i in range(len(model.subjects))}
    for item in open_dataset(corpus, split="test"):
        pred = generate(model, item.audio, subject=everyone).offsets
        gt = item.vertices - item.template[None]
        t = min(len(pred), len(gt))
        lve.append(metrics.lip_vertex_error(pred[:t], gt[:t], template.regions["lips"]))
        fdd.append(metrics.face_dynamics_deviation(pred[:t], gt[:t], template.regions["upper_face"]))
        mve.append(metrics.mean_vertex_error(pred[:t], gt[:t]))
        closure.add(pred[:t], gt[:t], item.phonemes, FPS)
    assert result["lve"] == pytest.approx(np.mean(lve), rel=1e-4)
    assert result["fdd"] == pytest.approx(np.mean(fdd), rel=1e-3, abs=1e-12)
    assert result["mve"] == pytest.approx(np.mean(mve), rel=1e-4)
    assert result["bilabial_gap_mm_median"] == pytest.approx(closure.summary()["bilabial_gap_mm_median"], rel=1e-4)


def test_motion_metrics_match_full_offsets():
    from wav2sem import metrics

    template = blendshape_template()
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0, 1, (70, 4)).astype(np.float32), rng.uniform(0, 1, (66, 4)).astype(np.float32)
    d = template.blendshape_deltas
    full_a, full_b = template.offsets_from_weights(a), template.offsets_from_weights(b)
    ma, mb = metrics.Motion(weights=a, deltas=d), metrics.Motion(weights=b, deltas=d)
    assert metrics.motion_mean_vertex_error(ma, mb, chunk=16) == pytest.approx(metrics.mean_vertex_error(full_a, full_b), rel=1e-5)
    # one side as plain offsets (a vertex model against a blendshape corpus) gives the same
    assert metrics.motion_mean_vertex_error(metrics.Motion(offsets=full_a), mb, chunk=16) == pytest.approx(
        metrics.mean_vertex_error(full_a, full_b), rel=1e-5)
    u, lo = template.lip_centres
    np.testing.assert_allclose(metrics.motion_lip_gap(ma, template.vertices, u, lo),
                               metrics.lip_gap(full_a, template.vertices, u, lo), rtol=1e-5)


def test_a_recipe_for_blendshapes_refuses_a_vertex_corpus_before_training(tmp_path):
    from wav2sem.errors import BAD_REQUEST, Wav2SemError
    from wav2sem.testing import grid_template
    from wav2sem.train.animation import check_output

    with pytest.raises(Wav2SemError) as err:
        check_output({"output": "blendshapes"}, grid_template(30), tmp_path / "old-corpus")
    assert err.value.code == BAD_REQUEST and "\n" not in err.value.message
    assert "vertices targets" in err.value.message and "wav2sem synth" in err.value.message
    with pytest.raises(Wav2SemError) as err:
        check_output({"output": "vertices"}, blendshape_template(), tmp_path / "ict-corpus")
    assert "--head synthetic" in err.value.message
    with pytest.raises(Wav2SemError):
        check_output({"output": "weights"}, blendshape_template(), tmp_path / "ict-corpus")
    check_output({}, blendshape_template(), tmp_path)                       # absent: whatever the corpus holds
    check_output({"output": "blendshapes"}, blendshape_template(), tmp_path)
