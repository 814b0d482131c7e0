"""Writing results so that a failure never leaves a half-written or wrong file behind.

An output is written to a partial file beside it, named `.wav2sem-partial-<pid>-...`, then
renamed over it; several outputs of one run are all written before any is renamed
(`commit_all`). Files get the permissions of any new file (0o666 less the umask), as bundles
do. A process killed outright (kill -9) cannot remove its partial file; the next write into
that folder removes partial files whose process is gone."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import IO, Callable

import numpy as np

from .errors import BAD_REQUEST, OUTPUT_UNWRITABLE, Wav2SemError
from .pids import pid_alive, pid_in_name

PARTIAL_PREFIX = ".wav2sem-partial-"


def check_output_path(path: str | Path, suffix: str = ".npy") -> Path:
    """Fail early (before any work) on an output path that cannot be written."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise Wav2SemError(BAD_REQUEST, f"Output {path.name} must end in {suffix}.")
    if path.is_dir():
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"Output {path} is a folder; give a file name ending in {suffix}.")
    if not path.parent.is_dir():
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"The folder for the output, {path.parent}, does not exist.")
    if not os.access(path.parent, os.W_OK):
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"The folder {path.parent} is not writable.")
    return path


def write_partial(path: str | Path, array: np.ndarray) -> Path:
    """np.save into a new partial file beside `path`; returns it. Nothing is left on failure."""
    path = check_output_path(path)
    return _partial_file(path, ".npy", "wb", lambda handle: np.save(handle, array))


def write_partial_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """np.savez of the named arrays into a new partial file beside `path`; returns it."""
    path = check_output_path(path, ".npz")
    return _partial_file(path, ".npz", "wb", lambda handle: np.savez(handle, **arrays))


def _partial_file(path: Path, suffix: str, mode: str, write: Callable[[IO], None]) -> Path:
    """A new partial file beside `path` (stale ones of dead processes removed first), filled
    by `write(handle)`; returns it. Nothing is left on failure; OSError -> OUTPUT_UNWRITABLE."""
    remove_stale_partials(path.parent)
    tmp = path.parent / f"{PARTIAL_PREFIX}{os.getpid()}-{path.stem[:40]}-{uuid.uuid4().hex[:12]}{suffix}"
    try:
        # 0o666: the OS takes the umask off, as for any new file (tempfile.mkstemp's 0o600 would not)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    try:
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding="utf-8" if text else None, newline="\n" if text else None) as handle:
            write(handle)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from exc
        raise
    return tmp


def commit_partial(partial: Path, path: str | Path) -> None:
    """Rename a partial file over `path` (atomic on POSIX and Windows)."""
    try:
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise _unwritable(Path(path), exc) from exc


def commit_all(writes: list[tuple[Path, Path]]) -> None:
    """Rename each (partial, path) of one run, all or nothing: on a failure the partials left
    and the outputs already renamed in this call are removed, so no half result stays."""
    done: list[Path] = []
    try:
        for partial, path in writes:
            commit_partial(partial, path)
            done.append(Path(path))
    except BaseException:
        for partial, _ in writes:
            partial.unlink(missing_ok=True)
        for path in done:
            path.unlink(missing_ok=True)
        raise


def discard_partials(writes: list[tuple[Path, Path]]) -> None:
    """Remove the partial files of (partial, path) pairs not committed (after a failure)."""
    for partial, _ in writes:
        partial.unlink(missing_ok=True)


def write_partial_json(path: str | Path, data: object) -> Path:
    """`data` as UTF-8 JSON into a new partial file beside `path`; returns it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"The folder for the output, {path.parent}, does not exist.")

    def write(handle: IO) -> None:
        json.dump(data, handle, indent=2)
        handle.write("\n")

    return _partial_file(path, ".json", "w", write)


def remove_stale_partials(folder: Path) -> None:
    """Remove partial files in `folder` left by processes that no longer run."""
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    except OSError:
        return
    for partial in names:
        pid = pid_in_name(partial.name, PARTIAL_PREFIX)
        if pid is not None and not pid_alive(pid):
            partial.unlink(missing_ok=True)


def _unwritable(path: Path, exc: OSError) -> Wav2SemError:
    reason = exc.strerror or str(exc)
    return Wav2SemError(OUTPUT_UNWRITABLE, f"Cannot write {path.name} in {path.parent} ({reason}); "
                                           "free disk space or choose another folder.")
