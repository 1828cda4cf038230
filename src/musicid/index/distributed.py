"""Build a reference index with the embedding spread over Dask workers; same index as `build_index`.

Why Dask (distributed): a pure pip install; a `LocalCluster` of worker processes starts in a couple
of seconds (so a test runs the real thing), and the same client code drives a real cluster
(`dask scheduler`, `dask worker tcp://HOST:8786`) given its address. Ray would do too, but its
wheels and object store are much heavier for what is a map over files.

The driver splits the refs still to embed into contiguous chunks (at most `checkpoint_every_refs`
each) and submits one task per chunk. A task loads the model from its path (once per worker
process), decodes and embeds its refs, and writes them as one part file into `<out_dir>.partial/`
in `build_index`'s format (atomically), returning only the part's name and the skipped refs. Only
the driver writes progress.json, listing each part as its task completes, so a killed driver
resumes like the single-process build; parts that a worker wrote but the driver never listed are
kept too. The driver then merges the parts with `merge_parts`, the single-process build's own
merge, so both paths write the same index. Workers must see the audio, the model folder and the
partial folder at the same paths as the driver (one machine, or a shared filesystem).
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from tqdm import tqdm

from musicid.audio import DecodeError
from musicid.config import IndexConfig
from musicid.errors import MusicidError
from musicid.index.build import (
    Embedder,
    IndexSignatureError,
    RefIndexError,
    _decode_ref,
    _embed_ref,
    check_buildable,
    list_parts,
    merge_parts,
    partial_dir,
    resume_partial,
    write_part,
)

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("musicid.index")

LOCAL_CLUSTER = "local:"  # "local:N": a LocalCluster of N single-threaded worker processes
CHUNKS_PER_WORKER = 4  # at least this many tasks per worker thread (when refs allow), so a slow chunk idles no one long
ModelLoader = Callable[[str, str], Embedder]  # (model folder, device) → loaded model; importable, so it pickles


def cluster_of(cfg: IndexConfig) -> str:
    """The `cluster` argument that params (`engine: dask`, `dask_address`, `dask_workers`) ask for."""
    return cfg.dask_address or f"{LOCAL_CLUSTER}{cfg.dask_workers}"


def build_index_distributed(
    refs: list[tuple[str, Path]], loaded: Embedder, model_dir: str | Path, load_model: ModelLoader,
    out_dir: str | Path, cfg: IndexConfig, cluster: "str | Client", progress: bool = True,
) -> dict[str, Any]:
    """`build_index`, with the refs embedded by Dask workers that load the model at `model_dir`.

    `loaded` is the driver's copy of the same model (its signature and shape go in the index);
    `cluster` is a scheduler address, "local:N", or a connected `distributed.Client`.
    """
    check_buildable(refs, loaded, cfg)
    partial = partial_dir(out_dir)
    parts, skipped = embed_refs_distributed(refs, loaded, model_dir, load_model, partial, cfg, cluster, progress)
    return merge_parts(refs, loaded, partial, parts, skipped, out_dir, cfg, progress)


def embed_refs_distributed(
    refs: list[tuple[str, Path]], loaded: Embedder, model_dir: str | Path, load_model: ModelLoader, partial: Path,
    cfg: IndexConfig, cluster: "str | Client", progress: bool = True,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Embed every ref not yet in `partial` on Dask workers; return (part file names, skipped refs)."""
    header, parts, pending = resume_partial(refs, loaded, partial, cfg, adopt_unlisted=True)
    skipped: list[tuple[int, dict[str, Any]]] = []
    if pending:
        with dask_client(cluster) as client:
            slots = max(1, sum(client.nthreads().values()))  # worker threads: tasks that run at once
            size = max(1, min(cfg.checkpoint_every_refs, math.ceil(len(pending) / (CHUNKS_PER_WORKER * slots))))
            chunks = [pending[start:start + size] for start in range(0, len(pending), size)]
            run = uuid.uuid4().hex[:8]  # part names unique per run: a straggler of a dead run cannot overwrite ours
            jobs = {
                client.submit(
                    embed_chunk, [(i, worker_path(refs[i][1])) for i in chunk], worker_path(model_dir), load_model,
                    header["model_signature"], worker_path(partial / f"part-{chunk[0]:06d}-{run}.npz"), cfg,
                    key=f"musicid-embed-refs-{chunk[0]}-{run}", pure=False,
                ): chunk
                for chunk in chunks
            }
            _collect(client, jobs, refs, partial, header, parts, skipped, progress)
    records = [record for _, record in sorted(skipped, key=lambda row: row[0])]  # ref order, as build_index
    for record in records:
        log.warning("index: skipping %s (%s): %s", record["ref"], record["path"], DecodeError(record["reason"], record["detail"]))
    return parts, records


def worker_path(path: str | Path) -> str:
    """`path` as a worker must open it: absolute, since a worker's working folder is not the driver's."""
    return str(Path(path).absolute())


def _collect(client: "Client", jobs: dict, refs: list[tuple[str, Path]], partial: Path, header: dict[str, Any],
             parts: list[str], skipped: list[tuple[int, dict[str, Any]]], progress: bool) -> None:
    """List each part as its task completes (so it survives a resume); stop everything at the first failure."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    pending_refs = sum(len(chunk) for chunk in jobs.values())
    with tqdm(total=len(refs), initial=len(refs) - pending_refs, desc="index: embed refs (dask)", unit="ref",
              disable=not progress) as bar:
        for future in as_completed(list(jobs)):
            chunk = jobs[future]
            where = f"refs {chunk[0]}..{chunk[-1]} (first: {refs[chunk[0]][1]})"
            try:
                result = future.result()
            except MusicidError:
                client.cancel(list(jobs))
                raise
            except KilledWorker:
                client.cancel(list(jobs))
                raise RefIndexError(f"Dask workers kept dying while embedding {where}; rerun resumes") from None
            except FutureCancelledError:
                client.cancel(list(jobs))
                raise RefIndexError(f"the Dask task for {where} was cancelled (cluster shut down?); rerun resumes") from None
            except Exception as exc:  # the worker's own exception, re-raised here: one line, not its traceback
                client.cancel(list(jobs))
                detail = str(exc).splitlines()[0] if str(exc) else ""
                raise RefIndexError(f"a Dask worker failed embedding {where}: {type(exc).__name__}: {detail}") from None
            if result["part"] is not None:
                parts.append(result["part"])
                list_parts(partial, header, parts)
            for i, reason, detail in result["skipped"]:  # details name the path as given, not as sent (absolute)
                detail = detail.replace(worker_path(refs[i][1]), str(refs[i][1]))
                skipped.append((i, {"ref": refs[i][0], "path": str(refs[i][1]), "reason": reason, "detail": detail}))
            bar.update(len(chunk))


@contextmanager
def dask_client(cluster: "str | Client") -> Iterator["Client"]:
    """A client for `cluster`: a given Client as is, "local:N" started here (and stopped after), or an address."""
    from distributed import Client, LocalCluster

    if isinstance(cluster, Client):
        yield cluster
        return
    if cluster.startswith(LOCAL_CLUSTER):
        count = cluster.removeprefix(LOCAL_CLUSTER)
        if not count.isdigit() or int(count) < 1:
            raise RefIndexError(f"{cluster!r}: a local Dask cluster is local:N with N ≥ 1 worker processes")
        with LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.CRITICAL) as local, Client(local) as client:
            yield client
        return
    try:
        client = Client(cluster, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise RefIndexError(f"cannot reach the Dask scheduler at {cluster}: {str(exc).splitlines()[0]}") from None
    with client:
        if not client.nthreads():
            log.warning("index: the Dask scheduler at %s has no workers yet; tasks wait for one", cluster)
        yield client


# --- on a worker ---------------------------------------------------------------------------------

_models: dict[tuple[Any, str, str], Embedder] = {}
_models_lock = threading.Lock()


def _worker_model(load_model: ModelLoader, model_dir: str, device: str, signature: str) -> Embedder:
    """The model, loaded once per worker process (and per worker thread pool) however many chunks it runs."""
    key = (load_model, model_dir, device)
    with _models_lock:
        if key not in _models:
            _models[key] = load_model(model_dir, device)
    loaded = _models[key]
    if loaded.signature != signature:
        raise IndexSignatureError(
            f"{model_dir} on a Dask worker is model {loaded.signature}, the driver's is {signature}: "
            "workers must see the same model folder"
        )
    return loaded


def embed_chunk(
    chunk: list[tuple[int, str]], model_dir: str, load_model: ModelLoader, signature: str, part_path: str,
    cfg: IndexConfig,
) -> dict[str, Any]:
    """Runs on a worker: embed (ref position, audio path) rows into one part file at `part_path`.

    Returns the part's name (None when every ref was skipped) and the skipped refs as (position,
    reason, detail); never arrays.
    """
    loaded = _worker_model(load_model, model_dir, cfg.device, signature)
    embedded, skipped = [], []
    for i, path in chunk:
        decoded = _decode_ref((path, int(loaded.sample_rate)))
        try:
            embeddings, starts, duration = _embed_ref(loaded, Path(path), cfg, decoded)
        except DecodeError as exc:
            skipped.append((i, exc.reason, exc.detail))
        else:
            embedded.append((i, embeddings, starts, duration))
    if embedded:
        write_part(Path(part_path), embedded)
    return {"part": Path(part_path).name if embedded else None, "skipped": skipped}


__all__ = ["build_index_distributed", "cluster_of", "dask_client", "embed_chunk", "embed_refs_distributed"]
