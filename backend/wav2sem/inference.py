"""Speech -> per-frame vertex offsets (and, for a blendshape model, channel weights) with a
loaded bundle.

    model = load_model(bundle_dir, device="auto")          # loaded_model.py
    result = generate(model, load_audio("line.wav"))
    result.offsets        # (T, V, 3) float32, template units
    result.weights        # (T, K) float32 for a blendshape model (model.channels), else None

A blendshape model predicts the weights; its offsets are `weights @ deltas` on its template
(`Template.offsets_from_weights`), skipped with `generate(..., offsets=False)`.

Factored output: a vertex model whose decoder ends in a linear map (FaceFormer, Direct: they
offer `decode_features`) has offsets that are exactly `coefficients @ model.output_basis()`,
(T, R) times (R, V, 3) with R = feature_dim + 1 (the last row is the map's bias, its
coefficient 1). `generate(..., factors=True)` returns those coefficients, so a caller that
wants a compact take (the add-on) never forms, writes or decomposes the (T, V, 3) array. A
model without `decode_features` (a nonlinear decoder) is not factored and gives offsets only.

Long audio: the speech encoder runs over overlapping windows cross-faded at the seams, the
Wav2Sem vector is computed per utterance (segmentation.py), and the decoder keeps a
key/value cache, so memory stays bounded and there is no length limit.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import audio as audio_io
from .errors import AUDIO_TOO_SHORT, BAD_REQUEST, MODEL_INVALID, OUT_OF_MEMORY, Cancelled, Wav2SemError
from .loaded_model import LoadedModel
from .models.encoders import encode_aligned, memory_frame_count
from .models.talker import ALIGN_PAIR
from .segmentation import utterance_spans
from .threads import generate_threads, thread_count

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, str], None]      # (stage, fraction 0..1, message)
CancelFn = Callable[[], bool]                        # True -> stop as soon as possible

ENCODER_WINDOW_S = 20     # s, longest audio the speech encoder sees at once (bounded memory)
ENCODER_OVERLAP_S = 2     # s, cross-faded overlap between consecutive windows


@dataclass
class GenerateResult:
    offsets: np.ndarray | None     # (T, V, 3) float32; None when generate(offsets=False) on a blendshape model
    fps: float
    seconds: float                 # wall time of generate
    warnings: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None       # (T, K) float32 for a blendshape model, not clipped
    channels: tuple[str, ...] = ()          # the weights' column names; () for a vertex model
    frames: int = 0                         # T
    coefficients: np.ndarray | None = None  # (T, R) float32 with generate(factors=True) on a factored
                                            # model: offsets = coefficients @ model.output_basis()



def subject_weights(model: LoadedModel, subject) -> torch.Tensor:
    """Speaking-style weights over the training subjects.

    subject: None (first subject), an index, a name, or a blend {name_or_index: weight, ...}.
    """
    names = list(model.subjects)
    n = len(names)

    def index(key) -> int:
        if isinstance(key, str) and key in names:
            return names.index(key)
        try:
            i = int(key)
            if isinstance(key, float) and key != i:
                raise ValueError(key)
        except (TypeError, ValueError):
            raise Wav2SemError(BAD_REQUEST, f"Unknown subject {key!r}; this model has {names}.") from None
        if not 0 <= i < n:
            raise Wav2SemError(BAD_REQUEST, f"Subject index {i} is out of range; this model has {n} subjects (0..{n - 1}).")
        return i

    def weight(key, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise Wav2SemError(BAD_REQUEST, f"The blend weight for subject {key!r} must be a number of 0 or more, "
                                            f"not {value!r}.")
        return float(value)

    weights = torch.zeros(n)
    if subject is None:
        weights[0] = 1.0
    elif isinstance(subject, dict):
        for key, w in subject.items():
            weights[index(key)] += weight(key, w)
        if float(weights.sum()) <= 0:
            raise Wav2SemError(BAD_REQUEST, "Subject blend weights must add up to more than 0.")
        weights /= weights.sum()
    else:
        weights[index(subject)] = 1.0
    return weights


def generate(
    model: LoadedModel,
    waveform: np.ndarray,
    subject=None,
    semantic: bool = True,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    offsets: bool = True,
    factors: bool = False,
) -> GenerateResult:
    """Animate 16 kHz mono speech (S,) float32. Returns offsets (T, V, 3) from the template at
    the model fps; a blendshape model also returns its weights (T, K) and channel names, and
    its offsets are the weights through the template's deltas (`offsets=False` skips them:
    a minute on a 26,719-vertex head is ~577 MB). `factors=True` on a factored vertex model
    (`model.factored`) returns its coefficients (T, R) instead, and offsets only if
    `offsets` is also true; a vertex model's offsets are never skipped otherwise (they are
    its only output). Blocks; call from a worker thread. `should_cancel` is polled between
    windows, utterances and frames, after each stage and before returning; when it returns
    True, `Cancelled` is raised."""
    started = time.perf_counter()
    report = progress or (lambda stage, fraction, message: None)
    cancelled = should_cancel or (lambda: False)

    def check_cancel() -> None:
        if cancelled():
            raise Cancelled()
    net, cfg = model.net, model.bundle.config
    alignment = cfg.decoder.alignment
    warnings: list[str] = []
    weights = subject_weights(model, subject)
    factored = factors and model.factored
    want_offsets = offsets or not (factored or model.predicts_weights)

    n_memory = memory_frame_count(net.audio_encoder, waveform.shape[0], cfg.fps, alignment)
    n_frames = n_memory // 2 if alignment == ALIGN_PAIR else n_memory
    if n_frames < 1:
        raise Wav2SemError(AUDIO_TOO_SHORT, "The audio is too short to produce a single animation frame.")
    if audio_io.is_silent(waveform):
        # The network is not guaranteed to rest on digital silence; a silent clip is a face at rest.
        warnings.append("The audio is silent; the face stays at rest.")
        log.warning(warnings[-1])
        check_cancel()
        rest = np.zeros((n_frames, len(model.channels)), np.float32) if model.predicts_weights else None
        coefficients = np.zeros((n_frames, len(model.output_basis())), np.float32) if factored else None
        still = np.zeros((n_frames, model.vertex_count, 3), np.float32) if rest is None and want_offsets else None
        return _result(model, n_frames, rest, still, want_offsets, started, warnings, coefficients=coefficients)
    use_semantic = semantic and net.has_semantic
    if semantic and not net.has_semantic:
        warnings.append("This model has no Wav2Sem module; generated without it.")

    try:
        with torch.inference_mode(), thread_count(generate_threads()):
            normalized = audio_io.normalize(waveform, model.feature_extractor)
            wav = torch.from_numpy(normalized).to(model.device).unsqueeze(0)           # (1, S) float32
            split = 0.8 if use_semantic else 1.0
            hidden = _encode_windows(net, wav, cfg.fps, alignment, n_memory, report, cancelled, 0.0, split)   # (1, M, H)
            check_cancel()
            semantic_vectors = (_semantic_per_frame(net, wav, n_memory, report, cancelled, split, 1.0)
                                if use_semantic else None)
            check_cancel()
            memory = net.memory(hidden, semantic_vectors)                              # (1, M, d)
            style = net.style_embedding(weights.to(model.device))
            step = max(1, n_frames // 100)

            def on_frame(t: int) -> None:
                check_cancel()
                if t % step == 0 or t == n_frames - 1:
                    report("decode", (t + 1) / n_frames, f"frame {t + 1}/{n_frames}")

            coefficients = None
            if factored:
                features = net.decode_features(memory, style, n_frames, on_frame)[0]     # (T, d)
                check_cancel()
                coefficients = factored_coefficients(features.float().cpu().numpy())     # (T, d + 1)
                output = net.vertice_map_r(features).float().cpu().numpy() if want_offsets else None
            else:
                output = net.decode(memory, style, n_frames, on_frame)    # (1, T, V*3) or (1, T, K) weights
                check_cancel()
                output = output.float().cpu().numpy()                     # float32 (half on CUDA: cast first)
    except torch.cuda.OutOfMemoryError as exc:
        raise Wav2SemError(OUT_OF_MEMORY, "The GPU ran out of memory; use device 'cpu' or free GPU memory.") from exc
    except MemoryError as exc:
        raise Wav2SemError(OUT_OF_MEMORY, "The backend ran out of memory; try a shorter clip.") from exc
    if model.predicts_weights:
        return _result(model, n_frames, output.reshape(n_frames, len(model.channels)), None, offsets, started, warnings,
                       check_cancel)
    dense = None if output is None else output.reshape(n_frames, model.vertex_count, 3)
    return _result(model, n_frames, None, dense, want_offsets, started, warnings, check_cancel, coefficients)


def factored_coefficients(features: np.ndarray) -> np.ndarray:
    """(T, d) decoder rows -> (T, d + 1) float32 coefficients of `LoadedModel.output_basis`
    (a column of ones for the bias row)."""
    out = np.ones((len(features), features.shape[1] + 1), np.float32)
    out[:, :-1] = features
    return out


def _result(model: LoadedModel, n_frames: int, weights: np.ndarray | None, offsets: np.ndarray | None,
            want_offsets: bool, started: float, warnings: list[str], check_cancel: Callable[[], None] | None = None,
            coefficients: np.ndarray | None = None) -> GenerateResult:
    """Check the output is finite (MODEL_INVALID otherwise), derive a blendshape model's
    offsets from its weights (unless not wanted) and package the result."""
    def refuse() -> Wav2SemError:
        return Wav2SemError(MODEL_INVALID, f"The model {model.bundle.config.name} produced invalid values (NaN or "
                                           "infinite) for this audio; its weights may be broken: try another model "
                                           "or device 'cpu'.")

    if weights is not None:
        weights = np.ascontiguousarray(weights, np.float32)
        if not np.isfinite(weights).all():
            raise refuse()
        if want_offsets:
            try:
                offsets = model.template.offsets_from_weights(weights)
            except MemoryError as exc:
                raise Wav2SemError(OUT_OF_MEMORY, "The backend ran out of memory for the offsets; try a shorter "
                                                  "clip, or ask for the weights only.") from exc
    if offsets is not None:
        offsets = np.ascontiguousarray(offsets, np.float32)
        if not np.isfinite(offsets).all():      # for weights: finite but so large the offsets overflow
            raise refuse()
    if coefficients is not None and not np.isfinite(coefficients).all():
        raise refuse()
    if check_cancel is not None:
        check_cancel()
    return GenerateResult(offsets, model.fps, time.perf_counter() - started, warnings, weights=weights,
                          channels=tuple(model.channels), frames=n_frames, coefficients=coefficients)


def _encode_windows(net, wav, fps, alignment, n_memory, report, cancelled, lo=0.0, hi=1.0) -> torch.Tensor:
    """Speech features for the whole clip from overlapping windows, linearly cross-faded.

    Windows start on whole seconds, so a window's first memory frame is start_s * rate
    exactly (rate = fps, or 50 Hz for pair alignment). A clip up to ENCODER_WINDOW_S is one
    window, i.e. exactly the reference computation.
    """
    sr = audio_io.SAMPLE_RATE
    rate = 2 * fps if alignment == ALIGN_PAIR else fps
    total_s = wav.shape[1] / sr
    hop_s = ENCODER_WINDOW_S - ENCODER_OVERLAP_S
    starts = [0] if total_s <= ENCODER_WINDOW_S else list(range(0, int(np.ceil(total_s - ENCODER_OVERLAP_S)), hop_s))
    fade = int(round(ENCODER_OVERLAP_S * rate))
    out = None
    weight_sum = torch.zeros(n_memory, device=wav.device, dtype=torch.float32)
    for wi, start_s in enumerate(starts):
        if cancelled():
            raise Cancelled()
        report("encode", lo + (hi - lo) * wi / len(starts), f"speech window {wi + 1}/{len(starts)}")
        chunk = wav[:, start_s * sr : (start_s + ENCODER_WINDOW_S) * sr]
        features = encode_aligned(net.audio_encoder, chunk, fps, alignment)[0]         # (m, H)
        first = int(round(start_s * rate))
        m = min(features.shape[0], n_memory - first)
        if m <= 0:
            continue
        if out is None:
            out = torch.zeros(n_memory, features.shape[1], device=wav.device, dtype=torch.float32)
        w = torch.ones(m, device=wav.device)
        if wi > 0:                                    # fade in over the overlap
            k = min(fade, m)
            w[:k] = torch.linspace(0, 1, k + 2, device=wav.device)[1:-1]
        if wi < len(starts) - 1:                      # fade out over the overlap
            k = min(fade, m)
            w[m - k :] = torch.minimum(w[m - k :], torch.linspace(1, 0, k + 2, device=wav.device)[1:-1])
        out[first : first + m] += features[:m].float() * w.unsqueeze(1)
        weight_sum[first : first + m] += w
    assert out is not None
    covered = weight_sum > 0
    out[covered] /= weight_sum[covered].unsqueeze(1)
    if not bool(covered.all()):                       # rounding at the very end: hold the last frame
        last = int(covered.nonzero().max())
        out[last + 1 :] = out[last]
    report("encode", hi, "speech features done")
    return out.unsqueeze(0)


def _semantic_per_frame(net, wav, n_memory, report, cancelled, lo=0.0, hi=1.0) -> torch.Tensor:
    """(1, M, H_sem) pooled Wav2Sem vectors (before the fusion layer), one per utterance,
    spread over its frames."""
    sr = audio_io.SAMPLE_RATE
    spans = utterance_spans(wav[0].float().cpu().numpy(), sr)
    per_frame = None
    total = wav.shape[1]
    for si, (a, b) in enumerate(spans):
        if cancelled():
            raise Cancelled()
        report("encode", lo + (hi - lo) * si / len(spans), f"semantic vector {si + 1}/{len(spans)}")
        vector = net.semantic_pooled(wav[:, a:b])[0]                                   # (H_sem,)
        if per_frame is None:
            per_frame = torch.zeros(n_memory, vector.shape[0], device=wav.device, dtype=vector.dtype)
        first = int(round(a / total * n_memory))
        last = n_memory if b >= total else int(round(b / total * n_memory))
        per_frame[first:last] = vector
    assert per_frame is not None
    report("encode", hi, "semantic vectors done")
    return per_frame.unsqueeze(0)
