"""`wav2sem serve`'s operations: hello, model_info, generate and fit_face. Each takes a
request's params and returns its protocol result (protocol.py); a failure the user can act on
is a Wav2SemError sentence. No transport here: transport.py hands each operation a
`RequestHandle` for its progress, its cancel and the commit of its outputs.

Cheap checks come first, then the audio (a wrong path costs no model load), then the model.
Torch and the inference code are imported inside the operations, so the server reads its
first line while the worker imports them (`Operations.prepare`).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from .. import __version__, protocol
from ..errors import BAD_REQUEST, OUTPUT_UNWRITABLE, Wav2SemError, reason
from .model_cache import ModelCache

if TYPE_CHECKING:
    from ..loaded_model import LoadedModel

KEEP_THREADS = "keep"      # in-process servers (tests) leave the process's torch threads alone
MODEL_CACHE_SIZE = 2       # models kept loaded (model_cache.py)


class RequestHandle(Protocol):
    """What an operation sees of its request (transport.Job)."""

    def progress(self, stage: str, fraction: float, message: str) -> None:
        """A progress event for the request (rate-limited by the transport)."""

    def cancelled(self) -> bool:
        """Whether a cancel for the request arrived."""

    def commit(self, write: Callable[[], None]) -> None:
        """Run `write` (which puts the outputs in place) unless the request was cancelled,
        under the lock `cancel` takes; raises Cancelled if it was."""


class Operations:
    """The server's state (loaded models, the temporary folder's files) and its operations.
    model_info, generate and fit_face run on the worker thread, one at a time; hello on any."""

    def __init__(self, workdir: Path, default_model: str | None = None, default_device: str = "auto",
                 threads: int | str | None = KEEP_THREADS):
        self.workdir = workdir
        self.default_model = default_model
        self.default_device = default_device
        self.threads = threads              # --threads: None = auto, N, or KEEP_THREADS
        self.models: ModelCache[LoadedModel] = ModelCache(MODEL_CACHE_SIZE)
        self._output_numbers = itertools.count(1)
        self._prepare_lock = threading.Lock()
        self._prepared = False

    def prepare(self) -> None:
        """Import torch and the inference code (most of a cold start) and set the thread
        policy, once, before any torch work. Blocks; any thread."""
        with self._prepare_lock:
            if self._prepared:
                return
            self._prepared = True
            from .. import audio, inference, outputs  # noqa: F401
            from ..threads import configure_threads

            if self.threads != KEEP_THREADS:
                configure_threads(self.threads)   # type: ignore[arg-type]

    # ----- hello ----------------------------------------------------------------------------
    def hello(self, params: dict, request: RequestHandle) -> protocol.Hello:
        import torch

        from ..loaded_model import available_devices

        self.prepare()
        threads = "auto" if self.threads is None else torch.get_num_threads() if self.threads == KEEP_THREADS \
            else self.threads
        return protocol.Hello(protocol.PROTOCOL_VERSION, __version__, torch.__version__, tuple(available_devices()),
                              sys.version.split()[0], threads)

    # ----- model_info -----------------------------------------------------------------------
    def model_info(self, params: dict, request: RequestHandle) -> protocol.ModelInfo:
        model = self._model(*self._model_choice(params))
        folder = self._model_files(model)
        bundle = model.bundle
        faces = folder / "faces.npy"
        return protocol.ModelInfo(
            name=bundle.config.name, fps=bundle.config.fps, vertex_count=model.vertex_count,
            template=str(folder / "template.npy"), faces=str(faces) if faces.is_file() else None,
            subjects=tuple(bundle.config.subjects),
            regions={name: str(folder / f"region_{name}.npy") for name in bundle.template.regions},
            landmarks=dict(bundle.template.landmarks), output=model.output, channels=tuple(model.channels),
            blendshapes=str(folder / "blendshapes.npy") if model.predicts_weights else None,
            output_basis=str(folder / "output_basis.npy") if model.factored else None,
            semantic=model.net.has_semantic, directory=str(bundle.directory), description=bundle.config.description)

    def _model_files(self, model: LoadedModel) -> Path:
        """The model's arrays as .npy files in the server's folder, written once per model.
        They are written into a staging folder renamed into place when complete, so a failed
        write (a full temporary folder) leaves nothing that a later model_info would serve as
        whole; the next model_info writes them again."""
        folder = self.workdir / f"model-{abs(hash(model.key)):x}"
        if folder.is_dir():
            return folder
        template = model.bundle.template
        arrays: dict[str, Any] = {"template": template.vertices,
                                  **{f"region_{name}": index for name, index in template.regions.items()}}
        if template.faces is not None:
            arrays["faces"] = template.faces
        if model.predicts_weights:                  # (K, V, 3) float32, in the channels' order
            arrays["blendshapes"] = template.blendshape_deltas
        if model.factored:                          # (R, V, 3) float32: offsets = coefficients @ basis
            arrays["output_basis"] = model.output_basis()
        staging = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=self.workdir))
            for name, array in arrays.items():
                np.save(staging / f"{name}.npy", array)
            os.rename(staging, folder)
        except OSError as exc:
            raise Wav2SemError(OUTPUT_UNWRITABLE, f"The temporary folder {self.workdir.parent} is full or cannot be "
                                                  f"written ({reason(exc)}); free some space there and try again.") from exc
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return folder

    # ----- generate -------------------------------------------------------------------------
    def generate(self, params: dict, request: RequestHandle) -> protocol.GenerateResult:
        from ..audio import load_audio
        from ..inference import generate
        from ..outputs import check_output_path, commit_all, discard_partials, write_partial

        audio = _text(params, "audio", "the path of a sound file")
        if audio is None:
            raise Wav2SemError(BAD_REQUEST, 'generate needs "audio": the path of a sound file.')
        semantic, want_offsets, want_factors = (_flag(params, key, default) for key, default in
                                                (("semantic", True), ("offsets", True), ("factors", False)))
        texts = {key: _text(params, key, "the path of a .npy file")
                 for key in ("output", "weights_output", "coefficients_output")}
        number = next(self._output_numbers)
        defaults = {"output": "offsets", "weights_output": "weights", "coefficients_output": "coefficients"}
        paths = {key: Path(text) if (text := texts[key]) else self.workdir / f"{stem}-{number}.npy"
                 for key, stem in defaults.items()}
        for path in paths.values():
            check_output_path(path)
        given = [key for key in paths if texts[key]]
        for i, first in enumerate(given):
            for second in given[i + 1:]:
                if _same_file(paths[first], paths[second]):
                    raise Wav2SemError(BAD_REQUEST, f'"{first}" and "{second}" must be different files.')
        output, weights_output, coefficients_output = paths.values()
        choice = self._model_choice(params)
        waveform = load_audio(audio)              # before the model: a wrong path costs no model load
        model = self._model(*choice, request.progress)
        # factors: a factored vertex model also sends its coefficients; offsets: false skips the
        # dense array where weights or coefficients stand for it (else a vertex model sends it)
        factors = want_factors and model.factored
        want_offsets = want_offsets or not (model.predicts_weights or factors)
        result = generate(model, waveform, subject=params.get("subject"), semantic=semantic,
                          progress=request.progress, should_cancel=request.cancelled, offsets=want_offsets,
                          factors=factors)
        outputs = [(path, array) for path, array in ((weights_output, result.weights),
                                                     (coefficients_output, result.coefficients),
                                                     (output, result.offsets)) if array is not None]
        writes: list[tuple[Path, Path]] = []      # (partial, final path): all written before any is renamed
        try:
            for path, array in outputs:
                writes.append((write_partial(path, array), path))
            request.commit(lambda: commit_all(writes))
        finally:
            discard_partials(writes)
        return protocol.GenerateResult(
            offsets=str(output) if result.offsets is not None else None, frames=result.frames, fps=result.fps,
            vertex_count=model.vertex_count, model=model.bundle.config.name, seconds=round(result.seconds, 4),
            warnings=tuple(result.warnings), weights=str(weights_output) if result.weights is not None else None,
            channels=tuple(result.channels),
            coefficients=str(coefficients_output) if result.coefficients is not None else None)

    # ----- fit_face -------------------------------------------------------------------------
    def fit_face(self, params: dict, request: RequestHandle) -> protocol.FitResult:
        from ..errors import Cancelled
        from ..fit import fit_face
        from ..fit.files import read_mesh, write_keys
        from ..outputs import check_output_path

        mesh_path = _text(params, "mesh", "the path of the mesh's .npz file")
        if mesh_path is None:
            raise Wav2SemError(BAD_REQUEST, 'fit_face needs "mesh": the path of the mesh\'s .npz file.')
        include_eyes = _flag(params, "include_eyes", False)
        landmarks = params.get("landmarks")
        if landmarks is not None and not isinstance(landmarks, dict):
            raise Wav2SemError(BAD_REQUEST, '"landmarks" must be an object {name: [x, y, z]}.')
        output_text = _text(params, "output", "the path of a .npz file")
        output = Path(output_text) if output_text else self.workdir / f"fit-{next(self._output_numbers)}.npz"
        check_output_path(output, ".npz")
        mesh = read_mesh(mesh_path)

        def progress(fraction: float, message: str) -> None:
            if request.cancelled():
                raise Cancelled()
            request.progress("fit", fraction, message)

        result = fit_face(mesh["vertices"], mesh["loop_totals"], mesh["loop_vertices"], mesh["object_ids"],
                          landmarks=landmarks or None, include_eyes=include_eyes, progress=progress)
        request.commit(lambda: write_keys(output, result.names, result.deltas, result.landmarks))
        return protocol.FitResult(
            keys=str(output), names=tuple(result.names),
            landmarks={name: (float(p[0]), float(p[1]), float(p[2])) for name, p in result.landmarks.items()},
            report=result.report, seconds=round(result.report["seconds"], 3))

    # ----- models ---------------------------------------------------------------------------
    def _model_choice(self, params: dict) -> tuple[Path, str]:
        """The bundle folder and device a request names (or the server's defaults), checked
        without loading anything."""
        from ..bundle import resolve_bundle_dir
        from ..loaded_model import resolve_device

        path = resolve_bundle_dir(_text(params, "model", "the path of a model bundle folder") or self.default_model)
        device = resolve_device(_text(params, "device", "'auto', 'cpu' or 'cuda'") or self.default_device)
        return path, str(device)

    def _model(self, path: Path, device: str,
               progress: Callable[[str, float, str], None] | None = None) -> LoadedModel:
        from ..loaded_model import load_model

        key = (str(path.resolve()), device)
        report = progress if progress is not None and key not in self.models else None
        if report:
            report("load", 0.0, f"loading model {path.name}")
        model = self.models.get(key, lambda: load_model(path, device))
        if report:
            report("load", 1.0, "model loaded")
        return model


def _flag(params: dict, key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise Wav2SemError(BAD_REQUEST, f'"{key}" must be true or false.')
    return value


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return a.absolute() == b.absolute()


def _text(params: dict, key: str, what: str) -> str | None:
    """An optional string parameter ("" counts as absent); anything else is a BAD_REQUEST."""
    value: Any = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Wav2SemError(BAD_REQUEST, f'"{key}" must be {what} (a string), not {json.dumps(value)[:40]}.')
    return value
