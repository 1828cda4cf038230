"""`musicid serve` for real: the tiny pipeline's registered models behind one uvicorn process, uploads for
every family, bad input, an alias that moves to a version that fails its self-check (refused, the old one
keeps serving) and then to a newly trained one (swapped in), a registry that cannot be reached, and the
web page driven by headless Chromium through selenium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from e2e_repo import copy_repo, env_for, run, set_params
from musicid.team import free_port

pytestmark = pytest.mark.slow


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def upload(url: str, path: Path, name: str | None = None) -> tuple[int, Any]:
    boundary = "musicid-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name or path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def wait_for(condition, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def start(repo: Path, env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen(["musicid", "serve", "--port", str(port)], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def served(tiny_pipeline: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The tiny pipeline's candidates (tiny models pass no release gate, so the service follows @candidate)."""
    tmp = tmp_path_factory.mktemp("serve")
    repo, env = copy_repo(tiny_pipeline["repo"], tmp), env_for(tmp)
    set_params(repo, {"serve": {"alias": "candidate", "poll_s": 0.5, "max_upload_mb": 1.0}})
    port = free_port()
    process = start(repo, env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _listening(url) and request(f"{url}/health")[1]["status"] == "ok", 180,
                 "all three families to serve")
        ref = json.loads((repo / "data/manifests/refs.jsonl").read_text().splitlines()[0])
        yield SimpleNamespace(repo=repo, env=env, url=url, tmp=tmp, ref=repo / "data/ingested" / ref["path"],
                              ref_id=ref["track_id"])
    finally:
        process.terminate()
        out = process.communicate(timeout=60)[0]
        print(out[-4000:])


def _listening(url: str) -> bool:
    try:
        request(f"{url}/health")
        return True
    except (urllib.error.URLError, OSError):
        return False


def test_every_family_answers_an_upload_with_the_model_it_serves(served) -> None:
    models = request(f"{served.url}/models")[1]
    assert set(models) == {"fingerprint", "works", "pitch"}
    for slot in models.values():
        assert slot["version"] == "1" and slot["self_check"] == "dummy forward + known answer", slot
    status, answer = upload(f"{served.url}/fingerprint/identify", served.ref)
    assert status == 200 and answer["matches"][0]["ref"] == served.ref_id, answer
    assert answer["model"] == {"family": "fingerprint", "registered_model": "musicid-fingerprinter", "version": "1",
                               "signature": models["fingerprint"]["signature"]}
    status, answer = upload(f"{served.url}/works/identify?top=2", served.ref)
    assert status == 200 and 0 < len(answer["works"]) <= 2 and answer["model"]["version"] == "1", answer
    status, answer = request(f"{served.url}/pitch/transcribe",
                             json.dumps({"audio": base64.b64encode(served.ref.read_bytes()).decode()}).encode(),
                             {"Content-Type": "application/json"})
    assert status == 200 and isinstance(answer["notes"], list), answer
    assert answer["model"]["signature"] == models["pitch"]["signature"]


def test_bad_input_gets_a_status_and_the_reason(served, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 20)
    status, answer = upload(f"{served.url}/works/identify", text)
    assert status == 400 and answer["detail"].startswith("not audio we can decode:") and "notes.txt" in answer["detail"]
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(int(1.5 * 2**20)))
    status, answer = upload(f"{served.url}/fingerprint/identify", big)
    assert status == 413 and "serve.max_upload_mb (1 MB)" in answer["detail"], answer
    assert upload(f"{served.url}/drums/identify", text)[0] == 404
    status, answer = upload(f"{served.url}/works/transcribe", text)
    assert status == 404 and "/works/identify" in answer["detail"]
    status, answer = request(f"{served.url}/fingerprint/identify", b'{"audio": "%%%"}', {"Content-Type": "application/json"})
    assert status == 400 and "base64" in answer["detail"]


BREAK_AND_REGISTER = """
import shutil, sys, mlflow, torch
from pathlib import Path
from musicid.config import load_params
from musicid.families.fingerprint import pyfunc_entry
from musicid.families.fingerprint.stages import INDEX, MODEL, bundle_settings
from musicid.tracking import register_bundle
from musicid.tracking.runs import configure

params = load_params("params.yaml")
broken = Path(sys.argv[1])
shutil.copytree(MODEL, broken)
weights = broken / "model.pt"
state = torch.load(weights, weights_only=True)
first = next(iter(state))
state[first] = state[first] + 0.5  # the weights no longer match the signature in config.json
torch.save(state, weights)
configure()
with mlflow.start_run(run_name="broken on purpose"):
    settings = bundle_settings(params) | {"note": "broken on purpose"}  # a bundle of its own: a new version
    print(register_bundle(broken, INDEX, {}, params.fingerprint.registry, settings, {}, pyfunc_entry.__file__, 5)[0])
"""


def test_an_alias_moved_to_a_broken_version_is_refused_and_to_a_new_model_swapped_in(served) -> None:
    url, repo, env = served.url, served.repo, served.env
    before = request(f"{url}/models")[1]["fingerprint"]
    broken = run(["python", "-c", BREAK_AND_REGISTER, str(served.tmp / "broken-model")], repo, env, stdout_only=True)
    version = broken.strip().splitlines()[-1]
    refused = wait_for(lambda: request(f"{url}/models")[1]["fingerprint"]["refused"].get(version), 60,
                       f"version {version} to be refused")
    assert refused.startswith("does not load:") and "signature" in refused, refused
    status, answer = upload(f"{url}/fingerprint/identify", served.ref)
    assert status == 200 and answer["model"]["version"] == before["version"]  # the old one keeps serving
    assert request(f"{url}/health")[1]["status"] == "ok"
    # a newly trained model (another seed) registered by the report stage: the alias moves, the service follows
    set_params(repo, {"fingerprint.train": {"seed": 1}})
    run(["dvc", "repro", "fingerprint-report"], repo, env)
    now = wait_for(lambda: (lambda s: s if s["version"] not in (before["version"], version) else None)(
        request(f"{url}/models")[1]["fingerprint"]), 120, "the new version to serve")
    assert now["signature"] != before["signature"] and now["self_check"] == "dummy forward + known answer"
    status, answer = upload(f"{url}/fingerprint/identify", served.ref)
    assert status == 200 and answer["model"]["version"] == now["version"]
    assert answer["model"]["signature"] == now["signature"]
    status, reload = request(f"{url}/models/fingerprint/reload", b"", {"Content-Type": "application/json"})
    assert status == 200 and reload["swapped"] is False and reload["version"] == now["version"]


def test_a_registry_that_cannot_be_reached_starts_the_service_and_health_names_it(served) -> None:
    port, dead = free_port(), free_port()
    env = served.env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{dead}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    process = start(served.repo, env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _listening(url), 120, "the service to listen")
        status, health = request(f"{url}/health")
        assert status == 503 and health["status"] == "down" and set(health["not_serving"]) == {"fingerprint", "works", "pitch"}
        assert all(f"127.0.0.1:{dead}" in why for why in health["not_serving"].values()), health
        assert upload(f"{url}/works/identify", served.ref)[0] == 503
    finally:
        process.terminate()
        process.communicate(timeout=60)


@pytest.mark.skipif(not shutil.which("chromedriver"), reason="Debian's chromium-driver is installed by `make test`")
def test_the_page_in_a_real_browser(served, tmp_path: Path) -> None:
    from musicid.serving.browser import ask_page, headless_chromium

    browser = headless_chromium()
    try:
        shown = ask_page(browser, served.url, served.ref, "fingerprint")
        assert shown["first"] == served.ref_id and not shown["error"], shown
        assert "answered by musicid-fingerprinter version" in shown["model"]
        shown = ask_page(browser, served.url, served.ref, "pitch")
        assert shown["notes"].isdigit() and "musicid-transcriber" in shown["model"], shown
        assert browser.find_elements("id", "roll")  # the piano roll
        assert "fingerprint" in shown["models"] and "dummy forward + known answer" in shown["models"]
        browser.save_screenshot(str(tmp_path / "page.png"))
    finally:
        browser.quit()
