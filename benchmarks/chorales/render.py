"""Bach chorales → melody-grouped works → rendered audio (a cover-song benchmark corpus).

Runs inside the bench venv that has music21, pretty_midi and rapidfuzz (made by
benchmarks/works_chorales.py under .bench/chorales-venv); needs `fluidsynth` and a GM soundfont.

1. Scores: music21's bundled Bach corpus (`corpus.getComposer("bach")`, offline). Kept: the four-part
   chorale scores (.mxl/.xml, and .krn where no .mxl of the same BWV exists); dropped: the roman-numeral
   analyses (.rntxt) and anything without four vocal parts (bwv846, a keyboard prelude). Repeats are
   expanded. Only the four vocal parts (Soprano, Alto, Tenor, Bass; "Soprano 1" in double-choir
   settings) are kept; obbligato instrument parts are dropped. Unnamed parts (.krn) are assigned to
   S/A/T/B by mean pitch.
2. Works by melody: the soprano's note sequence (ties merged, repeated pitches merged) as pitch
   classes; distance between two chorales = min over the 12 transpositions of the Levenshtein distance
   divided by the longer length (a passing note is one insertion). Chorales closer than
   `--melody-threshold` are linked and works are the connected components, so one hymn tune sung to
   different texts ("Herzlich tut mich verlangen" = "O Haupt voll Blut und Wunden" = "Befiehl du deine
   Wege") is one work. Settings that are the same harmonisation (melody and bass line both within 0.1,
   e.g. bwv244.15 / bwv244.17, the -sc/-lz/-inst edition variants) are kept once.
3. Renderings: `--renderings` per harmonisation, seeded by (`--seed`, chorale id), each with its own
   instrumentation (distinct within a harmonisation), transposition (−3..+3 semitones), tempo (76 qpm
   ±15 %), fermata holds, and velocity; pretty_midi writes the MIDI, fluidsynth renders, the result is
   down-mixed to mono 16-bit WAV at `--sample-rate` and peak-normalised.

Writes to --out: audio/<track_id>.wav, metadata.csv (file,track_id,work_id,version,title,style),
renderings.csv (per track: chorale, transpose, tempo, program(s), duration_s), tunes.json (work_id →
chorales), chorales.json (per chorale: title, work, kept/duplicate-of, melody length). Existing WAVs are
not rendered again (resumable).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the score reading is the library's
from musicid.data.chorales import (  # noqa: E402  (numpy + music21 only: runs in the bench venv)
    BASE_QPM, STYLES, VOCAL, chorale_id, natural_key, part_notes, vocal_parts)
from musicid.data.chorales import DEFAULT_SOUNDFONT as DEFAULT_SF2  # noqa: E402


# ----------------------------------------------------------------------------------------- scores

def corpus_paths() -> tuple[list[Path], list[str]]:
    from music21 import corpus

    paths = [Path(p) for p in corpus.getComposer("bach")]
    skipped = [f"{p.name}: roman-numeral analysis, not a score" for p in paths if p.suffix == ".rntxt"]
    scores = [p for p in paths if p.suffix in (".mxl", ".xml", ".krn")]
    stems_mxl = {p.stem for p in scores if p.suffix in (".mxl", ".xml")}
    kept = []
    for p in scores:
        if p.suffix == ".krn" and p.stem in stems_mxl:
            skipped.append(f"{p.name}: same chorale as {p.stem}.mxl")
            continue
        kept.append(p)
    kept.sort(key=lambda p: natural_key(p.name))
    return kept, skipped


def title_for(path: Path, score) -> str:
    from music21 import corpus

    m = re.match(r"bwv(\d+)$", path.stem)
    if m:
        entry = corpus.chorales.ChoraleList().byBWV.get(int(m.group(1)))
        if entry:
            return entry["title"]
    title = score.metadata.title if score.metadata is not None else None
    if title and not title.lower().endswith((".mxl", ".krn", ".xml")):
        return re.sub(r"^\d+\.\s*", "", title).strip()
    return path.stem


def extract(path: Path) -> dict:
    """Notes of the four vocal parts (quarter-note offsets, repeats expanded) and the soprano melody."""
    from music21 import corpus

    score = corpus.parse(str(path))
    info: dict = {"id": chorale_id(path), "file": path.name, "title": title_for(path, score), "notes": []}
    try:
        expanded = score.expandRepeats()
        info["repeats"] = "expanded"
    except Exception as exc:  # badly formed repeat marks in a few files: render as written
        expanded = score
        info["repeats"] = f"not expanded ({exc})"
    parts, how = vocal_parts(expanded)
    info["parts"] = how
    if not parts:
        return info
    info["notes"], fermata_ends = part_notes(parts)
    soprano = sorted((s, -m) for v, s, d, m in info["notes"] if v == 0)  # top note of chords first
    melody, last_start = [], None
    for start, neg_midi in soprano:
        if start == last_start:
            continue
        last_start = start
        if not melody or melody[-1] != -neg_midi:
            melody.append(-neg_midi)
    bass, last_start = [], None
    for start, midi in sorted((s, m) for v, s, d, m in info["notes"] if v == 3):
        if start == last_start:
            continue
        last_start = start
        if not bass or bass[-1] != midi:
            bass.append(midi)
    info.update(melody=melody, bass=bass, fermata_ends=sorted(fermata_ends),
                length_q=max(s + d for _, s, d, _ in info["notes"]))
    return info


def load_scores(paths: list[Path], cache_dir: Path) -> list[dict]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    out, t0 = [], time.time()
    for i, path in enumerate(paths, 1):
        cached = cache_dir / f"{chorale_id(path)}.json"
        if cached.is_file():
            info = json.loads(cached.read_text())
        else:
            info = extract(path)
            cached.write_text(json.dumps(info))
        out.append(info)
        if i % 50 == 0 or i == len(paths):
            print(f"  scores {i}/{len(paths)} ({time.time() - t0:.0f} s)", flush=True)
    return out


# --------------------------------------------------------------------------------------- grouping

def _pc_strings(seq: list[int]) -> list[str]:
    return ["".join(chr(97 + (x + t) % 12) for x in seq) for t in range(12)]


def melody_distance(a_str: str, b_shifts: list[str], la: int, lb: int) -> float:
    from rapidfuzz.distance import Levenshtein

    longest = max(la, lb)
    cutoff = int(longest * 0.5)
    best = min(Levenshtein.distance(a_str, b, score_cutoff=cutoff) for b in b_shifts)
    return best / longest


def group_by_melody(chorales: list[dict], threshold: float, min_length_ratio: float = 0.6) -> tuple[dict, dict]:
    """Union-find over melody links → {chorale id: work id}; plus {chorale id: duplicate-of id}."""
    ids = [c["id"] for c in chorales]
    mel = {c["id"]: c["melody"] for c in chorales}
    bass = {c["id"]: c["bass"] for c in chorales}
    base = {i: _pc_strings(mel[i])[0] for i in ids}
    shifts = {i: _pc_strings(mel[i]) for i in ids}
    bass_base = {i: _pc_strings(bass[i])[0] for i in ids}
    bass_shifts = {i: _pc_strings(bass[i]) for i in ids}
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    duplicate_of: dict[str, str] = {}
    for ai, a in enumerate(ids):
        for b in ids[ai + 1:]:
            la, lb = len(mel[a]), len(mel[b])
            if not la or not lb or min(la, lb) / max(la, lb) < min_length_ratio:
                continue
            d = melody_distance(base[a], shifts[b], la, lb)
            if d < threshold:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb, key=natural_key)] = min(ra, rb, key=natural_key)
                if d <= 0.1 and b not in duplicate_of and a not in duplicate_of:
                    bd = melody_distance(bass_base[a], bass_shifts[b], len(bass[a]), len(bass[b]))
                    if bd <= 0.1:
                        duplicate_of[b] = a
    works = {i: "tune_" + find(i) for i in ids}
    return works, duplicate_of


# -------------------------------------------------------------------------------------- rendering

def plan_renderings(chorale: dict, n: int, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}:{chorale['id']}")
    styles = rng.sample(sorted(STYLES), k=min(n, len(STYLES)))
    while len(styles) < n:
        styles.append(rng.choice(sorted(STYLES)))
    plans = []
    for k in range(n):
        plans.append({
            "track_id": f"{chorale['id']}_r{k + 1}",
            "chorale": chorale["id"],
            "style": styles[k],
            "programs": list(STYLES[styles[k]]),
            "transpose": rng.randint(-3, 3),
            "tempo": round(rng.uniform(0.85, 1.15), 3),
            "fermata_hold": round(rng.uniform(0.0, 1.0), 3),  # extra beats per fermata, × the note length
            "velocity": rng.randint(70, 100),
            "note_seed": rng.randrange(1 << 30),
        })
    return plans


def write_midi(chorale: dict, plan: dict, path: Path) -> None:
    import pretty_midi

    qpm = BASE_QPM * plan["tempo"]
    spq = 60.0 / qpm
    rng = random.Random(plan["note_seed"])
    holds: list[tuple[float, float]] = []
    for end in chorale["fermata_ends"]:
        durs = [d for v, s, d, _ in chorale["notes"] if v == 0 and abs(s + d - end) < 1e-3]
        holds.append((end, plan["fermata_hold"] * (durs[0] if durs else 1.0)))

    def to_time(q: float) -> float:
        return (q + sum(h for e, h in holds if e <= q + 1e-6)) * spq

    midi = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    instruments = [pretty_midi.Instrument(program=prog, name=VOCAL[v]) for v, prog in enumerate(plan["programs"])]
    for voice, start, dur, pitch in chorale["notes"]:
        vel = plan["velocity"] + (8 if voice == 0 else 0) + rng.randint(-6, 6)
        t0, t1 = to_time(start), to_time(start + dur)
        instruments[voice].notes.append(pretty_midi.Note(
            velocity=int(np.clip(vel, 1, 127)), pitch=int(np.clip(pitch + plan["transpose"], 0, 127)),
            start=t0, end=max(t0 + 0.05, t1 - 0.02)))  # tiny gap: repeated notes re-attack
    midi.instruments.extend(instruments)
    midi.write(str(path))


def to_mono_wav(stereo: Path, mono: Path) -> float:
    with wave.open(str(stereo), "rb") as src:
        channels, width, rate, frames = src.getnchannels(), src.getsampwidth(), src.getframerate(), src.getnframes()
        raw = src.readframes(frames)
    if width != 2:
        raise RuntimeError(f"{stereo}: expected 16-bit WAV from fluidsynth, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32).reshape(-1, channels).mean(axis=1)
    nonsilent = np.flatnonzero(np.abs(x) > 30)
    if len(nonsilent):
        x = x[: min(len(x), nonsilent[-1] + rate)]  # keep 1 s after the last audible sample
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 0:
        x *= 0.9 * 32767 / peak
    tmp = mono.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(rate)
        dst.writeframes(np.round(x).astype("<i2").tobytes())
    os.replace(tmp, mono)
    return len(x) / rate


def render_one(job: tuple[dict, dict, str, str, int, str]) -> tuple[str, float, str]:
    chorale, plan, out_dir, sf2, rate, fluidsynth = job
    out = Path(out_dir)
    wav = out / "audio" / f"{plan['track_id']}.wav"
    if wav.is_file() and wav.stat().st_size > 44:
        with wave.open(str(wav), "rb") as w:
            return plan["track_id"], w.getnframes() / w.getframerate(), "cached"
    mid = out / "midi" / f"{plan['track_id']}.mid"
    write_midi(chorale, plan, mid)
    with tempfile.TemporaryDirectory(prefix="chorale-") as tmp:
        stereo = Path(tmp) / "stereo.wav"
        cmd = [fluidsynth, "-ni", "-q", "-g", "0.5", "-r", str(rate), "-T", "wav", "-F", str(stereo), sf2, str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not stereo.is_file():
            raise RuntimeError(f"fluidsynth failed for {plan['track_id']}: {proc.stderr.strip()[-500:]}")
        warnings = " ".join(line for line in (proc.stderr + proc.stdout).splitlines() if "warn" in line.lower())
        seconds = to_mono_wav(stereo, wav)
    return plan["track_id"], seconds, warnings


# ------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".bench/chorales"))
    ap.add_argument("--renderings", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chorales", type=int, default=0, help="first N chorale scores in BWV order (0 = all)")
    ap.add_argument("--melody-threshold", type=float, default=0.28)
    ap.add_argument("--sf2", default=DEFAULT_SF2)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("-j", "--jobs", type=int, default=1)
    args = ap.parse_args(argv)

    fluidsynth = shutil.which("fluidsynth")
    if not fluidsynth or not Path(args.sf2).is_file():
        print(f"need fluidsynth on PATH and the soundfont {args.sf2}", file=sys.stderr)
        return 2
    out: Path = args.out
    for sub in ("audio", "midi"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    paths, skipped = corpus_paths()
    total_files = len(paths) + len(skipped)
    if args.max_chorales:
        paths = paths[: args.max_chorales]
    print(f"corpus: {total_files} files in music21's Bach corpus; {len(paths)} scores to read", flush=True)
    scores = load_scores(paths, out / "scores")
    chorales = [c for c in scores if c.get("notes")]
    for c in scores:
        if not c.get("notes"):
            skipped.append(f"{c['file']}: {c.get('parts')}")
    unexpanded = [c["file"] for c in chorales if c.get("repeats") != "expanded"]
    by_pitch = [c["file"] for c in chorales if c.get("parts") == "by mean pitch"]

    t0 = time.time()
    works, duplicate_of = group_by_melody(chorales, args.melody_threshold)
    kept = [c for c in chorales if c["id"] not in duplicate_of]
    print(f"grouping: {len(chorales)} chorale scores → {len(set(works.values()))} melodies "
          f"({time.time() - t0:.1f} s); {len(duplicate_of)} duplicate harmonisations dropped → {len(kept)} kept", flush=True)

    tunes: dict[str, list[dict]] = {}
    for c in kept:
        tunes.setdefault(works[c["id"]], []).append({"id": c["id"], "title": c["title"]})
    tunes = dict(sorted(tunes.items(), key=lambda kv: natural_key(kv[0])))
    multi = {w: m for w, m in tunes.items() if len(m) >= 2}
    (out / "tunes.json").write_text(json.dumps(tunes, indent=1, ensure_ascii=False) + "\n")
    (out / "chorales.json").write_text(json.dumps({
        "melody_threshold": args.melody_threshold,
        "skipped": skipped,
        "repeats_not_expanded": unexpanded,
        "parts_by_mean_pitch": by_pitch,
        "chorales": [{"id": c["id"], "file": c["file"], "title": c["title"], "work_id": works[c["id"]],
                      "duplicate_of": duplicate_of.get(c["id"]), "melody_notes": len(c["melody"]),
                      "length_quarters": c["length_q"], "fermatas": len(c["fermata_ends"])} for c in chorales],
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"works: {len(tunes)} tunes, {len(multi)} with ≥ 2 harmonisations "
          f"({sum(len(m) for m in multi.values())} chorales)", flush=True)

    plans = [(c, p) for c in kept for p in plan_renderings(c, args.renderings, args.seed)]
    jobs = [(c, p, str(out), args.sf2, args.sample_rate, fluidsynth) for c, p in plans]
    durations: dict[str, float] = {}
    warnings: dict[str, str] = {}
    t0, done = time.time(), 0
    print(f"rendering {len(jobs)} tracks ({args.renderings} per harmonisation, {args.jobs} job(s))", flush=True)

    def record(result: tuple[str, float, str]) -> None:
        nonlocal done
        track_id, seconds, note = result
        durations[track_id] = seconds
        if note and note != "cached":
            warnings[track_id] = note
        done += 1
        if done % 25 == 0 or done == len(jobs):
            print(f"  rendered {done}/{len(jobs)} ({time.time() - t0:.0f} s)", flush=True)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            for result in pool.map(render_one, jobs, chunksize=4):
                record(result)
    else:
        for job in jobs:
            record(render_one(job))

    with (out / "metadata.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "track_id", "work_id", "version", "title", "style"])
        for c, p in plans:
            w.writerow([f"audio/{p['track_id']}.wav", p["track_id"], works[c["id"]], p["track_id"], c["title"], p["style"]])
    with (out / "renderings.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["track_id", "chorale", "work_id", "style", "programs", "transpose", "tempo", "fermata_hold",
                    "velocity", "duration_s"])
        for c, p in plans:
            w.writerow([p["track_id"], c["id"], works[c["id"]], p["style"], " ".join(map(str, p["programs"])),
                        p["transpose"], p["tempo"], p["fermata_hold"], p["velocity"], f"{durations[p['track_id']]:.3f}"])
    summary = {
        "corpus_files": total_files, "scores_read": len(paths), "chorales": len(chorales),
        "duplicates_dropped": len(duplicate_of), "harmonisations": len(kept), "tunes": len(tunes),
        "multi_harmonisation_tunes": len(multi), "chorales_in_multi_tunes": sum(len(m) for m in multi.values()),
        "renderings_per_harmonisation": args.renderings, "tracks": len(plans),
        "hours": sum(durations.values()) / 3600, "sample_rate": args.sample_rate, "seed": args.seed,
        "melody_threshold": args.melody_threshold, "fluidsynth_warnings": len(warnings),
        "repeats_not_expanded": len(unexpanded), "parts_by_mean_pitch": len(by_pitch),
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    if warnings:
        (out / "fluidsynth-warnings.json").write_text(json.dumps(warnings, indent=1) + "\n")
    print(f"done: {len(plans)} tracks, {summary['hours']:.2f} h of audio in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
