"""A team's tracking server on one host: PostgreSQL as MLflow's backend store, `mlflow server` in front.

Why: SQLite serialises writers ("database is locked" under `dvc queue start -j 2`) and lives on one
laptop. A PostgreSQL database behind one MLflow server takes concurrent runs from many people and
queue workers, and the server proxies artifacts (`--artifacts-destination`: a local folder, a shared
mount or `s3://...`), so clients need only `MLFLOW_TRACKING_URI=http://HOST:PORT`.

Everything lives in one folder (default `.team/`): the database cluster (`pg/`), the artifacts
(`artifacts/`, unless another destination is given), the logs and `team.json` (ports, pids, the
role's generated password; mode 0600). `up` is idempotent: it initialises the cluster and creates the
role and database on first use, starts what is not running, and waits until the server answers.
PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user (Debian's).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from musicid.errors import MusicidError
from musicid.fsutil import _running

STATE = "team.json"
DATABASE = "musicid"
ROLE = "musicid"


class TeamError(MusicidError):
    """The team services cannot be started, reached or stopped; the message says which and why."""


@dataclass
class TeamState:
    """What `up` started, as recorded in <dir>/team.json."""

    dir: str
    host: str = "127.0.0.1"
    pg_port: int = 55432
    mlflow_port: int = 5055
    artifacts: str = ""
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    mlflow_pid: int = 0
    workers: int = 2
    pg_dir: str = ""  # the cluster and its socket: <dir>/pg, or under /var/lib/postgresql (see _cluster_dir)

    @property
    def backend_uri(self) -> str:
        return f"postgresql+psycopg2://{ROLE}:{self.password}@{self.host}:{self.pg_port}/{DATABASE}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def pg_data(self) -> Path:
        return Path(self.pg_dir) / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return Path(self.pg_dir)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for tests and a first `up`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps initdb/pg_ctl off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise TeamError("PostgreSQL is not installed: `apt-get install -y postgresql` (make team-up installs it)")


def _as_postgres(args: list[str]) -> list[str]:
    """Run a PostgreSQL program as the `postgres` user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


def _cluster_dir(folder: Path) -> Path:
    """<folder>/pg, unless we are root and the `postgres` user cannot enter <folder> (a checkout under
    /root, pytest's 0700 temporary folders): then a folder of its own under its home, named by <folder>."""
    inside = folder / "pg"
    if os.geteuid() != 0:
        return inside
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(folder)], capture_output=True)
    if reachable.returncode == 0:
        return inside
    import hashlib

    return Path("/var/lib/postgresql") / f"musicid-{hashlib.sha1(str(folder).encode()).hexdigest()[:12]}"


def _run(args: list[str], what: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TeamError(f"{what}: {exc}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise TeamError(f"{what}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout


def load_state(folder: str | Path, *, required: bool = False) -> TeamState | None:
    """What `up` recorded in <folder>; None (or, when required, one TeamError line) before the first up."""
    path = Path(folder) / STATE
    if not path.is_file():
        if required:
            raise TeamError(f"no {STATE} in {folder}: run `musicid team up` first")
        return None
    return TeamState(**json.loads(path.read_text()))


def _save_state(state: TeamState) -> None:
    path = Path(state.dir) / STATE
    tmp = path.with_name(f".{STATE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.chmod(0o600)  # the role's password
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ PostgreSQL
def _pg_running(state: TeamState) -> bool:
    bindir = _pg_bindir()
    done = subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(state.pg_data), "status"]),
                          capture_output=True, text=True)
    return done.returncode == 0


def _psql(state: TeamState, sql: str) -> str:
    bindir = _pg_bindir()
    return _run(_as_postgres([str(bindir / "psql"), "-h", str(state.pg_socket_dir), "-p", str(state.pg_port),
                              "-U", "postgres", "-d", "postgres", "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql]),
                "psql")


def start_postgres(state: TeamState) -> None:
    """Initialise the cluster on first use, start it on loopback, and make the role and database."""
    bindir = _pg_bindir()
    socket_dir = state.pg_socket_dir
    socket_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(socket_dir, "postgres", "postgres")
        socket_dir.chmod(0o700)
    if not (state.pg_data / "PG_VERSION").is_file():
        _run(_as_postgres([str(bindir / "initdb"), "-D", str(state.pg_data), "-U", "postgres", "-E", "UTF8",
                           "--auth-local=trust", "--auth-host=scram-sha-256"]), "initdb")
    if not _pg_running(state):
        options = f"-p {state.pg_port} -k {socket_dir} -c listen_addresses={state.host}"
        _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(state.pg_data), "-l", str(socket_dir / "postgres.log"),
                           "-o", options, "-w", "-t", "60", "start"]),
             f"PostgreSQL did not start on {state.host}:{state.pg_port} (see {socket_dir / 'postgres.log'})")
    password = state.password.replace("'", "''")
    if not _psql(state, f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'").strip():
        _psql(state, f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
    else:
        _psql(state, f"ALTER ROLE {ROLE} PASSWORD '{password}'")
    if not _psql(state, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'").strip():
        _psql(state, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def stop_postgres(state: TeamState) -> None:
    if state.pg_data.is_dir() and _pg_running(state):
        _run(_as_postgres([str(_pg_bindir() / "pg_ctl"), "-D", str(state.pg_data), "-m", "fast", "-w", "stop"]),
             "pg_ctl stop")


# -------------------------------------------------------------------------------------------- MLflow
def server_healthy(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    """A recorded server pid that still runs (0: none recorded; a zombie does not count)."""
    return pid > 0 and _running(pid)


def start_mlflow(state: TeamState, wait_s: float = 180) -> None:
    """`mlflow server` on the PostgreSQL store with proxied artifacts, detached, logging to mlflow.log."""
    if _alive(state.mlflow_pid) and server_healthy(state.tracking_uri):
        return
    destination = state.artifacts or str((Path(state.dir) / "artifacts").resolve())
    if "://" not in destination:
        Path(destination).mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server",
           "--backend-store-uri", state.backend_uri, "--serve-artifacts", "--artifacts-destination", destination,
           "--host", state.host, "--port", str(state.mlflow_port), "--workers", str(state.workers)]
    log = open(Path(state.dir) / "mlflow.log", "ab")  # noqa: SIM115 - handed to the server process
    env = dict(os.environ, MLFLOW_TRACKING_URI="")  # the server is the store; it must not point at itself
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    log.close()
    state.mlflow_pid = proc.pid
    _save_state(state)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (Path(state.dir) / "mlflow.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise TeamError(f"mlflow server exited ({proc.returncode}): {tail[0] if tail else 'no output'} "
                            f"(see {Path(state.dir) / 'mlflow.log'})")
        if server_healthy(state.tracking_uri):
            return
        time.sleep(0.5)
    raise TeamError(f"mlflow server did not answer on {state.tracking_uri} within {wait_s:.0f} s "
                    f"(see {Path(state.dir) / 'mlflow.log'})")


def stop_mlflow(state: TeamState, wait_s: float = 20) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after wait_s."""
    pid = state.mlflow_pid
    if not _alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                return
            time.sleep(0.2)


# ----------------------------------------------------------------------------------------- together
def up(folder: str | Path = ".team", *, pg_port: int | None = None, mlflow_port: int | None = None,
       host: str = "127.0.0.1", artifacts: str | None = None, workers: int | None = None) -> TeamState:
    """Start PostgreSQL and the MLflow server (what is not running yet); the state is kept in <folder>."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = load_state(folder) or TeamState(dir=str(folder))
    state.dir = str(folder)
    state.host = host
    state.pg_port = pg_port or state.pg_port
    state.mlflow_port = mlflow_port or state.mlflow_port
    state.artifacts = artifacts if artifacts is not None else state.artifacts
    state.workers = workers or state.workers
    state.pg_dir = state.pg_dir or str(_cluster_dir(folder))
    _save_state(state)
    start_postgres(state)
    start_mlflow(state)
    return state


def down(folder: str | Path = ".team", *, purge: bool = False) -> TeamState | None:
    """Stop the MLflow server, then PostgreSQL; data and artifacts stay for the next `up` unless `purge`
    (then the cluster, the artifacts folder and the state are removed)."""
    state = load_state(folder)
    if state is None:
        return None
    stop_mlflow(state)
    stop_postgres(state)
    state.mlflow_pid = 0
    if purge:
        shutil.rmtree(state.pg_dir, ignore_errors=True)
        shutil.rmtree(Path(state.dir) / "artifacts", ignore_errors=True)
        (Path(state.dir) / STATE).unlink(missing_ok=True)
    else:
        _save_state(state)
    return state
