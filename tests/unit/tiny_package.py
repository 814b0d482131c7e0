"""A tiny local stand-in for the backend source, installable offline in seconds.

It is a real pip-installable project named ``wav2sem`` (so the installer's check and
``python -m wav2sem --version`` run as for the real backend) with a stdlib-only, in-tree
PEP 517 build backend: pip needs nothing from an index to build it. With
``TINY_BUILD_SIGNAL=<file>`` in the environment the build writes its pid to that file and
sleeps, so a test can cancel an install while pip is busy.
"""
from __future__ import annotations

from pathlib import Path

PYPROJECT = """\
[build-system]
requires = []
build-backend = "tiny_build"
backend-path = ["."]

[project]
name = "wav2sem"
version = "{version}"
"""

BUILD_BACKEND = '''\
import base64, hashlib, os, time, zipfile

NAME, VERSION = "wav2sem", open(os.path.join(os.path.dirname(__file__), "VERSION")).read().strip()
FILES = {
    "wav2sem/__init__.py": f"__version__ = {VERSION!r}\\n",
    "wav2sem/__main__.py": "import sys, wav2sem\\nif sys.argv[1:] == ['--version']:\\n"
                           "    print('wav2sem', wav2sem.__version__)\\n",
}


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    signal = os.environ.get("TINY_BUILD_SIGNAL")
    if signal:
        with open(signal, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    info = f"{NAME}-{VERSION}.dist-info"
    files = {name: text.encode() for name, text in FILES.items()}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel
'''


def write_tiny_package(folder: Path, version: str = "0.0.1") -> Path:
    """Writes the project into `folder` and returns it (a folder with pyproject.toml)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(version=version))
    (folder / "tiny_build.py").write_text(BUILD_BACKEND)
    (folder / "VERSION").write_text(version)
    return folder
