"""One loader for speech-to-face corpora: ours (`wav2sem synth`) and the VOCASET / BIWI layouts.

    ds = open_dataset("corpus")                 # layout detected
    train = ds.subset("train")
    item = train[0]                             # SpeechFaceItem, loaded on access
    item.audio      (N,) float32, 16 kHz mono
    item.vertices   (T, V, 3) float32 at ds.fps
    item.weights    (T, K) float32 channel weights on a blendshape corpus, else None
    item.subject    speaker / subject id (ds.train_subjects gives the style one-hot order)

Layouts (all: a folder with wav/ and vertices_npy/, file stem = item id "<subject>_<n>"):
  wav2sem   corpus.json, template.npz, splits/*.txt, items.tsv, text/, phonemes/ (30 fps);
            a blendshape corpus (corpus.json "target": "blendshapes", "channels": [...])
            has weights_npy/<id>.npy (T, K) instead of vertices_npy/ and a template.npz
            with those channels' blendshapes: its vertices are template + weights @ deltas,
            computed only when asked for (ds.channels gives the channel order)
  vocaset   templates.pkl (subject -> (5023, 3)); vertices at 60 fps, used at 30 fps
  biwi      templates.pkl (subject -> (23370, 3)); vertices at 25 fps
For VOCASET/BIWI the splits are the FaceFormer ones (subjects and sentence numbers) unless
the folder has splits/{train,val,test}.txt. templates.pkl is read with a restricted
unpickler that admits only numpy arrays and builtin containers.
"""
from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .audio import SAMPLE_RATE, load_audio
from .errors import MODEL_INVALID, MODEL_NOT_FOUND, Wav2SemError
from .safe_pickle import safe_load
from .synth.timing import PhoneSegment, read_segments
from .template import Template

log = logging.getLogger(__name__)

LAYOUTS = ("wav2sem", "vocaset", "biwi")
WEIGHTS_DIR = "weights_npy"            # blendshape corpora: (T, K) channel weights per clip
TARGET_VERTICES, TARGET_BLENDSHAPES = "vertices", "blendshapes"
SPLITS = ("train", "val", "test")
SOURCE_FPS = {"vocaset": 60.0, "biwi": 25.0}
DEFAULT_FPS = {"vocaset": 30.0, "biwi": 25.0}
# FaceFormer's subject lists and sentence ranges.
REFERENCE_SUBJECTS: dict[str, dict[str, tuple[str, ...]]] = {
    "vocaset": {
        "train": ("FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
                  "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
                  "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA"),
        "val": ("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"),
        "test": ("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"),
    },
    "biwi": {"train": ("F2", "F3", "F4", "M3", "M4", "M5"), "val": ("F2", "F3", "F4", "M3", "M4", "M5"),
             "test": ("F2", "F3", "F4", "M3", "M4", "M5")},
}
REFERENCE_SENTENCES: dict[str, dict[str, range]] = {
    "vocaset": {"train": range(1, 41), "val": range(21, 41), "test": range(21, 41)},
    "biwi": {"train": range(1, 33), "val": range(33, 37), "test": range(37, 41)},
}


class SpeechFaceItem:
    """One clip: speech and the matching face motion, as vertices (T, V, 3) or, on a
    blendshape corpus, as channel weights (T, K) whose vertices are computed when first asked
    for (a 26,719-vertex head is 320 KB per frame)."""

    def __init__(self, id: str, subject: str, audio: np.ndarray, vertices: np.ndarray | None, fps: float,
                 template: np.ndarray, transcript: str | None = None, phonemes: list[PhoneSegment] | None = None,
                 weights: np.ndarray | None = None, blendshapes: np.ndarray | None = None):
        if vertices is None and (weights is None or blendshapes is None):
            raise ValueError("an item needs vertices, or weights and the blendshapes they weight")
        self.id = id
        self.subject = subject
        self.audio = audio                     # (N,) float32, 16 kHz mono
        self._vertices = vertices              # (T, V, 3) float32 at `fps`, or None until asked for
        self.fps = fps
        self.template = template               # (V, 3) float32, the subject's neutral face
        self.transcript = transcript
        self.phonemes = phonemes
        self.weights = weights                 # (T, K) float32 or None
        self.blendshapes = blendshapes         # (K, V, 3) float32 deltas, with weights

    def __repr__(self) -> str:
        kind = f"weights {self.weights.shape}" if self.weights is not None else f"vertices {self._vertices.shape}"
        return f"SpeechFaceItem({self.id!r}, subject={self.subject!r}, {kind}, fps={self.fps:g})"

    @property
    def frames(self) -> int:
        return len(self.weights) if self.weights is not None else len(self._vertices)

    @property
    def vertices(self) -> np.ndarray:
        """Vertex positions. -> (T, V, 3) float32"""
        if self._vertices is None:
            self._vertices = self.template[None] + self.offsets
        return self._vertices

    @property
    def offsets(self) -> np.ndarray:
        """Displacements from the template. -> (T, V, 3) float32"""
        if self._vertices is None:
            return self.offsets_at(None)
        return self._vertices - self.template[None]

    def offsets_at(self, indices: np.ndarray | None) -> np.ndarray:
        """Displacements of some vertices only (all for None), without building the whole
        head on a blendshape corpus. -> (T, len(indices), 3) float32"""
        if self._vertices is not None:
            offsets = self._vertices - self.template[None]
            return offsets if indices is None else offsets[:, indices]
        assert self.weights is not None and self.blendshapes is not None
        deltas = self.blendshapes if indices is None else self.blendshapes[:, indices]
        k = deltas.shape[0]
        return (self.weights.reshape(-1, k) @ deltas.reshape(k, -1)).reshape((len(self.weights),) + deltas.shape[1:])


def subject_of(item_id: str) -> str:
    """VOCASET/FaceFormer convention: the subject is everything before the last "_"."""
    return item_id.rsplit("_", 1)[0] if "_" in item_id else item_id


def detect_layout(root: str | Path) -> str:
    """Guess the layout of a corpus folder; raises Wav2SemError when it is none of LAYOUTS."""
    root = Path(root)
    motion = (root / "vertices_npy").is_dir() or (root / WEIGHTS_DIR).is_dir()
    if not (root / "wav").is_dir() or not motion:
        raise Wav2SemError(MODEL_NOT_FOUND, f"{root} is not a corpus folder: it needs wav/ and vertices_npy/ "
                                            f"(or {WEIGHTS_DIR}/ for a blendshape corpus; make one with "
                                            "`wav2sem synth --out DIR --hours H`).")
    if (root / "corpus.json").is_file() and (root / "template.npz").is_file():
        return "wav2sem"
    if not (root / "vertices_npy").is_dir():
        raise Wav2SemError(MODEL_INVALID, f"{root} has {WEIGHTS_DIR}/ but no corpus.json and template.npz with the "
                                          "blendshapes; a blendshape corpus needs both.")
    if (root / "templates.pkl").is_file():
        stems = [p.stem for p in (root / "vertices_npy").glob("*.npy")]
        return "vocaset" if any(s.startswith("FaceTalk") for s in stems) else "biwi"
    raise Wav2SemError(MODEL_INVALID, f"{root} has neither corpus.json + template.npz (wav2sem synth) nor "
                                      "templates.pkl (VOCASET/BIWI); add the template file.")


def load_templates_pkl(path: str | Path) -> dict[str, np.ndarray]:
    """Reference templates.pkl -> subject -> (V, 3) float32, refusing anything but arrays."""
    try:
        table = safe_load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, MemoryError, OverflowError) as exc:
        raise Wav2SemError(MODEL_INVALID, f"Refused to load {Path(path).name}: {exc}. Use a templates.pkl that "
                                          "holds only numpy arrays (subject -> vertices).") from None
    if not isinstance(table, dict) or not table:
        raise Wav2SemError(MODEL_INVALID, f"{Path(path).name} must map subject names to (V, 3) vertex arrays.")
    out = {}
    for subject, verts in table.items():
        try:
            arr = np.asarray(verts) if isinstance(verts, (np.ndarray, list, tuple)) else None
        except ValueError:          # ragged lists
            arr = None
        if arr is None or arr.dtype.kind not in "fiu" or not arr.size:
            raise Wav2SemError(MODEL_INVALID, f"Template of {subject!r} in {Path(path).name} is a "
                                              f"{type(verts).__name__}, not an array of (V, 3) vertex positions.")
        arr = arr.astype(np.float32)
        if arr.size % 3:
            raise Wav2SemError(MODEL_INVALID, f"Template of {subject!r} in {Path(path).name} is not (V, 3).")
        out[str(subject)] = arr.reshape(-1, 3)
    return out


class SpeechFaceDataset(Sequence[SpeechFaceItem]):
    """Items of one corpus (or one split of it), loaded from disk on access. Thread-safe reads."""

    def __init__(self, root: str | Path, layout: str = "auto", fps: float | None = None,
                 template_path: str | Path | None = None):
        self.root = Path(root)
        self.layout = detect_layout(self.root) if layout == "auto" else layout
        if self.layout not in LAYOUTS:
            raise Wav2SemError(MODEL_INVALID, f"Unknown corpus layout {layout!r}; use one of {LAYOUTS} or auto.")
        self.sample_rate = SAMPLE_RATE
        self.transcripts_available = self.layout == "wav2sem"
        self.channels: tuple[str, ...] = ()         # blendshape corpora: the weights' channel order
        self.motion_dir = "vertices_npy"
        if self.layout == "wav2sem":
            info = json.loads((self.root / "corpus.json").read_text(encoding="utf-8"))
            self.info: dict = info
            self.source_fps = float(info["fps"])
            self.template = Template.load(self.root / "template.npz")
            if info.get("target", TARGET_VERTICES) == TARGET_BLENDSHAPES:
                self._open_blendshapes(info)
            elif info.get("target", TARGET_VERTICES) != TARGET_VERTICES:
                raise Wav2SemError(MODEL_INVALID, f"{self.root / 'corpus.json'}: unknown target {info.get('target')!r}; "
                                                  f"this backend reads {TARGET_VERTICES!r} and {TARGET_BLENDSHAPES!r} (update wav2sem?).")
            ids = sorted(p.stem for p in (self.root / self.motion_dir).glob("*.npy") if not p.stem.endswith(".tmp"))
            self.subject_templates = {subject_of(i): self.template.vertices for i in ids}
            self.splits = self._read_split_files(ids) or {"train": ids, "val": [], "test": []}
        else:
            self.info = {}
            self.source_fps = SOURCE_FPS[self.layout]
            self.subject_templates = load_templates_pkl(self.root / "templates.pkl")
            ids = sorted(p.stem for p in (self.root / "vertices_npy").glob("*.npy")
                         if subject_of(p.stem) in self.subject_templates)
            first = sorted(self.subject_templates)[0]
            self.template = Template(self.subject_templates[first])
            self.splits = self._read_split_files(ids) or self._reference_splits(ids)
        if template_path is not None:      # e.g. a template.npz with FLAME regions
            self.template = Template.load(template_path)
            if self.channels:
                self.template = self._template_with_channels(self.template, template_path)
        self.fps = float(fps or (DEFAULT_FPS.get(self.layout, self.source_fps)))
        self._ids = [i for s in SPLITS for i in self.splits.get(s, [])]
        self.subjects = sorted({subject_of(i) for i in self._ids})
        self.train_subjects = sorted({subject_of(i) for i in self.splits.get("train", [])})

    @property
    def is_blendshape(self) -> bool:
        """Targets are channel weights (items have `weights`) rather than vertices."""
        return bool(self.channels)

    def _open_blendshapes(self, info: dict) -> None:
        channels = info.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels) \
                or len(set(channels)) != len(channels):
            raise Wav2SemError(MODEL_INVALID, f"{self.root / 'corpus.json'}: a blendshapes corpus needs \"channels\", "
                                              "a non-empty list of unique channel names.")
        if not (self.root / WEIGHTS_DIR).is_dir():
            raise Wav2SemError(MODEL_INVALID, f"{self.root} is a blendshapes corpus but has no {WEIGHTS_DIR}/ folder.")
        self.channels = tuple(channels)
        self.motion_dir = WEIGHTS_DIR
        self.template = self._template_with_channels(self.template, self.root / "template.npz")

    def _template_with_channels(self, template: Template, path: Path | str) -> Template:
        """The template with exactly the corpus's channels, in its order."""
        if template.blendshape_names == self.channels:
            return template
        missing = [c for c in self.channels if c not in template.blendshape_names]
        if missing:
            raise Wav2SemError(MODEL_INVALID, f"{path} has no blendshape {missing[0]!r} of the corpus's channels; "
                                              "a blendshapes corpus needs a template with every channel's deltas.")
        return template.with_channels(self.channels)

    # -- splits ---------------------------------------------------------------------------
    def _read_split_files(self, ids: list[str]) -> dict[str, list[str]] | None:
        folder = self.root / "splits"
        if not all((folder / f"{s}.txt").is_file() for s in SPLITS):
            return None
        present = set(ids)
        return {s: [line.strip() for line in (folder / f"{s}.txt").read_text(encoding="utf-8").splitlines()
                    if line.strip() in present] for s in SPLITS}

    def _reference_splits(self, ids: list[str]) -> dict[str, list[str]]:
        subjects, sentences = REFERENCE_SUBJECTS[self.layout], REFERENCE_SENTENCES[self.layout]
        known = {s for group in subjects.values() for s in group}
        if not any(subject_of(i) in known for i in ids):
            log.warning("%s: no FaceFormer subject names found; every clip is put in the train split "
                        "(add splits/{train,val,test}.txt to choose)", self.root)
            return {"train": list(ids), "val": [], "test": []}
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        for item_id in ids:
            match = re.search(r"(\d+)$", item_id)
            sentence = int(match.group(1)[-2:]) if match else -1
            for split in SPLITS:
                if subject_of(item_id) in subjects[split] and sentence in sentences[split]:
                    out[split].append(item_id)
        return out

    def subset(self, split: str) -> "SpeechFaceDataset":
        """A view with only the items of one split (same template, subjects and fps)."""
        if split not in SPLITS:
            raise Wav2SemError(MODEL_INVALID, f"Unknown split {split!r}; use one of {SPLITS}.")
        view = object.__new__(SpeechFaceDataset)
        view.__dict__.update(self.__dict__)
        view._ids = list(self.splits.get(split, []))
        return view

    # -- items ----------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[SpeechFaceItem]:
        for item_id in self._ids:
            yield self.item(item_id)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.item(i) for i in self._ids[index]]
        if isinstance(index, str):
            return self.item(index)
        return self.item(self._ids[index])

    def frame_count(self, item_id: str) -> int:
        """Motion frames of a clip at `fps`, from the .npy header only (for length bucketing)."""
        n = np.load(self.root / self.motion_dir / f"{item_id}.npy", mmap_mode="r").shape[0]
        if abs(self.source_fps - self.fps) < 1e-6:
            return int(n)
        return len(resample_frames(np.zeros((n, 1, 3), np.float32), self.source_fps, self.fps))

    def item(self, item_id: str) -> SpeechFaceItem:
        """Load one clip by id. Blocks on disk reads."""
        subject = subject_of(item_id)
        template = self.subject_templates.get(subject, self.template.vertices)
        audio = load_audio(self.root / "wav" / f"{item_id}.wav")
        vertices = weights = None
        if self.channels:
            raw = np.load(self.root / WEIGHTS_DIR / f"{item_id}.npy", allow_pickle=False)
            if raw.ndim != 2 or raw.shape[1] != len(self.channels):
                raise Wav2SemError(MODEL_INVALID, f"{item_id}: weights of shape {raw.shape} but the corpus has "
                                                  f"{len(self.channels)} channels; expected (frames, {len(self.channels)}).")
            weights = resample_frames(np.asarray(raw, dtype=np.float32)[:, :, None], self.source_fps, self.fps)[:, :, 0]
            weights = np.ascontiguousarray(weights)
        else:
            flat = np.load(self.root / "vertices_npy" / f"{item_id}.npy", allow_pickle=False)
            vertices = np.asarray(flat, dtype=np.float32).reshape(len(flat), -1, 3)     # (T, V, 3)
            if vertices.shape[1] != template.shape[0]:
                raise Wav2SemError(MODEL_INVALID, f"{item_id}: {vertices.shape[1]} vertices per frame but the "
                                                  f"template has {template.shape[0]}.")
            vertices = resample_frames(vertices, self.source_fps, self.fps)
        transcript = phonemes = None
        if self.layout == "wav2sem":
            text = self.root / "text" / f"{item_id}.txt"
            transcript = text.read_text(encoding="utf-8").strip() if text.is_file() else None
            tsv = self.root / "phonemes" / f"{item_id}.tsv"
            phonemes = read_segments(tsv) if tsv.is_file() else None
        return SpeechFaceItem(item_id, subject, audio, vertices, self.fps, template, transcript, phonemes,
                              weights, self.template.blendshape_deltas if self.channels else None)


def resample_frames(vertices: np.ndarray, source_fps: float, fps: float) -> np.ndarray:
    """Change the frame rate: an integer ratio keeps every n-th frame (as FaceFormer does for
    VOCASET), otherwise linear interpolation at times k / fps. (T, V, 3) -> (T', V, 3)"""
    if abs(source_fps - fps) < 1e-6:
        return vertices
    ratio = source_fps / fps
    if abs(ratio - round(ratio)) < 1e-6 and ratio >= 1:
        return np.ascontiguousarray(vertices[:: int(round(ratio))])
    n_out = max(1, int(np.floor((len(vertices) - 1) * fps / source_fps)) + 1)
    pos = np.arange(n_out) * source_fps / fps
    lo = np.clip(np.floor(pos).astype(int), 0, len(vertices) - 1)
    hi = np.clip(lo + 1, 0, len(vertices) - 1)
    w = (pos - lo)[:, None, None].astype(np.float32)
    return (vertices[lo] * (1 - w) + vertices[hi] * w).astype(np.float32)


def open_dataset(root: str | Path, layout: str = "auto", split: str | None = None, fps: float | None = None,
                 template_path: str | Path | None = None) -> SpeechFaceDataset:
    """Open a corpus folder (optionally one split of it)."""
    ds = SpeechFaceDataset(root, layout, fps, template_path)
    return ds.subset(split) if split else ds
