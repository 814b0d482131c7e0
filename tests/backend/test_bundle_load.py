"""Bundle loading without random initialisation (`load_weights`: parameters left uninitialised
at build time, then the file's tensors assigned) gives exactly what the previous path gave
(build_model with random weights + load_state_dict copying): same tensors, same buffers, and
bit-identical generate outputs, for the shipped default (whisper encoder stored in float16),
model 0.3 (log-mel encoder, GRU) and a base-size FaceFormer (wav2vec 2.0 with weight norm).
The file is read by `read_safetensors` (straight into aligned tensors), checked here against
the safetensors library."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from w2s_helpers import speechlike

ORIGINAL_REGISTER_PARAMETER = nn.Module.register_parameter
LOGMEL_BUNDLE = Path(__file__).resolve().parents[2] / "results" / "default_model" / "model_0.3"


def old_load_weights(bundle):
    """The loading path before: a randomly initialised network, the file copied into it."""
    from safetensors.torch import load_file

    from wav2sem.bundle import WEIGHTS_FILE, build_model

    model = build_model(bundle.config)
    model.load_state_dict(load_file(str(bundle.directory / WEIGHTS_FILE)), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def base_faceformer_bundle(tmp_path_factory) -> Path:
    """Base-size FaceFormer decoder (VOCASET: d 64, 4 heads, 1 layer, 5023 vertices) on the tiny
    wav2vec 2.0 encoders (their positional conv carries a weight-norm parametrization), with the
    speech encoder stored in float16 as save_bundle(half_prefixes) writes it."""
    from wav2sem.testing import grid_template, write_tiny_bundle

    path = write_tiny_bundle(tmp_path_factory.mktemp("base") / "plain", grid_template(5023), feature_dim=64, seed=4)
    from wav2sem.bundle import read_bundle, save_bundle

    bundle = read_bundle(path)
    return save_bundle(path.parent / "half", bundle.config, old_load_weights(bundle), bundle.template,
                       half_prefixes=("audio_encoder.",))


BUNDLES = ["default", "0.3 (log-mel)", "base FaceFormer"]


def _bundle_dir(request, which: str) -> Path:
    from wav2sem.bundle import DEFAULT_BUNDLE_DIR

    return {"default": DEFAULT_BUNDLE_DIR, "0.3 (log-mel)": LOGMEL_BUNDLE}.get(which) or \
        request.getfixturevalue("base_faceformer_bundle")


@pytest.mark.parametrize("which", BUNDLES)
def test_loaded_network_equals_the_previous_loading_path(request, which):
    from wav2sem.bundle import load_weights, read_bundle

    bundle = read_bundle(_bundle_dir(request, which))
    new, old = load_weights(bundle), old_load_weights(bundle)
    assert not new.training
    new_state, old_state = new.state_dict(), old.state_dict()
    assert list(new_state) == list(old_state)
    for key, value in old_state.items():
        assert new_state[key].dtype == value.dtype and new_state[key].device == value.device, key
        assert torch.equal(new_state[key], value), key
    new_buffers, old_buffers = dict(new.named_buffers()), dict(old.named_buffers())   # persistent or not
    assert list(new_buffers) == list(old_buffers)
    for key, value in old_buffers.items():
        assert new_buffers[key].dtype == value.dtype and torch.equal(new_buffers[key], value), key
    tensors = [*new.named_parameters(), *new.named_buffers()]
    assert not [name for name, t in tensors if t.is_meta]
    old_params = dict(old.named_parameters())
    for name, p in new.named_parameters():
        assert type(p) is nn.Parameter and p.requires_grad == old_params[name].requires_grad, name
        assert p.is_contiguous(), name
    if which == "default":     # the frozen whisper encoder is stored in float16 and loads as float32
        from safetensors import safe_open

        with safe_open(str(bundle.directory / "model.safetensors"), "pt") as f:
            assert f.get_slice("audio_encoder.conv1.weight").get_dtype() == "F16"
        assert new.audio_encoder.conv1.weight.dtype == torch.float32


@pytest.mark.parametrize("which", BUNDLES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_generate_output_is_bit_identical_to_the_previous_loading_path(request, monkeypatch, which, dtype):
    import wav2sem.loaded_model as loaded_model
    from wav2sem.inference import generate

    directory = _bundle_dir(request, which)
    wave = speechlike(1.5, seed=61)
    new = generate(loaded_model.load_model(directory, "cpu", dtype=dtype), wave, subject=1)
    monkeypatch.setattr(loaded_model, "load_weights", old_load_weights)
    old = generate(loaded_model.load_model(directory, "cpu", dtype=dtype), wave, subject=1)
    assert new.frames == old.frames > 0
    assert np.array_equal(new.offsets, old.offsets)
    if old.weights is not None:
        assert np.array_equal(new.weights, old.weights)
    assert np.abs(old.offsets).max() > 0                 # the comparison means something


@pytest.mark.parametrize("which", BUNDLES)
def test_loaded_tensors_are_aligned_and_own_their_memory(request, which):
    """Each parameter is one tensor in torch's 64-byte aligned memory, of its own size (not a
    view into a buffer that holds the file): what a normal build gave, so kernels take the same
    vectorised paths."""
    from wav2sem.bundle import load_weights, read_bundle

    net = load_weights(read_bundle(_bundle_dir(request, which)))
    for name, p in net.named_parameters():
        assert p.data_ptr() % 64 == 0, name
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size(), name


def test_uninitialised_build_computes_buffers_and_leaves_parameters_alone():
    from wav2sem.bundle import read_bundle
    from wav2sem.skip_init import skipped_initialisation

    bundle = read_bundle(LOGMEL_BUNDLE)
    from wav2sem.bundle import build_model

    normal = build_model(bundle.config)
    with skipped_initialisation() as mode:
        empty = build_model(bundle.config)
        assert all(mode.holds(p) for p in empty.parameters())
        assert not any(mode.holds(b) for b in empty.buffers())
    for (name, b), (_, ref) in zip(empty.named_buffers(), normal.named_buffers()):
        assert torch.equal(b, ref), name
    assert nn.Module.register_parameter is ORIGINAL_REGISTER_PARAMETER


def test_other_threads_build_normally_meanwhile():
    """The wrapper is per thread: a module built in another thread during an uninitialised build
    is initialised as usual (nn.Linear's weights are random, not left as they were allocated)."""
    from wav2sem.skip_init import skipped_initialisation

    original = ORIGINAL_REGISTER_PARAMETER
    built = {}

    def other():
        torch.manual_seed(0)
        built["linear"] = nn.Linear(64, 64)

    with skipped_initialisation() as mode:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        inside = nn.Linear(64, 64)
    assert nn.Module.register_parameter is original
    assert not mode.holds(built["linear"].weight)
    torch.manual_seed(0)
    assert torch.equal(built["linear"].weight, nn.Linear(64, 64).weight)
    assert mode.holds(inside.weight)


def _edited_bundle(tmp_path, source: Path, edit) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    target = tmp_path / "edited"
    shutil.copytree(source, target)
    state = load_file(str(target / "model.safetensors"))
    edit(state)
    save_file(state, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape"])
def test_bad_weights_are_refused_naming_the_key(tmp_path, tiny_bundle, case):
    from wav2sem.bundle import load_weights, read_bundle
    from wav2sem.errors import MODEL_INVALID, Wav2SemError

    key = "transformer_decoder.layers.0.linear1.weight"

    def edit(state):
        if case == "missing":
            del state[key]
        elif case == "unexpected":
            state["transformer_decoder.layers.7.linear1.weight"] = state[key].clone()
        else:
            state[key] = torch.zeros(3, 5)

    with pytest.raises(Wav2SemError) as info:
        load_weights(read_bundle(_edited_bundle(tmp_path, tiny_bundle, edit)))
    assert info.value.code == MODEL_INVALID
    message = str(info.value)
    expected = {"missing": ("missing 1 keys", key), "unexpected": ("unexpected 1 keys", "layers.7.linear1.weight"),
                "shape": ("wrong shape", key, "(3, 5)")}[case]
    for text in expected:
        assert text in message, message
    assert nn.Module.register_parameter is ORIGINAL_REGISTER_PARAMETER


def test_a_damaged_weights_file_is_refused(tmp_path, tiny_bundle):
    import shutil

    from wav2sem.bundle import load_weights, read_bundle
    from wav2sem.errors import MODEL_INVALID, Wav2SemError

    target = tmp_path / "damaged"
    shutil.copytree(tiny_bundle, target)
    (target / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(Wav2SemError) as info:
        load_weights(read_bundle(target))
    assert info.value.code == MODEL_INVALID and "damaged" in str(info.value)


def test_read_safetensors_equals_the_library_reader(tmp_path):
    from safetensors.torch import load_file, save_file

    from wav2sem.safetensors_io import read_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=g), "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(), "i64": torch.arange(6).view(2, 3),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
        "u8": torch.arange(5, dtype=torch.uint8),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "test"})
    ours, theirs = read_safetensors(path), load_file(str(path))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key
        if ours[key].numel():
            assert ours[key].data_ptr() % 64 == 0, key
    cast = read_safetensors(path, dtypes={"f16": torch.float32})
    assert list(cast) == ["f16"] and cast["f16"].dtype == torch.float32
    assert torch.equal(cast["f16"], tensors["f16"].float())
    seen = {}
    read_safetensors(path, check=lambda shapes: seen.update({k: v.shape for k, v in shapes.items()}))
    assert seen["f32"] == (3, 5) and seen["scalar"] == ()


@pytest.mark.parametrize("damage", ["truncated", "header length", "not json", "bad entry", "huge shape"])
def test_read_safetensors_refuses_a_damaged_file(tmp_path, damage):
    import json
    import struct

    from safetensors.torch import save_file

    from wav2sem.safetensors_io import read_safetensors
    from wav2sem.errors import MODEL_INVALID, Wav2SemError

    path = tmp_path / "t.safetensors"
    save_file({"a": torch.randn(100), "b": torch.randn(4)}, str(path))
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    if damage == "truncated":
        data = data[:-50]
    elif damage == "header length":
        data = struct.pack("<Q", len(data)) + data[8:]
    elif damage == "not json":
        data = data[:8] + b"{" * n + data[8 + n:]
    else:
        header = json.loads(data[8:8 + n])
        header["a"]["shape"] = [101] if damage == "bad entry" else [10**6, 10**6, 10**3]   # nothing allocated
        raw = json.dumps(header).encode().ljust(n)
        data = data[:8] + raw[:n] + data[8 + n:] if len(raw) == n else struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    path.write_bytes(data)
    with pytest.raises(Wav2SemError) as info:
        read_safetensors(path)
    assert info.value.code == MODEL_INVALID and str(path) in str(info.value) and "damaged" in str(info.value)
