"""The warm backend shared by all operators, without bpy."""
from __future__ import annotations

import atexit

from .backend_process import BackendProcess


class BackendPool:
    """Keeps at most one backend warm; restarts it when it died or the Python changed.

    Main thread only. `close()` is called on add-on unregister and at exit."""

    def __init__(self) -> None:
        self._backend: BackendProcess | None = None

    def get(self, python: str) -> tuple[BackendProcess, bool]:
        """A started backend and whether it is new (then nobody has said hello to it yet).

        Does not wait for the backend to import torch. Raises BackendError(START_FAILED)."""
        backend = self._backend
        if backend is not None and (not backend.alive or backend.python != python):
            self.close()
            backend = None
        if backend is not None:
            return backend, False
        backend = BackendProcess(python)
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
