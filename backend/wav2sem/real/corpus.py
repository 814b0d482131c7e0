"""Build a speech-to-face corpus from recorded speech (sources.py): align each transcript to
phones, drive the articulation rig from the phone timings exactly as the synthetic corpus
does, and write the synthetic corpus's layout for head "ict" (synth/corpus.py, docs/real_voices.md).

Besides that layout the folder holds plan.json (settings and items; a resume must use the
same settings) and rejected.tsv (id, reason: clips the aligner refused, not retried on resume
unless asked). Audio is stored as recorded: resampled to 16 kHz PCM-16, nothing trimmed or added.
An item is done when its .npy exists (written last, atomically).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BAD_REQUEST, OUTPUT_UNWRITABLE, Wav2SemError, reason
from ..synth.coarticulation import Style
from ..synth.corpus import FORMAT, FORMAT_VERSION
from ..synth.motion import FPS, SAMPLE_RATE
from ..synth.speakers import SPLITS, speaker_style, unit_rng
from . import sources
from .sources import Recording

log = logging.getLogger(__name__)

KIND = "recorded"
HEAD = "ict"
TARGET_DIR = "weights_npy"
# The synthetic speakers' style ranges (synth/speakers.make_speakers), so recorded speakers'
# targets vary as much and no more.
JAW_GAIN = (0.85, 1.15)
LIP_GAIN = (0.85, 1.15)
ANTICIPATION = (0.85, 1.2)


@dataclass(frozen=True)
class RealItem:
    """One planned item (fixed in plan.json; the audio path is looked up again on resume)."""

    id: str           # "<speaker>_<n>", n = the recording's place in its speaker's sorted list
    speaker: str
    source: str       # Recording.id
    language: str
    text: str


@dataclass(frozen=True)
class RealSpeaker:
    id: str
    engine: str        # "recorded"
    voice: str         # the Debian package
    variant: str       # the language
    split: str
    jaw_gain: float
    lip_gain: float
    anticipation: float

    style = property(lambda self: speaker_style(self))
    to_dict = asdict


def make_speaker(speaker: str, package: str, language: str, seed: int) -> RealSpeaker:
    """A recorded speaker with its articulation style drawn from the seed and its id."""
    r = unit_rng(seed, "recorded", speaker)
    return RealSpeaker(speaker, KIND, package, language, sources.split_of(speaker),
                       float(r.uniform(*JAW_GAIN)), float(r.uniform(*LIP_GAIN)), float(r.uniform(*ANTICIPATION)))


def plan_items(recordings: list[Recording], max_items: int | None, seed: int) -> list[RealItem]:
    """Items for the recordings; with max_items, that many per speaker drawn by the seed
    (a slice across each speaker's material, not its first folder)."""
    by_speaker: dict[str, list[Recording]] = {}
    for rec in sorted(recordings, key=lambda r: r.id):
        by_speaker.setdefault(rec.speaker, []).append(rec)
    items = []
    for speaker, recs in sorted(by_speaker.items()):
        order = list(range(len(recs)))
        if max_items is not None and max_items < len(recs):
            order = sorted(unit_rng(seed, "slice", speaker).permutation(len(recs))[:max_items].tolist())
        items += [RealItem(f"{speaker}_{n:05d}", speaker, recs[n].id, recs[n].language, recs[n].text) for n in order]
    return items


def render_item(item: RealItem, path: str, style: Style, out: str, seed: int) -> tuple[str, float, int, str]:
    """Load, align, animate and write one item. -> (status "done" | "rejected", seconds, frames, reason)"""
    import soundfile as sf

    from ..heads import SPEECH_CHANNELS
    from ..synth.arkit_rig import arkit_weights
    from ..synth.motion import articulator_track
    from ..synth.timing import write_segments
    from .align import AlignmentError, align_transcript

    out_path = Path(out)
    try:
        audio = sources.load_recording(Path(path))
        segments = align_transcript(audio, item.text, item.language, SAMPLE_RATE)
    except AlignmentError as exc:
        return "rejected", 0.0, 0, reason(exc, limit=400)
    except Wav2SemError as exc:            # unreadable or undecodable audio
        return "rejected", 0.0, 0, reason(exc)
    except RuntimeError as exc:
        # pocketsphinx fails on the odd clip ("Failed to stop utterance processing"); one clip
        # must not end a build of thousands, so it is rejected with the error and counted.
        log.warning("%s: the aligner failed: %s", item.id, exc)
        return "rejected", 0.0, 0, f"aligner error: {reason(exc)}"
    rng = unit_rng(seed, "motion", item.id)                                     # the brow curve's noise
    track = articulator_track(segments, audio, SAMPLE_RATE, style, rng)         # (T, A)
    target = arkit_weights(track, SPEECH_CHANNELS)                               # (T, K)
    pcm = np.clip(audio, -1.0, 32767 / 32768)         # PCM-16 range; the recordings stay as they are
    sf.write(out_path / "wav" / f"{item.id}.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
    (out_path / "text" / f"{item.id}.txt").write_text(item.text + "\n", encoding="utf-8")
    write_segments(out_path / "phonemes" / f"{item.id}.tsv", segments)
    final = out_path / TARGET_DIR / f"{item.id}.npy"
    tmp = final.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(target, dtype=np.float32))
    os.replace(tmp, final)
    return "done", len(audio) / SAMPLE_RATE, len(target), ""


def _settings(seed: int, languages: list[str] | None, max_items: int | None) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "kind": KIND, "head": HEAD, "seed": seed,
            "languages": languages, "max_items": max_items}


def _describe(s: dict) -> str:
    langs = ",".join(s.get("languages") or []) or "all"
    return f"--languages {langs} --max-items {s.get('max_items') or 'all'} --seed {s.get('seed')}"


def _prepare(out: Path, cat: sources.Catalogue, seed: int, languages: list[str] | None,
             max_items: int | None) -> list[RealItem]:
    settings = _settings(seed, languages, max_items)
    plan_path = out / "plan.json"
    if plan_path.is_file():
        saved = json.loads(plan_path.read_text(encoding="utf-8"))
        if saved.get("settings") != settings:
            raise Wav2SemError(BAD_REQUEST, f"{out} already holds a recorded-speech corpus made with "
                                            f"{_describe(saved.get('settings', {}))}, not {_describe(settings)}; "
                                            "use the same settings to resume or choose another --out folder.")
        return [RealItem(**d) for d in saved["items"]]
    items = plan_items(cat.recordings, max_items, seed)
    tmp = plan_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": settings, "items": [asdict(i) for i in items]}, indent=0),
                   encoding="utf-8")
    os.replace(tmp, plan_path)
    return items


def read_rejected(out: Path) -> dict[str, str]:
    """rejected.tsv -> id -> reason."""
    path = out / "rejected.tsv"
    if not path.is_file():
        return {}
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return dict(row.split("\t", 1) for row in rows if "\t" in row)


def _write_rejected(out: Path, rejected: dict[str, str]) -> None:
    lines = ["id\treason"] + [f"{i}\t{r}" for i, r in sorted(rejected.items())]
    tmp = out / "rejected.tsv.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out / "rejected.tsv")


def build_real_corpus(roots: list[Path], out: Path, languages: list[str] | None = None,
                      max_items: int | None = None, seed: int = 0, workers: int | None = None,
                      progress: Callable[[int, int], None] | None = None, retry_rejected: bool = False) -> dict:
    """Build (or resume) a recorded-speech corpus in `out` from the packages under `roots`.

    languages: only these (sources.LANGUAGES codes); max_items: at most this many per speaker.
    progress(done, total) is called in this thread after each item (rejected ones count as done).
    Returns the corpus.json dictionary (with "speaker_stats" and the skip and reject counts).
    """
    from ..synth.corpus import corpus_template

    out = Path(out)
    if languages is not None:
        unknown = sorted(set(languages) - set(sources.LANGUAGES))
        if unknown:
            raise Wav2SemError(BAD_REQUEST, f"No aligner for language {unknown[0]!r}; use some of "
                                            f"{', '.join(sources.LANGUAGES)}.")
        languages = sorted(set(languages))
    if max_items is not None and max_items < 1:
        raise Wav2SemError(BAD_REQUEST, "--max-items must be at least 1.")
    cat = sources.catalogue([Path(r) for r in roots], languages)
    try:
        for sub in ("wav", TARGET_DIR, "text", "phonemes", "splits"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"Cannot create the corpus folder {out}: {exc.strerror}.") from exc
    fresh = not (out / "plan.json").is_file()
    if fresh and not cat.recordings:
        where = ", ".join(str(r) for r in roots) or "(no roots)"
        raise Wav2SemError(BAD_REQUEST, f"No usable recordings found in {where}; fetch the packages with "
                                        "`make real-packages` (see docs/real_voices.md) and pass --packages.")
    items = _prepare(out, cat, seed, languages, max_items)
    by_source = {r.id: r for r in cat.recordings}
    corpus_template(HEAD).save(out / "template.npz")

    rejected = {} if retry_rejected else read_rejected(out)
    planned_ids = {i.id for i in items}
    rejected = {k: v for k, v in rejected.items() if k in planned_ids}
    _write_rejected(out, rejected)
    pending = [i for i in items if i.id not in rejected and not (out / TARGET_DIR / f"{i.id}.npy").is_file()]
    missing = [i for i in pending if i.source not in by_source]
    if missing:
        raise Wav2SemError(BAD_REQUEST, f"{len(missing)} planned recordings (e.g. {missing[0].source}) are not in "
                                        f"the packages given; pass the same --packages / --system as when {out} "
                                        "was started.")
    speakers = _speakers(items, by_source, seed, out)
    log.info("real corpus %s: %d items planned, %d to make, %d rejected before", out, len(items), len(pending),
             len(rejected))
    done = len(items) - len(pending)
    if progress:
        progress(done, len(items))

    def finished(item: RealItem, result: tuple[str, float, int, str]) -> None:
        nonlocal done
        done += 1
        if result[0] == "rejected":
            rejected[item.id] = result[3]
            _write_rejected(out, rejected)
        if progress:
            progress(done, len(items))

    args = [(i, str(by_source[i.source].path), speakers[i.speaker].style, str(out), seed) for i in pending]
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1 or len(args) <= 1:
        for a in args:                       # in-process: no start-up cost for small slices
            finished(a[0], render_item(*a))
    elif args:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            queued = iter(args)
            running = {}
            for a in args[: workers * 4]:
                next(queued)
                running[pool.submit(render_item, *a)] = a[0]
            while running:
                ready, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in ready:
                    item = running.pop(future)
                    finished(item, future.result())       # re-raises a worker's error
                    nxt = next(queued, None)
                    if nxt is not None:
                        running[pool.submit(render_item, *nxt)] = nxt[0]
    return finalise(out, items, speakers, rejected, cat, seed, languages, max_items)


def _speakers(items: list[RealItem], by_source: dict[str, Recording], seed: int, out: Path) -> dict[str, RealSpeaker]:
    """The planned items' speakers (package from the catalogue, else from a previous corpus.json)."""
    previous = {}
    if (out / "corpus.json").is_file():
        previous = {s["id"]: s for s in json.loads((out / "corpus.json").read_text(encoding="utf-8"))["speakers"]}
    result = {}
    for item in items:
        if item.speaker in result:
            continue
        rec = by_source.get(item.source)
        package = rec.source_package if rec else previous.get(item.speaker, {}).get("voice", "")
        result[item.speaker] = make_speaker(item.speaker, package, item.language, seed)
    return result


def finalise(out: Path, items: list[RealItem], speakers: dict[str, RealSpeaker], rejected: dict[str, str],
             cat: sources.Catalogue, seed: int, languages: list[str] | None, max_items: int | None) -> dict:
    """Write splits, items.tsv and corpus.json from the finished items."""
    import soundfile as sf

    from ..synth.corpus import corpus_template

    rows = ["id\tspeaker\tsplit\tengine\tvoice\tvariant\tseconds\tframes"]
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    stats: dict[str, dict] = {}
    total_s = 0.0
    count = 0
    for item in items:
        sp = speakers[item.speaker]
        st = stats.setdefault(sp.id, {"split": sp.split, "language": sp.variant, "items": 0, "seconds": 0.0,
                                      "rejected": 0, "skipped": 0})
        npy = out / TARGET_DIR / f"{item.id}.npy"
        if item.id in rejected:
            st["rejected"] += 1
            continue
        if not npy.is_file():
            continue                          # not made (interrupted)
        seconds = sf.info(str(out / "wav" / f"{item.id}.wav")).duration
        frames = np.load(npy, mmap_mode="r").shape[0]
        total_s += seconds
        count += 1
        st["items"] += 1
        st["seconds"] = round(st["seconds"] + seconds, 3)
        splits[sp.split].append(item.id)
        rows.append(f"{item.id}\t{sp.id}\t{sp.split}\t{sp.engine}\t{sp.voice}\t{sp.variant}\t{seconds:.3f}\t{frames}")
    for (speaker, _), n in cat.skipped.items():
        if speaker in stats:
            stats[speaker]["skipped"] += n
    (out / "items.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for split, ids in splits.items():
        (out / "splits" / f"{split}.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    template = corpus_template(HEAD)
    info = {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": KIND, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "seed": seed, "languages": languages, "max_items": max_items,
        "hours": round(total_s / 3600.0, 4), "items": count, "planned": len(items),
        "vertex_count": template.vertex_count, "units": "metres, Y up, face towards +Z",
        "speakers": [s.to_dict() for s in speakers.values()],
        "splits": {k: len(v) for k, v in splits.items()},
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(_reason_class(r) for r in rejected.values())),
        "skipped_by_reason": cat.skipped_by_reason(),
        "speaker_stats": stats,
        "head": HEAD, "target": "blendshapes", "channels": list(template.blendshape_names),
    }
    (out / "corpus.json").write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    return info


def _reason_class(text: str) -> str:
    """A rejection reason without the clip's particulars (numbers, quoted words), for counting."""
    import re
    text = re.sub(r"'.*'(?= does| has| is)|\".*\"(?= does| has| is)", "…", text)   # the quoted transcript
    text = text.split(";")[0]                        # the advice after ";" is the same for all
    return re.sub(r"\d+(\.\d+)?", "N", text).strip()
