"""Works (cover-song) identification on Bach chorales: musicid's works family vs essentia's Qmax.

A "work" is a hymn tune: music21's bundled Bach chorales are grouped by the soprano melody (not by
title), every harmonisation is rendered several times with fluidsynth (instrumentation, key, tempo and
fermata holds vary), the tunes are split into a fine-tune half and an evaluation half, and on the
evaluation tunes every rendering is a query against all the others (all-vs-all, self-matches skipped).

    python3 benchmarks/works_chorales.py                      # everything (setup, render, peer, musicid)
    python3 benchmarks/works_chorales.py --max-chorales 60 --skip-musicid      # quick run
    python3 benchmarks/works_chorales.py --skip-peer --model models/works      # musicid only

Steps (each idempotent; rerunning resumes):
  1. setup: fluidsynth + fluid-soundfont-gm via apt when missing; venvs .bench/chorales-venv (music21,
     pretty_midi, rapidfuzz) and .bench/essentia-venv (essentia, pinned) — never project dependencies.
  2. render (benchmarks/chorales/render.py): --out/audio/*.wav, metadata.csv, tunes.json, corpus.json.
  3. split: the tunes into finetune / eval halves (seeded, stratified so the multi-harmonisation tunes
     are shared fairly) → split.json, eval_works.txt, finetune_works.txt.
  4. peer (benchmarks/chorales/peer_essentia.py): essentia HPCP + ChromaCrossSimilarity(oti) +
     CoverSongSimilarity(serra09, asymmetric) over the eval renderings, subsampled to whole works up to
     --peer-max-tracks (Qmax is O(N²) pairs of O(n·m) alignments); scored with the project's
     musicid.families.works.metrics.ranking_metrics.
  5. musicid: `musicid works evaluate-folder` of --model on the eval tunes; `musicid works finetune`
     on the finetune tunes into --out/finetuned, evaluated the same way.
  6. report: reports/works/chorales.json and reports/works/chorales.md (table printed).

Plain python3 only: no project import here; the sub-steps run in their own venvs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks" / "chorales"
BENCH = ROOT / ".bench"
SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# essentia 2.1b6.dev1389 is the newest PyPI wheel (manylinux x86_64, cp311) and installs and runs here;
# it reports itself as 2.1-beta6-dev.
ESSENTIA_PIN = "essentia==2.1b6.dev1389"
VENVS = {
    "chorales-venv": ["music21", "pretty_midi", "rapidfuzz"],
    "essentia-venv": [ESSENTIA_PIN, "numpy"],
}
DEFAULT_PEER_MAX_TRACKS = 270  # ~20 ms per pair at a 256 ms chroma hop → ~25 min all-vs-all on one core

METRICS_SNIPPET = r"""
import json, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1])
sys.path.insert(0, str(root / "src"))
try:
    from musicid.families.works.metrics import ranking_metrics
except ImportError:  # the package's __init__ may need the full project venv: load the module by path
    import importlib.util
    spec = importlib.util.spec_from_file_location("works_metrics", root / "src/musicid/families/works/metrics.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    ranking_metrics = mod.ranking_metrics
d = np.load(sys.argv[2])
meta = json.loads(Path(sys.argv[3]).read_text())
works, ids, groups = meta["work_ids"], meta["track_ids"], meta["chorale_ids"]
out = {}
for name, qid in (("all_renderings", ids), ("other_harmonisations", groups)):
    m = ranking_metrics(d, works, works, qid, qid)
    out[name] = {k: v for k, v in m.items() if k not in ("ap", "rank1")}
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    shown = ["<inline metrics script>" if "\n" in str(c) else str(c) for c in cmd]
    log("$ " + " ".join(shown))
    return subprocess.run([str(c) for c in cmd], **kw)


# ------------------------------------------------------------------------------------------ setup

def setup(args: argparse.Namespace) -> None:
    if not shutil.which("fluidsynth") or not SF2.is_file():
        log("setup: installing fluidsynth + fluid-soundfont-gm (apt)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update"], check=True, env=env)
        run(["apt-get", "install", "-y", "fluidsynth", "fluid-soundfont-gm"], check=True, env=env)
    wanted = ["chorales-venv"] + ([] if args.skip_peer else ["essentia-venv"])
    for name in wanted:
        venv, pkgs = BENCH / name, VENVS[name]
        stamp = venv / ".bench-installed"
        if stamp.is_file() and stamp.read_text().split() == pkgs:
            continue
        log(f"setup: {venv} ← {' '.join(pkgs)}")
        if not (venv / "bin" / "python").is_file():
            run([sys.executable, "-m", "venv", venv], check=True)
        run([venv / "bin" / "python", "-m", "pip", "install", "-q", *pkgs], check=True)
        stamp.write_text(" ".join(pkgs) + "\n")


def metrics_python() -> Path:
    """The project venv's python when it has numpy; else a small .bench/metrics-venv (src/ goes on sys.path)."""
    has_numpy = lambda py: py.is_file() and subprocess.run(  # noqa: E731
        [str(py), "-c", "import numpy"], capture_output=True).returncode == 0
    project = ROOT / ".venv" / "bin" / "python"
    if has_numpy(project):
        return project
    py = BENCH / "metrics-venv" / "bin" / "python"
    if not has_numpy(py):
        log("metrics: project venv not ready; making .bench/metrics-venv (numpy), src/ on sys.path")
        run([sys.executable, "-m", "venv", BENCH / "metrics-venv"], check=True)
        run([py, "-m", "pip", "install", "-q", "numpy"], check=True)
    return py


# ------------------------------------------------------------------------------------------ split

def read_metadata(folder: Path) -> list[dict]:
    with (folder / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["chorale"] = row["track_id"].rsplit("_r", 1)[0]
    return rows


def split_tunes(folder: Path, seed: int, share: float) -> dict:
    tunes = json.loads((folder / "tunes.json").read_text())
    multi = sorted(w for w, m in tunes.items() if len(m) >= 2)
    single = sorted(w for w, m in tunes.items() if len(m) < 2)
    rng = random.Random(seed)
    eval_works: list[str] = []
    for stratum in (multi, single):
        order = stratum[:]
        rng.shuffle(order)
        eval_works += order[: int(round(len(order) * share))]
    eval_set = set(eval_works)
    finetune = sorted(w for w in tunes if w not in eval_set)
    rows = read_metadata(folder)
    count = lambda ws: sum(1 for r in rows if r["work_id"] in ws)  # noqa: E731
    split = {
        "seed": seed, "eval_share": share, "eval": sorted(eval_set), "finetune": finetune,
        "counts": {
            "eval_tunes": len(eval_set), "eval_multi_harmonisation_tunes": len(eval_set & set(multi)),
            "eval_harmonisations": sum(len(tunes[w]) for w in eval_set), "eval_tracks": count(eval_set),
            "finetune_tunes": len(finetune), "finetune_multi_harmonisation_tunes": len(set(finetune) & set(multi)),
            "finetune_harmonisations": sum(len(tunes[w]) for w in finetune), "finetune_tracks": count(set(finetune)),
        },
    }
    (folder / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    (folder / "eval_works.txt").write_text("".join(w + "\n" for w in split["eval"]))
    (folder / "finetune_works.txt").write_text("".join(w + "\n" for w in split["finetune"]))
    return split


def peer_subset(rows: list[dict], eval_works: list[str], tunes: dict, cap: int, seed: int) -> list[str]:
    """Whole eval works, seeded, multi- and single-harmonisation tunes interleaved in proportion, ≤ cap tracks."""
    size = {w: sum(1 for r in rows if r["work_id"] == w) for w in eval_works}
    if not cap or sum(size.values()) <= cap:
        return sorted(eval_works)
    rng = random.Random(seed + 1)
    strata = [sorted(w for w in eval_works if len(tunes[w]) >= 2), sorted(w for w in eval_works if len(tunes[w]) < 2)]
    for s in strata:
        rng.shuffle(s)
    order, taken = [], [0, 0]
    while any(taken[i] < len(strata[i]) for i in (0, 1)):
        i = min((i for i in (0, 1) if taken[i] < len(strata[i])), key=lambda i: taken[i] / len(strata[i]))
        order.append(strata[i][taken[i]])
        taken[i] += 1
    chosen, total = [], 0
    for w in order:
        if total + size[w] <= cap:
            chosen.append(w)
            total += size[w]
    return sorted(chosen)


# ------------------------------------------------------------------------------------------- peer

def run_peer(args: argparse.Namespace, folder: Path, split: dict, tunes: dict) -> dict | None:
    rows = read_metadata(folder)
    works = peer_subset(rows, split["eval"], tunes, args.peer_max_tracks, args.seed)
    tracks = [{"track_id": r["track_id"], "file": r["file"], "work_id": r["work_id"], "chorale": r["chorale"]}
              for r in rows if r["work_id"] in set(works)]
    peer_dir = folder / "peer"
    peer_dir.mkdir(parents=True, exist_ok=True)
    (peer_dir / "tracks.json").write_text(json.dumps(tracks, indent=1) + "\n")
    (folder / "peer_works.txt").write_text("".join(w + "\n" for w in works))
    n_multi = sum(1 for w in works if len(tunes[w]) >= 2)
    log(f"peer: essentia on {len(tracks)} eval tracks ({len(works)} of {len(split['eval'])} eval tunes, "
        f"{n_multi} with ≥ 2 harmonisations); cap --peer-max-tracks {args.peer_max_tracks or 'none'}")
    py = BENCH / "essentia-venv" / "bin" / "python"
    base = [py, HERE / "peer_essentia.py", "--folder", folder, "--tracks", peer_dir / "tracks.json",
            "--out-dir", peer_dir, "--hpcp-average", str(args.hpcp_average)]
    done = peer_dir / "peer.json"
    if done.is_file() and (peer_dir / "distances.npy").is_file() and not args.rerun_peer and \
            json.loads(done.read_text()).get("track_ids") == [t["track_id"] for t in tracks] and \
            (peer_dir / "check.json").is_file():
        log("peer: reusing the finished run for exactly these tracks (--rerun-peer to run it again)")
        check = json.loads((peer_dir / "check.json").read_text())
        return _peer_result(folder, peer_dir, tracks, works, n_multi, check)
    timing = run(base + ["--time-pairs", "12"], capture_output=True, text=True)
    if timing.returncode != 0:
        log(timing.stdout[-2000:] + timing.stderr[-2000:])
        raise SystemExit("peer: essentia timing run failed")
    check = json.loads(timing.stdout.strip().splitlines()[-1])
    (peer_dir / "check.json").write_text(json.dumps(check) + "\n")
    n = len(tracks)
    est = check["seconds_per_pair"] * n * (n - 1) / max(1, args.jobs)
    log(f"peer: {check['seconds_per_pair'] * 1e3:.1f} ms per pair → ~{est / 60:.1f} min for {n * (n - 1)} pairs "
        f"on {args.jobs} job(s); direction: same-work {check['same_work_distance']:.3f} vs different-work "
        f"median {sorted(check['different_work_distances'])[len(check['different_work_distances']) // 2]:.3f} "
        "(distance: lower = more similar)")
    if run(base + ["-j", str(args.jobs)]).returncode != 0:
        raise SystemExit("peer: essentia run failed")
    return _peer_result(folder, peer_dir, tracks, works, n_multi, check)


def _peer_result(folder: Path, peer_dir: Path, tracks: list[dict], works: list[str], n_multi: int, check: dict) -> dict:
    n = len(tracks)
    peer = json.loads((peer_dir / "peer.json").read_text())
    meta = {"track_ids": peer["track_ids"], "work_ids": peer["work_ids"],
            "chorale_ids": [t["chorale"] for t in tracks]}
    assert meta["track_ids"] == [t["track_id"] for t in tracks]
    (peer_dir / "metrics-input.json").write_text(json.dumps(meta) + "\n")
    proc = run([metrics_python(), "-c", METRICS_SNIPPET, ROOT, peer_dir / "distances.npy", peer_dir / "metrics-input.json"],
               capture_output=True, text=True)
    if proc.returncode != 0:
        log(proc.stderr[-3000:])
        raise SystemExit("peer: ranking_metrics failed")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        **metrics["all_renderings"], "seconds_per_query": peer["seconds_per_query"],
        "other_harmonisations": metrics["other_harmonisations"],
        "tracks": n, "works": len(works), "multi_harmonisation_works": n_multi,
        "timing": {k: peer[k] for k in ("feature_seconds", "feature_seconds_per_track", "pairwise_wall_seconds",
                                        "seconds_per_query_pairwise_only", "seconds_per_pair", "jobs", "resumed_rows")},
        "direction_check": {k: check[k] for k in ("query", "same_work_ref", "same_work_distance", "different_work_distances")},
        "essentia": peer["essentia"], "essentia_pip": ESSENTIA_PIN, "hpcp_average": peer["hpcp_average"],
        "frames_median": peer["frames_median"], "cross_similarity": peer["cross_similarity"],
        "cover_song_similarity": peer["cover_song_similarity"],
    }
    return result


# ---------------------------------------------------------------------------------------- musicid

def musicid_bin() -> Path:
    return ROOT / ".venv" / "bin" / "musicid"


def musicid_available() -> tuple[bool, str]:
    exe = musicid_bin()
    if not exe.is_file():
        return False, f"{exe} not found (run `make install` at the repo root)"
    proc = subprocess.run([str(exe), "works", "evaluate-folder", "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        return False, f"`musicid works evaluate-folder --help` exited {proc.returncode}: " \
                      f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ''}"
    return True, ""


def parse_json_stdout(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        for line in reversed(text.strip().splitlines()):
            if line.strip().startswith("{"):
                return json.loads(line)
        start = text.find("{")
        return json.loads(text[start:])


ALIGN_ALL = 1_000_000  # --rerank-top larger than any collection: every reference is aligned


def musicid_evaluate(folder: Path, model: Path, works_file: Path, rerank_top: int) -> dict:
    t0 = time.time()
    proc = run([musicid_bin(), "works", "evaluate-folder", folder, "--model", model, "--only-works", works_file,
                "--rerank-top", str(rerank_top), "--json"], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"musicid works evaluate-folder exited {proc.returncode}")
    result = parse_json_stdout(proc.stdout)
    result.setdefault("wall_seconds", time.time() - t0)
    return result


def run_musicid(args: argparse.Namespace, folder: Path, peer_works: Path | None) -> dict:
    ok, why = musicid_available()
    if not ok:
        log(f"musicid: works evaluation unavailable — {why}. Skipping the musicid rows "
            "(needs `musicid works evaluate-folder` and `musicid works finetune`).")
        return {"unavailable": why}
    out: dict = {}
    model = Path(args.model)
    if not args.model.startswith("models:/") and not (model / "config.json").is_file():
        why = f"model folder {model} has no config.json (train the works family first, e.g. `dvc repro`)"
        log(f"musicid: {why}; skipping the musicid rows")
        return {"unavailable": why}
    targets = [("eval", folder / "eval_works.txt")]
    if peer_works is not None and peer_works.read_text() != (folder / "eval_works.txt").read_text():
        targets.append(("peer_subset", peer_works))
    def evaluate_all(model_dir: Path, align_all: bool) -> dict:
        """Per target: the embedding alone, + alignment of its top rerank_top, (+ every reference aligned)."""
        results = {}
        for name, works_file in targets:
            reranked = musicid_evaluate(folder, model_dir, works_file, args.rerank_top)
            results[name] = {"embedding": reranked.get("embedding_only", reranked), "rerank": reranked}
            if align_all:
                results[name]["all"] = musicid_evaluate(folder, model_dir, works_file, ALIGN_ALL)
        return results

    try:
        out["synthetic"] = evaluate_all(model, args.align_all)
    except RuntimeError as exc:
        log(f"musicid: {exc}")
        out["synthetic_error"] = str(exc)
    if args.skip_finetune:
        return out
    tuned = Path(args.finetuned) if args.finetuned else folder / "finetuned"
    if tuned.is_dir() and any(tuned.iterdir()) and not args.refinetune:
        log(f"musicid: reusing fine-tuned model {tuned} (--refinetune to train again)")
    else:
        cmd = [musicid_bin(), "works", "finetune", folder, "--init", model, "--out", tuned,
               "--only-works", folder / "finetune_works.txt"]
        if args.finetune_epochs:
            cmd += ["--epochs", str(args.finetune_epochs)]
        t0 = time.time()
        if run(cmd).returncode != 0:
            out["finetune_error"] = "musicid works finetune failed"
            log("musicid: fine-tuning failed")
            return out
        out["finetune_seconds"] = time.time() - t0
    try:
        out["finetuned"] = evaluate_all(tuned, False)
    except RuntimeError as exc:
        out["finetuned_error"] = str(exc)
    return out


# ----------------------------------------------------------------------------------------- report

def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| system | mAP | MR1 | top-1 | top-10 | queries | s/query |", "|---|---|---|---|---|---|---|"]
    for name, m in rows:
        lines.append(f"| {name} | {fmt(m.get('mAP'))} | {fmt(m.get('MR1'), 2)} | {fmt(m.get('top1'))} | "
                     f"{fmt(m.get('top10'))} | {fmt(m.get('queries'))} | {fmt(m.get('seconds_per_query'), 3)} |")
    return "\n".join(lines)


def report(args: argparse.Namespace, folder: Path, corpus: dict, split: dict, peer: dict | None, mid: dict | None) -> str:
    rows: list[tuple[str, dict]] = []
    if peer:
        rows.append((f"essentia Qmax ({peer['tracks']} tracks, {peer['works']} tunes)", peer))
    for sub in ("peer_subset", "eval"):
        suffix = "eval tunes" if sub == "eval" else "peer's subset"
        for key, label in (("synthetic", "musicid synthetic-only"), ("finetuned", "musicid fine-tuned")):
            found = ((mid or {}).get(key) or {}).get(sub)
            if not found:
                continue
            top_k = found["rerank"].get("rerank", {}).get("top_k", args.rerank_top)
            # the embedding alone has no timing of its own: its s/query is the re-ranked run's first stage
            rows.append((f"{label}, embedding ({suffix})", found["embedding"] | {
                "queries": found["rerank"].get("queries"), "seconds_per_query": found["rerank"].get("embed_seconds_mean")}))
            rows.append((f"{label}, + top-{top_k} aligned ({suffix})", found["rerank"]))
            if "all" in found:
                rows.append((f"musicid alignment of every reference ({suffix})", found["all"]))
    c, s = corpus, split["counts"]
    corpus_lines = [
        "| corpus | |", "|---|---|",
        f"| chorale scores (music21 Bach corpus, 4 vocal parts) | {c['chorales']} |",
        f"| duplicate harmonisations dropped | {c['duplicates_dropped']} |",
        f"| harmonisations kept | {c['harmonisations']} |",
        f"| tunes (works, grouped by melody) | {c['tunes']} |",
        f"| tunes with ≥ 2 harmonisations | {c['multi_harmonisation_tunes']} ({c['chorales_in_multi_tunes']} harmonisations) |",
        f"| renderings (tracks) | {c['tracks']} ({c['renderings_per_harmonisation']} per harmonisation) |",
        f"| hours of audio | {c['hours']:.2f} |",
        f"| eval tunes / multi / tracks | {s['eval_tunes']} / {s['eval_multi_harmonisation_tunes']} / {s['eval_tracks']} |",
        f"| finetune tunes / multi / tracks | {s['finetune_tunes']} / {s['finetune_multi_harmonisation_tunes']} / {s['finetune_tracks']} |",
    ]
    md = ["# Works identification on Bach chorales", "",
          "Queries and references: every rendering of the evaluation tunes (all-vs-all, self-matches skipped); "
          "a hit is any other rendering of the same tune. Metrics from "
          "`musicid.families.works.metrics.ranking_metrics` (MR1 = mean 1-based rank of the first hit).", "",
          "musicid answers in two stages: the embedding ranks every reference, then the top "
          f"{args.rerank_top} are re-ordered by a chroma alignment (Qmax, `musicid.families.works.align`, "
          "`works.identify.rerank`). Rows show the embedding alone, the two stages as `identify` runs them, "
          "and the alignment applied to every reference (the peer's exhaustive search, with musicid's chroma). "
          "s/query: decode + CQT + embedding (+ alignments); the embedding row shows its first stage's share.", "",
          table(rows) if rows else "_no system was run_", ""]
    if peer:
        oh = peer["other_harmonisations"]
        md += [f"Harder view (peer only): renderings of the query's own harmonisation also skipped, so hits are other "
               f"harmonisations of the tune: mAP {fmt(oh['mAP'])}, MR1 {fmt(oh['MR1'], 2)}, top-1 {fmt(oh['top1'])}, "
               f"top-10 {fmt(oh['top10'])} over {oh['queries']} queries ({oh['skipped']} from single-harmonisation tunes left out).",
               "",
               f"essentia {peer['essentia']} (`{peer['essentia_pip']}`): HPCP 12 bins at 16 kHz, 128 ms frames / 64 ms hop "
               f"averaged ×{peer['hpcp_average']}; s/query = one query against the {peer['tracks'] - 1} other tracks on one "
               f"core ({peer['timing']['seconds_per_pair'] * 1e3:.1f} ms per pair) plus its chroma; "
               f"all-vs-all took {peer['timing']['pairwise_wall_seconds'] / 60:.1f} min wall on {peer['timing']['jobs']} job(s).", ""]
    if mid and mid.get("unavailable"):
        md += [f"musicid: not run — {mid['unavailable']}.", ""]
    md += corpus_lines + ["", f"Seed {args.seed}, eval share {args.eval_share}, melody threshold "
                          f"{corpus['melody_threshold']}; folder `{folder}`."]
    return "\n".join(md) + "\n"


# ------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=BENCH / "chorales", help="rendered corpus folder")
    ap.add_argument("--renderings", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chorales", type=int, default=0, help="first N chorale scores (0 = all)")
    ap.add_argument("--eval-share", type=float, default=0.5)
    ap.add_argument("--peer-max-tracks", type=int, default=DEFAULT_PEER_MAX_TRACKS,
                    help="cap the peer's all-vs-all set (whole eval tunes, seeded; 0 = every eval track)")
    ap.add_argument("--hpcp-average", type=int, default=4, help="average this many 64 ms HPCP frames for the peer")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes for rendering and the peer")
    ap.add_argument("--model", default="models/works")
    ap.add_argument("--rerank-top", type=int, default=100,
                    help="musicid's second stage: align each query's top N by embedding (works.identify.rerank.top_k)")
    ap.add_argument("--align-all", action=argparse.BooleanOptionalAction, default=True,
                    help="also align every reference (the second stage alone, as the peer does)")
    ap.add_argument("--finetuned", default="", help="fine-tuned model folder (default --out/finetuned)")
    ap.add_argument("--finetune-epochs", type=int, default=0)
    ap.add_argument("--refinetune", action="store_true")
    ap.add_argument("--rerun-peer", action="store_true", help="run essentia again even when a finished run matches")
    ap.add_argument("--skip-setup", action="store_true")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-musicid", action="store_true")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "works")
    args = ap.parse_args(argv)
    folder = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    t_start = time.time()

    if not args.skip_setup:
        setup(args)
    cmd = [BENCH / "chorales-venv" / "bin" / "python", HERE / "render.py", "--out", folder,
           "--renderings", str(args.renderings), "--seed", str(args.seed), "-j", str(args.jobs)]
    if args.max_chorales:
        cmd += ["--max-chorales", str(args.max_chorales)]
    t0 = time.time()
    if run(cmd).returncode != 0:
        raise SystemExit("render failed")
    render_s = time.time() - t0
    corpus = json.loads((folder / "corpus.json").read_text())
    tunes = json.loads((folder / "tunes.json").read_text())
    split = split_tunes(folder, args.seed, args.eval_share)
    log(f"split: {json.dumps(split['counts'])}")

    peer = None
    if not args.skip_peer:
        peer = run_peer(args, folder, split, tunes)
    mid = None
    if not args.skip_musicid:
        peer_works = folder / "peer_works.txt" if peer else None
        mid = run_musicid(args, folder, peer_works)

    md = report(args, folder, corpus, split, peer, mid)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    result = {"corpus": corpus, "split": {k: v for k, v in split.items() if k not in ("eval", "finetune")},
              "eval_tunes": split["eval"], "essentia": peer, "musicid": mid,
              "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "render_seconds": render_s, "total_seconds": time.time() - t_start}
    (args.report_dir / "chorales.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.report_dir / "chorales.md").write_text(md)
    log("\n" + md)
    log(f"wrote {args.report_dir / 'chorales.md'} and chorales.json ({(time.time() - t_start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
