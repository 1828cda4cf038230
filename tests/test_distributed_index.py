"""Distributed index build on a real 2-worker Dask LocalCluster: same index as the single-process build, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask
import faiss
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import write_audio
from musicid.cli import main
from musicid.config import IndexConfig, parse_params
from musicid.errors import ConfigError
from musicid.models.io import ModelError
from musicid.families.fingerprint.io import load_model, save_model
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec
from musicid.index import RefIndexError, build_index, index_refs_from_folder, partial_dir
from musicid.index import build as build_module
from musicid.index.build import merge_parts
from musicid.index.distributed import build_index_distributed, cluster_of, dask_client, embed_refs_distributed

pytestmark = [pytest.mark.slow, pytest.mark.team, pytest.mark.timeout(180)]

TINY = FingerprinterSpec(channels=(8, 16, 16), hidden=64, embedding_dim=16, n_mels=32)
N_REFS = 9
CORRUPT = "broken.wav"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "fingerprint"
    save_model(Fingerprinter(TINY), path)
    return path


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("refs")
    for i in range(N_REFS):
        write_audio(root / f"r{i}.{['wav', 'flac'][i % 2]}", 2.0 + 0.25 * i, sample_rate=[22050, 16000][i % 2], seed=i)
    (root / CORRUPT).write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")  # skipped by both builds alike
    return index_refs_from_folder(root)


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster for the module: its start-up (~2-4 s) is paid once."""
    with dask_client("local:2") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client


def _contents(out: Path) -> dict:
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("files")  # sha256 of the binary files: compared by content below instead
    index = faiss.read_index(str(out / "index.faiss"))
    ids = np.load(out / "ids.npz")
    return {
        "meta": meta,
        "refs": json.loads((out / "refs.json").read_text()),
        "vectors": index.reconstruct_n(0, index.ntotal),
        "track_index": ids["track_index"],
        "offset_s": ids["offset_s"],
        "density": np.load(out / "density.npy").astype(np.float32),
    }


def _assert_same_index(got: Path, want: Path) -> None:
    a, b = _contents(got), _contents(want)
    assert a["meta"] == b["meta"] and a["refs"] == b["refs"]
    np.testing.assert_array_equal(a["track_index"], b["track_index"])
    np.testing.assert_array_equal(a["offset_s"], b["offset_s"])
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5)
    np.testing.assert_allclose(a["density"], b["density"], atol=2e-3)  # float16 on disk


@pytest.fixture(scope="module")
def single(model_dir: Path, refs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "index"
    build_index(refs, load_model(model_dir, "cpu"), out, IndexConfig(hop_s=0.5, device="cpu", checkpoint_every_refs=3),
                progress=False)
    return out


@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])
def test_two_workers_build_the_single_process_index(model_dir, refs, client, single, tmp_path: Path, kind: str) -> None:
    cfg = IndexConfig(hop_s=0.5, device="cpu", kind=kind, nlist=4, nprobe=4, checkpoint_every_refs=3)
    want = single if kind == "flat" else tmp_path / "single"
    if kind != "flat":
        build_index(refs, load_model(model_dir, "cpu"), want, cfg, progress=False)
    got = tmp_path / "dask"
    meta = build_index_distributed(refs, load_model(model_dir, "cpu"), model_dir, load_model, got, cfg, client, progress=False)
    assert meta["n_refs"] == N_REFS and [s["ref"] for s in meta["skipped"]] == [CORRUPT]
    assert not partial_dir(got).exists()
    _assert_same_index(got, want)
    # a worker loads the model once, however many chunks it ran
    def models_loaded() -> int:
        from musicid.index import distributed

        return len(distributed._models)

    loads = list(client.run(models_loaded).values())
    assert len(loads) == 2 and max(loads) == 1


def test_resume_embeds_only_the_missing_refs(model_dir, refs, client, single, tmp_path: Path) -> None:
    """A driver killed half way leaves a listed part and a part written but never listed: both are kept,
    a torn file is dropped, and only the other refs are embedded again."""
    loaded = load_model(model_dir, "cpu")
    cfg = IndexConfig(hop_s=0.5, device="cpu", checkpoint_every_refs=3)
    out = tmp_path / "dask"
    partial = partial_dir(out)
    header, _, _ = build_module.resume_partial(refs, loaded, partial, cfg)

    def embedded(positions: list[int]) -> list[tuple]:
        rows = []
        for i in positions:
            decoded = build_module._decode_ref((str(refs[i][1]), loaded.sample_rate))
            rows.append((i, *build_module._embed_ref(loaded, refs[i][1], cfg, decoded)))
        return rows

    assert refs[0][0] == CORRUPT
    build_module.write_part(partial / "part-000001-dead.npz", embedded([1, 2, 3]))  # listed before the "crash"
    build_module.list_parts(partial, header, ["part-000001-dead.npz"])
    build_module.write_part(partial / "part-000004-dead.npz", embedded([4, 5]))  # written, never listed
    (partial / "part-000006-dead.npz").write_bytes((partial / "part-000004-dead.npz").read_bytes()[:300])  # torn
    old = {name: (partial / name).stat().st_mtime_ns for name in ("part-000001-dead.npz", "part-000004-dead.npz")}

    parts, skipped = embed_refs_distributed(refs, loaded, model_dir, load_model, partial, cfg, client, progress=False)
    assert {name: (partial / name).stat().st_mtime_ns for name in old} == old  # kept, not rewritten
    assert not (partial / "part-000006-dead.npz").exists()
    new = [name for name in parts if name not in old]
    embedded_now = sorted(i for name in new for i in build_module._read_part_refs(partial / name)[0].tolist())
    assert embedded_now == list(range(6, len(refs)))  # only the missing refs (ref 0 is the corrupt file)
    assert [s["ref"] for s in skipped] == [CORRUPT]
    assert json.loads((partial / "progress.json").read_text())["parts"] == parts

    merge_parts(refs, loaded, partial, parts, skipped, out, cfg, progress=False)
    _assert_same_index(out, single)


def test_workers_without_the_model_fail_in_one_line_then_a_rerun_builds(model_dir, refs, client, single,
                                                                        tmp_path: Path) -> None:
    """A model folder the workers cannot load: the worker's MusicidError reaches the driver as is (one line)."""
    loaded = load_model(model_dir, "cpu")
    cfg = IndexConfig(hop_s=0.5, device="cpu", checkpoint_every_refs=3)
    with pytest.raises(ModelError, match=r"no-such-model: not a model folder") as caught:
        build_index_distributed(refs, loaded, tmp_path / "no-such-model", load_model, tmp_path / "dask", cfg, client,
                                progress=False)
    assert "\n" not in str(caught.value)
    build_index_distributed(refs, loaded, model_dir, load_model, tmp_path / "dask", cfg, client, progress=False)
    _assert_same_index(tmp_path / "dask", single)


def test_a_worker_error_or_death_is_one_line(model_dir, refs, client, tmp_path: Path) -> None:
    """Any other exception on a worker, and a worker process that dies, end the build in one line."""
    loaded = load_model(model_dir, "cpu")
    cfg = IndexConfig(hop_s=0.5, device="cpu")

    def broken_loader(path: str, device: str):  # a local function: Dask ships it by value
        raise ValueError("weights look wrong\nsecond line")

    with pytest.raises(RefIndexError, match=r"^a Dask worker failed embedding refs \d+\.\.\d+ \(first: /\S+\): "
                                            r"ValueError: weights look wrong$"):  # whichever chunk failed first
        build_index_distributed(refs, loaded, model_dir, broken_loader, tmp_path / "a", cfg, client, progress=False)

    def dying_loader(path: str, device: str):
        os._exit(3)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), dask_client("local:1") as lone:
        with pytest.raises(RefIndexError, match=r"^Dask workers kept dying while embedding refs .*; rerun resumes$"):
            build_index_distributed(refs, loaded, model_dir, dying_loader, tmp_path / "b", cfg, lone, progress=False)


def test_cli_dask_flag_builds_the_same_index(model_dir, refs, single, tmp_path: Path) -> None:
    """`musicid index build --dask local:2` (its own cluster, started and stopped by the command)."""
    params = tmp_path / "params.yaml"
    params.write_text("fingerprint:\n  index:\n    hop_s: 0.5\n    device: cpu\n    checkpoint_every_refs: 3\n")
    audio_dir = refs[0][1].parent
    result = CliRunner().invoke(main, ["index", "build", str(audio_dir), "--out", str(tmp_path / "cli"), "--model",
                                       str(model_dir), "--params", str(params), "--dask", "local:2"])
    assert result.exit_code == 0, result.output
    assert "embedding on Dask (local:2)" in result.output and f"skipped {CORRUPT}: " in result.output
    _assert_same_index(tmp_path / "cli", single)


def test_params_reach_the_cluster_and_are_validated() -> None:
    assert cluster_of(IndexConfig(engine="dask")) == "local:2"
    assert cluster_of(IndexConfig(engine="dask", dask_address="tcp://10.0.0.5:8786")) == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigError, match=r"fingerprint\.index\.dask_address: .*not a Dask scheduler address"):
        parse_params({"fingerprint": {"index": {"engine": "dask", "dask_address": "http//oops"}}})
    with pytest.raises(ConfigError, match=r"fingerprint\.index: dask_address is set .* set engine: dask"):
        parse_params({"fingerprint": {"index": {"dask_address": "tcp://host:8786"}}})
    with pytest.raises(ConfigError, match=r"fingerprint\.index\.engine"):
        parse_params({"fingerprint": {"index": {"engine": "ray"}}})
    with pytest.raises(RefIndexError, match="local:N"):
        with dask_client("local:0"):
            pass
