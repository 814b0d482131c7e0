"""The project's CodeTalker against the official code (github.com/Doubiiu/CodeTalker, and the
Wav2Sem release's CodeTalker_Wav2Sem from github.com/wslh852/Wav2Sem), same weights, same
speech, on the CPU: the test reference, and the speed comparison.

The official code is never a dependency. It runs in its own process, in a scratch
environment with the transformers it was written for:

    pip install --target /tmp/oldtf --no-deps transformers==4.6.1 huggingface_hub==0.0.8 sacremoses einops six
    sed -i 's/"tokenizers>=0.10.1,<0.11"/"tokenizers"/' /tmp/oldtf/transformers/dependency_versions_table.py
    (4.6.1 pins a tokenizers without Python 3.11 wheels; Wav2Vec2Model never uses it)
    git clone https://github.com/Doubiiu/CodeTalker /tmp/CodeTalker
    git clone https://github.com/wslh852/Wav2Sem /tmp/Wav2SemRel

    .venv/bin/python benchmarks/codetalker_official.py --make-reference   # tests/backend/data/...
    .venv/bin/python benchmarks/codetalker_official.py --durations 5 10 20 --rounds 3

(--scratch, --codetalker, --wav2sem-release give other folders; without them the script says
what is missing and exits 0). In the official process, without touching its files:
- `Wav2Vec2Model.from_pretrained` reads a local folder written here (config.json +
  pytorch_model.bin of the same weights as the stage-2 checkpoint's `audio_encoder.*`);
- the Wav2Sem release's stage 2 loads its semantic encoder from a hard-coded path with
  `torch.load` and sizes it with a hard-coded base config: both are answered with this run's
  weights and sizes;
- the release's predict() adds the mean semantic vector without `bert_feature_map`, which
  training applies (REFERENCE.md): the semantic encoder is wrapped so its frames pass through
  `bert_feature_map` first. A Linear commutes with the mean, so this is the training-time
  fusion (up to rounding).
The speech is normalised here (zero mean, unit variance, as Wav2Vec2Processor) and the same
array goes to both sides.

--make-reference: the tiny official-layout weights of wav2sem.testing_codetalker (VOCASET
without and with Wav2Sem, BIWI without) on a recorded English word (Debian's ktuberling-data,
moon_astronaut.ogg, not copied: the reference stores its sha256) -> the official offsets in
tests/backend/data/codetalker_official_reference.npz, which tests/backend/test_codetalker.py
compares the project's bundles against.

Speed: base size (VOCASET: wav2vec 2.0 base, stage 2 feature_dim 1024 x 6 layers, stage 1
1024 wide x 6 layers, 16 x 64 codes of 256 entries, 5023 vertices), random weights, speech cut
from espeak-ng reading a paragraph; the official predict() against the project's
generate() (both after a warm-up), alternating rounds; 60 s for the project only (the
official code stops at 600 frames). Also the project with --feedback-window N, and its
difference from the exact output. Saves results/codetalker_official.md (+ .json).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
REFERENCE = ROOT / "tests" / "backend" / "data" / "codetalker_official_reference.npz"
RECORDING = Path("/usr/share/ktuberling/sounds/en/moon_astronaut.ogg")
VOCASET_SUBJECTS = ("FaceTalk_170728_03272_TA FaceTalk_170904_00128_TA FaceTalk_170725_00137_TA "
                    "FaceTalk_170915_00223_TA FaceTalk_170811_03274_TA FaceTalk_170913_03279_TA "
                    "FaceTalk_170904_03276_TA FaceTalk_170912_03278_TA")
BIWI_SUBJECTS = "F2 F3 F4 M3 M4 M5"
CASES = {  # name: (dataset, with Wav2Sem)
    "vocaset": ("vocaset", False),
    "vocaset_wav2sem": ("vocaset", True),
    "biwi": ("biwi", False),
}
SUBJECT = 2


# ----- the official side (runs in the scratch process) -----------------------------------
def official_worker(job: dict) -> None:
    """Build the official CodeTalker from `job`, run predict() `job['rounds']` times, save the
    offsets (prediction minus template) and the times."""
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    sys.path.insert(0, job["code"])
    from types import SimpleNamespace

    sizes = job["sizes"]
    wav2sem = job["wav2sem"]
    if wav2sem:
        import models.stage2 as stage2_module

        semantic = torch.load(job["stage2"], map_location="cpu")["state_dict"]
        semantic = {k[len("Wav2Bert."):]: v for k, v in semantic.items() if k.startswith("Wav2Bert.")}
        real_load = torch.load

        def hard_coded_load(path, *args, **kwargs):   # the release's fixed checkpoint path
            if str(path).startswith("/home/"):
                return {"state_dict": semantic}
            return real_load(path, *args, **kwargs)

        release_config = stage2_module.wav2vecconfig

        def config():
            c = release_config()
            for key, value in job["semantic_sizes"].items():
                setattr(c, key, list(value) if isinstance(value, (list, tuple)) else value)
            return c
        stage2_module.wav2vecconfig = config
        torch.load = hard_coded_load
    from models.stage2 import CodeTalker

    dataset = job["dataset"]
    args = SimpleNamespace(
        dataset="BIWI" if dataset == "biwi" else "vocaset", wav2vec2model_path=job["encoder"],
        feature_dim=sizes["feature_dim"], vertice_dim=sizes["vertices"] * 3, period=sizes["period"], n_head=4,
        num_layers=sizes["stage2_layers"], face_quan_num=sizes["codes_per_frame"], zquant_dim=sizes["code_dim"],
        train_subjects=BIWI_SUBJECTS if dataset == "biwi" else VOCASET_SUBJECTS, device="cpu",
        autoencoder="stage1_BIWI" if dataset == "biwi" else "stage1_vocaset", vqvae_pretrained_path=job["stage1"],
        in_dim=sizes["vertices"] * 3, hidden_size=sizes["hidden"], num_hidden_layers=sizes["stage1_layers"],
        num_attention_heads=sizes["stage1_heads"], intermediate_size=sizes["intermediate"], quant_factor=0,
        neg=0.2, INaffine=False, n_embed=sizes["codebook"], motion_weight=1.0, reg_weight=1.0)
    model = CodeTalker(args)
    if wav2sem:
        torch.load = real_load
    state = torch.load(job["stage2"], map_location="cpu")["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("autoencoder.")]
    if missing or unexpected:
        raise SystemExit(f"official load: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    if wav2sem:
        class TrainingFusion(torch.nn.Module):     # bert_feature_map on every frame, then predict()'s mean
            def __init__(self, encoder, fusion):
                super().__init__()
                self.encoder, self.fusion = encoder, fusion

            def forward(self, audio):
                return self.fusion(self.encoder(audio))
        model.Wav2Bert = TrainingFusion(model.Wav2Bert, model.bert_feature_map)
    audio = torch.from_numpy(np.load(job["audio"])).unsqueeze(0)
    template = torch.from_numpy(np.load(job["template"]).reshape(1, -1))
    one_hot = torch.zeros(1, 6 if dataset == "biwi" else 8)
    one_hot[0, job["subject"]] = 1.0
    times, out = [], None
    with torch.no_grad():
        for _ in range(job["rounds"]):
            started = time.perf_counter()
            out = model.predict(audio, template, one_hot, None) if wav2sem else model.predict(audio, template, one_hot)
            times.append(time.perf_counter() - started)
    np.save(job["output"], (out - template.unsqueeze(1))[0].numpy())
    Path(job["output"] + ".json").write_text(json.dumps({"times": times}))


# ----- the driver (the project's environment) ----------------------------------------------
def write_encoder_folder(stage2: dict, directory: Path, config: dict) -> None:
    """A from_pretrained folder for the official code: the stage-2 `audio_encoder.*` weights."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    torch.save({k[len("audio_encoder."):]: v for k, v in stage2.items() if k.startswith("audio_encoder.")},
               directory / "pytorch_model.bin")


def run_official(job: dict, scratch: Path) -> tuple[object, list[float]]:
    import numpy as np

    env = {**os.environ, "PYTHONPATH": str(scratch), "OMP_NUM_THREADS": str(job["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--official-worker", json.dumps(job)], env=env,
                          capture_output=True, text=True, cwd=job["code"])
    if proc.returncode != 0:
        raise SystemExit(f"the official code failed:\n{proc.stderr[-3000:]}")
    return np.load(job["output"]), json.loads(Path(job["output"] + ".json").read_text())["times"]


def locate(args) -> dict[str, Path] | None:
    paths = {"scratch": Path(args.scratch), "codetalker": Path(args.codetalker),
             "release": Path(args.wav2sem_release) / "CodeTalker_Wav2Sem"}
    checks = {"scratch": paths["scratch"] / "transformers" / "__init__.py",
              "codetalker": paths["codetalker"] / "models" / "stage2.py",
              "release": paths["release"] / "models" / "wav2bert.py"}
    missing = [f"{name} ({checks[name]})" for name in checks if not checks[name].is_file()]
    if missing:
        print(f"skipped: not found: {', '.join(missing)}; see this script's docstring for the scratch set-up.")
        return None
    return paths


def make_reference(paths: dict[str, Path]) -> None:
    import numpy as np
    import torch

    from wav2sem.audio import load_audio, normalize
    from wav2sem.testing_codetalker import DATASETS, TINY, encoder_config, official_stage1, official_stage2

    if not RECORDING.is_file():
        raise SystemExit(f"{RECORDING} is missing: install Debian's ktuberling-data (make system-deps)")
    audio = normalize(load_audio(RECORDING))
    arrays, meta = {}, {"recording": RECORDING.name, "recording_sha256": hashlib.sha256(RECORDING.read_bytes()).hexdigest(),
                        "input_mean": float(audio.mean()), "input_std": float(audio.std()), "samples": int(audio.size),
                        "subject": SUBJECT, "made_with": "benchmarks/codetalker_official.py --make-reference"}
    rng = np.random.default_rng(0)
    template = (rng.normal(size=(TINY["vertices"], 3)) * 0.05).astype(np.float32)
    arrays["template"] = template
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.save(work / "audio.npy", audio)
        np.save(work / "template.npy", template)
        for case, (dataset, wav2sem) in CASES.items():
            stage1, stage2 = official_stage1(dataset), official_stage2(dataset, wav2sem=wav2sem)
            torch.save({"state_dict": stage1}, work / f"{case}_stage1.pth.tar")
            torch.save({"state_dict": stage2}, work / f"{case}_stage2.pth.tar")
            write_encoder_folder(stage2, work / f"{case}_encoder", encoder_config())
            preset = DATASETS[dataset]
            job = {"code": str(paths["release" if wav2sem else "codetalker"]), "dataset": dataset, "wav2sem": wav2sem,
                   "encoder": str(work / f"{case}_encoder"), "stage1": str(work / f"{case}_stage1.pth.tar"),
                   "stage2": str(work / f"{case}_stage2.pth.tar"), "audio": str(work / "audio.npy"),
                   "template": str(work / "template.npy"), "output": str(work / f"{case}_out.npy"), "rounds": 1,
                   "threads": 1, "subject": SUBJECT,
                   "sizes": {**TINY, "period": preset["period"], "codes_per_frame": preset["codes_per_frame"]},
                   "semantic_sizes": _semantic_sizes()}
            offsets, _ = run_official(job, paths["scratch"])
            arrays[case] = offsets.astype(np.float32)
            print(f"{case}: {offsets.shape[0]} frames, peak |offset| {np.abs(offsets).max():.4f}")
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, meta=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {REFERENCE}")


def _semantic_sizes() -> dict:
    from wav2sem.testing_codetalker import CONV_KERNELS, SPEECH

    return {"conv_dim": list(SPEECH["conv_dim"]), "conv_kernel": list(CONV_KERNELS),
            "num_conv_pos_embeddings": SPEECH["num_conv_pos_embeddings"],
            "num_conv_pos_embedding_groups": SPEECH["num_conv_pos_embedding_groups"],
            "num_hidden_layers": SPEECH["num_hidden_layers"], "num_attention_heads": SPEECH["num_attention_heads"],
            "intermediate_size": SPEECH["intermediate_size"], "hidden_size": SPEECH["hidden_size"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-worker", help=argparse.SUPPRESS)
    parser.add_argument("--make-reference", action="store_true")
    parser.add_argument("--scratch", default=os.environ.get("CODETALKER_SCRATCH", "/tmp/oldtf"))
    parser.add_argument("--codetalker", default=os.environ.get("CODETALKER_DIR", "/tmp/CodeTalker"))
    parser.add_argument("--wav2sem-release", default=os.environ.get("WAV2SEM_RELEASE_DIR", "/tmp/Wav2SemRel"))
    parser.add_argument("--durations", type=float, nargs="+", default=[5, 10, 20])
    parser.add_argument("--project-durations", type=float, nargs="+", default=[60])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--feedback-window", type=int, default=32)
    args = parser.parse_args()
    if args.official_worker:
        official_worker(json.loads(args.official_worker))
        return 0
    sys.path.insert(0, str(ROOT / "backend"))
    paths = locate(args)
    if paths is None:
        return 0
    if args.make_reference:
        make_reference(paths)
        return 0
    from codetalker_speed import run_speed   # the base-size comparison (benchmarks/codetalker_speed.py)

    run_speed(args, paths, run_official, write_encoder_folder, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
