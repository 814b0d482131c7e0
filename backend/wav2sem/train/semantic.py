"""Stage 1, as in the Wav2Sem paper: an audio encoder whose mean-pooled output regresses the
sentence embedding of the transcript (L1), AdamW with a step-decayed learning rate. Our targets are all-MiniLM-L6-v2
embeddings (384-d) instead of BERT's, so the encoder's hidden size is 384.

Reports held-out cosine similarity against the baseline of always predicting the mean
training embedding.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.encoders import build_encoder
from . import checkpointing, distributed
from .batching import batches, masked_time_mean, normalized_batch
from .data import load_examples
from .sentence_embeddings import EMBEDDING_DIM, embed

log = logging.getLogger(__name__)
WEIGHTS = "semantic_encoder.safetensors"


class SemanticObjective(torch.nn.Module):
    """Mean-pooled encoder output vs the sentence embedding; the module DDP wraps."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def pooled(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(waveforms).last_hidden_state                          # (B, N, 384)
        return masked_time_mean(hidden, lengths, waveforms.shape[1])

    def forward(self, waveforms, lengths, targets):
        return F.l1_loss(self.pooled(waveforms, lengths), targets)


def train_semantic(config: dict, corpus: str | Path, out: str | Path, device: str = "auto", resume: bool = True) -> dict:
    """Train, checkpoint every epoch (resumable), and write `out/semantic_encoder.safetensors`
    plus `out/semantic_metrics.json`. Works in one process or under torchrun."""
    from safetensors.torch import save_file

    ctx = distributed.setup(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = config["semantic_training"]
    torch.manual_seed(config["seed"])
    train = load_examples(corpus, "train", with_motion=False, max_seconds=recipe["max_seconds"])
    val = load_examples(corpus, "val", with_motion=False, max_seconds=recipe["max_seconds"])
    texts = sorted({e.transcript for e in train + val})
    # Unit-norm MiniLM vectors scaled to unit RMS per component, the scale of the encoder's
    # LayerNorm output (BERT's CLS, the paper's target, is of that scale too); cosine is unchanged.
    target_of = dict(zip(texts, embed(texts) * np.sqrt(EMBEDDING_DIM)))
    encoder = build_encoder(config["semantic_encoder"]).to(ctx.device).train()
    if encoder.config.hidden_size != EMBEDDING_DIM:
        raise ValueError(f"semantic encoder hidden_size must be {EMBEDDING_DIM} (the sentence embedding size)")
    objective = SemanticObjective(encoder)
    model = distributed.wrap(objective, ctx)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    state_path = out / "semantic_checkpoint.pt"
    start, history = 0, []
    if resume and state_path.is_file():
        start, extra = checkpointing.load(state_path, objective, optimizer)
        history = extra.get("history", [])
        log.info("resumed semantic training at epoch %d", start)
    rng = np.random.default_rng(config["seed"])
    for _ in range(start):
        rng.permutation(len(train))              # keep the shuffling sequence identical on resume
    for epoch in range(start, recipe["epochs"]):
        t0 = time.perf_counter()
        lr = learning_rate(recipe, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        objective.train()
        order = rng.permutation(len(train))
        losses = []
        for batch in batches(ctx.shard([train[i] for i in order]), recipe.get("batch_seconds", 60.0)):
            wav, lengths = normalized_batch(batch, ctx.device)
            targets = torch.from_numpy(np.stack([target_of[e.transcript] for e in batch])).to(ctx.device)
            loss = model(wav, lengths, targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        metrics = evaluate_semantic(objective, val, target_of, np.mean([target_of[e.transcript] for e in train], 0), ctx.device)
        row = {"epoch": epoch, "lr": lr, "train_l1": ctx.mean(float(np.mean(losses))), **metrics, "seconds": time.perf_counter() - t0}
        history.append(row)
        if ctx.is_main:
            log.info("semantic epoch %d: train L1 %.4f, val cosine %.3f (mean-embedding baseline %.3f), %.0f s",
                     epoch, row["train_l1"], row["val_cosine"], row["baseline_cosine"], row["seconds"])
            checkpointing.save(state_path, objective, optimizer, epoch, {"history": history})
        ctx.barrier()
    result = history[-1] if history else {}
    if ctx.is_main:
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(out / WEIGHTS))
        (out / "semantic_metrics.json").write_text(json.dumps({"final": result, "history": history}, indent=2))
    distributed.teardown()
    return result


def learning_rate(recipe: dict, epoch: int) -> float:
    """StepLR's rate for `epoch` (`lr`, times `gamma` every `step_epochs`), computed from the
    epoch alone: a resumed run sets the same rate an unbroken one has (restoring the decayed
    optimizer state and then replaying a scheduler would decay it twice)."""
    return float(recipe["lr"]) * float(recipe["gamma"]) ** (epoch // int(recipe["step_epochs"]))


def evaluate_semantic(objective: SemanticObjective, examples, target_of: dict, mean_target: np.ndarray, device) -> dict:
    """Held-out cosine similarity of predicted vs true sentence embeddings, and the baseline."""
    objective.eval()
    predicted, targets = [], []
    with torch.inference_mode():
        for batch in batches(examples, 120.0):
            wav, lengths = normalized_batch(batch, device)
            predicted.append(objective.pooled(wav, lengths).cpu().numpy())
            targets += [target_of[e.transcript] for e in batch]
    if not targets:
        return {"val_cosine": float("nan"), "baseline_cosine": float("nan")}
    p = np.concatenate(predicted)
    t = np.stack(targets)

    def cosine(a, b):
        return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)))

    return {"val_cosine": cosine(p, t), "baseline_cosine": cosine(np.broadcast_to(mean_target, t.shape), t),
            "val_l1": float(np.mean(np.abs(p - t)))}
