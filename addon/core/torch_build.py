"""Which torch build Install Backend asks pip for, no bpy.

pip's default torch wheels on Linux and Windows are CUDA builds that pull about 15 nvidia
wheels (several GB); without an NVIDIA GPU they are dead weight, so there the CPU build comes
first from the PyTorch CPU index. macOS's default wheels are CPU/MPS builds already. The
decision (`choose_torch`) is a pure function of what `find_nvidia_gpus` saw.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# pip options that choose where packages come from: the user has decided, we add no index.
_LONG_INDEX_OPTIONS = ("--index-url", "--extra-index-url", "--no-index", "--find-links")
PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class TorchChoice:
    description: str                 # one line for the status, "torch: CPU build (no NVIDIA GPU found)"
    index_url: str | None = None     # install torch first from this index; None: with the rest, pip's default


def names_an_index(pip_args: Sequence[str]) -> bool:
    """True when the arguments choose the index or the wheel folders (--index-url, -i URL, -iURL, ...)."""
    return any(arg.split("=", 1)[0] in _LONG_INDEX_OPTIONS or (arg[:2] in ("-i", "-f") and not arg.startswith("--"))
               for arg in pip_args)


def choose_torch(system: str, nvidia_gpus: Sequence[str], pip_args: Sequence[str] = ()) -> TorchChoice:
    """system: platform.system(); nvidia_gpus: names from find_nvidia_gpus()."""
    if names_an_index(pip_args):
        return TorchChoice("torch: from the package index in your pip arguments")
    if system == "Darwin":
        return TorchChoice("torch: default build (CPU and Apple GPU on macOS)")
    if nvidia_gpus:
        name = nvidia_gpus[0]
        return TorchChoice(f"torch: CUDA build ({name if name.upper().startswith('NVIDIA') else 'NVIDIA ' + name})")
    return TorchChoice("torch: CPU build (no NVIDIA GPU found)", CPU_INDEX)


def parse_nvidia_smi(output: str) -> list[str]:
    """GPU names from `nvidia-smi -L` ("GPU 0: NVIDIA H200 (UUID: GPU-...)")."""
    return [m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?\s*$", output, re.M)]


def parse_proc_information(text: str) -> str:
    """The GPU name from /proc/driver/nvidia/gpus/<bus>/information ("Model: \t NVIDIA ...")."""
    match = re.search(r"^Model:\s*(.+?)\s*$", text, re.M)
    return match.group(1) if match else "GPU"


def find_nvidia_gpus(timeout: float = 10.0) -> list[str]:
    """Names of the NVIDIA GPUs here: nvidia-smi when it runs and lists one, else the driver's
    /proc entries (Linux). Blocking, usually well under a second."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=timeout)
            gpus = parse_nvidia_smi(result.stdout) if result.returncode == 0 else []
            if gpus:
                return gpus
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        entries = sorted(PROC_GPUS.iterdir())
    except OSError:
        return []
    names = []
    for entry in entries:
        try:
            names.append(parse_proc_information((entry / "information").read_text(errors="replace")))
        except OSError:
            names.append("GPU")
    return names


def torch_requirement(source_dir: str | Path) -> str:
    """The backend's own torch requirement ("torch>=2.1") from its pyproject.toml."""
    try:
        text = (Path(source_dir) / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "torch"
    match = re.search(r"""["'](torch(?![\w-])[^"';]*)["']""", text)
    return match.group(1).replace(" ", "") if match else "torch"
