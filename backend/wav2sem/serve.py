"""`wav2sem serve`: the JSON-lines backend the add-on talks to (protocol in docs/DESIGN.md).

Threads: the main thread reads stdin (bytes, decoded as UTF-8 per line whatever the locale)
and answers `cancel`/`shutdown` at once; `hello` runs on a side thread so it is answered
while a generate runs; one worker thread runs `model_info` and `generate` in order, so models
load once and stay loaded. Protocol lines go to the original stdout only, as UTF-8; file
descriptor 1 is pointed at stderr so stray prints from libraries can never corrupt it. The
worker imports torch at once (while the first line is awaited) and sets torch's intra-op
threads from `--threads auto|N` (inference.configure_threads) before any model loads.

End of input lets queued and running work finish, then exits; `shutdown`, SIGTERM and Ctrl-C
cancel it. A generate's output is renamed into place only while its cancel is not set, under
the same lock `cancel` takes: a cancelled request never gets a result.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import queue
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import PROTOCOL_VERSION, __version__
from .cli import add_threads_argument
from .errors import BAD_REQUEST, INTERNAL, Cancelled, Wav2SemError
from .serve_workdir import make_workdir

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL_S = 0.2   # at most ~5 progress events a second per request...
PROGRESS_MIN_STEP = 0.05        # ...unless the fraction moved this much or the stage changed
WORKER_OPS = ("model_info", "generate", "fit_face")
KEEP_THREADS = "keep"


class Terminated(BaseException):
    """SIGTERM: stop now, as Ctrl-C does (raised in the main thread by the signal handler)."""


@dataclass
class Job:
    id: Any
    op: str
    params: dict
    cancel: threading.Event = field(default_factory=threading.Event)


class Server:
    """Handles parsed requests; `out` receives protocol lines. Thread-safe writes."""

    def __init__(self, out: IO[str], default_model: str | None = None, default_device: str = "auto",
                 threads: int | str | None = KEEP_THREADS):
        self.out = out
        self.default_model = default_model
        self.default_device = default_device
        # --threads: None = auto (inference.configure_threads); KEEP_THREADS (in-process
        # servers, tests) leaves the process's torch setting alone
        self.threads = threads
        self.workdir = make_workdir()
        self._output_numbers = itertools.count(1)
        self._write_lock = threading.Lock()
        self._jobs: "queue.Queue[Job | None]" = queue.Queue()
        self._pending: dict[Any, Job] = {}
        self._pending_lock = threading.Lock()
        self._models: dict[tuple, Any] = {}
        self._prepare_lock = threading.Lock()
        self._prepared = False
        self._worker = threading.Thread(target=self._work, name="wav2sem-worker", daemon=True)
        self._worker.start()

    # ----- output ---------------------------------------------------------------------
    def send(self, message: dict) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._write_lock:
            self.out.write(line)
            self.out.flush()

    def send_error(self, request_id, code: str, message: str, tb: str | None = None, extra: dict | None = None) -> None:
        error = {"code": code, "message": message, **(extra or {})}
        if tb:
            error["traceback"] = tb
        self.send({"id": request_id, "type": "error", "error": error})

    # ----- input (main thread) --------------------------------------------------------
    def handle_line(self, line: bytes | str) -> bool:
        """Parse and dispatch one line. Returns False when the server should stop."""
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                self.send_error(None, BAD_REQUEST, "Request is not valid UTF-8 text; send JSON encoded as UTF-8.")
                return True
        if not line.strip():
            return True
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:   # JSONDecodeError, int digit limit, deep nesting
            self.send_error(None, BAD_REQUEST, f"Request is not valid JSON ({str(exc)[:120]}).")
            return True
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            rid = request.get("id") if isinstance(request, dict) else None
            self.send_error(rid if _is_scalar(rid) else None, BAD_REQUEST,
                            'A request must be a JSON object with "id", "op" and optional "params".')
            return True
        request_id, op = request.get("id"), request["op"]
        params = request.get("params")
        params = {} if params is None else params
        if not _is_scalar(request_id):
            self.send_error(None, BAD_REQUEST, '"id" must be a string, a finite number or null.')
            return True
        if not isinstance(params, dict):
            self.send_error(request_id, BAD_REQUEST, '"params" must be a JSON object.')
            return True
        if op == "cancel":
            self._cancel(request_id, params.get("target"))
        elif op == "shutdown":
            self.send({"id": request_id, "type": "result", "data": {}})
            return False
        elif op == "hello":      # answered at once, even while a generate runs
            threading.Thread(target=self._run, args=(Job(request_id, op, params),), daemon=True).start()
        elif op in WORKER_OPS:
            job = Job(request_id, op, params)
            with self._pending_lock:
                busy = request_id is not None and request_id in self._pending
                if not busy:
                    self._pending[request_id] = job
            if busy:
                self.send_error(request_id, BAD_REQUEST, f"Request id {request_id!r} is still in use by an unfinished request.")
            else:
                self._jobs.put(job)
        else:
            self.send_error(request_id, BAD_REQUEST, f"Unknown op {op[:40]!r}; expected one of hello, model_info, generate, fit_face, cancel, shutdown.")
        return True

    def _cancel(self, request_id, target) -> None:
        if not _is_scalar(target):
            self.send_error(request_id, BAD_REQUEST, '"target" must be the id (a string or number) of a request.')
            return
        with self._pending_lock:      # the lock a generate's commit takes: cancel is either in time or not found
            job = self._pending.get(target)
            if job is not None:
                job.cancel.set()
        self.send({"id": request_id, "type": "result", "data": {"target": target, "found": job is not None}})

    def _cancel_all(self) -> None:
        with self._pending_lock:
            for job in self._pending.values():
                job.cancel.set()

    def stop(self, drain: bool = False) -> None:
        """End the worker and remove temporary files. Main thread. `drain`: let queued and
        running requests finish first (end of input); else cancel them. Ctrl-C or SIGTERM
        while draining cancels what is left."""
        if not drain:
            self._cancel_all()
        self._jobs.put(None)
        try:
            while self._worker.is_alive():
                self._worker.join(0.2)
        except (KeyboardInterrupt, Terminated):
            self._cancel_all()
            self._worker.join(timeout=30)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ----- worker thread --------------------------------------------------------------
    def _prepare(self) -> None:
        """Import torch and the inference code (most of a cold start) and set the thread
        policy, once, before any torch work: the worker does it at once, while the main
        thread waits for the first line; hello waits for it."""
        with self._prepare_lock:
            if self._prepared:
                return
            self._prepared = True
            from . import audio, outputs  # noqa: F401
            from .inference import configure_threads

            if self.threads != KEEP_THREADS:
                configure_threads(self.threads)   # type: ignore[arg-type]

    def _work(self) -> None:
        try:
            self._prepare()
        except Exception:   # a broken torch: each request reports it
            log.exception("preparing the backend failed")
        while (job := self._jobs.get()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            if job.cancel.is_set():
                raise Cancelled()
            data = getattr(self, f"_op_{job.op}")(job)
            self.send({"id": job.id, "type": "result", "data": data})
        except Wav2SemError as exc:
            self.send_error(job.id, exc.code, exc.message, extra=_error_details(exc))
        except Exception as exc:  # keep serving after anything; the add-on shows the message
            log.exception("request %r failed", job.id)
            self.send_error(job.id, INTERNAL, f"Internal error in the backend: {exc!r}", traceback.format_exc())
        finally:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        with self._pending_lock:
            if self._pending.get(job.id) is job:
                del self._pending[job.id]

    def _model(self, job: Job, progress=None):
        from .bundle import resolve_bundle_dir
        from .inference import load_model, resolve_device

        path = resolve_bundle_dir(_text(job.params, "model", "the path of a model bundle folder") or self.default_model)
        device = resolve_device(_text(job.params, "device", "'auto', 'cpu' or 'cuda'") or self.default_device)
        key = (str(path.resolve()), str(device))
        if key not in self._models:
            if progress:
                progress("load", 0.0, f"loading model {path.name}")
            self._models[key] = load_model(path, str(device))
            if progress:
                progress("load", 1.0, "model loaded")
        return self._models[key]

    def _op_hello(self, job: Job) -> dict:
        import torch

        from .inference import available_devices

        self._prepare()
        threads = "auto" if self.threads is None else torch.get_num_threads() if self.threads == KEEP_THREADS \
            else self.threads
        return {"protocol": PROTOCOL_VERSION, "version": __version__, "torch": torch.__version__,
                "devices": available_devices(), "python": sys.version.split()[0], "threads": threads}

    def _op_model_info(self, job: Job) -> dict:
        model = self._model(job)
        bundle = model.bundle
        folder = self.workdir / f"model-{abs(hash(model.key)):x}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            np.save(folder / "template.npy", bundle.template.vertices)
            if bundle.template.faces is not None:
                np.save(folder / "faces.npy", bundle.template.faces)
            for name, idx in bundle.template.regions.items():
                np.save(folder / f"region_{name}.npy", idx)
            if model.predicts_weights:          # (K, V, 3) float32, in the channels' order
                np.save(folder / "blendshapes.npy", bundle.template.blendshape_deltas)
            if model.factored:                  # (R, V, 3) float32: offsets = coefficients @ basis
                np.save(folder / "output_basis.npy", model.output_basis())
        faces = folder / "faces.npy"
        return {
            "name": bundle.config.name, "fps": bundle.config.fps, "vertex_count": model.vertex_count,
            "template": str(folder / "template.npy"), "faces": str(faces) if faces.is_file() else None,
            "subjects": list(bundle.config.subjects), "semantic": model.net.has_semantic,
            "regions": {name: str(folder / f"region_{name}.npy") for name in bundle.template.regions},
            "landmarks": bundle.template.landmarks, "directory": str(bundle.directory),
            "description": bundle.config.description,
            "output": model.output, "channels": list(model.channels),
            "blendshapes": str(folder / "blendshapes.npy") if model.predicts_weights else None,
            "output_basis": str(folder / "output_basis.npy") if model.factored else None,
        }

    def _op_generate(self, job: Job) -> dict:
        from .audio import load_audio
        from .inference import generate
        from .outputs import check_output_path, commit_partial, write_partial

        params = job.params
        audio = _text(params, "audio", "the path of a sound file")
        if audio is None:
            raise Wav2SemError(BAD_REQUEST, 'generate needs "audio": the path of a sound file.')
        semantic = params.get("semantic", True)
        if not isinstance(semantic, bool):
            raise Wav2SemError(BAD_REQUEST, '"semantic" must be true or false.')
        want_offsets = params.get("offsets", True)
        if not isinstance(want_offsets, bool):
            raise Wav2SemError(BAD_REQUEST, '"offsets" must be true or false.')
        want_factors = params.get("factors", False)
        if not isinstance(want_factors, bool):
            raise Wav2SemError(BAD_REQUEST, '"factors" must be true or false.')
        texts = {key: _text(params, key, "the path of a .npy file")
                 for key in ("output", "weights_output", "coefficients_output")}
        number = next(self._output_numbers)
        defaults = {"output": "offsets", "weights_output": "weights", "coefficients_output": "coefficients"}
        paths = {key: Path(texts[key]) if texts[key] else self.workdir / f"{stem}-{number}.npy"
                 for key, stem in defaults.items()}
        for path in paths.values():
            check_output_path(path)
        given = [key for key in paths if texts[key]]
        for i, first in enumerate(given):
            for second in given[i + 1:]:
                if _same_file(paths[first], paths[second]):
                    raise Wav2SemError(BAD_REQUEST, f'"{first}" and "{second}" must be different files.')
        output, weights_output, coefficients_output = paths.values()
        progress = self._progress_sender(job.id)
        model = self._model(job, progress)
        # factors: a factored vertex model also sends its coefficients; offsets: false skips the
        # dense array where weights or coefficients stand for it (else a vertex model sends it)
        factors = want_factors and model.factored
        want_offsets = want_offsets or not (model.predicts_weights or factors)
        waveform = load_audio(audio)
        result = generate(model, waveform, subject=params.get("subject"), semantic=semantic,
                          progress=progress, should_cancel=job.cancel.is_set, offsets=want_offsets, factors=factors)
        writes = []                               # (partial, final path): all written before any is renamed
        try:
            if result.weights is not None:
                writes.append((write_partial(weights_output, result.weights), weights_output))
            if result.coefficients is not None:
                writes.append((write_partial(coefficients_output, result.coefficients), coefficients_output))
            if result.offsets is not None:
                writes.append((write_partial(output, result.offsets), output))
            with self._pending_lock:
                if job.cancel.is_set():
                    raise Cancelled()
                for partial, path in writes:
                    commit_partial(partial, path)
                if self._pending.get(job.id) is job:     # from now on a cancel finds nothing
                    del self._pending[job.id]
        finally:
            for partial, _ in writes:
                partial.unlink(missing_ok=True)
        return {"offsets": str(output) if result.offsets is not None else None, "frames": result.frames,
                "fps": result.fps, "vertex_count": model.vertex_count, "model": model.bundle.config.name,
                "seconds": round(result.seconds, 4), "warnings": result.warnings,
                "weights": str(weights_output) if result.weights is not None else None,
                "channels": list(result.channels),
                "coefficients": str(coefficients_output) if result.coefficients is not None else None}

    def _op_fit_face(self, job: Job) -> dict:
        from .fit import fit_face
        from .fit.files import read_mesh, write_keys
        from .outputs import check_output_path

        params = job.params
        mesh_path = _text(params, "mesh", "the path of the mesh's .npz file")
        if mesh_path is None:
            raise Wav2SemError(BAD_REQUEST, 'fit_face needs "mesh": the path of the mesh\'s .npz file.')
        include_eyes = params.get("include_eyes", False)
        if not isinstance(include_eyes, bool):
            raise Wav2SemError(BAD_REQUEST, '"include_eyes" must be true or false.')
        landmarks = params.get("landmarks")
        if landmarks is not None and not isinstance(landmarks, dict):
            raise Wav2SemError(BAD_REQUEST, '"landmarks" must be an object {name: [x, y, z]}.')
        output_text = _text(params, "output", "the path of a .npz file")
        output = Path(output_text) if output_text else self.workdir / f"fit-{next(self._output_numbers)}.npz"
        check_output_path(output, ".npz")
        mesh = read_mesh(mesh_path)
        send = self._progress_sender(job.id)

        def progress(fraction: float, message: str) -> None:
            if job.cancel.is_set():
                raise Cancelled()
            send("fit", fraction, message)

        result = fit_face(mesh["vertices"], mesh["loop_totals"], mesh["loop_vertices"], mesh["object_ids"],
                          landmarks=landmarks or None, include_eyes=include_eyes, progress=progress)
        with self._pending_lock:
            if job.cancel.is_set():
                raise Cancelled()
            write_keys(output, result.names, result.deltas, result.landmarks)
            if self._pending.get(job.id) is job:
                del self._pending[job.id]
        return {"keys": str(output), "names": list(result.names),
                "landmarks": {n: [float(c) for c in p] for n, p in result.landmarks.items()},
                "report": result.report, "seconds": round(result.report["seconds"], 3), "warnings": []}

    def _progress_sender(self, request_id):
        last = {"stage": None, "fraction": -1.0, "time": 0.0}

        def progress(stage: str, fraction: float, message: str) -> None:
            now = time.monotonic()
            if (stage != last["stage"] or fraction >= 1.0 or fraction - last["fraction"] >= PROGRESS_MIN_STEP
                    or now - last["time"] >= PROGRESS_MIN_INTERVAL_S):
                last.update(stage=stage, fraction=fraction, time=now)
                self.send({"id": request_id, "type": "progress", "stage": stage,
                           "fraction": round(float(fraction), 4), "message": message})

        return progress


def _error_details(exc: Wav2SemError) -> dict | None:
    """Extra fields of an error object: NO_FACE carries the landmark guess."""
    landmarks = getattr(exc, "landmarks", None)
    if landmarks is None:
        return None
    return {"landmarks": {n: [float(c) for c in p] for n, p in landmarks.items()}}


def _is_scalar(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return a.absolute() == b.absolute()


def _text(params: dict, key: str, what: str) -> str | None:
    """An optional string parameter ("" counts as absent); anything else is a BAD_REQUEST."""
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Wav2SemError(BAD_REQUEST, f'"{key}" must be {what} (a string), not {json.dumps(value)[:40]}.')
    return value


def _terminate(signum, frame) -> None:
    raise Terminated()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="default model bundle folder (else $WAV2SEM_MODEL, else the embedded default)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default device")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    # Keep the real stdout for protocol lines; everything else that writes to fd 1 goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", newline="\n", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    server = Server(protocol_out, args.model, args.device, getattr(args, "threads", None))
    log.info("wav2sem %s serving on stdin/stdout (protocol %d)", __version__, PROTOCOL_VERSION)
    drain = False
    try:
        for line in sys.stdin.buffer:       # bytes: each line is decoded as UTF-8, whatever the locale
            if not server.handle_line(line):
                break
        else:
            drain = True                    # end of input: finish what was asked for, then exit
    except (KeyboardInterrupt, Terminated):
        pass
    finally:
        server.stop(drain=drain)
    return 0
