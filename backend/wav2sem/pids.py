"""Whether a process id belongs to a live process (to clean what dead backends left behind)."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":   # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)     # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        still_active = kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) and code.value == 259
        kernel32.CloseHandle(handle)
        return bool(still_active)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # alive, owned by someone else
        return True
    return True


def pid_in_name(name: str, prefix: str) -> int | None:
    """`<prefix><pid>-...` -> pid, else None."""
    if not name.startswith(prefix):
        return None
    digits = name[len(prefix):].split("-", 1)[0]
    return int(digits) if digits.isdigit() else None
