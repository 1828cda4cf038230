"""The fingerprinter against a landmark peer on real music, one command, one table.

Catalog: the dev kit of ../shared/bench (≈ 90 freely licensed game-music tracks) enlarged by at
least as many distractor tracks from the Debian packages DESIGN.md §4 allows for training (they
are only indexed here, never queried). Queries: the kit's 1200 degraded clips (make_queries.py,
seed 7), all from dev-kit tracks; a model trained on the synthetic archive (the demo's) has heard
none of them. Both systems index the same catalog and answer the same queries in this run:

- musicid: `musicid index build` + `musicid identify --json` with --model (default models/fingerprint);
- audfprint2 (a packaging of Ellis's audfprint), in its own venv under .bench/: density 40, 4 shifts.

Both are scored by the kit's score.py; index and query times are wall clock on this machine.
Writes reports/fingerprint/dev-music.md and .json.

    python3 benchmarks/dev_music_catalog.py --model models/fingerprint          # needs espeak-ng, ffmpeg (apt)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
DISTRACTOR_PACKAGES = ["ufoai-music", "supertux-data", "freedroidrpg-data", "neverball-data", "extremetuxracer-data"]
AUDIO = (".ogg", ".mp3", ".flac", ".wav", ".opus")
LENGTHS = (1, 2, 3, 5, 10)
MATCHED = re.compile(r"Matched (\S+) .*? as (\S+) at\s+(-?[\d.]+) s with\s+(\d+) of")


def log(msg: str) -> None:
    print(f"[dev-music] {msg}", file=sys.stderr, flush=True)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(map(str, cmd))[:300])
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def dev_kit(kit: Path, music: Path) -> None:
    if not (music / "refs").is_dir():
        run(["bash", kit / "fetch-dev-music.sh", music])
    if not (music / "truth.json").is_file():
        run([sys.executable, kit / "make_queries.py", "--refs", music / "refs", "--out", music])


def distractors(work: Path, packages: list[str]) -> list[Path]:
    """Music files of the training packages, one flat folder (pk3 archives unpacked)."""
    out = work / "distractors"
    if (out / "done").is_file():
        return sorted(p for p in out.iterdir() if p.suffix in AUDIO)
    debs, extracted = work / "debs", work / "x"
    debs.mkdir(parents=True, exist_ok=True)
    for package in packages:
        if not list(debs.glob(f"{package}_*.deb")):
            run(["apt-get", "download", "-q", package], cwd=debs, stdout=subprocess.DEVNULL)
    for deb in debs.glob("*.deb"):
        run(["dpkg", "-x", deb, extracted])
    out.mkdir(parents=True, exist_ok=True)
    found = [p for p in extracted.rglob("*") if p.is_file() and "music" in str(p.parent).lower() and p.suffix.lower() in AUDIO]
    for archive in extracted.rglob("*music*.pk3"):  # ufoai ships its music as a zip
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.lower().endswith(AUDIO):
                    target = work / "pk3" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
                    found.append(target)
    for path in found:
        package = next((part for part in path.parts if part in {"freedroidrpg", "supertux2", "etr", "neverball", "ufoai", "pk3"}),
                       "other")
        shutil.copyfile(path, out / f"distractor_{package}__{path.parent.name}_{path.name}")
    (out / "done").write_text("")
    return sorted(p for p in out.iterdir() if p.suffix in AUDIO)


def catalog(work: Path, refs: list[Path], extra: list[Path]) -> Path:
    folder = work / "catalog"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in refs + extra:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def score(kit: Path, truth: Path, results: Path) -> dict:
    out = run([sys.executable, kit / "score.py", truth, results], stdout=subprocess.PIPE, text=True).stdout
    print(out, file=sys.stderr)
    return json.loads(out.strip().splitlines()[-1])


def hours_of(paths: list[Path]) -> float:
    import soundfile as sf

    total = 0.0
    for path in paths:
        try:
            total += sf.info(str(path)).duration
        except RuntimeError:
            import audioread

            with audioread.audio_open(str(path)) as f:
                total += f.duration
    return total / 3600


def run_musicid(args: argparse.Namespace, work: Path, folder: Path, queries: list[Path], truth: Path, kit: Path) -> dict:
    musicid = ROOT / ".venv" / "bin" / "musicid"
    index = work / "musicid-index"
    shutil.rmtree(index, ignore_errors=True)
    began = time.perf_counter()
    run([musicid, "index", "build", folder, "--out", index, "--model", args.model, "--params", ROOT / "params.yaml"])
    index_s = time.perf_counter() - began
    results = work / "musicid-results.jsonl"
    began = time.perf_counter()
    with results.open("w") as handle:
        subprocess.run([str(musicid), "identify", *map(str, queries), "--model", args.model, "--index", str(index),
                        "--params", str(ROOT / "params.yaml"), "--json"], stdout=handle, check=False)
    query_s = time.perf_counter() - began
    return {"index_seconds": index_s, "query_seconds": query_s, "scores": score(kit, truth, results)}


def run_peer(args: argparse.Namespace, work: Path, files: list[Path], queries: list[Path], truth: Path, kit: Path) -> dict:
    venv = BENCH / "audfprint-venv"
    if not (venv / "bin" / "audfprint").is_file():
        run([sys.executable, "-m", "venv", venv])
        run([venv / "bin" / "pip", "install", "-q", "audfprint2"])
    audfprint = venv / "bin" / "audfprint"
    db, lists = work / "audfprint.pklz", work / "lists"
    lists.mkdir(exist_ok=True)
    (lists / "refs.txt").write_text("".join(f"{p}\n" for p in files))
    (lists / "queries.txt").write_text("".join(f"{p}\n" for p in queries))
    db.unlink(missing_ok=True)
    began = time.perf_counter()
    run([audfprint, "-d", db, "-n", "40", "-H", str(args.jobs), "-l", "new", lists / "refs.txt"])
    index_s = time.perf_counter() - began
    began = time.perf_counter()
    # matching runs in one process: with -H 2 it had not finished 1200 queries after 17 min here
    proc = run([audfprint, "-v", "-d", db, "-i", "4", "-x", "5", "-H", "1", "-l", "match", lists / "queries.txt"],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    query_s = time.perf_counter() - began
    answers: dict[str, list[dict]] = {str(q): [] for q in queries}
    for line in proc.stdout.splitlines():  # best first per query; a reference can match at several offsets
        found = MATCHED.search(line)
        if found:
            query, ref, offset, common = found.groups()
            if Path(ref).name not in {m["ref"] for m in answers.setdefault(query, [])}:
                answers[query].append({"ref": Path(ref).name, "score": int(common), "offset_s": float(offset)})
    results = work / "audfprint-results.jsonl"
    results.write_text("".join(json.dumps({"query": q, "matches": m}) + "\n" for q, m in answers.items()))
    return {"index_seconds": index_s, "query_seconds": query_s, "scores": score(kit, truth, results)}


def report(out: dict) -> str:
    head = ("| system | main top-1 at " + " / ".join(f"{n} s" for n in LENGTHS) + " | pitch ±1 st 5 / 10 s | speed ±1–3 % 5 / 10 s "
            "| index s (× real time) | query s (ms per query) |")
    lines = [f"# Fingerprinter vs audfprint on the dev kit + {out['distractors']} distractor tracks", "",
             f"Catalog: {out['refs']} dev-kit tracks + {out['distractors']} distractors = {out['tracks']} tracks, "
             f"{out['hours']:.2f} h; {out['queries']} queries from dev-kit tracks (make_queries.py, seed 7). "
             f"Model: `{out['model']}`. {out['machine']}.", "", head, "|---|---|---|---|---|---|"]
    for name, result in out["systems"].items():
        s = result["scores"]
        main = " / ".join(f"{s.get(f'main_top1_{n}s', 0):.3f}" for n in LENGTHS)
        pitch = f"{s.get('pitch_top1_5s', 0):.2f} / {s.get('pitch_top1_10s', 0):.2f}"
        speed = f"{s.get('speed_top1_5s', 0):.2f} / {s.get('speed_top1_10s', 0):.2f}"
        x_rt = out["hours"] * 3600 / result["index_seconds"]
        lines.append(f"| {name} | {main} | {pitch} | {speed} | {result['index_seconds']:.0f} ({x_rt:.0f}×) | "
                     f"{result['query_seconds']:.0f} ({result['query_seconds'] / out['queries'] * 1000:.0f}) |")
    lines += ["", "Query time includes loading the model and index once (musicid) or the hash table once (audfprint)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/musicid-dev-catalog"))
    ap.add_argument("--music", type=Path, default=None, help="dev kit folder [default: WORK/music]")
    ap.add_argument("--kit", type=Path, default=Path(os.environ.get("MUSICID_BENCH_KIT", ROOT.parent / "shared" / "bench")))
    ap.add_argument("--model", default="models/fingerprint", help="musicid model folder or registry URI")
    ap.add_argument("--packages", nargs="+", default=DISTRACTOR_PACKAGES)
    ap.add_argument("-j", "--jobs", type=int, default=1, help="audfprint processes for indexing")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "fingerprint")
    args = ap.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    music = args.music or work / "music"
    dev_kit(args.kit, music)
    refs = sorted(p for p in (music / "refs").iterdir() if p.suffix.lower() in AUDIO)
    extra = distractors(work, args.packages)
    if len(extra) < len(refs):
        log(f"warning: only {len(extra)} distractor tracks for {len(refs)} dev-kit tracks")
    folder = catalog(work, refs, extra)
    files = sorted(folder.iterdir())
    truth = music / "truth.json"
    queries = sorted(music / "queries" / name for name in json.loads(truth.read_text()))
    out = {"refs": len(refs), "distractors": len(extra), "tracks": len(files), "hours": hours_of(files),
           "queries": len(queries), "model": args.model, "systems": {},
           "machine": f"{os.cpu_count()} CPU cores, {sys.platform}"}
    out["systems"]["musicid"] = run_musicid(args, work, folder, queries, truth, args.kit)
    if not args.skip_peer:
        out["systems"]["audfprint2 (density 40, 4 shifts)"] = run_peer(args, work, files, queries, truth, args.kit)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "dev-music.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.report_dir / "dev-music.md").write_text(report(out))
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
