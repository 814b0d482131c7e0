"""Accuracy and speed of the forced aligner (wav2sem.real.align) on synthetic speech with
known phone timings, the mismatch criterion's calibration, and the free phone recogniser
baseline (wav2sem.real.phone_baseline) for comparison.

    .venv/bin/python benchmarks/alignment_accuracy.py [--clips 32] [--per-language 4]

Clips: espeak-ng English (varied voices, variants and rates), festival English (if
installed) and espeak-ng clips of other languages; each padded with 0.3 s of silence
before and after. Boundary error: start-time error of the aligner's phones matched to the
synthesiser's phones by edit distance (align.boundary_errors; other languages' espeak-ng
mnemonics are not ARPAbet, so there the match is by position only). Mismatch criterion:
the score per speech frame (align.align_scored) of each clip with its own transcript, with
another clip's transcript, and with half its words swapped for another clip's.
Prints a Markdown report and saves it to results/real_voices/alignment.md (+ .json).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
OUT = ROOT / "results" / "real_voices"
PAD_S = 0.3
SR = 16000

OTHER = {
    "fr": ["Bonjour tout le monde, je suis très content de vous voir aujourd'hui.",
           "Le petit chat noir dort sur le canapé rouge.",
           "Nous allons manger une pizza au restaurant ce soir.",
           "Il fait beau et les enfants jouent dans le jardin.",
           "Ma grand-mère prépare une soupe aux légumes."],
    "it": ["Buongiorno a tutti, oggi il cielo è sereno.",
           "Il gatto nero dorme sul divano della nonna.",
           "Domani andiamo al mare con gli amici.",
           "La pizza margherita è buonissima.",
           "Mi piace leggere un libro la sera."],
    "es": ["Buenos días, ¿cómo estás hoy?",
           "El perro marrón corre por la playa.",
           "Mañana vamos a comer paella con mi familia.",
           "La niña lleva un vestido azul.",
           "Me gusta mucho la música clásica."],
    "ru": ["Доброе утро, как у вас дела?",
           "Маленькая собака спит на диване.",
           "Завтра мы поедем в город на автобусе.",
           "Мама готовит вкусный борщ.",
           "Я люблю читать книги по вечерам."],
    "el": ["Καλημέρα σας, τι κάνετε σήμερα;",
           "Η θάλασσα είναι πολύ ζεστή το καλοκαίρι.",
           "Το παιδί παίζει με τον σκύλο στον κήπο.",
           "Θέλω ένα φλιτζάνι καφέ παρακαλώ.",
           "Ο δάσκαλος διαβάζει ένα βιβλίο."],
    "nl": ["Goedemorgen, hoe gaat het met je?",
           "De kleine hond slaapt op de bank.",
           "Morgen gaan we met de fiets naar het strand.",
           "Mijn moeder bakt een appeltaart.",
           "Ik lees graag een boek in de avond."],
}


def pad(clip):
    """Resample to 16 kHz and pad with silence; the reference segments move with it."""
    import soxr

    from wav2sem.synth.timing import PhoneSegment

    audio = clip.audio if clip.sample_rate == SR else soxr.resample(clip.audio, clip.sample_rate, SR, quality="HQ")
    n = int(PAD_S * SR)
    audio = np.concatenate([np.zeros(n, np.float32), np.asarray(audio, np.float32), np.zeros(n, np.float32)])
    segs = [PhoneSegment("_", "SIL", 0.0, PAD_S)] + [
        PhoneSegment(s.symbol, s.arpabet, s.start + PAD_S, s.end + PAD_S) for s in clip.segments]
    return audio, segs


def english_clips(count: int) -> list[dict]:
    from wav2sem.synth.sentences import make_sentences
    from wav2sem.synth.tts import espeak, festival

    engine = espeak.EspeakEngine.get()
    texts = make_sentences(count, seed=12)
    rng = np.random.default_rng(12)
    out = []
    for i, text in enumerate(texts):
        voice = espeak.VOICES[i % len(espeak.VOICES)]
        variant = espeak.VARIANTS[int(rng.integers(len(espeak.VARIANTS)))]
        rate = int(rng.integers(140, 220))
        audio, segs = pad(engine.synthesize(text, voice, variant, rate))
        out.append({"source": f"espeak {voice}+{variant} {rate} wpm", "engine": "espeak", "language": "en",
                    "text": text, "audio": audio, "ref": segs})
    for voice in festival.VOICES:
        try:
            festival.check_voice(voice)
        except Exception:  # noqa: BLE001 - a missing festival voice only leaves its rows out
            continue
        batch = texts[:4]
        for text, clip in zip(batch, festival.synthesize_batch(batch, voice)):
            audio, segs = pad(clip)
            out.append({"source": f"festival {voice}", "engine": "festival", "language": "en", "text": text,
                        "audio": audio, "ref": segs})
    return out


def other_clips(per_language: int) -> list[dict]:
    from wav2sem.real.phonemize import LANGUAGES
    from wav2sem.synth.tts import espeak

    engine = espeak.EspeakEngine.get()
    out = []
    for language, texts in OTHER.items():
        for text in texts[:per_language]:
            audio, segs = pad(engine.synthesize(text, LANGUAGES[language]))
            out.append({"source": f"espeak {LANGUAGES[language]}", "engine": "espeak", "language": language,
                        "text": text, "audio": audio, "ref": segs})
    return out


def viseme_class(arpabet: str) -> str:
    """open vowel (the rig opens the jaw to >= 0.45), m-b-p (lips closed) or other."""
    from wav2sem.synth.phonemes import PHONEMES, VOWELS

    if arpabet in ("M", "B", "P"):
        return "mbp"
    if arpabet in VOWELS and PHONEMES[arpabet][0].values["jaw_open"] >= 0.45:
        return "open"
    return "other"


def frame_classes(segments, duration: float, step: float = 0.01) -> list[str]:
    times = np.arange(0.0, duration, step) + step / 2
    out, k = [], 0
    for t in times:
        while k + 1 < len(segments) and segments[k].end <= t:
            k += 1
        out.append(viseme_class(segments[k].arpabet))
    return out


def phone_error_rate(ref, hyp) -> float:
    from wav2sem.real.align import is_pause

    r = [s.arpabet for s in ref if not is_pause(s)]
    h = [s.arpabet for s in hyp if s.arpabet != "SIL"]
    d = np.arange(len(h) + 1, dtype=float)
    for i in range(1, len(r) + 1):
        prev, d[0] = d.copy(), i
        for j in range(1, len(h) + 1):
            d[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, d[j - 1] + 1)
    return float(d[-1] / max(len(r), 1))


def swap_half(text: str, other: str) -> str:
    a, b = text.split(), other.split()
    return " ".join(b[i] if i % 2 and i < len(b) else w for i, w in enumerate(a))


def pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def run(args) -> dict:
    from wav2sem.real.align import (MISMATCH_SCORE_PER_FRAME, AlignmentError, align_scored, boundary_errors,
                                    decoder)
    from wav2sem.real.phone_baseline import recognize_phones

    t0 = time.perf_counter()
    decoder()
    build_s = time.perf_counter() - t0
    clips = english_clips(args.clips) + other_clips(args.per_language)
    rows = []
    for i, c in enumerate(clips):
        duration = len(c["audio"]) / SR
        t = time.perf_counter()
        try:
            segs, score = align_scored(c["audio"], c["text"], c["language"])
        except AlignmentError:      # no path for the clip's own transcript: a false rejection
            segs, score = None, None
        align_s = time.perf_counter() - t
        errors = boundary_errors(c["ref"], segs, use_labels=c["language"] == "en") if segs else []
        t = time.perf_counter()
        free = recognize_phones(c["audio"])
        free_s = time.perf_counter() - t
        row = {"source": c["source"], "language": c["language"], "text": c["text"], "seconds": duration,
               "align_s": align_s, "free_s": free_s, "score": score, "errors": errors}
        if c["language"] == "en" and segs:
            truth = frame_classes(c["ref"], duration)
            row["viseme_agreement_align"] = float(np.mean([a == b for a, b in zip(truth, frame_classes(segs, duration))]))
            row["viseme_agreement_free"] = float(np.mean([a == b for a, b in zip(truth, frame_classes(free, duration))]))
            row["per_free"] = phone_error_rate(c["ref"], free)
            row["per_align"] = phone_error_rate(c["ref"], segs)
        # Mismatched transcripts: the next clip of the same language.
        same = [o for o in clips if o["language"] == c["language"] and o["text"] != c["text"]]
        other = same[i % len(same)]["text"]
        for kind, text in (("other_sentence", other), ("half_swapped", swap_half(c["text"], other))):
            try:
                row[kind] = align_scored(c["audio"], text, c["language"])[1]
            except AlignmentError:
                row[kind] = None           # no alignment path: rejected outright
        rows.append(row)
        print(f"{i + 1}/{len(clips)} {c['source']} {c['language']}: median {_f(pct(errors, 50), '{:.3f}')} s, "
              f"score {_f(score)}, other {row['other_sentence']}, half {row['half_swapped']}", file=sys.stderr)
    return summarise(rows, build_s, MISMATCH_SCORE_PER_FRAME)


def summarise(rows: list[dict], build_s: float, threshold: float) -> dict:
    groups = {"espeak en": [r for r in rows if r["language"] == "en" and r["source"].startswith("espeak")],
              "festival en": [r for r in rows if r["source"].startswith("festival")],
              "espeak other languages": [r for r in rows if r["language"] != "en"]}
    table = {}
    for name, rs in groups.items():
        if not rs:
            continue
        errors = [e for r in rs for e in r["errors"]]
        seconds = sum(r["seconds"] for r in rs)
        matched = [r["score"] for r in rs if r["score"] is not None]
        table[name] = {
            "clips": len(rs), "audio_s": seconds, "boundaries": len(errors),
            "median_ms": 1000 * float(np.median(errors)), "p90_ms": 1000 * pct(errors, 90),
            "within_20ms": float(np.mean(np.asarray(errors) <= 0.02)),
            "rtf_align": sum(r["align_s"] for r in rs) / seconds, "rtf_free": sum(r["free_s"] for r in rs) / seconds,
            "score_matched_median": float(np.median(matched)), "score_matched_worst": float(min(matched)),
            "matched_no_path": sum(r["score"] is None for r in rs),
            "matched_rejected": int(sum(s < threshold for s in matched)) + sum(r["score"] is None for r in rs),
        }
        for kind in ("other_sentence", "half_swapped"):
            vals = [r[kind] for r in rs]
            aligned = [v for v in vals if v is not None]
            table[name][kind] = {
                "no_path": sum(v is None for v in vals), "aligned": len(aligned),
                "score_median": float(np.median(aligned)) if aligned else None,
                "score_best": float(max(aligned)) if aligned else None,
                "detected": sum(v is None or v < threshold for v in vals), "of": len(vals)}
        en = [r for r in rs if "viseme_agreement_free" in r]
        if en:
            table[name]["viseme_agreement_align"] = float(np.mean([r["viseme_agreement_align"] for r in en]))
            table[name]["viseme_agreement_free"] = float(np.mean([r["viseme_agreement_free"] for r in en]))
            table[name]["per_free"] = float(np.mean([r["per_free"] for r in en]))
            table[name]["per_align"] = float(np.mean([r["per_align"] for r in en]))
    machine = (f"{platform.machine()}, {subprocess.getoutput('nproc')} shared cores, Python "
               f"{platform.python_version()}, CPU only")
    return {"machine": machine, "decoder_build_s": build_s, "threshold": threshold, "groups": table,
            "clips": [{k: v for k, v in r.items() if k != "errors"} | {"median_error_ms": 1000 * float(np.median(r["errors"]))}
                      for r in rows]}


def _f(x, fmt="{:.1f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(result: dict) -> str:
    g = result["groups"]
    lines = ["# Forced alignment accuracy (wav2sem.real.align)", "",
             f"Machine: {result['machine']}. Decoder build (once per process): {result['decoder_build_s']:.2f} s.", "",
             "Boundary error: start-time error of aligned phones against the synthesiser's own phone timings "
             "(matched by edit distance; other languages by position, their espeak-ng symbols not being ARPAbet). "
             "RTF: seconds of compute per second of audio.", "",
             "| clips | n | boundaries | median ms | p90 ms | within 20 ms | RTF align | RTF free phones |",
             "|---|---|---|---|---|---|---|---|"]
    for name, t in g.items():
        lines.append(f"| {name} | {t['clips']} | {t['boundaries']} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} | "
                     f"{100 * t['within_20ms']:.0f} % | {t['rtf_align']:.3f} | {t['rtf_free']:.3f} |")
    lines += ["", f"## Mismatch criterion (threshold {result['threshold']:.0f} per speech frame)", "",
              "Score: the forced alignment's acoustic score per speech frame, relative to the best senone of each "
              "frame (0 = the transcript costs nothing). 'no path': pocketsphinx found no alignment at all.", "",
              "| clips | matched: median / worst | matched rejected | other sentence: no path, aligned median / best, "
              "detected | half the words swapped: no path, aligned median / best, detected |",
              "|---|---|---|---|---|"]
    for name, t in g.items():
        cells = []
        for kind in ("other_sentence", "half_swapped"):
            k = t[kind]
            cells.append(f"{k['no_path']}, {_f(k['score_median'])} / {_f(k['score_best'])}, {k['detected']}/{k['of']}")
        lines.append(f"| {name} | {t['score_matched_median']:.1f} / {t['score_matched_worst']:.1f} | "
                     f"{t['matched_rejected']}/{t['clips']} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Free phone recognition baseline (English clips)", "",
              "Viseme-class agreement: share of 10 ms frames whose class (open vowel: rig jaw >= 0.45 / m-b-p / "
              "other, silence counted as other) matches the synthesiser's. Phone error rate: edit distance of the "
              "ARPAbet sequences over the reference length (pauses left out).", "",
              "| clips | viseme agreement, aligner | viseme agreement, free phones | PER aligner | PER free phones |",
              "|---|---|---|---|---|"]
    for name, t in g.items():
        if "viseme_agreement_free" in t:
            lines.append(f"| {name} | {100 * t['viseme_agreement_align']:.1f} % | {100 * t['viseme_agreement_free']:.1f} % | "
                         f"{100 * t['per_align']:.1f} % | {100 * t['per_free']:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="espeak-ng English clips")
    parser.add_argument("--per-language", type=int, default=4, help="espeak-ng clips per other language")
    args = parser.parse_args(argv)
    result = run(args)
    text = markdown(result)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "alignment.md").write_text(text, encoding="utf-8")
    (OUT / "alignment.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
