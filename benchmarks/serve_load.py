"""Load on `musicid serve` with a model switch in the middle: throughput, latency, failures, who answered.

Starts `musicid serve` on a free port in this workspace (its registry: mlflow.db or $MLFLOW_TRACKING_URI),
cuts a clip of `--clip-seconds` from the first reference track, and runs `--workers` client threads of
`--requests` uploads each against one family. When half of the requests are answered it promotes another
registered version to the alias the service follows (through the release gates, as `musicid registry
promote` does) and records which version and signature answered every request. Prints throughput,
p50/p95/p99 latency, failed requests, and when the answers switched; puts the alias back afterwards.

    .venv/bin/python benchmarks/serve_load.py                          # 8 workers x 200 requests of 5 s clips
    .venv/bin/python benchmarks/serve_load.py --family works --to 3   # another family, a given version

The switch needs a second version that passes the gates and has other weights, e.g. one trained with
another seed: `dvc exp run --temp -S fingerprint.train.seed=1 fingerprint-report` registers it as candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ACTION = {"fingerprint": "identify", "works": "identify", "pitch": "transcribe"}


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = "musicid-load"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n\r\n").encode()
    return body + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="fingerprint", choices=list(ACTION))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per worker")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--to", default="auto", help="version to promote mid-run (auto: the newest other version "
                        "with other weights that passes the gates)")
    args = parser.parse_args()

    import mlflow
    import soundfile as sf

    from musicid.config import load_params
    from musicid.tracking.registry import list_versions, promote
    from musicid.tracking.runs import configure
    from musicid.team import free_port

    os.chdir(REPO)
    params = load_params("params.yaml")
    registry = {"fingerprint": params.fingerprint.registry, "works": params.works.registry,
                "pitch": params.pitch_transcribe.registry}[args.family]
    alias = params.serve.alias
    configure(must_exist=True)
    versions = list_versions(registry.model_name)
    current = next((v for v in versions if alias in v.aliases), None)
    if current is None:
        raise SystemExit(f"{registry.model_name} has no @{alias}: run `make demo` first")
    from musicid.tracking.registry import check_gates

    others = [v for v in versions if v.version != current.version and v.signature != current.signature
              and all(r.passed for r in check_gates(v.metrics, registry.gates))]
    target = others[-1].version if args.to == "auto" and others else args.to
    if target == "auto":
        raise SystemExit(f"no other version of {registry.model_name} with other weights passes the gates; train one: "
                         f"`dvc exp run --temp -S fingerprint.train.seed=1 fingerprint-report` (see the docstring)")

    ref = json.loads(Path("data/manifests/refs.jsonl").read_text().splitlines()[0])
    audio, rate = sf.read(Path("data/ingested") / ref["path"], dtype="float32", always_2d=True)
    start = min(len(audio) // 3, max(0, len(audio) - int(args.clip_seconds * rate)))
    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    clip = scratch / "clip.wav"
    sf.write(clip, audio[start:start + int(args.clip_seconds * rate)].mean(axis=1), rate)
    body, kind = multipart(clip)

    port = free_port()
    env = dict(os.environ)
    server = subprocess.Popen([str(Path(sys.executable).parent / "musicid"), "serve", "--port", str(port), "--poll", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(scratch / "serve.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if get(f"{url}/models")[args.family]["version"] == current.version:
                break
        except (urllib.error.URLError, OSError, KeyError):
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"the service did not start: {(scratch / 'serve.log').read_text()[-2000:]}")
        time.sleep(1)

    total = args.workers * args.requests
    records: list[tuple[float, float, int, str, str]] = []  # (started, latency s, status, version, signature)
    lock, half = threading.Lock(), threading.Event()
    endpoint = f"{url}/{args.family}/{ACTION[args.family]}"

    def client() -> None:
        for _ in range(args.requests):
            began = time.perf_counter()
            try:
                request = urllib.request.Request(endpoint, data=body, headers={"Content-Type": kind})
                with urllib.request.urlopen(request, timeout=120) as reply:
                    answer, status = json.loads(reply.read()), reply.status
                version, signature = answer["model"]["version"], answer["model"]["signature"]
            except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
                status, version, signature = getattr(exc, "code", 0) or -1, "", ""
            with lock:
                records.append((began, time.perf_counter() - began, status, version, signature))
                if len(records) >= total // 2:
                    half.set()

    threads = [threading.Thread(target=client) for _ in range(args.workers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    half.wait()
    promoted_at = time.perf_counter()
    new = promote(registry.model_name, target, alias, registry.gates)[0]
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    mlflow.MlflowClient().set_registered_model_alias(registry.model_name, alias, current.version)  # as it was
    server.terminate()
    server.wait(30)

    latency = np.array([r[1] for r in records]) * 1000
    failed = [r for r in records if r[2] != 200]
    after = sorted((r for r in records if r[0] >= promoted_at and r[2] == 200), key=lambda r: r[0])
    first_new = next((r[0] for r in after if r[3] == new.version), None)
    old_after_first_new = sum(1 for r in after if first_new is not None and r[0] > first_new + r[1] and r[3] != new.version)
    print(f"{args.family}: {args.workers} workers x {args.requests} requests of {args.clip_seconds:g} s clips "
          f"({len(body) / 1e3:.0f} kB uploads) on {os.cpu_count()} cores")
    print(f"  answered {len(records) - len(failed)}/{total}, failed {len(failed)}; {wall:.1f} s, "
          f"{len(records) / wall:.1f} requests/s")
    print(f"  latency p50 {np.percentile(latency, 50):.0f} ms, p95 {np.percentile(latency, 95):.0f} ms, "
          f"p99 {np.percentile(latency, 99):.0f} ms, max {latency.max():.0f} ms")
    print(f"  switch: @{alias} {current.version} ({current.signature}) → {new.version} ({new.signature}) "
          f"at {promoted_at - began:.1f} s; first answer from {new.version} "
          + (f"{first_new - promoted_at:.1f} s after the promotion" if first_new else "never"))
    counts = {}
    for record in records:
        counts[(record[3], record[4])] = counts.get((record[3], record[4]), 0) + 1
    print("  answers by version: " + ", ".join(f"v{v} {s}: {n}" for (v, s), n in sorted(counts.items()) if v))
    print(f"  requests started after the first new answer that the old version still answered: {old_after_first_new}")


if __name__ == "__main__":
    main()
