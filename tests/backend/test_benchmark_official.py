"""benchmarks/faceformer_official.py without the official FaceFormer code: one line saying how
to get it, exit 0, nothing written (the comparison itself needs the copy; CI has none)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "faceformer_official.py"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_skips_cleanly_without_the_official_copy(tmp_path):
    out = tmp_path / "results" / "faceformer_official"
    proc = run("--official", "/nonexistent", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "SKIP" in proc.stdout and "/nonexistent" in proc.stdout
    assert "git clone https://github.com/EvelynFan/FaceFormer" in proc.stdout
    assert not out.parent.exists()


def test_names_the_missing_file_and_reads_faceformer_dir(tmp_path):
    partial = tmp_path / "FaceFormer"
    partial.mkdir()
    (partial / "faceformer.py").write_text("raise SystemExit('must not be imported')\n")
    proc = run("--out", str(tmp_path / "r" / "x"), env={"FACEFORMER_DIR": str(partial)})
    assert proc.returncode == 0, proc.stderr
    assert str(partial) in proc.stdout and "wav2vec.py" in proc.stdout and "faceformer.py," not in proc.stdout
    assert not (tmp_path / "r").exists()
