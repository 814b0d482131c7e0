"""Wav2Sem backend: speech -> per-frame 3D face vertex offsets (see docs/DESIGN.md)."""

__version__ = "0.1.0"
