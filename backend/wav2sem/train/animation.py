"""Stage 2: speech encoder + Wav2Sem fusion + SpeechToFace decoder, trained with teacher forcing
while the semantic encoder stays frozen (as in the paper). Writes a model bundle.

Exposure bias: teacher-forced inputs get Gaussian noise (`input_noise` x the offsets' std),
and the epoch kept is the one with the lowest *autoregressive* validation error, i.e. what
inference really does.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..bundle import BundleConfig, build_model, save_bundle
from ..models.encoders import encode_aligned
from ..models.talker import ALIGN_INTERPOLATE, DecoderConfig, SpeechToFace
from . import checkpointing, distributed
from .batching import batches, cropped_batch, masked_time_mean, normalized_batch
from .data import load_examples, load_template

log = logging.getLogger(__name__)


class AnimationObjective(torch.nn.Module):
    """Teacher-forced reconstruction loss; the module DDP wraps."""

    def __init__(self, net: SpeechToFace, fps: float, offset_std: float, input_noise: float,
                 vertex_weights: torch.Tensor):
        super().__init__()
        self.net = net
        self.fps = fps
        self.offset_std = offset_std
        self.input_noise = input_noise
        # (V*3,) loss weight per coordinate, mean 1: lips count more than the rest of the head
        self.register_buffer("coordinate_weights", vertex_weights.repeat_interleave(3) / vertex_weights.mean())

    def forward(self, wav, offsets, frames, subjects, semantic_vectors):
        net = self.net
        hidden = encode_aligned(net.audio_encoder, wav, self.fps, net.config.alignment, n_frames=frames)   # (B, T, H)
        if semantic_vectors is not None:
            hidden = hidden + net.semantic_fusion(semantic_vectors).unsqueeze(1)
        memory = net.audio_feature_map(hidden)
        style = net.obj_vector(subjects).unsqueeze(1)                                             # (B, 1, d)
        noisy = offsets + torch.randn_like(offsets) * self.offset_std * self.input_noise
        predicted = net.decode_teacher_forced(memory, style, noisy)
        return torch.mean((predicted - offsets) ** 2 * self.coordinate_weights)


def build_network(config: dict, template, subjects: list[str], use_semantic: bool) -> tuple[BundleConfig, SpeechToFace]:
    """The network of a recipe. `"encoder": {"pretrained": DIR}` starts the speech encoder from
    a local Hugging Face folder (wav2vec 2.0 / HuBERT / WavLM; offline) with its conv
    feature extractor frozen, as FaceFormer trains."""
    dec = config["decoder"]
    pretrained = None
    if "pretrained" in config["encoder"]:
        from ..models.encoders import load_pretrained_encoder

        pretrained, spec = load_pretrained_encoder(config["encoder"]["pretrained"])
        config = {**config, "encoder": spec}
    bundle_config = BundleConfig(
        name=config.get("name", "wav2sem-default"),
        decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=len(subjects), feature_dim=dec["feature_dim"],
                              period=dec["period"], n_heads=dec["n_heads"], n_layers=dec["n_layers"],
                              alignment=ALIGN_INTERPOLATE),
        fps=float(config["fps"]), subjects=tuple(subjects), encoder=config["encoder"],
        semantic=config["semantic_encoder"] if use_semantic else None,
        arch=dec.get("arch", "faceformer"),
        description=config.get("description", ""),
    )
    net = build_model(bundle_config)
    if pretrained is not None:
        net.audio_encoder.load_state_dict(pretrained.state_dict())
        net.audio_encoder.feature_extractor.requires_grad_(False)
    return bundle_config, net


def semantic_vectors_of(net: SpeechToFace, examples, device) -> dict[str, np.ndarray]:
    """The frozen encoder's mean-pooled vector per clip (before the trainable fusion layer)."""
    out = {}
    net.semantic_encoder.eval()
    with torch.inference_mode():
        for batch in batches(examples, 120.0):
            wav, lengths = normalized_batch(batch, device)
            pooled = masked_time_mean(net.semantic_encoder(wav).last_hidden_state, lengths, wav.shape[1])
            for e, v in zip(batch, pooled.cpu().numpy()):
                out[e.name] = v
    return out


def train_animation(config: dict, corpus: str | Path, out: str | Path, semantic_weights: str | Path | None,
                    device: str = "auto", resume: bool = True, bundle_dir: str | Path | None = None) -> dict:
    """Train the animation model; write out/animation_metrics.json and a bundle (default out/bundle)."""
    from safetensors.torch import load_file

    ctx = distributed.setup(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = config["animation_training"]
    use_semantic = bool(recipe.get("use_semantic", True)) and semantic_weights is not None
    torch.manual_seed(config["seed"])
    template = load_template(corpus)
    train = load_examples(corpus, "train", with_motion=True, max_seconds=recipe["max_seconds"], template=template)
    val = load_examples(corpus, "val", with_motion=True, max_seconds=recipe["max_seconds"], template=template)
    subjects = sorted({e.subject for e in train})
    subject_index = {s: i for i, s in enumerate(subjects)}
    bundle_config, net = build_network(config, template, subjects, use_semantic)
    net = net.to(ctx.device)
    vectors: dict[str, np.ndarray] = {}
    if use_semantic:
        net.semantic_encoder.load_state_dict(load_file(str(semantic_weights)))
        net.semantic_encoder.requires_grad_(False)
        vectors = semantic_vectors_of(net, train + val, ctx.device)
    offset_std = float(np.std(np.concatenate([e.offsets.reshape(-1).astype(np.float32) for e in train[:200]])))
    weights = torch.ones(template.vertex_count)
    if "lips" in template.regions:
        weights[torch.from_numpy(template.regions["lips"]).long()] = float(recipe.get("lip_weight", 1.0))
    objective = AnimationObjective(net, float(config["fps"]), offset_std, recipe["input_noise"], weights)
    model = distributed.wrap(objective, ctx)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    state_path = out / "animation_checkpoint.pt"
    start, history, best = 0, [], {"val_lve": float("inf")}
    if resume and state_path.is_file():
        start, extra = checkpointing.load(state_path, objective, optimizer)
        history, best = extra.get("history", []), extra.get("best", best)
        log.info("resumed animation training at epoch %d", start)
    rng = np.random.default_rng(config["seed"])
    for _ in range(start):
        rng.permutation(len(train))
    eye = torch.eye(len(subjects), device=ctx.device)
    best_path = out / "animation_best.pt"
    for epoch in range(start, recipe["epochs"]):
        t0 = time.perf_counter()
        objective.train()
        if use_semantic:
            net.semantic_encoder.eval()
        order = rng.permutation(len(train))
        losses = []
        for batch in batches(ctx.shard([train[i] for i in order]), recipe.get("batch_seconds", 40.0)):
            wav, offsets, frames = cropped_batch(batch, objective.fps, ctx.device)
            subj = eye[[subject_index[e.subject] for e in batch]]
            sem = (torch.from_numpy(np.stack([vectors[e.name] for e in batch])).to(ctx.device) if use_semantic else None)
            loss = model(wav, offsets, frames, subj, sem)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "train_mse": ctx.mean(float(np.mean(losses))), "seconds": time.perf_counter() - t0}
        if ctx.is_main:
            row.update(validate(net, val, template, bundle_config, vectors if use_semantic else None, ctx.device,
                                recipe.get("val_items", 40)))
            history.append(row)
            log.info("animation epoch %d: train MSE %.3g, val LVE %.3g, val MVE %.3g (autoregressive), %.0f s",
                     epoch, row["train_mse"], row["val_lve"], row["val_mve"], row["seconds"])
            if row["val_lve"] < best["val_lve"]:
                best = dict(row)
                torch.save(net.state_dict(), best_path)
            checkpointing.save(state_path, objective, optimizer, epoch, {"history": history, "best": best})
        ctx.barrier()
    if ctx.is_main:
        if best_path.is_file():
            net.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
        save_bundle(bundle_dir or out / "bundle", bundle_config, net.cpu().eval(), template)
        (out / "animation_metrics.json").write_text(json.dumps({"best": best, "history": history}, indent=2))
    distributed.teardown()
    return best


def validate(net: SpeechToFace, examples, template, bundle_config, vectors, device, limit: int) -> dict:
    """Autoregressive decoding on held-out clips (as inference does): LVE and MVE."""
    net.eval()
    lips = template.regions.get("lips", np.arange(template.vertex_count))
    lve, mve = [], []
    with torch.inference_mode():
        for e in examples[:limit]:
            wav, offsets, frames = cropped_batch([e], bundle_config.fps, device)
            hidden = encode_aligned(net.audio_encoder, wav, bundle_config.fps, net.config.alignment, n_frames=frames)
            if vectors is not None:
                hidden = hidden + net.semantic_fusion(torch.from_numpy(vectors[e.name]).to(device))[None, None]
            style = net.style_embedding(torch.full((net.config.n_subjects,), 1.0 / net.config.n_subjects, device=device))
            pred = net.decode(net.audio_feature_map(hidden), style, frames)[0].cpu().numpy().reshape(frames, -1, 3)
            gt = offsets[0].cpu().numpy().reshape(frames, -1, 3)
            lve.append(metrics.lip_vertex_error(pred, gt, lips))
            mve.append(metrics.mean_vertex_error(pred, gt))
    return {"val_lve": float(np.mean(lve)) if lve else float("nan"), "val_mve": float(np.mean(mve)) if mve else float("nan")}
