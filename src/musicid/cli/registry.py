"""`musicid registry`: list, promote, register and compare versions of every family's model."""

from __future__ import annotations

from typing import Any

import click

from musicid.cli.base import JSON_OPTION, PARAMS_OPTION, _emit_json, load_params_or_defaults, main

FAMILY_OPTION = click.option(
    "--family", type=click.Choice(["fingerprint", "works", "pitch"]), default=None,
    help="Model family [default: the one whose registry.model_name is --name, else fingerprint].",
)
NAME_OPTION = click.option("--name", default=None,
                           help="Registered model, e.g. musicid-transcriber [default: <family>.registry.model_name].")


def _family_registry(params_path: str, family: str | None, name: str | None) -> tuple[str, Any, Any]:
    """(family name, the registry section of --name (else the family's main one), its Family)."""
    from musicid.errors import ConfigError
    from musicid.families import FAMILIES

    params = load_params_or_defaults(params_path)
    if name:
        for fam_name in ([family] if family else FAMILIES):
            for cfg in FAMILIES[fam_name].registries(params):
                if cfg.model_name == name:
                    return fam_name, cfg, FAMILIES[fam_name]
        if family:
            known = ", ".join(c.model_name for c in FAMILIES[family].registries(params))
            raise ConfigError(f"--name {name}: family {family} registers {known}")
    family = family or "fingerprint"
    return family, params.family(family).registry, FAMILIES[family]


def _every_registry(params_path: str) -> list[tuple[str, Any, Any]]:
    """(family, registry section, Family) for every registered model of every family, in family order."""
    from musicid.families import FAMILIES

    params = load_params_or_defaults(params_path)
    return [(fam_name, cfg, fam) for fam_name, fam in FAMILIES.items() for cfg in fam.registries(params)]


ALL_OPTION = click.option("--all", "every", is_flag=True,
                          help="Every registered model of every family (musicid-fingerprinter ... musicid-transcriber).")


@main.group()
def registry() -> None:
    """MLflow model registry: list versions with their metrics, promote through the release gates, compare.

    Runs and models live in $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db. One registered
    model per family (musicid-fingerprinter, musicid-work-identifier, musicid-pitch), plus the pitch
    family's note transcriber (musicid-transcriber: pass --name), each with its own candidate/champion
    aliases and gates. Each family's `report` stage (the transcriber's: pitch-transcribe-report)
    registers a new model with alias candidate; `musicid identify`, `musicid works identify`,
    `musicid pitch predict` and `musicid transcribe` use alias champion.
    """


@registry.command("list")
@PARAMS_OPTION
@FAMILY_OPTION
@NAME_OPTION
@click.option("--metrics", "all_metrics", is_flag=True, help="Show every recorded metric, not just the gate metrics.")
@JSON_OPTION
def registry_list(params_path: str, family: str | None, name: str | None, all_metrics: bool, as_json: bool) -> None:
    """Versions, aliases, signatures and key metrics (gate metrics marked pass/FAIL)."""
    import datetime

    from musicid.tracking import check_gates, list_versions

    family, cfg, fam = _family_registry(params_path, family, name)
    name = name or cfg.model_name
    versions = list_versions(name)
    if as_json:
        _emit_json([v.as_dict() for v in versions])
        return
    if not versions:
        click.echo(f"{name}: no versions registered yet (`dvc repro` registers one)")
        return
    gate_names = [*cfg.gates.min, *cfg.gates.max]
    click.echo(f"{name} (gates from {params_path}: "
               + ", ".join(r.describe().split(" ", 1)[0] + (" >= " if r.kind == "min" else " <= ") + f"{r.threshold:g}"
                           for r in check_gates({}, cfg.gates)) + ")")
    for version in reversed(versions):
        created = datetime.datetime.fromtimestamp(version.created_ms / 1000).strftime("%Y-%m-%d %H:%M")
        aliases = " ".join(f"@{a}" for a in sorted(version.aliases)) or "-"
        results = check_gates(version.metrics, cfg.gates)
        verdict = "gates pass" if all(r.passed for r in results) else "gates FAIL"
        click.echo(f"  v{version.version:<4} {aliases:<22} {version.signature}  {created}  {verdict}"
                   + (f"  exp {version.tags.get('musicid.dvc_exp')}" if version.tags.get("musicid.dvc_exp") else ""))
        keys = [fam.headline_metric, *gate_names]
        shown = version.metrics if all_metrics else {k: version.metrics[k] for k in dict.fromkeys(keys) if k in version.metrics}
        click.echo("        " + ", ".join(f"{k} {v:g}" for k, v in shown.items()))


@registry.command("promote")
@click.argument("version")
@click.option("--alias", default=None, help="Alias to set [default: <family>.registry.champion_alias, champion].")
@PARAMS_OPTION
@FAMILY_OPTION
@NAME_OPTION
@ALL_OPTION
def registry_promote(version: str, alias: str | None, params_path: str, family: str | None, name: str | None,
                     every: bool) -> None:
    """Point --alias at VERSION (a number or an alias such as candidate) if it passes the gates.

    The gates are params.yaml's <family>.registry.gates (min/max per metric); a version that fails
    one is refused with the failing figure and the alias is left as it was. With --all, each
    registered model is tried in turn and the command fails at the end if any was refused.
    """
    from musicid.errors import MusicidError
    from musicid.tracking import promote

    targets = _every_registry(params_path) if every else [_family_registry(params_path, family, name)]
    refused = []
    for _, cfg, _ in targets:
        model, to = (cfg.model_name if every else name or cfg.model_name), alias or cfg.champion_alias
        try:
            info, results = promote(model, version, to, cfg.gates)
        except MusicidError as exc:
            if not every:
                raise
            click.echo(f"  REFUSED  {exc}")
            refused.append(model)
            continue
        for result in results:
            click.echo(f"  pass  {result.describe()}")
        click.echo(f"{model} version {info.version} is now @{to} (signature {info.signature})")
    if refused:
        raise MusicidError(f"not promoted: {', '.join(refused)} (reasons above)")


@registry.command("register")
@PARAMS_OPTION
@FAMILY_OPTION
def registry_register(params_path: str, family: str | None) -> None:
    """Register the workspace's model + index of a family with its evaluation (what its report stage does)."""
    from musicid.config import load_params
    from musicid.families import FAMILIES

    FAMILIES[family or "fingerprint"].register(load_params(params_path))


COMPARE_COLUMNS = (  # (metric, header, format); the family's headline accuracy comes first
    ("latency_p50_ms", "CPU ms/query (p50)", "{:.1f}"),
    ("latency_p95_ms", "p95", "{:.1f}"),
    ("peak_memory_mb", "peak MB", "{:.0f}"),
    ("model_size_mb", "model MB", "{:.2f}"),
)
ACCURACY_COLUMNS = {  # by family, or by registered model name where a family registers several
    "musicid-transcriber": (("chorales_note_onset_f1", "note F1 chorales"), ("chorales_note_onset_offset_f1", "on+off F1"),
                            ("synthetic_note_onset_f1", "note F1 synthetic"),
                            ("chorales_seconds_per_audio_minute", "s / audio min")),
    "fingerprint": (("main_top1", "top-1"), ("main_top1_3s", "top-1 3 s"), ("main_top1_10s", "top-1 10 s")),
    "works": (("test_unseen_mAP", "mAP unseen"), ("test_unseen_MR1", "MR1 unseen"), ("test_seen_mAP", "mAP seen"),
              ("test_unseen_top1", "top-1 unseen")),
}


@registry.command("compare")
@click.argument("name", required=False)
@PARAMS_OPTION
@FAMILY_OPTION
@ALL_OPTION
@JSON_OPTION
def registry_compare(name: str | None, params_path: str, family: str | None, every: bool, as_json: bool) -> None:
    """Registered versions side by side on their evaluation: accuracy, CPU latency per query, peak memory, size.

    NAME is a registered model [default: the family's registry.model_name]; --all prints one table
    per registered model. Figures are those each version was registered with (its report stage
    measured them on this pipeline's test split).
    """
    targets = _every_registry(params_path) if every else [_family_registry(params_path, family, name)]
    tables = [_compare_one(fam_name, cfg.model_name if every else name or cfg.model_name, fam, as_json)
              for fam_name, cfg, fam in targets]
    if as_json:
        _emit_json(tables if every else tables[0])


def _compare_one(family: str, name: str, fam: Any, as_json: bool) -> dict[str, Any]:
    """One registered model's table (printed unless as_json); its rows as JSON."""
    from musicid.tracking import list_versions

    versions = list_versions(name)
    accuracy = ACCURACY_COLUMNS.get(name) or ACCURACY_COLUMNS.get(family, ((fam.headline_metric, fam.headline_metric),))
    rows = [{"version": v.version, "aliases": sorted(v.aliases), "signature": v.signature,
             **{metric: v.metrics.get(metric) for metric, _ in accuracy},
             **{metric: v.metrics.get(metric) for metric, _, _ in COMPARE_COLUMNS}} for v in versions]
    result = {"name": name, "family": family, "versions": rows}
    if as_json:
        return result
    if not rows:
        click.echo(f"{name}: no versions registered yet (`dvc repro` registers one)")
        return result
    headers = ["version", "aliases", *[h for _, h in accuracy], *[h for _, h, _ in COMPARE_COLUMNS]]
    table = []
    for row in rows:
        cells = [f"v{row['version']}", " ".join(f"@{a}" for a in row["aliases"]) or "-"]
        cells += ["-" if row[m] is None else f"{row[m]:.3f}" for m, _ in accuracy]
        cells += ["-" if row[m] is None else fmt.format(row[m]) for m, _, fmt in COMPARE_COLUMNS]
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    click.echo(f"{name} ({family})")
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for cells in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return result
