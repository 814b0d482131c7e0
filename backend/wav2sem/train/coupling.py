"""Feature-space coupling of near-homophones, the effect the Wav2Sem paper describes.

Each word of the corpus's minimal sets (fin/thin/sin/shin, bat/pat/mat/fat, ...) is spoken
in isolation by several espeak-ng voices. A word's feature is the time-average of the speech
features the decoder sees (after `audio_feature_map`), without and with the Wav2Sem vector
added. The score is the mean cosine similarity between different words of the same set
(same voice), after centring on the voice's mean word: lower means the model keeps
look-different words apart.
"""
from __future__ import annotations

import itertools

import numpy as np
import soxr
import torch

from ..audio import SAMPLE_RATE, normalize
from ..models.encoders import encode_aligned

VOICES = ("en-us", "en-gb-scotland")   # espeak-ng voice names


def _word_audio(word: str, voice: str) -> np.ndarray:
    from ..synth.tts.espeak import EspeakEngine

    clip = EspeakEngine.get().synthesize(word, voice=voice, rate_wpm=150)
    audio = clip.audio if clip.sample_rate == SAMPLE_RATE else soxr.resample(clip.audio, clip.sample_rate, SAMPLE_RATE)
    pad = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    return np.concatenate([pad, audio.astype(np.float32), pad])


def word_features(model, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d,) mean decoder-side features of one clip without and with the semantic vector."""
    net, cfg = model.net, model.bundle.config
    with torch.inference_mode():
        wav = torch.from_numpy(normalize(audio)).to(model.device).unsqueeze(0)                  # float32
        hidden = encode_aligned(net.audio_encoder, wav, cfg.fps, cfg.decoder.alignment)          # (1, M, H)
        plain = net.memory(hidden).mean(1)[0]
        fused = net.memory(hidden, net.semantic_pooled(wav)).mean(1)[0] if net.has_semantic else plain
    return plain.float().cpu().numpy(), fused.float().cpu().numpy()


def minimal_set_coupling(model, sets=None, voices=VOICES) -> dict:
    from ..synth.sentences import MINIMAL_SETS

    sets = sets or MINIMAL_SETS
    without, with_semantic = [], []
    for voice in voices:
        feats = [[word_features(model, _word_audio(w, voice)) for w in words] for words in sets]
        # Centre on the voice's mean word: the shared part (silence, voice, offsets) would
        # otherwise make every pair look alike (raw cosines are all about 0.99).
        mean_plain = np.mean([f[0] for group in feats for f in group], axis=0)
        mean_fused = np.mean([f[1] for group in feats for f in group], axis=0)
        for group in feats:
            for (a_plain, a_fused), (b_plain, b_fused) in itertools.combinations(group, 2):
                without.append(_cosine(a_plain - mean_plain, b_plain - mean_plain))
                with_semantic.append(_cosine(a_fused - mean_fused, b_fused - mean_fused))
    return {"coupling_without_semantic": float(np.mean(without)),
            "coupling_with_semantic": float(np.mean(with_semantic)), "word_pairs": len(without)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
