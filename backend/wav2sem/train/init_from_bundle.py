"""Start a new model from an earlier bundle: its frozen Wav2Sem semantic encoder and the
rest of its network as `init_weights`, with a fresh (zero) output map of another size.

    python -m wav2sem.train.init_from_bundle BUNDLE --outputs K --out DIR

writes DIR/semantic_encoder.safetensors (for `wav2sem train animation --semantic ...`) and
DIR/animation_init.pt (for `--set animation_training.init_weights=...`). This is how default
model 0.3 (K = 23 ARKit weights) starts from 0.2 (vertex offsets): the speech encoder,
fusion layer, style embedding and decoder carry over, only the output Linear is new, zeroed as
the reference initialises it (training starts at the template). The recipe's encoder and
decoder settings must be the bundle's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUTPUT_MAP = "vertice_map_r"
INPUT_MAP = "vertice_map"           # FaceFormer's decoder also reads its previous output
SEMANTIC = "semantic_encoder."


def init_from_bundle(bundle: str | Path, outputs: int, out: str | Path, keep_output: bool = False) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import load_file, save_file

    from ..errors import MODEL_INVALID, Wav2SemError

    weights = load_file(str(Path(bundle) / "model.safetensors"))
    if f"{OUTPUT_MAP}.weight" not in weights:
        raise Wav2SemError(MODEL_INVALID, f"{bundle} has no {OUTPUT_MAP} output map; give a wav2sem bundle.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    semantic = {k[len(SEMANTIC):]: v.contiguous() for k, v in weights.items() if k.startswith(SEMANTIC)}
    semantic_path = out / "semantic_encoder.safetensors"
    if semantic:
        save_file(semantic, str(semantic_path))
    state = {k: v for k, v in weights.items() if not k.startswith(SEMANTIC)}
    feature_dim = state[f"{OUTPUT_MAP}.weight"].shape[1]
    if keep_output:                     # fine-tuning the same outputs (e.g. 0.4 from 0.3)
        if state[f"{OUTPUT_MAP}.weight"].shape[0] != outputs:
            raise Wav2SemError(MODEL_INVALID, f"--keep-output: {bundle} has {state[f'{OUTPUT_MAP}.weight'].shape[0]} "
                                              f"outputs, not {outputs}.")
    else:
        state[f"{OUTPUT_MAP}.weight"] = torch.zeros(outputs, feature_dim)
        state[f"{OUTPUT_MAP}.bias"] = torch.zeros(outputs)
        if f"{INPUT_MAP}.weight" in state:              # a fresh input map of the new size
            fresh = torch.nn.Linear(outputs, feature_dim)
            state[f"{INPUT_MAP}.weight"], state[f"{INPUT_MAP}.bias"] = fresh.weight.detach(), fresh.bias.detach()
    init_path = out / "animation_init.pt"
    torch.save(state, init_path)
    subjects = json.loads((Path(bundle) / "config.json").read_text(encoding="utf-8")).get("subjects")
    if subjects:                       # the style embedding's columns, for a mix with new subjects
        (out / "animation_init.subjects.json").write_text(json.dumps(list(subjects)) + "\n", encoding="utf-8")
    return semantic_path, init_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the earlier model bundle")
    parser.add_argument("--outputs", type=int, required=True, help="outputs of the new model (K channels, or V*3)")
    parser.add_argument("--keep-output", action="store_true",
                        help="keep the bundle's output map (fine-tuning the same outputs on new data)")
    parser.add_argument("--out", required=True, help="folder for semantic_encoder.safetensors and animation_init.pt")
    args = parser.parse_args(argv)
    for path in init_from_bundle(args.bundle, args.outputs, args.out, args.keep_output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
