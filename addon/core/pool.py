"""The warm backend shared by all operators, without bpy."""
from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Sequence

from .backend_process import BackendProcess
from .backend_python import PythonChoice


@dataclass(frozen=True)
class Launch:
    """How a backend is started: which Python, and the arguments after `wav2sem serve`."""
    python: PythonChoice
    args: tuple[str, ...] = ()


class BackendPool:
    """Keeps at most one backend warm; restarts it when it died or its launch changed (the
    Python, or the arguments after `serve` such as `--threads`).

    Main thread only. `close()` is called on add-on unregister and at exit."""

    def __init__(self) -> None:
        self._backend: BackendProcess | None = None

    @property
    def backend(self) -> BackendProcess | None:
        """The backend kept now, if any (it may have died since)."""
        return self._backend

    def busy(self) -> bool:
        """Whether a job still waits on the kept backend."""
        return self._backend is not None and self._backend.alive and bool(self._backend.waiting_ops())

    def get(self, python: str, args: Sequence[str] = ()) -> tuple[BackendProcess, bool]:
        """A started backend and whether it is new (then nobody has checked its hello yet).

        `args`: the arguments after `serve` (Launch.args); a backend started with other ones,
        or another Python, is closed and a fresh one started. Does not wait for the
        backend to import torch. Raises BackendError(START_FAILED)."""
        args = tuple(args)
        backend = self._backend
        if backend is not None and (not backend.alive or backend.python != python or backend.args != args):
            self.close()
            backend = None
        if backend is not None:
            return backend, not backend.greeted
        backend = BackendProcess(python, args=args)
        backend.start()
        self._backend = backend
        return backend, True

    def release(self, keep_warm: bool) -> None:
        """A job ended: stop the backend unless it is kept warm or another job still waits on it."""
        if not keep_warm and self._backend is not None and not self._backend.waiting_ops():
            self.close()

    def close(self) -> None:
        """Stop the backend (never raises); the next `get` starts a fresh one."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()


POOL = BackendPool()
# Blender does not unregister add-ons when it quits; the backend would also end on the
# end of its stdin, but say goodbye properly.
atexit.register(POOL.close)
