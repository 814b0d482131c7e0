"""`wav2sem.inference`: long audio and encoder windows, subjects, progress, cancellation, devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from w2s_helpers import SR, speechlike
from wav2sem.errors import BAD_REQUEST, CANCELLED, DEVICE_UNAVAILABLE, Cancelled, Wav2SemError

# wav2vec 2.0 conv stack (REFERENCE.md): kernels and strides of the 7 conv layers
KERNELS = (10, 3, 3, 3, 3, 2, 2)
STRIDES = (5, 2, 2, 2, 2, 2, 2)


def conv_frames(n_samples: int) -> int:
    n = n_samples
    for k, s in zip(KERNELS, STRIDES):
        n = (n - k) // s + 1
    return n


def test_tiny_encoder_uses_the_reference_conv_stack(tiny_model):
    cfg = tiny_model.net.audio_encoder.config
    assert tuple(cfg.conv_kernel) == KERNELS and tuple(cfg.conv_stride) == STRIDES


@pytest.fixture(scope="module")
def long_clip():
    return speechlike(45.0, seed=21)


def test_long_clip_frame_count_and_finite(tiny_model, long_clip):
    from wav2sem.inference import generate

    events = []
    result = generate(tiny_model, long_clip, progress=lambda *e: events.append(e))
    expected = int(conv_frames(len(long_clip)) / 50 * 30)
    assert expected == 1349
    assert result.offsets.shape == (expected, tiny_model.vertex_count, 3)
    assert np.isfinite(result.offsets).all()
    # the face moves throughout, also past the 600-frame reference limit and across window seams
    assert np.abs(result.offsets[900:]).mean() > 1e-3
    # several encoder windows were used
    assert any("window 3/3" in message for _, _, message in events)


def test_long_clip_pair_alignment_frame_count(tiny_model_pair):
    from wav2sem.inference import generate

    clip = speechlike(30.5, seed=22)
    result = generate(tiny_model_pair, clip)
    n = conv_frames(len(clip))
    assert result.fps == 25
    assert result.offsets.shape == ((n - n % 2) // 2, tiny_model_pair.vertex_count, 3)
    assert np.isfinite(result.offsets).all()


def normalized(wave: np.ndarray) -> torch.Tensor:
    x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(0)


@pytest.mark.parametrize("seconds", [3.3, 20.0])
@pytest.mark.parametrize("which", ["interpolate", "pair"])
def test_windowed_encoder_is_exactly_one_call_up_to_20s(tiny_model, tiny_model_pair, seconds, which):
    from wav2sem.inference import _encode_windows
    from wav2sem.models.encoders import encode_aligned, memory_frame_count

    model = tiny_model if which == "interpolate" else tiny_model_pair
    net, fps = model.net, model.fps
    wav = normalized(speechlike(seconds, seed=23))
    n_memory = memory_frame_count(net.audio_encoder, wav.shape[1], fps, which)
    with torch.inference_mode():
        windowed = _encode_windows(net, wav, fps, which, n_memory, lambda *a: None, lambda: False)
        direct = encode_aligned(net.audio_encoder, wav, fps, which)
    assert windowed.shape == direct.shape == (1, n_memory, net.audio_encoder.config.hidden_size)
    assert torch.equal(windowed, direct)


def test_windowed_encoder_seams_stay_close_to_neighbours(tiny_model, long_clip):
    """Across the cross-faded overlaps the features do not jump more than they do elsewhere."""
    from wav2sem.inference import _encode_windows
    from wav2sem.models.encoders import memory_frame_count

    net = tiny_model.net
    wav = normalized(long_clip)
    n_memory = memory_frame_count(net.audio_encoder, wav.shape[1], 30.0, "interpolate")
    with torch.inference_mode():
        feats = _encode_windows(net, wav, 30.0, "interpolate", n_memory, lambda *a: None, lambda: False)[0]
    steps = (feats[1:] - feats[:-1]).norm(dim=1)
    assert torch.isfinite(feats).all()
    assert float(steps.max()) < 5 * float(steps.median()) + 1e-6


# ----- subjects ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_clip():
    return speechlike(1.5, seed=24)


def test_subject_by_index_name_and_blend(tiny_model, short_clip):
    from wav2sem.inference import generate, subject_weights

    assert tiny_model.subjects == ("subject_0", "subject_1", "subject_2")
    by_index = generate(tiny_model, short_clip, subject=1).offsets
    by_name = generate(tiny_model, short_clip, subject="subject_1").offsets
    np.testing.assert_array_equal(by_index, by_name)
    default = generate(tiny_model, short_clip).offsets
    np.testing.assert_array_equal(default, generate(tiny_model, short_clip, subject=0).offsets)
    a = generate(tiny_model, short_clip, subject="subject_0").offsets
    b = by_name
    blend = generate(tiny_model, short_clip, subject={"subject_0": 0.5, "subject_1": 0.5}).offsets
    assert np.isfinite(blend).all()
    assert np.abs(a - b).max() > 1e-4
    assert np.abs(blend - a).max() > 1e-5 and np.abs(blend - b).max() > 1e-5
    # the style embedding of the blend is the mean of the two one-hot embeddings
    torch.testing.assert_close(subject_weights(tiny_model, {"subject_0": 1, "subject_1": 1}),
                               torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(subject_weights(tiny_model, {"0": 3, "subject_2": 1}), torch.tensor([0.75, 0.0, 0.25]))


@pytest.mark.parametrize("subject", ["nobody", 3, -1, "7", {"subject_0": 0.5, "ghost": 0.5}, {"subject_0": 0.0},
                                     {"0": "x"}, {"0": float("nan")}, {"0": float("inf")}, {"0": 1, "1": -0.5},
                                     {"0": None}, {"0": True}])
def test_bad_subjects_are_bad_requests(tiny_model, short_clip, subject):
    from wav2sem.inference import generate

    with pytest.raises(Wav2SemError) as info:
        generate(tiny_model, short_clip, subject=subject)
    assert info.value.code == BAD_REQUEST
    if subject == "nobody":
        assert "nobody" in info.value.message and "subject_0" in info.value.message


# ----- progress, cancellation, devices ----------------------------------------------------
def test_progress_fractions_are_in_range_and_non_decreasing_per_stage(tiny_model):
    """Progress events of one generate: stages in order encode -> decode, fractions in 0..1,
    never going backwards within a stage (the add-on draws one bar per stage)."""
    from wav2sem.inference import generate

    events = []
    generate(tiny_model, speechlike(25.0, seed=25), progress=lambda s, f, m: events.append((s, f, m)))
    stages = [s for s, _, _ in events]
    assert set(stages) <= {"load", "encode", "decode"}
    assert stages.index("decode") > max(i for i, s in enumerate(stages) if s == "encode")
    assert events[-1][0] == "decode" and events[-1][1] == pytest.approx(1.0)
    for stage in ("encode", "decode"):
        fractions = [f for s, f, _ in events if s == stage]
        assert all(0.0 <= f <= 1.0 for f in fractions)
        assert fractions == sorted(fractions), f"{stage} fractions go backwards: {[(s, f, m) for s, f, m in events if s == stage]}"


def test_should_cancel_stops_with_cancelled(tiny_model):
    from wav2sem.inference import generate

    calls = {"n": 0}

    def cancel_after_some_frames():
        calls["n"] += 1
        return calls["n"] > 10

    with pytest.raises(Cancelled) as info:
        generate(tiny_model, speechlike(3.0, seed=26), should_cancel=cancel_after_some_frames)
    assert info.value.code == CANCELLED


def test_too_short_for_one_frame(tiny_model):
    from wav2sem.errors import AUDIO_TOO_SHORT
    from wav2sem.inference import generate

    with pytest.raises(Wav2SemError) as info:
        generate(tiny_model, speechlike(0.02, seed=1))
    assert info.value.code == AUDIO_TOO_SHORT


def test_devices():
    from wav2sem.loaded_model import available_devices, resolve_device

    assert available_devices()[0] == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(Wav2SemError) as info:
        resolve_device("tpu")
    assert info.value.code == BAD_REQUEST
    if not torch.cuda.is_available():
        with pytest.raises(Wav2SemError) as info:
            resolve_device("cuda")
        assert info.value.code == DEVICE_UNAVAILABLE


@pytest.mark.parametrize("stage", ["encode", "semantic", "decode"])
def test_cancel_between_stages_is_honoured(tiny_model, stage):
    """A cancel that arrives with a stage's last progress event (after which that stage polls
    no more) still stops generate."""
    from wav2sem.inference import generate

    state = {"cancel": False}

    def progress(stage_name, fraction, message):
        if stage == "encode" and message == "speech features done" or \
                stage == "semantic" and message == "semantic vectors done" or \
                stage == "decode" == stage_name and fraction >= 1.0:
            state["cancel"] = True

    with pytest.raises(Cancelled):
        generate(tiny_model, speechlike(2.5, seed=27), progress=progress, should_cancel=lambda: state["cancel"])
    assert state["cancel"]


def test_non_finite_offsets_are_refused_with_model_invalid(tiny_bundle):
    from wav2sem.errors import MODEL_INVALID
    from wav2sem.inference import generate
    from wav2sem.loaded_model import load_model

    model = load_model(tiny_bundle, "cpu")
    with torch.no_grad():
        model.net.vertice_map_r.bias[5] = float("nan")
    with pytest.raises(Wav2SemError) as info:
        generate(model, speechlike(1.0, seed=28))
    assert info.value.code == MODEL_INVALID and "invalid values" in info.value.message
