"""The user nobody's file-permission refusals, injected into a process that runs as root (whom
the kernel never refuses): unprivileged.py's fallback where nobody cannot run this
environment (a clone under /root, say).

Inside the open folders (`OPEN_PREFIX*` folders in the temporary folder, unprivileged.open_folder)
a path is refused where the mode bits refuse "others" (nobody owns none of these files and is
in none of their groups): every folder on the way must be searchable (o+x), a file read
needs o+r, written o+w, and a new file o+w on its folder. A refusal is the kernel's:
PermissionError (EACCES) from open() and os.open(), False from os.access(). Paths elsewhere
are untouched.

Run as `python nobody_refusals.py -m MODULE ARGS` or `python nobody_refusals.py -c CODE ARGS`:
as `python -m`/`python -c`, with the refusals injected first.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
import runpy
import stat
import sys
import tempfile

OPEN_PREFIX = "wav2sem-perm-"


def _open_folder_of(path: str, temp: str) -> str | None:
    """The open folder in the temporary folder `temp` that `path` lies in (or is), else None."""
    first = os.path.relpath(path, temp).split(os.sep)[0]
    return os.path.join(temp, first) if first.startswith(OPEN_PREFIX) else None


def refused(path: object, want: int, temp: str) -> bool:
    """Whether nobody would be refused `want` (os.R_OK | os.W_OK | os.X_OK; os.F_OK only needs
    the way there) on `path`, for open folders in `temp`. A path that does not exist is refused
    only on the way to it or, when written, by its folder; the real call reports it missing."""
    if isinstance(path, int):              # a file descriptor: already open
        return False
    absolute = os.path.abspath(os.fsdecode(path))
    top = _open_folder_of(absolute, temp)
    if top is None:
        return False
    parts = os.path.relpath(absolute, top).split(os.sep)
    folders = [top] + [os.path.join(top, *parts[:i]) for i in range(1, len(parts))] if parts != ["."] else []
    for folder in folders:                 # search permission on every folder down to the parent
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return True
        except OSError:
            return False                   # missing on the way: the real call says so
    try:
        mode = os.stat(absolute).st_mode
    except OSError:                        # a new file: its folder must be writable
        return bool(want & os.W_OK) and bool(folders) and not os.stat(folders[-1]).st_mode & stat.S_IWOTH
    needed = ((stat.S_IROTH if want & os.R_OK else 0) | (stat.S_IWOTH if want & os.W_OK else 0)
              | (stat.S_IXOTH if want & os.X_OK else 0))
    return mode & needed != needed


def install() -> None:
    """Inject the refusals into open(), io.open(), os.open() and os.access() of this process."""
    real_open, real_os_open, real_access = builtins.open, os.open, os.access
    temp = os.path.abspath(tempfile.gettempdir())      # before patching: finding it opens files

    def _refuse(path: object, want: int) -> None:
        if refused(path, want, temp):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def open_refusing(file, mode="r", *args, **kwargs):
        want = (os.R_OK if "r" in mode or "+" in mode else 0) | (os.W_OK if set(mode) & set("wax+") else 0)
        _refuse(file, want)
        return real_open(file, mode, *args, **kwargs)

    def os_open_refusing(path, flags, *args, **kwargs):
        if kwargs.get("dir_fd") is None:
            access = flags & os.O_ACCMODE
            _refuse(path, {os.O_RDONLY: os.R_OK, os.O_WRONLY: os.W_OK}.get(access, os.R_OK | os.W_OK))
        return real_os_open(path, flags, *args, **kwargs)

    def access_refusing(path, mode, *args, **kwargs):
        if kwargs.get("dir_fd") is None and refused(path, mode, temp):
            return False
        return real_access(path, mode, *args, **kwargs)

    builtins.open = io.open = open_refusing
    os.open, os.access = os_open_refusing, access_refusing


def main() -> None:
    del sys.path[0]                        # this script's folder: only what `python -m` would see
    option, target, *args = sys.argv[1:]
    install()
    if option == "-m":
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif option == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.exit(f"usage: {os.path.basename(__file__)} -m MODULE ARGS | -c CODE ARGS")


if __name__ == "__main__":
    main()
