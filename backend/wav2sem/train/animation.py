"""Stage 2: speech encoder + Wav2Sem fusion + SpeechToFace decoder, trained with teacher forcing
while the semantic encoder stays frozen (as in the paper). Writes a model bundle.

Exposure bias: teacher-forced inputs get Gaussian noise (`input_noise` x the offsets' std),
and the epoch kept is the one with the lowest *autoregressive* validation error, i.e. what
inference really does.

Closure: a vertex MSE alone regresses to the mean where timing is uncertain, so m/b/p closures
come out shallow and open vowels narrow. `closure_weight` counts the frames whose target lips
are closed more (the default recipe's choice); `gap_weight` adds an L1 term on the distance
between the lip-centre landmarks (deeper closures, but it pinches those two vertices; off by
default); `lr_schedule: "cosine"` anneals the learning rate over the run.

Blendshape corpora (weights_npy, a template with blendshapes) train a model that outputs the
channel weights, with the same vertex-space loss computed through the blendshapes' Gram
matrix (AnimationObjective); its bundle carries the template with the blendshapes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..bundle import BundleConfig, build_model, check_bundle_target, save_bundle
from ..bundle_config import OUTPUT_BLENDSHAPES, OUTPUT_VERTICES
from ..errors import BAD_REQUEST, MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError
from ..models.encoders import encode_aligned
from ..models.talker import ALIGN_INTERPOLATE, DecoderConfig, SpeechToFace
from . import checkpointing, distributed
from .augmentation import perturber
from .batching import batches, cropped_batch, masked_time_mean, normalized_batch
from .data import load_examples, load_template
from .evaluate import ClosureStats

log = logging.getLogger(__name__)


class AnimationObjective(torch.nn.Module):
    """Teacher-forced reconstruction loss; the module DDP wraps.

    Vertex models: MSE of the offsets (B, T, V*3), coordinates weighted by `vertex_weights`
    (mean 1) and frames with closed target lips by `closure_weight`.
    Blendshape models (`blendshapes` (K, V, 3) given): the network outputs weights (B, T, K)
    and the loss is the same vertex-space loss of the offsets `weights @ deltas`, computed
    exactly through the K x K Gram matrix G = D diag(w) D^T / (3V) (D: deltas as (K, V*3),
    w: the coordinate weights): for a weight error e, mean_c w_c (e D)_c^2 = e G e^T. The lip
    landmarks (closure, gap) come from the weights through their two vertices' deltas.
    `weight_loss` adds an MSE on the weights themselves, scaled by G's mean eigenvalue (1 =
    as strong as an average channel's vertex loss), to pin down channel mixes the vertices
    barely tell apart.
    """

    def __init__(self, net: SpeechToFace, fps: float, offset_std: float, input_noise: float,
                 vertex_weights: torch.Tensor, lip_pair: tuple[int, int] | None = None,
                 lip_pair_rest: torch.Tensor | None = None, gap_weight: float = 0.0, closure_weight: float = 1.0,
                 blendshapes: torch.Tensor | None = None, target_std: float | None = None, weight_loss: float = 0.0,
                 closure_mm: float = metrics.CLOSED_MM):
        super().__init__()
        self.closure_m = closure_mm / 1000.0           # target lip gap (template in metres) below which a frame is closed
        self.net = net
        self.fps = fps
        self.offset_std = offset_std                 # metres: scales the gap term into the MSE's units
        self.target_std = offset_std if target_std is None else target_std   # scales the input noise
        self.input_noise = input_noise
        self.predicts_weights = blendshapes is not None
        coordinate_weights = vertex_weights.repeat_interleave(3) / vertex_weights.mean()
        if blendshapes is None:
            # (V*3,) loss weight per coordinate, mean 1: lips count more than the rest of the head
            self.register_buffer("coordinate_weights", coordinate_weights)
            self.weight_loss = 0.0
        else:
            self.register_buffer("gram", blendshape_gram(blendshapes, coordinate_weights))    # (K, K)
            self.weight_loss = float(weight_loss)
            self.weight_loss_scale = float(torch.diagonal(self.gram).mean())
        self.gap_weight = gap_weight if lip_pair is not None else 0.0
        self.closure_weight = closure_weight if lip_pair is not None else 1.0
        self.lip_pair = lip_pair
        if lip_pair_rest is not None:
            self.register_buffer("lip_pair_rest", lip_pair_rest)          # (2, 3) upper, lower lip centre
        if blendshapes is not None and lip_pair is not None:
            self.register_buffer("lip_pair_deltas", blendshapes[:, list(lip_pair)].float().contiguous())  # (K, 2, 3)

    def lip_gap(self, output: torch.Tensor) -> torch.Tensor:
        """(B, T, V*3) offsets (or (B, T, K) weights) -> (B, T) lip gap (metrics.lip_gap: the upper
        lip-centre landmark's height above the lower one)."""
        assert self.lip_pair is not None
        if self.predicts_weights:
            v = torch.einsum("btk,kpc->btpc", output, self.lip_pair_deltas) + self.lip_pair_rest
        else:
            v = output.view(output.shape[0], output.shape[1], -1, 3)[:, :, list(self.lip_pair)] + self.lip_pair_rest
        return v[:, :, 0, metrics.UP_AXIS] - v[:, :, 1, metrics.UP_AXIS]

    def reconstruction_loss(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of a prediction against the target, both (B, T, V*3) offsets or (B, T, K) weights."""
        if self.predicts_weights:
            error = predicted - target
            squared = torch.einsum("btk,kl,btl->bt", error, self.gram, error).unsqueeze(-1)   # (B, T, 1)
        else:
            squared = (predicted - target) ** 2 * self.coordinate_weights                 # (B, T, V*3)
        if self.closure_weight != 1.0:
            # frames where the target lips are closed count closure_weight times (whole face)
            closed = self.lip_gap(target) < self.closure_m
            squared = squared * (1.0 + (self.closure_weight - 1.0) * closed.unsqueeze(-1))
        loss = torch.mean(squared)
        if self.gap_weight > 0:
            # offset_std turns the gap's L1 (metres) into the MSE's units (metres^2)
            gap_error = torch.mean(torch.abs(self.lip_gap(predicted) - self.lip_gap(target)))
            loss = loss + self.gap_weight * self.offset_std * gap_error
        if self.weight_loss > 0:
            loss = loss + self.weight_loss * self.weight_loss_scale * torch.mean((predicted - target) ** 2)
        return loss

    def forward(self, wav, target, frames, subjects, semantic_vectors):
        net = self.net
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains(net)):
            hidden = encode_aligned(net.audio_encoder, wav, self.fps, net.config.alignment, n_frames=frames)  # (B, T, H)
        memory = net.memory(hidden, semantic_vectors)
        style = net.obj_vector(subjects).unsqueeze(1)                                             # (B, 1, d)
        noisy = target + torch.randn_like(target) * self.target_std * self.input_noise
        predicted = net.decode_teacher_forced(memory, style, noisy)
        return self.reconstruction_loss(predicted, target)


def encoder_trains(net: SpeechToFace) -> bool:
    return any(p.requires_grad for p in net.audio_encoder.parameters())


def blendshape_gram(blendshapes: torch.Tensor, coordinate_weights: torch.Tensor) -> torch.Tensor:
    """G = D diag(w) D^T / (3V), (K, K) float32, from deltas (K, V, 3) and per-coordinate
    weights w (V*3,): e G e^T is the weighted mean squared offset error of a weight error e.
    Summed in float64, a few thousand vertices at a time."""
    k = blendshapes.shape[0]
    flat = blendshapes.reshape(k, -1)
    gram = torch.zeros(k, k, dtype=torch.float64)
    step = 3 * 4096
    for start in range(0, flat.shape[1], step):
        d = flat[:, start:start + step].double()
        gram += (d * coordinate_weights[start:start + step].double()) @ d.T
    return (gram / flat.shape[1]).float()


def build_network(config: dict, template, subjects: list[str], use_semantic: bool) -> tuple[BundleConfig, SpeechToFace]:
    """The network of a recipe. `"encoder": {"pretrained": DIR}` starts the speech encoder from
    a local Hugging Face folder (wav2vec 2.0 / HuBERT / WavLM / Whisper; offline) with its conv
    feature extractor frozen, as FaceFormer trains; `"freeze": true` freezes all of it. A template with blendshapes (a blendshape
    corpus) makes a blendshape model: one output per channel, in the template's order."""
    dec = config["decoder"]
    pretrained = None
    freeze = bool(config["encoder"].get("freeze", False))
    if "pretrained" in config["encoder"]:
        from ..models.encoders import load_pretrained_encoder

        pretrained, spec = load_pretrained_encoder(config["encoder"]["pretrained"])
        config = {**config, "encoder": spec}
    bundle_config = BundleConfig(
        name=config.get("name", "wav2sem-default"),
        decoder=DecoderConfig(vertex_count=template.vertex_count, n_subjects=len(subjects), feature_dim=dec["feature_dim"],
                              period=dec["period"], n_heads=dec["n_heads"], n_layers=dec["n_layers"],
                              alignment=ALIGN_INTERPOLATE, output_channels=len(template.blendshape_names)),
        fps=float(config["fps"]), subjects=tuple(subjects), encoder=config["encoder"],
        semantic=config["semantic_encoder"] if use_semantic else None,
        arch=dec.get("arch", "faceformer"),
        description=config.get("description", ""),
        channels=tuple(template.blendshape_names),
    )
    net = build_model(bundle_config)
    if pretrained is not None:
        net.audio_encoder.load_state_dict(pretrained.state_dict())
        net.audio_encoder.feature_extractor.requires_grad_(False)
    if freeze:                       # "freeze": true keeps the whole pretrained encoder as it is
        net.audio_encoder.requires_grad_(False)
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

    bundle_dir = check_bundle_target(bundle_dir or Path(out) / "bundle")   # before training, not after
    ctx = distributed.setup(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = config["animation_training"]
    learning_rate(recipe, 0)                                  # a bad lr_schedule fails before data loads
    if recipe.get("init_weights") and not Path(recipe["init_weights"]).is_file():
        raise Wav2SemError(MODEL_NOT_FOUND, f"init_weights: {recipe['init_weights']} not found; give an earlier "
                                            "run's animation_best.pt.")
    use_semantic = bool(recipe.get("use_semantic", True)) and semantic_weights is not None
    torch.manual_seed(config["seed"])
    template = load_template(corpus)
    check_output(config, template, corpus)
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
    blendshapes = torch.from_numpy(template.blendshape_deltas) if template.has_blendshapes else None
    offset_std, target_std = motion_scales(train[:200], template)
    weights = torch.ones(template.vertex_count)
    if "lips" in template.regions:
        weights[torch.from_numpy(template.regions["lips"]).long()] = float(recipe.get("lip_weight", 1.0))
    lip_pair = template.lip_centres
    if (recipe.get("gap_weight", 0.0) or recipe.get("closure_weight", 1.0) != 1.0) and lip_pair is None:
        log.warning("gap_weight / closure_weight need upper/lower_lip_center landmarks in the template; they are off")
    objective = AnimationObjective(
        net, float(config["fps"]), offset_std, recipe["input_noise"], weights, lip_pair,
        torch.from_numpy(template.vertices[list(lip_pair)]) if lip_pair else None, float(recipe.get("gap_weight", 0.0)),
        float(recipe.get("closure_weight", 1.0)), blendshapes, target_std, float(recipe.get("weight_loss", 0.0)),
        float(recipe.get("closure_mm", metrics.CLOSED_MM)))
    if recipe.get("init_weights"):
        load_init_weights(net, recipe["init_weights"], subjects)
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
    babble_pool = [train[int(i)].audio for i in np.random.default_rng([config["seed"], 0xBAB]).permutation(len(train))[:64]]
    best_path = out / "animation_best.pt"
    if ctx.is_main:
        subjects_file(best_path).write_text(json.dumps(subjects) + "\n", encoding="utf-8")
    for epoch in range(start, recipe["epochs"]):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, epoch)
        objective.train()
        if not encoder_trains(net):
            net.audio_encoder.eval()
        if use_semantic:
            net.semantic_encoder.eval()
        order = rng.permutation(len(train))
        # a stream per (seed, rank, epoch): resuming gives the same noise as an unbroken run, and
        # switching perturbation on or off leaves the batch order unchanged
        perturb = perturber(recipe.get("augment"), np.random.default_rng([config["seed"], ctx.rank, epoch]), babble_pool)
        losses = []
        for batch in batches(ctx.shard([train[i] for i in order]), recipe.get("batch_seconds", 40.0)):
            wav, offsets, frames = cropped_batch(batch, objective.fps, ctx.device, perturb)
            subj = eye[[subject_index[e.subject] for e in batch]]
            sem = (torch.from_numpy(np.stack([vectors[e.name] for e in batch])).to(ctx.device) if use_semantic else None)
            loss = model(wav, offsets, frames, subj, sem)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "train_loss": ctx.mean(float(np.mean(losses))), "seconds": time.perf_counter() - t0}
        if ctx.is_main:
            row.update(validate(net, val, template, bundle_config, vectors if use_semantic else None, ctx.device,
                                recipe.get("val_items", 40)))
            history.append(row)
            log.info("animation epoch %d: lr %.2g, train loss %.3g, val LVE %.3g, val MVE %.3g, "
                     "val m/b/p gap %.2f mm (decoded as at inference), %.0f s", epoch, learning_rate(recipe, epoch),
                     row["train_loss"], row["val_lve"], row["val_mve"], row.get("val_bilabial_gap_mm", float("nan")),
                     row["seconds"])
            if row["val_lve"] < best["val_lve"]:
                best = dict(row)
                torch.save(net.state_dict(), best_path)
            checkpointing.save(state_path, objective, optimizer, epoch, {"history": history, "best": best})
        ctx.barrier()
    if ctx.is_main:
        if best_path.is_file():
            net.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
        # a frozen whisper encoder is kept as its package stores it (float16): 41 MB, not 82
        half = ("audio_encoder.",) if bundle_config.encoder.get("type") == "whisper" and not encoder_trains(net) else ()
        save_bundle(bundle_dir, bundle_config, net.cpu().eval(), template, half_prefixes=half)
        (out / "animation_metrics.json").write_text(json.dumps({"best": best, "history": history}, indent=2))
    distributed.teardown()
    return best


def check_output(config: dict, template, corpus) -> None:
    """A recipe's optional "output" ("vertices" | "blendshapes") must be what the corpus holds:
    a blendshape corpus trains a model that outputs its channels' weights, a vertex corpus
    one that outputs offsets (absent: whatever the corpus holds)."""
    wanted = config.get("output")
    if wanted is None:
        return
    if wanted not in (OUTPUT_VERTICES, OUTPUT_BLENDSHAPES):
        raise Wav2SemError(BAD_REQUEST, f"The recipe's output must be {OUTPUT_VERTICES!r} or {OUTPUT_BLENDSHAPES!r}, "
                                        f"not {wanted!r}.")
    has = OUTPUT_BLENDSHAPES if template.has_blendshapes else OUTPUT_VERTICES
    if wanted != has:
        hint = ("make one with `wav2sem synth --out DIR --hours H` (ARKit weights on the ICT head)"
                if wanted == OUTPUT_BLENDSHAPES else "make one with `wav2sem synth --head synthetic`")
        raise Wav2SemError(BAD_REQUEST, f"This recipe trains a model with {wanted} output but the corpus {corpus} has "
                                        f"{has} targets; {hint}, or pass --set output={has}.")


def motion_scales(examples, template) -> tuple[float, float]:
    """(std of the offsets in template units, std of the training targets): the same number
    for a vertex corpus; for a blendshape corpus the targets are the weights and the offsets'
    scale is measured on up to 2,000 of their frames."""
    if not template.has_blendshapes:
        std = float(np.std(np.concatenate([e.offsets.reshape(-1).astype(np.float32) for e in examples])))
        return std, std
    weights = np.concatenate([e.weights for e in examples])                         # (N, K)
    frames = weights[np.linspace(0, len(weights) - 1, min(len(weights), 2000)).astype(int)]
    sum_sq = total = 0.0
    mean = np.zeros(3 * template.vertex_count, np.float64)
    for chunk in np.array_split(frames, max(1, len(frames) // 100)):
        offsets = template.offsets_from_weights(chunk).reshape(len(chunk), -1).astype(np.float64)
        sum_sq += float(np.sum(offsets ** 2))
        mean += offsets.sum(0)
        total += len(chunk)
    count = total * mean.size
    offset_std = float(np.sqrt(max(sum_sq / count - float(np.sum(mean ** 2)) / (total * count), 0.0)))
    return offset_std, float(np.std(weights))


def load_init_weights(net: SpeechToFace, path: str | Path, subjects: list[str] | None = None) -> None:
    """Start from an earlier run's weights (fine-tuning); the semantic encoder keeps the frozen
    weights already loaded. With more or other training subjects than the earlier run (a mix
    adds recorded speakers), the style embedding is re-indexed by subject name (from the
    `.subjects.json` beside the weights) and new subjects start at the earlier styles' mean."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("semantic_encoder.")}
    _map_styles(state, net, Path(path), subjects)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:                                   # same names, other shapes
        raise Wav2SemError(MODEL_INVALID, f"init_weights {path} does not fit this recipe's network: {exc}") from exc
    missing = [k for k in missing if not k.startswith("semantic_encoder.")]
    if unexpected or missing:
        raise Wav2SemError(MODEL_INVALID, f"init_weights {path} does not fit this recipe's network "
                                          f"(missing {missing[:3]}, unexpected {unexpected[:3]}); use the same "
                                          "encoder and decoder settings as the run it came from.")
    log.info("animation weights initialised from %s", path)


def subjects_file(weights: Path) -> Path:
    """The subject order of a style embedding, kept beside the weights (e.g. animation_best.pt)."""
    return weights.with_suffix(".subjects.json")


def _map_styles(state: dict, net: SpeechToFace, path: Path, subjects: list[str] | None) -> None:
    key = "obj_vector.weight"
    old, new = state.get(key), net.state_dict().get(key)
    if old is None or new is None or (old.shape == new.shape and subjects is None):
        return
    names_path = subjects_file(path)
    old_names = json.loads(names_path.read_text(encoding="utf-8")) if names_path.is_file() else None
    if old_names == subjects and old.shape == new.shape:
        return
    if old.shape[0] != new.shape[0] or subjects is None or len(subjects) != new.shape[1]:
        return                                      # load_state_dict reports the mismatch
    column = {n: i for i, n in enumerate(old_names or [])}
    mean = old.mean(dim=1)
    state[key] = torch.stack([old[:, column[n]] if n in column else mean for n in subjects], dim=1)
    log.info("style embedding: %d of %d subjects carried over from %s, the others start at the mean",
             sum(n in column for n in subjects), len(subjects), path.name)


def learning_rate(recipe: dict, epoch: int) -> float:
    """Constant `lr`, or with `lr_schedule: "cosine"` a half cosine from `lr` down to
    `lr * lr_min_ratio` over `epochs` (set per epoch, so a resumed run continues the curve)."""
    if recipe.get("lr_schedule", "constant") == "constant":
        return float(recipe["lr"])
    if recipe["lr_schedule"] != "cosine":
        raise ValueError(f"unknown lr_schedule {recipe['lr_schedule']!r}: use 'constant' or 'cosine'")
    low = float(recipe.get("lr_min_ratio", 0.05))
    progress = epoch / max(int(recipe["epochs"]) - 1, 1)
    # a Python float: a numpy one in the optimizer's state would not load with weights_only=True
    return float(float(recipe["lr"]) * (low + (1 - low) * 0.5 * (1 + np.cos(np.pi * progress))))


def spread(examples: list, limit: int) -> list:
    """At most `limit` examples evenly spaced over the list (every corpus of a mix and every
    speaker gets its share; the first `limit` would all be the first corpus's)."""
    if len(examples) <= limit:
        return list(examples)
    return [examples[int(i)] for i in np.linspace(0, len(examples) - 1, limit).round()]


def validate(net: SpeechToFace, examples, template, bundle_config, vectors, device, limit: int) -> dict:
    """Decoding on held-out clips as inference does (autoregressive for FaceFormer): LVE, MVE and
    the median smallest lip gap on m/b/p (where the corpus has phone timings). A blendshape
    model's offsets come from its weights, only for the vertices each measure needs."""
    net.eval()
    lips = template.regions.get("lips", np.arange(template.vertex_count))
    lve, mve = [], []
    closure = ClosureStats(template)
    deltas = template.blendshape_deltas if bundle_config.predicts_weights else None
    with torch.inference_mode():
        for e in spread(examples, limit):
            wav, target, frames = cropped_batch([e], bundle_config.fps, device)
            hidden = encode_aligned(net.audio_encoder, wav, bundle_config.fps, net.config.alignment, n_frames=frames)
            semantic = torch.from_numpy(vectors[e.name]).to(device)[None] if vectors is not None else None
            style = net.style_embedding(torch.full((net.config.n_subjects,), 1.0 / net.config.n_subjects, device=device))
            out = net.decode(net.memory(hidden, semantic), style, frames)[0].float().cpu().numpy()
            gt = target[0].cpu().numpy()
            if deltas is not None:
                pred_m, gt_m = metrics.Motion(weights=out, deltas=deltas), metrics.Motion(weights=gt, deltas=deltas)
            else:
                pred_m = metrics.Motion(offsets=out.reshape(frames, -1, 3))
                gt_m = metrics.Motion(offsets=gt.reshape(frames, -1, 3))
            lve.append(metrics.lip_vertex_error(pred_m.at(lips), gt_m.at(lips), slice(None)))
            mve.append(metrics.motion_mean_vertex_error(pred_m, gt_m))
            closure.add(pred_m, gt_m, e.phonemes, bundle_config.fps)
    row = {"val_lve": float(np.mean(lve)) if lve else float("nan"), "val_mve": float(np.mean(mve)) if mve else float("nan")}
    gaps = closure.summary()
    if gaps:
        row["val_bilabial_gap_mm"] = gaps["bilabial_gap_mm_median"]
        row["val_open_vowel_gap_mm"] = gaps["open_vowel_gap_mm_median"]
    return row
