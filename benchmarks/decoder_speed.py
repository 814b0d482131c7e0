"""Speed of FaceFormer's autoregressive decoder at base size (VOCASET: feature_dim 64, 4 heads,
1 layer, feed-forward 128, period 30, 5023 vertices -> 15,069 outputs), random weights:
the reference full-prefix loop (`decode_reference`), the previous key/value-cached decoder
(its algorithm copied below, as it was before the fused feedback map) and the current
`FaceFormer.decode`, at 150 / 600 / 1800 frames (the reference only up to 600), with one and
two threads, in alternating rounds (the order of the methods flips every round); medians.

The arithmetic bound of a decode: the FLOPs of every frame's step (the decoder layer's
vector-matrix products, attention over the cache, the fused d x d feedback map) divided by a
measured vector-matrix throughput, plus the one-time matrix products (the output map on all
frames, the cross-attention memory, forming the fused matrix) divided by a measured
matrix-matrix throughput. Two matrix-matrix throughputs are measured: the output map's own
shape (T x 64 times 64 x 15,069 into a ready buffer: a thin product, bound by its stores) and a
1024^3 square product (the machine's peak; the stricter bound). Both bounds are reported.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoder_speed.py [--rounds 5] [--reference-rounds 3]

Prints a Markdown table and saves results/decoder_speed.md (+ .json). Goals (issue 13):
the cached decoder >= 50x faster than the reference at 600 frames, and within 3x of the
arithmetic bound, at one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import best_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
BASE = dict(vertex_count=5023, n_subjects=8, feature_dim=64, period=30, n_heads=4, n_layers=1)


def base_model(alignment: str = "interpolate", seed: int = 0):
    """A base-size VOCASET FaceFormer decoder with random weights (the speech encoder is the
    tiny test one: the decoder does not use it)."""
    from wav2sem.models.faceformer import DecoderConfig, FaceFormer
    from wav2sem.testing import tiny_encoder_spec

    torch.manual_seed(seed)
    model = FaceFormer(DecoderConfig(**BASE, alignment=alignment), tiny_encoder_spec()).eval()
    torch.nn.init.normal_(model.vertice_map_r.weight, std=0.02)   # zero in a fresh model: give the feedback a signal
    torch.nn.init.normal_(model.vertice_map_r.bias, std=0.002)
    return model


# ----- the previous cached decoder (before the fused feedback map), for comparison only ------
def _split_heads(x, heads):
    b, length, d = x.shape
    return x.view(b, length, heads, d // heads).transpose(1, 2)


def _merge_heads(x):
    b, h, length, hd = x.shape
    return x.transpose(1, 2).reshape(b, length, h * hd)


def _previous_layer_step(model, layer, x, t, cache_k, cache_v, bias, memory_kv, mem_idx):
    d, heads = model.config.feature_dim, model.config.n_heads
    sa = layer.self_attn
    q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).split(d, dim=-1)
    cache_k[:, :, t : t + 1] = _split_heads(k, heads)
    cache_v[:, :, t : t + 1] = _split_heads(v, heads)
    attn = F.scaled_dot_product_attention(_split_heads(q, heads), cache_k[:, :, : t + 1], cache_v[:, :, : t + 1],
                                          attn_mask=bias)
    x = layer.norm1(x + sa.out_proj(_merge_heads(attn)))
    ca = layer.multihead_attn
    q = F.linear(x, ca.in_proj_weight[:d], ca.in_proj_bias[:d])
    mem_k, mem_v = memory_kv
    attn = F.scaled_dot_product_attention(_split_heads(q, heads), mem_k[:, :, mem_idx], mem_v[:, :, mem_idx])
    x = layer.norm2(x + ca.out_proj(_merge_heads(attn)))
    return layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))


def previous_decode(model, memory, style, n_frames, on_frame=None):
    """The cached decoder as it was: per frame the decoder layer, then vertice_map_r (d -> V*3)
    and vertice_map (V*3 -> d) on the new frame; bias and positions built per frame."""
    from wav2sem.models.faceformer import ALIGN_PAIR, temporal_bias

    layers = list(model.transformer_decoder.layers)
    heads, d = model.config.n_heads, model.config.feature_dim
    memory_kv = []
    for layer in layers:
        w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
        memory_kv.append((_split_heads(F.linear(memory, w[d:2 * d], b[d:2 * d]), heads),
                          _split_heads(F.linear(memory, w[2 * d:], b[2 * d:]), heads)))
    self_k = [memory.new_zeros(1, heads, n_frames, d // heads) for _ in layers]
    self_v = [memory.new_zeros(1, heads, n_frames, d // heads) for _ in layers]
    outputs, token = [], style
    for t in range(n_frames):
        x = token + model.PPE.at(torch.tensor([t], device=memory.device)).unsqueeze(0).to(token.dtype)
        bias = temporal_bias(heads, model.config.period, torch.tensor([t], device=memory.device), t + 1)
        bias = bias.unsqueeze(0).to(memory.dtype)
        mem_idx = [2 * t, 2 * t + 1] if model.config.alignment == ALIGN_PAIR else [t]
        for li, layer in enumerate(layers):
            x = _previous_layer_step(model, layer, x, t, self_k[li], self_v[li], bias, memory_kv[li], mem_idx)
        offset = model.vertice_map_r(x)
        outputs.append(offset)
        token = model.vertice_map(offset) + style
        if on_frame is not None:
            on_frame(t)
    return torch.cat(outputs, dim=1)


# ----- the arithmetic bound -----------------------------------------------------------------
def throughputs(frames: int, output_dim: int, d: int) -> dict:
    """FLOP/s measured here, now, with the current thread count (best of several runs)."""
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, d, generator=g), torch.randn(d, 8192, generator=g), torch.randn(8192, generator=g)
    vecmat = 2 * d * 8192 / best_seconds(lambda: torch.addmm(b, x, w), 7, 200)
    y, wr = torch.randn(frames, d, generator=g), torch.randn(output_dim, d, generator=g)
    br, out = torch.randn(output_dim, generator=g), torch.empty(frames, output_dim)
    thin = 2 * frames * d * output_dim / best_seconds(lambda: torch.addmm(br, y, wr.t(), out=out), 5)
    a = torch.randn(1024, 1024, generator=g)
    square = 2 * 1024**3 / best_seconds(lambda: a @ a, 5)
    return {"vecmat_flops": vecmat, "output_map_flops": thin, "square_gemm_flops": square}


def decode_flops(config, frames: int) -> dict:
    """FLOPs of the current cached decode of `frames` frames: per-frame (vector-matrix) and
    one-time (matrix-matrix). Layer norms, softmax and additions are left out (O(d) per frame)."""
    d, ff, layers, out = config.feature_dim, config.ff_dim or 2 * config.feature_dim, config.n_layers, config.output_dim
    pair = config.alignment == "pair"
    per_frame = 0
    for t in range(frames):
        step = 2 * d * d if t else 0                                  # the fused feedback map
        for _ in range(layers):
            step += 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * ff       # qkv, out_proj, feed-forward
            step += 2 * 2 * d * (t + 1)                               # scores and values over the cache
            if pair:
                step += 2 * d * d * 2 + 2 * 2 * d * 2                 # q, out_proj; two memory positions
        per_frame += step
    memory_rows = 2 * frames if pair else frames
    once = 2 * frames * d * out + 2 * d * out * d                      # output map; the fused matrix
    once += layers * (2 * memory_rows * d * d * (2 if pair else 1) + (0 if pair else 2 * frames * d * d))
    return {"per_frame_flops": per_frame, "one_time_flops": once}


# ----- the benchmark --------------------------------------------------------------------------
def machine(threads: list[int]) -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "load_average": [round(v, 2) for v in os.getloadavg()], "nice": os.nice(0),
            "python": platform.python_version()}


def run(frames_list: list[int], threads_list: list[int], rounds: int, reference_rounds: int,
        reference_max: int) -> dict:
    model = base_model()
    config = model.config
    style = model.style_embedding(torch.eye(config.n_subjects)[0])
    g = torch.Generator().manual_seed(1)
    memory_all = torch.randn(1, max(frames_list), config.feature_dim, generator=g)
    callback = lambda t: None  # noqa: E731 - inference passes a progress callback too
    methods = {
        "reference": lambda mem, n: model.decode_reference(mem, style, n),
        "previous": lambda mem, n: previous_decode(model, mem, style, n, callback),
        "cached": lambda mem, n: model.decode(mem, style, n, callback),
    }
    rows = []
    with torch.inference_mode():
        methods["cached"](memory_all[:, :20], 20)     # warm-up: first calls pay one-off set-up costs
        methods["previous"](memory_all[:, :20], 20)
        methods["reference"](memory_all[:, :20], 20)
        for threads in threads_list:
            torch.set_num_threads(threads)
            for frames in frames_list:
                memory = memory_all[:, :frames]
                times: dict[str, list[float]] = {"reference": [], "previous": [], "cached": []}
                outputs = {}
                for r in range(rounds):
                    order = ["reference", "previous", "cached"]
                    if r % 2:
                        order.reverse()
                    for name in order:
                        if name == "reference" and (frames > reference_max or r >= reference_rounds):
                            continue
                        t0 = time.perf_counter()
                        out = methods[name](memory, frames)
                        times[name].append(time.perf_counter() - t0)
                        outputs.setdefault(name, out)
                median = {k: statistics.median(v) for k, v in times.items() if v}
                flops = decode_flops(config, frames)
                tp = throughputs(frames, config.output_dim, config.feature_dim)
                bound = flops["per_frame_flops"] / tp["vecmat_flops"] + flops["one_time_flops"] / tp["output_map_flops"]
                strict = flops["per_frame_flops"] / tp["vecmat_flops"] + flops["one_time_flops"] / tp["square_gemm_flops"]
                row = {"frames": frames, "threads": threads, "times_s": times, "median_s": median, **flops, **tp,
                       "bound_s": bound, "strict_bound_s": strict,
                       "cached_over_bound": median["cached"] / bound, "cached_over_strict_bound": median["cached"] / strict,
                       "previous_over_cached": median["previous"] / median["cached"]}
                if "reference" in median:
                    ref = outputs["reference"]
                    row["reference_over_cached"] = median["reference"] / median["cached"]
                    row["reference_over_previous"] = median["reference"] / median["previous"]
                    row["max_abs_diff_cached"] = float((outputs["cached"] - ref).abs().max())
                    row["max_abs_diff_previous"] = float((outputs["previous"] - ref).abs().max())
                rows.append(row)
                print(_row_line(row), flush=True)
    return {"rows": rows}


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else (f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s")


def _row_line(r: dict) -> str:
    m = r["median_s"]
    ratio = lambda key: f"{r[key]:.0f}x" if key in r else "-"  # noqa: E731
    diff = lambda key: f"{r[key]:.1e}" if key in r else "-"  # noqa: E731
    return (f"| {r['frames']} | {r['threads']} | {_fmt(m.get('reference'))} | {_fmt(m['previous'])} | {_fmt(m['cached'])} "
            f"| {ratio('reference_over_cached')} | {r['previous_over_cached']:.1f}x | {_fmt(r['bound_s'])} "
            f"| {r['cached_over_bound']:.1f}x | {_fmt(r['strict_bound_s'])} | {r['cached_over_strict_bound']:.1f}x "
            f"| {diff('max_abs_diff_cached')} | {diff('max_abs_diff_previous')} |")


def markdown(result: dict) -> str:
    before, after = result["machine_before"], result["machine_after"]
    r0 = result["rows"][0]
    lines = [
        "# FaceFormer decoder speed (base size, random weights)",
        "",
        f"Machine: {before['platform']}, {before['processor']}, {before['cpu_count']} cores, torch {before['torch']}, "
        f"threads {before['threads']}, nice {before['nice']}; load average {before['load_average']} before, "
        f"{after['load_average']} after (other jobs were running: compare ratios, not absolute times).",
        f"Rounds: {result['rounds']} alternating (the reference: {result['reference_rounds']}, up to "
        f"{result['reference_max']} frames); medians. Decoder: d 64, 4 heads, 1 layer, ff 128, period 30, "
        f"15,069 outputs, 'interpolate' alignment; the cached decoders get a no-op on_frame callback.",
        f"Throughputs measured beside each row (first row: vector-matrix {r0['vecmat_flops'] / 1e9:.1f} GFLOP/s, "
        f"output-map-shaped product {r0['output_map_flops'] / 1e9:.1f} GFLOP/s, 1024^3 product "
        f"{r0['square_gemm_flops'] / 1e9:.1f} GFLOP/s). Bound = per-frame FLOPs / vector-matrix + one-time FLOPs / "
        "output-map-shaped product; strict bound uses the 1024^3 product's throughput instead.",
        "",
        "| frames | threads | reference | previous cached | cached (now) | reference / cached | previous / cached "
        "| bound | cached / bound | strict bound | cached / strict | max abs diff cached vs ref | max abs diff previous vs ref |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[_row_line(r) for r in result["rows"]],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[150, 600, 1800])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reference-rounds", type=int, default=3)
    parser.add_argument("--reference-max", type=int, default=600, help="longest clip the reference loop runs on")
    parser.add_argument("--output", default="decoder_speed", help="table name under results/")
    args = parser.parse_args()
    before = machine(args.threads)
    result = run(args.frames, args.threads, args.rounds, args.reference_rounds, args.reference_max)
    result.update(machine_before=before, machine_after=machine(args.threads), rounds=args.rounds,
                  reference_rounds=args.reference_rounds, reference_max=args.reference_max)
    text = markdown(result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.md").write_text(text, encoding="utf-8")
    (RESULTS / f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
