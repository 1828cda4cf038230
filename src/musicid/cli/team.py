"""`musicid team up | down | status | env`: the team's MLflow tracking server on PostgreSQL."""

from __future__ import annotations

import click

from musicid.cli.base import JSON_OPTION, _emit_json, main

DIR_OPTION = click.option("--dir", "folder", default=".team", show_default=True, type=click.Path(file_okay=False),
                          help="Where the database cluster, artifacts, logs and team.json live.")


@main.group()
def team() -> None:
    """A shared tracking server: PostgreSQL (runs, params, metrics, registry) + `mlflow server` with proxied artifacts.

    `musicid team up` starts both (initialising the database cluster, role and database on first use),
    then prints the MLFLOW_TRACKING_URI to export: every musicid command, `dvc repro` and `dvc queue start -j N`
    then write to the server instead of ./mlflow.db. `musicid team down` stops them; data stays for the next up.
    `scripts/team.sh up|down` and `make team-up` / `make team-down` do the same.
    """


@team.command("up")
@DIR_OPTION
@click.option("--pg-port", type=click.IntRange(1, 65535), default=None, help="PostgreSQL port [first up: 55432].")
@click.option("--port", "mlflow_port", type=click.IntRange(1, 65535), default=None, help="MLflow server port [first up: 5055].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address both listen on (0.0.0.0 for a LAN).")
@click.option("--artifacts", default=None,
              help="Artifact destination the server proxies: a folder, a shared mount or s3://bucket/path [default: DIR/artifacts].")
@click.option("--workers", type=click.IntRange(1), default=None, help="MLflow server worker processes [first up: 2].")
@JSON_OPTION
def team_up(folder: str, pg_port: int | None, mlflow_port: int | None, host: str, artifacts: str | None,
            workers: int | None, as_json: bool) -> None:
    """Start PostgreSQL and the MLflow server (what is not running yet) and print the tracking URI."""
    from musicid.team import up

    state = up(folder, pg_port=pg_port, mlflow_port=mlflow_port, host=host, artifacts=artifacts, workers=workers)
    if as_json:
        _emit_json({"tracking_uri": state.tracking_uri, "pg_port": state.pg_port, "mlflow_port": state.mlflow_port,
                    "mlflow_pid": state.mlflow_pid, "dir": state.dir})
        return
    click.echo(f"PostgreSQL on {state.host}:{state.pg_port} (database {state.pg_data}), "
               f"MLflow server {state.tracking_uri} (pid {state.mlflow_pid}, log {state.dir}/mlflow.log)")
    click.echo(f"export MLFLOW_TRACKING_URI={state.tracking_uri}")


@team.command("down")
@DIR_OPTION
@click.option("--purge", is_flag=True, help="Also delete the database cluster, the artifacts and team.json.")
def team_down(folder: str, purge: bool) -> None:
    """Stop the MLflow server, then PostgreSQL."""
    from musicid.team import down

    state = down(folder, purge=purge)
    click.echo("nothing to stop: no team.json in " + folder if state is None else
               f"stopped the MLflow server and PostgreSQL{' and removed their data' if purge else ''} ({state.dir})")


@team.command("status")
@DIR_OPTION
@JSON_OPTION
def team_status(folder: str, as_json: bool) -> None:
    """Whether the server answers, and where everything is."""
    from musicid.team import load_state, server_healthy

    state = load_state(folder, required=True)
    healthy = server_healthy(state.tracking_uri)
    if as_json:
        _emit_json({"tracking_uri": state.tracking_uri, "healthy": healthy, "pg_port": state.pg_port, "dir": state.dir})
        return
    click.echo(f"{state.tracking_uri}: {'up' if healthy else 'not answering'}; PostgreSQL port {state.pg_port}, "
               f"cluster {state.pg_data}, artifacts {state.artifacts or state.dir + '/artifacts'}")


@team.command("env")
@DIR_OPTION
def team_env(folder: str) -> None:
    """Print `export MLFLOW_TRACKING_URI=...` for the running server (eval "$(musicid team env)")."""
    from musicid.team import load_state

    state = load_state(folder, required=True)
    click.echo(f"export MLFLOW_TRACKING_URI={state.tracking_uri}")
