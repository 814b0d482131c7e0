"""Starting a blendshape model from an earlier vertex bundle (how default model 0.3 starts
from 0.2): the semantic encoder is extracted as it was, the rest loads as init_weights into
a network with another output size, whose output map starts at zero."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from wav2sem.bundle import load_weights, read_bundle
from wav2sem.testing import write_tiny_bundle
from wav2sem.train.animation import load_init_weights
from wav2sem.train.init_from_bundle import init_from_bundle, main


def test_a_vertex_bundle_starts_a_blendshape_network(tmp_path):
    old = write_tiny_bundle(tmp_path / "old", vertex_count=120)
    new = write_tiny_bundle(tmp_path / "new", vertex_count=120, blendshapes=5, seed=1)
    semantic_path, init_path = init_from_bundle(old, 5, tmp_path / "init")

    old_net = load_weights(read_bundle(old))
    semantic = load_file(str(semantic_path))
    assert semantic.keys() == old_net.semantic_encoder.state_dict().keys()
    assert all(torch.equal(v, old_net.semantic_encoder.state_dict()[k]) for k, v in semantic.items())

    net = load_weights(read_bundle(new))
    load_init_weights(net, init_path)                     # refuses missing or misshapen weights
    assert torch.equal(net.audio_feature_map.weight, old_net.audio_feature_map.weight)
    assert net.vertice_map_r.weight.shape == (5, old_net.vertice_map_r.weight.shape[1])
    assert not net.vertice_map_r.weight.any() and not net.vertice_map_r.bias.any()


def test_command_line(tmp_path, capsys):
    old = write_tiny_bundle(tmp_path / "old", vertex_count=60)
    assert main([str(old), "--outputs", "3", "--out", str(tmp_path / "init")]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in printed] == ["semantic_encoder.safetensors", "animation_init.pt"]
