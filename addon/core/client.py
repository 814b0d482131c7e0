"""The backend client, as one import for the operators (all without bpy).

backend_python: which interpreter runs the backend; backend_process: the child process and
the routing of its events to per-request inboxes; jobs: CheckJob, GenerateJob and FitJob, advanced
by polling; pool: the warm backend shared by all operators.
"""
from __future__ import annotations

from .backend_process import START_FAILED, BackendProcess, Inbox, died_error
from .backend_python import (NOT_INSTALLED, PYTHON_ENV_VAR, PythonChoice, current_python_can_import_backend,
                             managed_python, resolve_backend_python)
from .errors import BackendError, last_error_line
from .jobs import (BUSY_MESSAGE, CANCEL_GRACE_S, STAGE_SPANS, WATCHDOG_S, CheckJob, FitJob, FitRequest, GenerateJob,
                   GenerateRequest, ModelCheck, check_hello, overall_fraction)
from .pool import POOL, BackendPool, Launch

__all__ = ["BUSY_MESSAGE", "CANCEL_GRACE_S", "NOT_INSTALLED", "POOL", "PYTHON_ENV_VAR", "STAGE_SPANS", "START_FAILED",
           "WATCHDOG_S", "BackendError", "BackendPool", "Launch", "BackendProcess", "CheckJob", "FitJob", "FitRequest",
           "GenerateJob", "GenerateRequest", "Inbox", "ModelCheck", "PythonChoice", "check_hello",
           "current_python_can_import_backend", "died_error", "last_error_line", "managed_python", "overall_fraction",
           "resolve_backend_python"]
