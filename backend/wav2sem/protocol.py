"""Messages of the add-on <-> `wav2sem serve` protocol (docs/DESIGN.md), without bpy.

One JSON object per line, UTF-8; the add-on writes pure ASCII (JSON escapes for the rest),
so a backend that reads stdin in another code page still reads every path right. Requests
go to the backend's stdin; events come back on its stdout. Big arrays travel as .npy paths.
Everything here is pure data: frozen dataclasses with `to_dict`/`from_dict`, plus line
framing that any thread may call.

The protocol is defined here once, with the standard library only: the add-on carries this
very file and parses with it, the server (wav2sem.serve) and the fake backends in tests/ build
every reply from it (tests/backend/test_protocol_agreement.py holds the three together).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Union

PROTOCOL_VERSION = 1

# Error codes (DESIGN.md "Backend protocol"). The backend sends these; wav2sem.errors raises them.
BAD_REQUEST = "BAD_REQUEST"
AUDIO_NOT_FOUND = "AUDIO_NOT_FOUND"
AUDIO_UNREADABLE = "AUDIO_UNREADABLE"
AUDIO_EMPTY = "AUDIO_EMPTY"
AUDIO_TOO_SHORT = "AUDIO_TOO_SHORT"
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
MODEL_INVALID = "MODEL_INVALID"
DEVICE_UNAVAILABLE = "DEVICE_UNAVAILABLE"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
OUTPUT_UNWRITABLE = "OUTPUT_UNWRITABLE"  # an output's folder missing or read-only, a full disk or temp folder
CANCELLED = "CANCELLED"
NO_FACE = "NO_FACE"                    # fit_face: no face found; the error carries a "landmarks" guess
INTERNAL = "INTERNAL"                  # carries the backend's traceback
# The add-on's own, for process failures.
BACKEND_DIED = "BACKEND_DIED"          # the process ended mid-request
BACKEND_TIMEOUT = "BACKEND_TIMEOUT"    # no answer in time
PROTOCOL_MISMATCH = "PROTOCOL_MISMATCH"
MESH_MISMATCH = "MESH_MISMATCH"        # the mesh cannot take the model's output

# model_info "output": what a model predicts.
OUTPUT_VERTICES = "vertices"           # per-frame offsets on its template (FaceFormer)
OUTPUT_BLENDSHAPES = "blendshapes"     # per-frame channel weights (ARKit), offsets = weights @ deltas


# fit_face: the landmarks the fit starts from (left = the character's left; wav2sem.fit.FIT_LANDMARKS).
FIT_LANDMARKS = ("nose_tip", "upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right",
                 "chin", "eye_outer_left", "eye_inner_left", "eye_inner_right", "eye_outer_right")
Point = tuple[float, float, float]
RequestId = Union[int, float, str, None]   # the add-on sends ints; the backend answers any scalar id


class ProtocolError(ValueError):
    """A line from the backend that is not a valid protocol event."""


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Request":
        return cls(int(data["id"]), str(data["op"]), dict(data.get("params") or {}))


@dataclass(frozen=True)
class Progress:
    id: RequestId
    stage: str
    fraction: float
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "progress", "stage": self.stage,
                "fraction": self.fraction, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Progress":
        fraction = min(1.0, max(0.0, float(data.get("fraction", 0.0))))
        return cls(data.get("id"), str(data.get("stage", "")), fraction, str(data.get("message", "")))


@dataclass(frozen=True)
class Result:
    id: RequestId
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "result", "data": dict(self.data)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        payload = data.get("data")
        if not isinstance(payload, dict):
            raise ProtocolError("result event without a 'data' object")
        return cls(data.get("id"), payload)


@dataclass(frozen=True)
class Error:
    id: RequestId
    code: str
    message: str
    traceback: str = ""                 # INTERNAL errors carry the backend's traceback
    details: dict[str, Any] = field(default_factory=dict)   # the error object's other fields (NO_FACE: "landmarks")

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {**self.details, "code": self.code, "message": self.message}
        if self.traceback:
            error["traceback"] = self.traceback
        return {"id": self.id, "type": "error", "error": error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Error":
        err = data.get("error")
        if not isinstance(err, dict):
            raise ProtocolError("error event without an 'error' object")
        details = {str(k): v for k, v in err.items() if k not in ("code", "message", "traceback")}
        return cls(data.get("id"), str(err.get("code", INTERNAL)), str(err.get("message", "")),
                   str(err.get("traceback") or ""), details)


@dataclass(frozen=True)
class Exited:
    """Not on the wire: the client's reader saw the backend's stdout close."""
    returncode: int | None
    stderr_tail: str = ""
    id: None = None


Event = Union[Progress, Result, Error, Exited]
_EVENT_TYPES: dict[str, Any] = {"progress": Progress, "result": Result, "error": Error}


def encode(message: Request | Progress | Result | Error) -> bytes:
    """One protocol line (ASCII, a subset of UTF-8; newline-terminated)."""
    return (json.dumps(message.to_dict(), ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def decode_event(line: bytes | str) -> Progress | Result | Error:
    """Parse one line from the backend; raises ProtocolError for anything else."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(data, dict) or data.get("type") not in _EVENT_TYPES:
        raise ProtocolError(f"not a protocol event: {line[:200]!r}")
    event: Progress | Result | Error = _EVENT_TYPES[data["type"]].from_dict(data)
    return event


# --- typed results -------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    protocol: int
    version: str
    torch: str
    devices: tuple[str, ...]
    python: str = ""                    # the backend's Python version ("" from older backends)
    threads: int | str | None = None    # its --threads setting: "auto" or a count (None: older backends)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "version": self.version, "torch": self.torch,
                "devices": list(self.devices), "python": self.python, "threads": self.threads}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Hello":
        threads = data.get("threads")
        return cls(int(data.get("protocol", 0)), str(data.get("version", "?")),
                   str(data.get("torch", "?")), tuple(str(d) for d in data.get("devices") or ()),
                   str(data.get("python") or ""), threads if isinstance(threads, (int, str)) else None)

    def summary(self) -> str:
        return f"wav2sem {self.version}, torch {self.torch}, devices: {', '.join(self.devices) or 'none'}"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fps: float
    vertex_count: int
    template: str                       # path to (V, 3) float32 .npy
    faces: str | None = None
    subjects: tuple[str, ...] = ()
    regions: dict[str, str] = field(default_factory=dict)
    landmarks: dict[str, int] = field(default_factory=dict)
    output: str = OUTPUT_VERTICES       # "vertices" (offsets) or "blendshapes" (channel weights)
    channels: tuple[str, ...] = ()      # blendshape models: the channel names (ARKit)
    blendshapes: str | None = None      # blendshape models: path to (K, V, 3) float32 .npy
    output_basis: str | None = None     # factored vertex models: path to (R, V, 3) float32 .npy,
                                        # offsets = coefficients @ basis (absent from older backends)
    semantic: bool = False              # the model has the Wav2Sem module
    directory: str = ""                 # the bundle's folder
    description: str = ""               # the bundle's own description

    @property
    def predicts_weights(self) -> bool:
        return self.output == OUTPUT_BLENDSHAPES and bool(self.channels)

    @property
    def factored(self) -> bool:
        """A vertex model that can send (T, R) coefficients of `output_basis` instead of offsets."""
        return self.output == OUTPUT_VERTICES and bool(self.output_basis)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fps": self.fps, "vertex_count": self.vertex_count,
                "template": self.template, "faces": self.faces, "subjects": list(self.subjects),
                "regions": dict(self.regions), "landmarks": dict(self.landmarks), "output": self.output,
                "channels": list(self.channels), "blendshapes": self.blendshapes, "output_basis": self.output_basis,
                "semantic": self.semantic, "directory": self.directory, "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        output = str(data.get("output") or OUTPUT_VERTICES)
        if output not in (OUTPUT_VERTICES, OUTPUT_BLENDSHAPES):
            raise ValueError(f"unknown model output {output!r}")
        blendshapes, basis = data.get("blendshapes"), data.get("output_basis")
        return cls(str(data["name"]), float(data["fps"]), int(data["vertex_count"]), str(data["template"]),
                   data.get("faces"), tuple(str(s) for s in data.get("subjects") or ()),
                   {str(k): str(v) for k, v in (data.get("regions") or {}).items()},
                   {str(k): int(v) for k, v in (data.get("landmarks") or {}).items()},
                   output, tuple(str(c) for c in data.get("channels") or ()),
                   str(blendshapes) if blendshapes else None, str(basis) if basis else None,
                   bool(data.get("semantic", False)), str(data.get("directory") or ""),
                   str(data.get("description") or ""))


@dataclass(frozen=True)
class GenerateResult:
    offsets: str | None                 # path to (T, V, 3) float32 .npy, template space; None if not asked
    frames: int
    fps: float
    vertex_count: int
    model: str = ""
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()      # sentences for the user, e.g. silent audio
    weights: str | None = None          # blendshape models: path to (T, K) float32 .npy
    channels: tuple[str, ...] = ()      # the weights' channel names
    coefficients: str | None = None     # factored vertex models: path to (T, R) float32 .npy of
                                        # model_info's output_basis (asked with factors: true)

    def to_dict(self) -> dict[str, Any]:
        return {"offsets": self.offsets, "frames": self.frames, "fps": self.fps,
                "vertex_count": self.vertex_count, "model": self.model, "seconds": self.seconds,
                "warnings": list(self.warnings), "weights": self.weights, "channels": list(self.channels),
                "coefficients": self.coefficients}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerateResult":
        offsets, weights, coefficients = data.get("offsets"), data.get("weights"), data.get("coefficients")
        if not offsets and not weights and not coefficients:
            raise KeyError("offsets")
        return cls(str(offsets) if offsets else None, int(data["frames"]), float(data["fps"]),
                   int(data["vertex_count"]), str(data.get("model", "")), float(data.get("seconds", 0.0)),
                   tuple(str(w) for w in data.get("warnings") or ()), str(weights) if weights else None,
                   tuple(str(c) for c in data.get("channels") or ()), str(coefficients) if coefficients else None)


@dataclass(frozen=True)
class CancelResult:
    """cancel's result: `found` means the target was queued or running and will end CANCELLED;
    false, that it was unknown or already finished."""
    target: RequestId
    found: bool

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "found": self.found}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CancelResult":
        target = data.get("target")
        if target is not None and not isinstance(target, (int, float, str)):
            raise ValueError("target must be the id of a request")
        return cls(target, bool(data["found"]))


def parse_landmarks(data: Any) -> dict[str, Point]:
    """{name: [x, y, z]} -> {name: (x, y, z)}; raises ValueError unless every point is three
    finite numbers (unknown names are kept: the backend may know more than this add-on)."""
    if not isinstance(data, dict):
        raise ValueError("landmarks must be an object {name: [x, y, z]}")
    points: dict[str, Point] = {}
    for name, value in data.items():
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError(f"landmark {name!r} is not [x, y, z]")
        x, y, z = (float(c) for c in value)
        if not all(math.isfinite(c) for c in (x, y, z)):
            raise ValueError(f"landmark {name!r} is not finite")
        points[str(name)] = (x, y, z)
    return points


def landmark_lists(points: dict[str, Any]) -> dict[str, list[float]]:
    """{name: (x, y, z)} of any numbers (numpy's included) -> {name: [x, y, z]} of floats, as
    fit_face's result and a NO_FACE error's "landmarks" carry them."""
    return {str(name): [float(c) for c in point] for name, point in points.items()}


def no_face_error(request_id: RequestId, message: str, landmarks: dict[str, Any]) -> Error:
    """fit_face found no face: the error carries the landmark guess, for the user to correct."""
    return Error(request_id, NO_FACE, message, details={"landmarks": landmark_lists(landmarks)})


@dataclass(frozen=True)
class FitResult:
    """fit_face's result: the keys file (names (K,), deltas (K, V, 3) float32, world space) and
    the landmarks the fit used, in world space."""
    keys: str
    names: tuple[str, ...]
    landmarks: dict[str, Point] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "names": list(self.names),
                "landmarks": landmark_lists(self.landmarks),
                "report": dict(self.report), "seconds": self.seconds, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FitResult":
        keys, names = data["keys"], data["names"]
        if not isinstance(keys, str) or not keys:
            raise ValueError("keys must be the path of the keys file")
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ValueError("names must be a list of key names")
        report = data.get("report") or {}
        return cls(keys, tuple(names), parse_landmarks(data.get("landmarks") or {}),
                   dict(report) if isinstance(report, dict) else {}, float(data.get("seconds", 0.0)),
                   tuple(str(w) for w in data.get("warnings") or ()))
