"""Length-bucketed mini-batches of examples (little padding on CPU)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..audio import SAMPLE_RATE, normalize


def batches(examples: list, batch_seconds: float, bucket: int = 64) -> list[list]:
    """Group examples of similar length; each batch holds at most `batch_seconds` of padded audio.
    The input order is kept between buckets (so a shuffled input gives shuffled batches)."""
    out = []
    for start in range(0, len(examples), bucket):
        chunk = sorted(examples[start : start + bucket], key=lambda e: len(e.audio))
        current: list = []
        for example in chunk:
            longest = max([len(e.audio) for e in current] + [len(example.audio)])
            if current and longest * (len(current) + 1) > batch_seconds * SAMPLE_RATE:
                out.append(current)
                current = []
            current.append(example)
        if current:
            out.append(current)
    return out


def normalized_batch(batch: list, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, S_max) normalised waveforms and their lengths (B,)."""
    lengths = [len(e.audio) for e in batch]
    wav = np.zeros((len(batch), max(lengths)), np.float32)
    for i, e in enumerate(batch):
        wav[i, : lengths[i]] = normalize(e.audio)
    return torch.from_numpy(wav).to(device), torch.tensor(lengths, device=device)


def cropped_batch(batch: list, fps: float, device, perturb: Callable[[np.ndarray], np.ndarray] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Audio and motion cropped to the batch's shortest motion: (B, S) waveforms (perturbed
    first when `perturb` is given), the targets (B, T, V*3) offsets, or (B, T, K) weights on a
    blendshape corpus, and T."""
    frames = min(e.target.shape[0] for e in batch)
    samples = min(int(round(frames * SAMPLE_RATE / fps)), min(len(e.audio) for e in batch))
    wav = np.stack([normalize(perturb(e.audio[:samples]) if perturb else e.audio[:samples]) for e in batch])
    targets = np.stack([e.target[:frames].reshape(frames, -1) for e in batch]).astype(np.float32)
    return torch.from_numpy(wav).to(device), torch.from_numpy(targets).to(device), frames


def masked_time_mean(hidden: torch.Tensor, lengths: torch.Tensor, padded_samples: int) -> torch.Tensor:
    """Mean over time of (B, N, H) encoder output, leaving out frames that cover only the
    zero padding of clips shorter than `padded_samples` (lengths in samples). -> (B, H)"""
    n = hidden.shape[1]
    valid = torch.arange(n, device=hidden.device)[None] < (lengths[:, None] * n / padded_samples).ceil()
    return (hidden * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
