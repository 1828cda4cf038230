"""`musicid data`: inspect sources, check readiness, prepare and validate manifests, synthesise music, verify the DVC cache."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from musicid.cli.base import (
    EVAL_RATIO_OPTION, JSON_OPTION, METADATA_OPTION, PARAMS_OPTION, SOURCE_ARGS, SOURCE_TYPES, WORKERS_OPTION,
    _emit_json, _scan, _source, main,
)


@main.group()
def data() -> None:
    """Inspect audio sources, check readiness, validate manifests, generate synthetic music."""


@data.command("inspect")
@SOURCE_ARGS
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@EVAL_RATIO_OPTION
@METADATA_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_inspect(source_and_path: tuple[str, ...], query_duration: float, eval_ratio: float, metadata: str | None,
                 params_path: str, workers: int | None, as_json: bool) -> None:
    """Describe PATH (a folder, archive or ingested folder): counts, hours, durations, formats.

    SOURCE (optional): auto, folder, archive, synthetic, fma or mtg_jamendo (see README).
    Also recommends how many tracks to hold out and how many test queries they give.
    """
    from musicid.data.inspect import summarize

    report = summarize(_scan(source_and_path, params_path, workers, metadata), query_duration, eval_ratio)
    if as_json:
        _emit_json(report)
        return
    files, durations = report["files"], report["duration_s"]
    click.echo(f"{source_and_path[-1]}")
    click.echo(f"  audio files   {files['audio']} ({files['decodable']} decodable, {files['quarantined']} quarantined)")
    click.echo(f"  total         {report['total_hours']:.3f} h in {report['works']} work(s)")
    click.echo(f"  durations     min {durations['min']:.1f} s, median {durations['median']:.1f} s, max {durations['max']:.1f} s")
    for label, count in durations["histogram"].items():
        if count:
            click.echo(f"    {label:>10}  {count:5d}  {'#' * min(60, count)}")
    click.echo("  performances per work  " + ", ".join(f"{n}: {w} work{'s' * (w != 1)}"
                                                   for n, w in report["performances_per_work"].items()))
    click.echo(f"  formats       {', '.join(f'{k} ×{v}' for k, v in report['formats'].items()) or '-'}")
    click.echo(f"  sample rates  {', '.join(f'{k} Hz ×{v}' for k, v in report['sample_rates'].items()) or '-'}")
    for reason, count in report["quarantine_reasons"].items():
        click.echo(f"  quarantined   {reason} ×{count}")
    advice = report["recommended"]
    click.echo(f"  recommended   {advice['train_tracks']} train / {advice['eval_tracks']} eval tracks, "
               f"{advice['test_queries']} test queries of {query_duration:g} s (eval ratio {eval_ratio:g})")
    verdict = report["readiness"]
    click.echo(f"  ready_for_smoke: {str(verdict['ready_for_smoke']).lower()}")
    for reason in verdict["reasons"]:
        click.echo(f"    - {reason}")


@data.command("compare")
@click.argument("dataset_a", type=click.Path(exists=True))
@click.argument("dataset_b", type=click.Path(exists=True))
@click.option("--fail-on-overlap", is_flag=True, help="Exit 1 when the two share any audio, id or work title.")
@JSON_OPTION
def data_compare(dataset_a: str, dataset_b: str, fail_on_overlap: bool, as_json: bool) -> None:
    """Work and performance overlap between two datasets: by content hash, track id, work id, work title.

    Each is an ingested folder (or its catalog.json), a manifest .jsonl or a folder of manifests.
    """
    from musicid.data.compare import compare_datasets, load_tracks

    report = compare_datasets(load_tracks(dataset_a), load_tracks(dataset_b))
    if as_json:
        _emit_json(report)
    else:
        click.echo(f"A {dataset_a}: {report['tracks']['a']} performances of {report['works']['a']} works")
        click.echo(f"B {dataset_b}: {report['tracks']['b']} performances of {report['works']['b']} works")
        for name, label in (("performances_by_content_hash", "same audio"), ("performances_by_track_id", "same track id"),
                            ("works_by_work_id", "same work id"), ("works_by_title", "same work title")):
            found = report[name]
            click.echo(f"  {label:<15} {found['count']:5d}")
            for example in found["examples"]:
                click.echo(f"      {example['key'][:40]:<40}  A: {', '.join(example['a'][:3])}  B: {', '.join(example['b'][:3])}")
    if fail_on_overlap and report["overlap"]:
        raise SystemExit(1)


@data.command("inspect-batch")
@click.argument("candidates", nargs=-1, required=True, metavar="NAME=PATH...")
@click.option("--source", "source_type", type=click.Choice(list(SOURCE_TYPES)), default="auto", show_default=True)
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@EVAL_RATIO_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_inspect_batch(candidates: tuple[str, ...], source_type: str, query_duration: float, eval_ratio: float,
                       params_path: str, workers: int | None, as_json: bool) -> None:
    """Inspect several candidate folders side by side (NAME=PATH each): size, durations, readiness."""
    from musicid.data.inspect import summarize

    reports = {}
    for candidate in candidates:
        name, sep, path = candidate.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{candidate!r}: expected NAME=PATH", param_hint="NAME=PATH")
        reports[name] = summarize(_scan((source_type, path), params_path, workers), query_duration, eval_ratio)
    if as_json:
        _emit_json(reports)
        return
    header = f"{'name':<16}{'files':>7}{'quar.':>7}{'hours':>8}{'median s':>10}{'eval':>6}{'queries':>9}  ready"
    click.echo(header)
    for name, report in reports.items():
        click.echo(
            f"{name:<16}{report['files']['decodable']:>7}{report['files']['quarantined']:>7}{report['total_hours']:>8.2f}"
            f"{report['duration_s']['median']:>10.1f}{report['recommended']['eval_tracks']:>6}"
            f"{report['recommended']['test_queries']:>9}  {str(report['readiness']['ready_for_smoke']).lower()}"
        )


@data.command("check-ready")
@SOURCE_ARGS
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Seconds a file needs to yield one evaluation query.")
@EVAL_RATIO_OPTION
@METADATA_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_check_ready(source_and_path: tuple[str, ...], query_duration: float, eval_ratio: float, metadata: str | None,
                     params_path: str, workers: int | None, as_json: bool) -> None:
    """Exit 0 if [SOURCE] PATH has ≥2 decodable files and ≥2 files as long as a query; else exit 1 with why."""
    from musicid.data.inspect import readiness, recommend

    scan = _scan(source_and_path, params_path, workers, metadata)
    durations = [t["duration_s"] for t in scan.tracks]
    verdict = readiness(durations, query_duration) | {"recommended": recommend(durations, query_duration, eval_ratio)}
    if as_json:
        _emit_json(verdict)
    elif verdict["ready_for_smoke"]:
        click.echo(f"ready_for_smoke: {verdict['decodable_files']} decodable, {verdict['files_long_enough']} ≥ {query_duration:g} s; "
                   f"{verdict['recommended']['eval_tracks']} eval tracks at eval ratio {eval_ratio:g}")
    else:
        click.echo("not ready: " + "; ".join(verdict["reasons"]), err=True)
    sys.exit(0 if verdict["ready_for_smoke"] else 1)


@data.command("prepare")
@SOURCE_ARGS
@click.option("--output-root", required=True, type=click.Path(file_okay=False),
              help="Writes OUTPUT_ROOT/ingested (audio, catalog, quarantine) and OUTPUT_ROOT/manifests.")
@EVAL_RATIO_OPTION
@click.option("--val-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--query-duration", type=click.FloatRange(min=0, min_open=True), required=True, help="Query length (s).")
@click.option("--query-stride", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A query every STRIDE s along each eval track [default: the query duration, no overlap].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split-by", type=click.Choice(["work", "source"]), default="work", show_default=True)
@METADATA_OPTION
@PARAMS_OPTION
@WORKERS_OPTION
@JSON_OPTION
def data_prepare(source_and_path: tuple[str, ...], output_root: str, eval_ratio: float, val_ratio: float,
                 query_duration: float, query_stride: float | None, seed: int, split_by: str, metadata: str | None,
                 params_path: str, workers: int | None, as_json: bool) -> None:
    """Ingest [SOURCE] PATH and write leakage-checked train/val/test/refs/queries manifests.

    The same functions as the `ingest` and `prepare` stages: bad files are quarantined with their
    reason, splits are by work (or the catalog's own with --split-by source). Check the result
    with `musicid data validate OUTPUT_ROOT/manifests`.
    """
    from musicid.config import IngestConfig, PrepareConfig, load_params
    from musicid.data.ingest import ingest
    from musicid.data.splits import prepare

    source_type, path = _source(source_and_path)
    base = load_params(params_path).ingest if Path(params_path).exists() else IngestConfig()
    ingest_cfg = base.model_copy(update={"source_type": source_type, "query_duration_s": query_duration}
                                 | ({"metadata": metadata} if metadata else {}))
    try:
        prepare_cfg = PrepareConfig(seed=seed, val_fraction=val_ratio, test_fraction=eval_ratio, split_by=split_by,
                                    query_lengths_s=[query_duration], query_stride_s=query_stride or query_duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc).splitlines()[-1]) from None
    root = Path(output_root)
    scan = ingest(path, root / "ingested", ingest_cfg, workers=workers, progress=sys.stderr.isatty())
    summary = prepare(root / "ingested" / "catalog.json", root / "manifests", prepare_cfg)
    summary |= {"quarantined": len(scan.quarantined), "output_root": str(root)}
    if as_json:
        _emit_json(summary)
        return
    click.echo(f"{len(scan.tracks)} tracks ingested, {len(scan.quarantined)} quarantined → {root / 'ingested'}")
    click.echo("tracks " + ", ".join(f"{k} {v}" for k, v in summary["tracks"].items())
               + f"; {summary['queries']} queries of {query_duration:g} s every {query_stride or query_duration:g} s → {root / 'manifests'}")


@data.command("validate")
@click.argument("manifest_dir", type=click.Path())
@JSON_OPTION
def data_validate(manifest_dir: str, as_json: bool) -> None:
    """Check a manifest folder's structure and that no track, work or audio crosses splits."""
    from musicid.data.splits import validate_manifests

    report = validate_manifests(manifest_dir)
    if as_json:
        _emit_json(report)
    elif report["ok"]:
        click.echo("ok: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()))
    else:
        for problem in report["problems"]:
            click.echo(f"problem: {problem}", err=True)
    sys.exit(0 if report["ok"] else 1)


@data.command("verify-cache")
@click.option("--remote", "remote", is_flag=False, flag_value="", default=None, metavar="[NAME]",
              help="Check a local-folder DVC remote instead of the cache (NAME: default remote).")
@click.option("--remove", is_flag=True, help="Delete the corrupt objects, so `dvc pull` / `dvc repro` replaces them.")
@JSON_OPTION
def data_verify_cache(remote: str | None, remove: bool, as_json: bool) -> None:
    """Re-hash every DVC cache object that dvc.lock and the .dvc files need, and name the corrupt ones.

    `dvc checkout` trusts the cache: a truncated or bit-flipped object would be copied into the
    workspace as it is. Exit 1 if any object is corrupt; missing objects are listed, not failed
    (not pulled or not pushed yet).
    """
    from musicid.cache_check import cache_root, remote_root, remove_corrupt, verify_store

    repo = Path.cwd()
    root = cache_root(repo) if remote is None else remote_root(repo, remote or None)
    report = verify_store(repo, root, progress=sys.stderr.isatty())
    removed = remove_corrupt(report) if remove else 0
    if as_json:
        _emit_json({"root": str(root), "outputs": report.outputs, "objects": report.objects, "removed": removed,
                    "problems": [{"kind": p.kind, "object": str(p.obj), "output": p.output.path,
                                  "owner": p.output.owner, "detail": p.detail} for p in report.problems]})
    else:
        for p in report.corrupt:
            click.echo(f"corrupt: {p.obj} ({p.output.path}, {p.output.owner}): {p.detail}"
                       + ("; removed" if remove else ""), err=True)
        if report.missing:
            click.echo(f"missing: {len(report.missing)} object(s), e.g. {report.missing[0].obj} ({report.missing[0].output.path}); "
                       "`dvc pull` or `dvc repro` brings them", err=True)
        refill = "`dvc pull` or `dvc repro -f <stage>`" if remote is None else "`dvc push` from a workspace with a good copy"
        fix = ("" if not report.corrupt else f"; removed: {refill} replaces them" if remove
               else f"; `musicid data verify-cache{'' if remote is None else ' --remote'} --remove`, then {refill}")
        click.echo(f"{root}: {report.objects} objects of {report.outputs} outputs checked, {len(report.corrupt)} corrupt, "
                   f"{len(report.missing)} missing{fix}")
    sys.exit(1 if report.corrupt else 0)


@data.command("remote-check")
@click.argument("names", nargs=-1)
@JSON_OPTION
def data_remote_check(names: tuple[str, ...], as_json: bool) -> None:
    """Check that each DVC remote (default: every configured one) can be listed, written and read.

    One line per remote naming it and its URL; exit 2 if any refuses us (permission, key, host) or is unknown.
    Run it before a long `dvc push` or in CI to learn which shared remote needs a fix.
    """
    from musicid.remote_check import RemoteError, check_remote, configured_remotes

    names = names or tuple(configured_remotes(Path.cwd()))
    if not names:
        raise RemoteError("no DVC remote configured (`dvc remote add -d NAME URL`)")
    results = [check_remote(Path.cwd(), name) for name in names]
    if as_json:
        _emit_json([{"name": r.name, "url": r.url, "ok": r.ok, "detail": r.detail} for r in results])
    else:
        for r in results:
            click.echo(r.line() if r.ok else f"error: {r.line()}", err=not r.ok)
    sys.exit(0 if all(r.ok for r in results) else 2)


@data.command("synth")
@click.argument("out", type=click.Path(dir_okay=False))
@PARAMS_OPTION
@click.option("--seed", type=int, default=None, help="Override synth.seed.")
@click.option("--n-works", type=click.IntRange(1), default=None, help="Override synth.n_works.")
@click.option("--versions", type=click.IntRange(1), default=None, help="Override synth.versions_per_work.")
def data_synth(out: str, params_path: str, seed: int | None, n_works: int | None, versions: int | None) -> None:
    """Write a synthetic music archive (works × versions, FLAC/OGG/WAV + metadata.csv) to OUT."""
    from musicid.config import SynthConfig, load_params
    from musicid.data.synth import build_archive

    cfg = load_params(params_path).synth if Path(params_path).exists() else SynthConfig()
    overrides = {"seed": seed, "n_works": n_works, "versions_per_work": versions}
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    rows = build_archive(cfg, Path(out))
    click.echo(f"wrote {out}: {len(rows)} tracks, {sum(float(r['duration']) for r in rows) / 3600:.2f} h")
