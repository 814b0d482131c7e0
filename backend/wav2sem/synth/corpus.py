"""Write the synthetic speech-to-face corpus: plan, generate in parallel, resume, finalise.

Layout of a corpus folder (see docs/synth.md):
  corpus.json              format, fps, sample rate, seed, hours, speakers, vertex count
                           (head "ict": also "target": "blendshapes", "channels", "head")
  template.npz             the template head (wav2sem.template.Template; ICT: with blendshapes)
  plan.json                every planned item (resuming checks it against the arguments)
  wav/<id>.wav             16 kHz mono PCM-16 speech (augmented)
  weights_npy/<id>.npy     head "ict" (default): (T, K) float32 ARKit weights (corpus.json
                           "channels" order) at 30 fps; vertices = template + weights @ deltas
  vertices_npy/<id>.npy    head "synthetic": (T, V*3) float32 vertex positions in metres at 30 fps
  text/<id>.txt            transcript
  phonemes/<id>.tsv        start, end (s), engine symbol, ARPAbet (times match the wav)
  splits/{train,val,test}.txt   item ids, split by voice
  items.tsv                id, speaker, split, engine, voice, variant, seconds, frames
Two heads: "ict" (the ICT FaceKit reference head, ARKit weights, format version 2) and
"synthetic" (the project's own head and rig, vertex positions, format version 1 as before).
An item is done when its .npy exists (written last, atomically), so an interrupted run
resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import soundfile as sf
import soxr

from ..errors import BAD_REQUEST, OUTPUT_UNWRITABLE, Wav2SemError
from .augment import Augmentation, augment, change_speed, random_augmentation
from .head import build_head
from .motion import FPS, SAMPLE_RATE, animate, articulator_track
from .sentences import make_sentences
from .speakers import SPLIT_SHARE, SPLITS, Speaker, make_speakers
from .timing import PhoneSegment, scale_segments, write_segments
from .tts import SpeechClip, espeak, festival

log = logging.getLogger(__name__)

FORMAT = "wav2sem-synth"
FORMAT_VERSION = 2            # head "ict"; the synthetic head still writes version 1
SYNTHETIC_FORMAT_VERSION = 1
HEADS = ("ict", "synthetic")
DEFAULT_HEAD = "ict"
FESTIVAL_BATCH = 12           # sentences per festival process
FESTIVAL_WPM = 175.0          # festival's speaking rate at Duration_Stretch 1 (measured)
LEAD_SILENCE_S = (0.15, 0.45)   # silence added before the speech (uniform range, seconds)
TAIL_SILENCE_S = (0.2, 0.6)     # and after it
SPEECH_TIME_FACTOR = 0.83       # measured: clips are this fraction of words * 60 / rate


@dataclass(frozen=True)
class ItemSpec:
    """Everything needed to make one item, fixed at planning time (so resuming is exact)."""

    id: str
    speaker: str
    text: str
    rate_wpm: float
    pitch: float
    augmentation: dict
    seed: int


def plan_items(speakers: list[Speaker], hours: float, seed: int) -> list[ItemSpec]:
    """Items until the estimated duration reaches `hours`, speakers drawn per split share."""
    rng = np.random.default_rng([seed, 0x91A4])
    by_split = {s: [sp for sp in speakers if sp.split == s] for s in SPLITS}
    splits = [s for s in SPLITS if by_split[s]]
    share = np.array([SPLIT_SHARE[s] for s in splits])
    share /= share.sum()
    target = hours * 3600.0
    sentences = make_sentences(max(64, int(target / 2.5)), seed)
    items: list[ItemSpec] = []
    total = 0.0
    while total < target:
        split = splits[int(rng.choice(len(splits), p=share))]
        speaker = by_split[split][int(rng.integers(len(by_split[split])))]
        text = sentences[len(items) % len(sentences)]
        rate = float(np.clip(speaker.rate_wpm + rng.uniform(-20, 20), 110, 230))
        pitch = float(np.clip(speaker.pitch + rng.uniform(-8, 8), 10, 90))
        aug = random_augmentation(rng)
        items.append(ItemSpec(f"{speaker.id}_{len(items):05d}", speaker.id, text, rate, pitch, aug.to_dict(),
                              int(rng.integers(2 ** 31))))
        speech = len(text.split()) * 60.0 / rate * SPEECH_TIME_FACTOR
        total += float(speech + np.mean(LEAD_SILENCE_S) + np.mean(TAIL_SILENCE_S)) / aug.speed
    return items


def make_clip(spec: ItemSpec, speaker: Speaker, festival_clip: SpeechClip | None = None) -> SpeechClip:
    """Synthesise one item (festival clips come from a batch made beforehand)."""
    if speaker.engine == "espeak":
        return espeak.EspeakEngine.get().synthesize(spec.text, speaker.voice, speaker.variant,
                                                    int(round(spec.rate_wpm)), int(round(spec.pitch)))
    assert festival_clip is not None
    return festival_clip


def target_folder(head: str) -> str:
    """The per-item target folder of a head's corpus."""
    return "weights_npy" if head == "ict" else "vertices_npy"


def corpus_template(head: str):
    """The template a head's corpus is made on (wav2sem.template.Template)."""
    if head == "ict":
        from ..heads import SPEECH_CHANNELS, ict_head
        return ict_head(SPEECH_CHANNELS)
    return build_head().template


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise Wav2SemError(BAD_REQUEST, f"Unknown head {head!r}; use one of {', '.join(HEADS)}.")


def render_item(spec: ItemSpec, speaker: Speaker, clip: SpeechClip, out: Path, head: str = "synthetic") -> tuple[float, int]:
    """Resample, speed-change, animate, augment and write one item. -> (seconds, frames)"""
    rng = np.random.default_rng(spec.seed)
    aug = Augmentation(**spec.augmentation)
    audio = clip.audio
    if clip.sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, clip.sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    # Pad with silence (the engines leave almost none) so the clips also teach the rest pose.
    lead, tail = rng.uniform(*LEAD_SILENCE_S), rng.uniform(*TAIL_SILENCE_S)
    audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), audio,
                            np.zeros(int(tail * SAMPLE_RATE), np.float32)])
    lead = int(lead * SAMPLE_RATE) / SAMPLE_RATE
    segments = [PhoneSegment("_", "SIL", 0.0, lead)] + [
        PhoneSegment(s.symbol, s.arpabet, s.start + lead, s.end + lead) for s in clip.segments]
    segments.append(PhoneSegment("_", "SIL", segments[-1].end, len(audio) / SAMPLE_RATE))
    audio = change_speed(audio, SAMPLE_RATE, aug.speed)                           # (N,) float32
    segments = scale_segments(segments, 1.0 / aug.speed)
    if head == "ict":
        from ..heads import SPEECH_CHANNELS
        from .arkit_rig import arkit_weights
        track = articulator_track(segments, audio, SAMPLE_RATE, speaker.style, rng)   # (T, A)
        target = arkit_weights(track, SPEECH_CHANNELS)                                 # (T, K)
    else:
        _, vertices = animate(segments, audio, SAMPLE_RATE, speaker.style, rng)        # (T, V, 3)
        target = vertices.reshape(len(vertices), -1)                                   # (T, V*3)
    noisy = augment(audio, SAMPLE_RATE, aug, rng)
    sf.write(out / "wav" / f"{spec.id}.wav", noisy, SAMPLE_RATE, subtype="PCM_16")
    (out / "text" / f"{spec.id}.txt").write_text(spec.text + "\n", encoding="utf-8")
    write_segments(out / "phonemes" / f"{spec.id}.tsv", segments)
    final = out / target_folder(head) / f"{spec.id}.npy"
    tmp = final.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(target, dtype=np.float32))
    os.replace(tmp, final)
    return len(noisy) / SAMPLE_RATE, len(target)


def _run_job(specs: list[ItemSpec], speakers: dict[str, Speaker], out: str, head: str = "synthetic") -> list[str]:
    """Worker process entry: make the items of one job (a festival batch or one espeak item)."""
    out_path = Path(out)
    first = speakers[specs[0].speaker]
    festival_clips: list[SpeechClip | None] = [None] * len(specs)
    if first.engine == "festival":
        stretches = [FESTIVAL_WPM / s.rate_wpm for s in specs]
        festival_clips = list(festival.synthesize_batch([s.text for s in specs], first.voice, stretches))
    for spec, fclip in zip(specs, festival_clips):
        speaker = speakers[spec.speaker]
        render_item(spec, speaker, make_clip(spec, speaker, fclip), out_path, head)
    return [s.id for s in specs]


def _jobs(pending: list[ItemSpec], speakers: dict[str, Speaker]) -> list[list[ItemSpec]]:
    """espeak items one per job; festival items batched per voice."""
    jobs: list[list[ItemSpec]] = []
    batches: dict[str, list[ItemSpec]] = {}
    for spec in pending:
        sp = speakers[spec.speaker]
        if sp.engine == "festival":
            batches.setdefault(sp.voice, []).append(spec)
            if len(batches[sp.voice]) == FESTIVAL_BATCH:
                jobs.append(batches.pop(sp.voice))
        else:
            jobs.append([spec])
    jobs.extend(batches.values())
    return jobs


def check_engines(engines: Iterable[str]) -> None:
    """Fail early, naming the Debian package, when an engine or voice is missing."""
    for engine in engines:
        if engine == "espeak":
            espeak.EspeakEngine.get()
        elif engine == "festival":
            for voice in festival.VOICES:
                festival.check_voice(voice)
        else:
            raise Wav2SemError(BAD_REQUEST, f"Unknown TTS engine {engine!r}; use espeak and/or festival.")


def _settings(hours: float, seed: int, engines: tuple[str, ...], head: str) -> dict:
    """What plan.json records and resuming compares (the synthetic head's as in version 1)."""
    if head == "synthetic":
        return {"format": FORMAT, "version": SYNTHETIC_FORMAT_VERSION, "hours": hours, "seed": seed,
                "engines": list(engines)}
    return {"format": FORMAT, "version": FORMAT_VERSION, "hours": hours, "seed": seed, "engines": list(engines),
            "head": head}


def _prepare(out: Path, hours: float, seed: int, engines: tuple[str, ...],
             head: str = "synthetic") -> tuple[list[Speaker], list[ItemSpec]]:
    settings = _settings(hours, seed, engines, head)
    plan_path = out / "plan.json"
    speakers = make_speakers(seed, engines)
    if plan_path.is_file():
        saved = json.loads(plan_path.read_text(encoding="utf-8"))
        if saved.get("settings") != settings:
            s = saved.get("settings", {})
            raise Wav2SemError(BAD_REQUEST, f"{out} already holds a corpus made with --hours {s.get('hours')} "
                                              f"--seed {s.get('seed')} --engines {','.join(s.get('engines', []))} "
                                              f"--head {s.get('head', 'synthetic')}; "
                                              "use the same settings to resume or choose another --out folder.")
        items = [ItemSpec(**d) for d in saved["items"]]
    else:
        items = plan_items(speakers, hours, seed)
        plan = {"settings": settings, "items": [asdict(i) for i in items]}
        tmp = plan_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan, indent=0), encoding="utf-8")
        os.replace(tmp, plan_path)
    return speakers, items


def generate(out: str | Path, hours: float, seed: int = 0, workers: int | None = None,
             engines: tuple[str, ...] = ("espeak", "festival"),
             progress: Callable[[int, int], None] | None = None, head: str = DEFAULT_HEAD) -> dict:
    """Generate (or resume) a corpus in `out`. Blocks; uses `workers` processes.

    head: "ict" (ARKit weights on the ICT head, the default) or "synthetic" (vertices).

    progress(done, total) is called in this thread after each finished job.
    Returns the corpus.json dictionary.
    """
    out = Path(out)
    _check_head(head)
    check_engines(engines)
    folder = target_folder(head)
    try:
        for sub in ("wav", folder, "text", "phonemes", "splits"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"Cannot create the corpus folder {out}: {exc.strerror}.") from exc
    speakers, items = _prepare(out, hours, seed, engines, head)
    by_id = {s.id: s for s in speakers}
    corpus_template(head).save(out / "template.npz")
    pending = [i for i in items if not (out / folder / f"{i.id}.npy").is_file()]
    log.info("corpus %s: %d items planned, %d to make", out, len(items), len(pending))
    done = len(items) - len(pending)
    if progress:
        progress(done, len(items))
    jobs = _jobs(pending, by_id)
    workers = max(1, workers or os.cpu_count() or 1)
    if jobs:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            running = {pool.submit(_run_job, job, by_id, str(out), head) for job in jobs[: workers * 4]}
            queued = iter(jobs[workers * 4:])
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done += len(future.result())           # re-raises a worker's error
                    if progress:
                        progress(done, len(items))
                    nxt = next(queued, None)
                    if nxt is not None:
                        running.add(pool.submit(_run_job, nxt, by_id, str(out), head))
    return finalise(out, speakers, items, hours, seed, head)


def finalise(out: Path, speakers: list[Speaker], items: list[ItemSpec], hours: float, seed: int,
             head: str = "synthetic") -> dict:
    """Write splits, items.tsv and corpus.json from the finished items."""
    by_id = {s.id: s for s in speakers}
    rows = ["id\tspeaker\tsplit\tengine\tvoice\tvariant\tseconds\tframes"]
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    total_s = 0.0
    for item in items:
        sp = by_id[item.speaker]
        seconds = sf.info(str(out / "wav" / f"{item.id}.wav")).duration
        frames = np.load(out / target_folder(head) / f"{item.id}.npy", mmap_mode="r").shape[0]
        total_s += seconds
        splits[sp.split].append(item.id)
        rows.append(f"{item.id}\t{sp.id}\t{sp.split}\t{sp.engine}\t{sp.voice}\t{sp.variant or ''}\t{seconds:.3f}\t{frames}")
    (out / "items.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for split, ids in splits.items():
        (out / "splits" / f"{split}.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    template = corpus_template(head)
    info = {
        "format": FORMAT, "version": FORMAT_VERSION if head == "ict" else SYNTHETIC_FORMAT_VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "seed": seed, "hours_requested": hours, "hours": round(total_s / 3600.0, 4), "items": len(items),
        "vertex_count": template.vertex_count, "units": "metres, Y up, face towards +Z",
        "speakers": [s.to_dict() for s in speakers],
        "splits": {k: len(v) for k, v in splits.items()},
    }
    if head == "ict":
        info.update({"head": "ict", "target": "blendshapes", "channels": list(template.blendshape_names)})
    (out / "corpus.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info
