"""Start-up benchmark of the backend the add-on talks to (`wav2sem serve`), with the shipped
default model on the CPU: how soon the first click can answer.

Per threads setting (`--threads 1`, `2`, `auto`; "shipped" = no flag, which is `auto` since
the flag exists and torch's default of one thread per core before), in alternating rounds:
- cold hello: spawn `python -m wav2sem serve`, send `hello` at once; seconds to its answer;
- cold first result, 10 s and 60 s: the same fresh server is sent hello + model_info +
  generate at once (a first Generate without prewarm); seconds from the spawn to the result;
- warm request, 10 s and 60 s: further generates on that server (model loaded, kernels run);
- prewarmed first click, 10 s: a fresh server that was sent hello + model_info and answered
  both (what the add-on's prewarm does), then the first generate: seconds from that
  generate to its result;
- cold `wav2sem infer` on 10 s (a separate process, weights only): wall seconds;
- the add-on in Blender 5.0 (bpy module, the extension zip installed in a temporary HOME):
  the prewarm as the Lip Sync panel's first draw starts it, then Generate on the ICT head
  (its own ARKit keys) with 10 s of speech, click to take written: the first click after
  the prewarm and the mean of two more (`--no-clicks` skips it);
- in-process phase times (encoder, Wav2Sem, decoder) at 2, 10 and 60 s, 1 vs 2 threads.
Medians over the rounds; the load average is noted before and after, since the figures
depend on what else the CPU runs. `--busy N` runs N other processes for the whole benchmark,
each multiplying float32 matrices on one thread (what a training job or a render does to
the CPU), so that the thread policy can be seen on idle and on busy cores in turn.

Speech: 2 / 10 / 60 s cut from the longest recorded clip in corpus/real/wav/ when present,
else spoken by espeak-ng. Prints a table and saves results/startup.md + .json.

    .venv/bin/python benchmarks/startup.py [--rounds 3] [--modes 1 2 auto] [--busy N] [--label NAME]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
PYTHON = sys.executable
TEXT = ("The quick brown fox jumps over the lazy dog while the band plays a bright tune. "
        "Peter Piper picked a peck of pickled peppers; how many pickled peppers did Peter pick? ") * 12


def make_clips(folder: Path) -> dict[int, Path]:
    """2, 10 and 60 s of real speech as 16 kHz WAV files."""
    import numpy as np
    import soundfile as sf

    wavs = sorted((ROOT / "corpus" / "real" / "wav").glob("*.wav"))
    source = None
    if wavs:
        longest = max(wavs[:2000], key=lambda p: sf.info(str(p)).frames / sf.info(str(p)).samplerate)
        if sf.info(str(longest)).duration >= 60:
            source = longest
    if source is None:
        source = folder / "espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(source), TEXT], check=True, capture_output=True)
    data, rate = sf.read(str(source), dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    clips = {}
    for seconds in (2, 10, 60):
        n = int(seconds * rate)
        clip = np.resize(data, n) if len(data) < n else data[:n]
        clips[seconds] = folder / f"speech_{seconds}s.wav"
        sf.write(str(clips[seconds]), clip, rate)
    print(f"speech from {source.name if source.parent != folder else 'espeak-ng'}", file=sys.stderr)
    return clips


BUSY_CODE = """
import os
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
import numpy as np
a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
while True:
    a = np.tanh(a @ a)
"""


@contextlib.contextmanager
def other_load(processes: int):
    """N busy processes (one thread each) while the block runs."""
    busy = [subprocess.Popen([PYTHON, "-c", BUSY_CODE]) for _ in range(processes)]
    try:
        time.sleep(2.0 if busy else 0.0)
        yield
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


class Server:
    """A `wav2sem serve` child; lines are read on a thread with a timestamp each."""

    def __init__(self, threads: str | None):
        args = [PYTHON, "-m", "wav2sem", "serve", "--device", "cpu"]
        if threads is not None:
            args += ["--threads", threads]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: "queue.Queue[tuple[float, dict]]" = queue.Queue()
        self.ids = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put((time.perf_counter(), json.loads(raw)))

    def send(self, op: str, params: dict | None = None) -> int:
        self.ids += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": self.ids, "op": op, "params": params or {}}) + "\n").encode())
        self.proc.stdin.flush()
        return self.ids

    def wait(self, request_id: int, timeout: float = 300) -> float:
        """perf_counter time of the request's result (raises on an error)."""
        deadline = time.monotonic() + timeout
        while True:
            at, msg = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if msg.get("id") == request_id and msg["type"] == "error":
                raise RuntimeError(msg["error"])
            if msg.get("id") == request_id and msg["type"] == "result":
                return at

    def generate(self, audio: Path, folder: Path) -> int:
        return self.send("generate", {"audio": str(audio), "device": "cpu", "offsets": False,
                                      "weights_output": str(folder / f"w-{self.ids + 1}.npy")})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("shutdown")
            self.proc.wait(30)


def serve_case(threads: str | None, clips: dict[int, Path], folder: Path, warm_runs: int) -> dict:
    out: dict[str, float | list[float]] = {}
    # cold: hello, then (10 s) a first Generate without prewarm
    srv = Server(threads)
    hello = srv.send("hello")
    info = srv.send("model_info", {"device": "cpu"})
    first = srv.generate(clips[10], folder)
    out["cold_hello"] = srv.wait(hello) - srv.t0
    srv.wait(info)
    out["cold_result_10"] = srv.wait(first) - srv.t0
    warm = []
    for _ in range(warm_runs):
        start = time.perf_counter()
        warm.append(srv.wait(srv.generate(clips[10], folder)) - start)
    out["warm_10"] = statistics.median(warm)
    srv.close()
    # cold 60 s, then warm 60 s
    srv = Server(threads)
    srv.send("hello")
    srv.send("model_info", {"device": "cpu"})
    out["cold_result_60"] = srv.wait(srv.generate(clips[60], folder)) - srv.t0
    warm = []
    for _ in range(max(1, warm_runs - 1)):
        start = time.perf_counter()
        warm.append(srv.wait(srv.generate(clips[60], folder)) - start)
    out["warm_60"] = statistics.median(warm)
    srv.close()
    # prewarmed: hello + model_info answered, then the first generate (the add-on's first click)
    srv = Server(threads)
    srv.wait(srv.send("hello"))
    srv.wait(srv.send("model_info", {"device": "cpu"}))
    out["prewarm_ready"] = time.perf_counter() - srv.t0
    start = time.perf_counter()
    out["prewarmed_first_10"] = srv.wait(srv.generate(clips[10], folder)) - start
    srv.close()
    return out


def infer_case(threads: str | None, clip: Path, folder: Path) -> float:
    args = [PYTHON, "-m", "wav2sem", "infer", str(clip), "--no-offsets", "--weights-out", str(folder / "infer.npy"),
            "--device", "cpu"]
    if threads is not None:
        args += ["--threads", threads]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


PHASES_CODE = r"""
import json, sys, time, statistics
import torch
from wav2sem import audio as aio
from wav2sem.inference import _encode_windows, _semantic_per_frame, subject_weights
from wav2sem.loaded_model import load_model
from wav2sem.models.encoders import memory_frame_count
torch.set_num_threads(1)
model = load_model(None, "cpu")
net, cfg = model.net, model.bundle.config
def phases(path, n):
    torch.set_num_threads(n)
    w = aio.load_audio(path)
    m = memory_frame_count(net.audio_encoder, w.shape[0], cfg.fps, cfg.decoder.alignment)
    nop, no = (lambda *a: None), (lambda: False)
    with torch.inference_mode():
        wav = torch.from_numpy(aio.normalize(w)).unsqueeze(0)
        t0 = time.perf_counter()
        hidden = _encode_windows(net, wav, cfg.fps, cfg.decoder.alignment, m, nop, no, 0, 1)
        t1 = time.perf_counter()
        sem = _semantic_per_frame(net, wav, m, nop, no, 0, 1) if net.has_semantic else None
        t2 = time.perf_counter()
        net.decode(net.memory(hidden, sem), net.style_embedding(subject_weights(model, None)), m, None)
        t3 = time.perf_counter()
    return {"encoder": t1 - t0, "semantic": t2 - t1, "decoder": t3 - t2}
clips, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
phases(clips["2"], 1)
out = {}
for r in range(rounds):
    for seconds, path in clips.items():
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            out.setdefault(f"{seconds}/{n}", []).append(phases(path, n))
print(json.dumps({k: {p: statistics.median(x[p] for x in v) for p in v[0]} for k, v in out.items()}))
"""


def phase_case(clips: dict[int, Path], rounds: int) -> dict:
    done = subprocess.run([PYTHON, "-c", PHASES_CODE, json.dumps({str(k): str(v) for k, v in clips.items()}),
                           str(rounds)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


CLICK_CODE = r"""
import json, os, sys, tempfile, time
from pathlib import Path
os.environ["HOME"] = tempfile.mkdtemp(prefix="wav2sem_startup_home_")
import bpy, addon_utils
root, audio, threads, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
import subprocess
dist = Path(tempfile.mkdtemp(prefix="wav2sem_startup_dist_"))
subprocess.run([sys.executable, str(root / "build_addon.py"), "--dist", str(dist)], check=True, capture_output=True)
zip_path = next(dist.glob("wav2sem_lipsync-*-extension.zip"))
assert bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                enable_on_install=True) == {"FINISHED"}
package = "bl_ext.user_default.wav2sem_lipsync"
os.environ["WAV2SEM_PYTHON"] = sys.executable
os.environ.pop("WAV2SEM_MODEL", None)
prefs = bpy.context.preferences.addons[package].preferences
prefs.model, prefs.device, prefs.backend_threads = "", "cpu", threads
sys.path.insert(0, str(root / "blend_examples"))
import ict_head
head = ict_head.build_ict_head(bpy, "ICT")
bpy.context.view_layer.objects.active = head
prewarm, client = sys.modules[package + ".prewarm"], sys.modules[package + ".client"]
t0 = time.perf_counter()
prewarm.from_panel(bpy.context)                 # what the panel's draw does
while (delay := prewarm._tick()) is not None:  # Blender's timer, run by hand (no event loop here)
    time.sleep(delay)
ready = time.perf_counter() - t0
assert prewarm.last_error is None, prewarm.last_error
clicks = []
for _ in range(3):
    start = time.perf_counter()
    assert bpy.ops.wav2sem.generate_lipsync(object="ICT", audio_path=audio) == {"FINISHED"}
    clicks.append(time.perf_counter() - start)
client.POOL.close()
Path(out).write_text(json.dumps({"prewarm_ready": ready, "first_click": clicks[0],
                                 "warm_click": sum(clicks[1:]) / 2, "clicks": clicks}))
"""


def click_case(threads: str | None, clip: Path, folder: Path) -> dict:
    """The add-on in Blender 5.0 (bpy module): prewarm as the panel's first draw does, then
    Generate on the ICT head (its ARKit keys, the default model) from the click to the
    written take; the first click and the mean of two more."""
    out = folder / "click.json"
    n = "0" if threads in (None, "auto") else threads
    subprocess.run([PYTHON, "-c", CLICK_CODE, str(ROOT), str(clip), n, str(out)], check=True, capture_output=True,
                   timeout=600)
    return json.loads(out.read_text())


KEYS = (("cold_hello", "cold: hello"), ("cold_result_10", "cold: first result, 10 s"),
        ("cold_result_60", "cold: first result, 60 s"), ("warm_10", "warm request, 10 s"),
        ("warm_60", "warm request, 60 s"), ("prewarm_ready", "prewarm: hello + model_info answered"),
        ("prewarmed_first_10", "prewarmed: first generate, 10 s"), ("infer_10", "cold `wav2sem infer`, 10 s"))
CLICK_KEYS = (("click_prewarm_ready", "add-on: panel drawn -> prewarm done"),
              ("click_first", "add-on: first Generate after the prewarm, 10 s (click -> take written)"),
              ("click_warm", "add-on: later Generate, 10 s (mean of 2)"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["1", "2", "auto"],
                        help="threads settings; 'shipped' = no --threads flag")
    parser.add_argument("--label", default="startup", help="results/<label>.md + .json")
    parser.add_argument("--no-phases", action="store_true")
    parser.add_argument("--no-clicks", action="store_true", help="skip the add-on (bpy module) measurement")
    parser.add_argument("--busy", type=int, default=0, help="other busy processes running all the while")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    with tempfile.TemporaryDirectory(prefix="wav2sem_startup_") as tmp, other_load(args.busy):
        folder = Path(tmp)
        clips = make_clips(folder)
        for r in range(args.rounds):
            order = args.modes if r % 2 == 0 else list(reversed(args.modes))
            for mode in order:
                threads = None if mode == "shipped" else mode
                case = serve_case(threads, clips, folder, args.warm_runs)
                case["infer_10"] = infer_case(threads, clips[10], folder)
                if not args.no_clicks:
                    click = click_case(threads, clips[10], folder)
                    case.update(click_prewarm_ready=click["prewarm_ready"], click_first=click["first_click"],
                                click_warm=click["warm_click"])
                case["load1"] = os.getloadavg()[0]
                runs[mode].append(case)
                print(f"round {r + 1} threads {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in case.items()),
                      file=sys.stderr)
        phases = None if args.no_phases else phase_case(clips, args.rounds)
    load_after = os.getloadavg()
    keys = KEYS + (() if args.no_clicks else CLICK_KEYS)
    medians = {mode: {key: statistics.median(c[key] for c in cases) for key, _ in keys} for mode, cases in runs.items()}
    result = {"started": started, "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                             f"{platform.python_version()}",
              "load_average_before": load_before, "load_average_after": load_after,
              "load1_per_round": {m: [c["load1"] for c in cases] for m, cases in runs.items()},
              "rounds": args.rounds, "warm_runs": args.warm_runs, "busy_processes": args.busy,
              "medians_s": medians, "runs": runs,
              "phases_s": phases}
    lines = [f"# Backend start-up ({started}, {result['machine']}, CPU, default model)", "",
             f"Load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, after "
             f"{tuple(round(x, 2) for x in load_after)}. "
             + (f"{args.busy} other busy processes (one float32 matrix-product thread each) ran all the while. "
                if args.busy else "Nothing else ran. ")
             + f"Medians of {args.rounds} alternating rounds; seconds.", "",
             "| measure | " + " | ".join(f"threads {m}" for m in args.modes) + " |",
             "| --- | " + " | ".join("---:" for _ in args.modes) + " |"]
    for key, name in keys:
        lines.append(f"| {name} | " + " | ".join(f"{medians[m][key]:.2f}" for m in args.modes) + " |")
    if phases:
        lines += ["", "In-process phases (seconds, medians; model loaded, after a warm-up):", "",
                  "| clip | threads | speech encoder | Wav2Sem | decoder |", "| ---: | ---: | ---: | ---: | ---: |"]
        for key, value in phases.items():
            seconds, n = key.split("/")
            lines.append(f"| {seconds} s | {n} | {value['encoder']:.3f} | {value['semantic']:.3f} | "
                         f"{value['decoder']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.label}.md").write_text(text)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
