"""A shared DVC remote over SSH, for real: OpenSSH's sshd on 127.0.0.1 (a key of the test's own), `dvc[ssh]`:
push → fresh clone → pull → identify, `dvc get --rev TAG` from another folder, and a refused key named in
one line by `musicid data remote-check`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import soundfile as sf

from e2e_repo import run, tagged_copy
from musicid.team import free_port

pytestmark = [pytest.mark.slow, pytest.mark.team]
SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """sshd on a free loopback port: its own host key, one authorized client key, key login only."""
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} missing: `make test` installs Debian's openssh-server")
    folder = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key", "stranger_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile {folder / 'sshd.pid'}\n"
        "Subsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                              stderr=open(folder / "sshd.log", "w"), start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert server.poll() is None and time.monotonic() < deadline, (folder / "sshd.log").read_text()
        time.sleep(0.2)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    yield {"url": f"ssh://{user}@127.0.0.1:{port}{folder / 'remote'}", "key": folder / "client_key",
           "stranger": folder / "stranger_key", "store": folder / "remote"}
    server.terminate()
    server.wait(10)


def test_push_clone_pull_identify_and_get_by_tag_over_ssh(sshd: dict, tiny_pipeline: dict,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("ssh-release")
    repo, env = tagged_copy(tiny_pipeline["repo"], tmp,
                            ["dvc", "remote", "add", "-d", "shared", sshd["url"]],
                            ["dvc", "remote", "modify", "shared", "keyfile", str(sshd["key"])])
    assert "ok (list, write, read back, delete)" in run(["musicid", "data", "remote-check"], repo, env)
    assert "pushed" in run(["dvc", "push"], repo, env)
    assert any(sshd["store"].rglob("*.dir"))  # the objects are on the SSH host's folder

    clone = tmp / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
    assert not (clone / "models/fingerprint").exists()
    run(["dvc", "pull", "models/fingerprint", "data/index/fingerprint"], clone, env)
    signature = json.loads((repo / "models/fingerprint/config.json").read_text())["signature"]
    assert json.loads((clone / "models/fingerprint/config.json").read_text())["signature"] == signature
    ref = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
    audio, rate = sf.read(repo / "data/ingested" / ref["path"])
    sf.write(tmp / "clip.wav", audio[int(1.0 * rate) : int(3.5 * rate)], rate)
    answer = json.loads(run(["musicid", "identify", str(tmp / "clip.wav"), "--model", "models/fingerprint",
                             "--index", "data/index/fingerprint", "--json"], clone, env, stdout_only=True))
    assert answer["matches"] and {"ref", "score", "offset_s"} <= set(answer["matches"][0])

    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    run(["dvc", "get", str(repo), "models/fingerprint", "--rev", "v0.1", "-o", str(elsewhere / "got")], elsewhere, env)
    assert json.loads((elsewhere / "got/config.json").read_text())["signature"] == signature


def test_a_remote_that_refuses_the_key_is_named_in_one_line(sshd: dict, tiny_pipeline: dict,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("ssh-refused")
    repo, env = tagged_copy(tiny_pipeline["repo"], tmp,
                            ["dvc", "remote", "add", "-d", "shared", sshd["url"]],
                            ["dvc", "remote", "modify", "shared", "keyfile", str(sshd["stranger"])])
    done = subprocess.run(["musicid", "data", "remote-check"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: remote 'shared' (ssh://") and "permission denied" in lines[0], lines[0]
    pushed = subprocess.run(["dvc", "push"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert pushed.returncode != 0 and "Permission denied" in pushed.stdout + pushed.stderr
    unknown = subprocess.run(["musicid", "data", "remote-check", "nope"], cwd=repo, env=env, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 2 and "no DVC remote named 'nope' (configured: local, shared" in unknown.stderr
