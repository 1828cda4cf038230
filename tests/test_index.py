"""Reference index: build (flat / IVF), resume after a crash, refuse foreign partials and models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import write_audio
from musicid.audio import decode, to_model_rate
from musicid.cli import main
from musicid.config import IndexConfig
from musicid.index import (
    IndexSignatureError,
    RefIndexError,
    build_index,
    index_refs_from_folder,
    index_refs_from_manifest,
    load_index,
    partial_dir,
)
from musicid.index import build as build_module
from musicid.families.fingerprint.model import Fingerprinter, FingerprinterSpec
from musicid.audio.framing import segment_starts
from musicid.families.fingerprint.io import load_model, save_model

TINY = FingerprinterSpec(channels=(8, 16, 16), hidden=64, embedding_dim=16, n_mels=32)
N_REFS = 4
REAL_EMBED_REF = build_module._embed_ref


class SimulatedCrash(Exception):
    pass


def _make_model(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model(Fingerprinter(TINY), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("models")
    return {"a": load_model(_make_model(root / "a", 0), "cpu"), "b": load_model(_make_model(root / "b", 1), "cpu")}


@pytest.fixture(scope="module")
def ref_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refs")
    for i in range(N_REFS):
        write_audio(root / ("sub" if i % 2 else "") / f"r{i}.{['wav', 'flac'][i % 2]}", 2.5 + 0.5 * i,
                    sample_rate=[22050, 8000][i % 2], seed=i)
    (root / "notes.txt").write_text("not audio\n")
    return root


def _expected_vectors(refs: list[tuple[str, Path]], spec: FingerprinterSpec, hop_s: float) -> int:
    hop = int(round(hop_s * spec.sample_rate))
    total = 0
    for _, path in refs:
        audio = decode(path)
        signal = to_model_rate(audio.samples, audio.sample_rate, spec.sample_rate)
        total += len(segment_starts(max(len(signal), spec.segment_samples), spec.segment_samples, hop))
    return total


def _count_embeds(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[str]:
    """Wrap our per-ref embed helper: record calls, optionally crash after `fail_after` of them."""
    calls: list[str] = []

    def wrapped(loaded, path, cfg, decoded):
        if fail_after is not None and len(calls) >= fail_after:
            raise SimulatedCrash(f"crash after {fail_after} refs")
        calls.append(Path(path).name)
        return REAL_EMBED_REF(loaded, path, cfg, decoded)

    monkeypatch.setattr(build_module, "_embed_ref", wrapped)
    return calls


def test_index_refs_from_folder_and_manifest(ref_folder: Path, tmp_path: Path) -> None:
    refs = index_refs_from_folder(ref_folder)
    assert [name for name, _ in refs] == ["r0.wav", "r2.wav", "sub/r1.flac", "sub/r3.flac"]
    assert all(path == ref_folder / name for name, path in refs)
    manifest = tmp_path / "refs.jsonl"
    manifest.write_text("".join(json.dumps({"track_id": f"t{i}", "path": name}) + "\n" for i, (name, _) in enumerate(refs)))
    assert index_refs_from_manifest(manifest, ref_folder) == [(f"t{i}", path) for i, (_, path) in enumerate(refs)]
    with pytest.raises(RefIndexError, match="not found"):
        index_refs_from_manifest(tmp_path / "missing.jsonl", ref_folder)


def test_flat_build_writes_everything(models, ref_folder: Path, tmp_path: Path) -> None:
    loaded = models["a"]
    refs = index_refs_from_folder(ref_folder)
    cfg = IndexConfig(hop_s=0.5)
    meta = build_index(refs, loaded, tmp_path / "index", cfg, progress=False)
    out = tmp_path / "index"
    assert sorted(p.name for p in out.iterdir()) == ["density.npy", "ids.npz", "index.faiss", "meta.json", "refs.json"]
    assert not partial_dir(out).exists()
    assert json.loads((out / "meta.json").read_text()) == meta
    for key in ("model_signature", "embedding_dim", "hop_s", "sample_rate", "kind", "n_vectors", "n_refs", "hours",
                "faiss_version"):
        assert key in meta
    assert meta["model_signature"] == loaded.signature
    assert meta["kind"] == "flat" and meta["embedding_dim"] == 16 and meta["n_refs"] == N_REFS
    assert meta["n_vectors"] == _expected_vectors(refs, loaded.spec, 0.5)
    assert meta["hours"] == pytest.approx(sum(2.5 + 0.5 * i for i in range(N_REFS)) / 3600, rel=1e-3)
    assert meta["faiss_version"] == faiss.__version__ and meta["skipped"] == []

    ids = np.load(out / "ids.npz")
    assert ids["track_index"].dtype == np.int32 and ids["offset_s"].dtype == np.float32
    assert len(ids["track_index"]) == meta["n_vectors"]
    refs_json = json.loads((out / "refs.json").read_text())
    assert [r["ref"] for r in refs_json] == [name for name, _ in refs]

    index = load_index(out, expected_signature=loaded.signature)
    assert isinstance(index.index, faiss.IndexFlatIP)
    stored = index.index.reconstruct_n(0, index.n_vectors)
    scores, tracks, offsets = index.search(stored[:5], 3)
    assert scores.shape == tracks.shape == offsets.shape == (5, 3)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)  # every vector finds itself (or a tie)
    # More neighbours than vectors: the missing slots are masked.
    scores, tracks, offsets = index.search(stored[:1], meta["n_vectors"] + 3)
    assert (tracks[0, -3:] == -1).all() and np.isneginf(scores[0, -3:]).all() and np.isnan(offsets[0, -3:]).all()
    assert (tracks[0, :-3] >= 0).all()


def test_density_exclusion_and_hub_penalty(models, ref_folder: Path, tmp_path: Path) -> None:
    refs = index_refs_from_folder(ref_folder)
    build_index(refs, models["a"], tmp_path / "index", IndexConfig(hop_s=0.5, decode_workers=0), progress=False)
    index = load_index(tmp_path / "index")
    stored = index.index.reconstruct_n(0, index.n_vectors)
    # density: each segment's mean similarity to its 10 nearest segments of other tracks
    own = index.vector_ids(0)
    others = np.flatnonzero(index.track_index != 0)
    nearest = np.sort(stored[own] @ stored[others].T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(index.density[own], nearest.mean(axis=1), atol=2e-3)  # stored as float16
    # a search that leaves track 0 out never returns it, and returns the same as an index without it
    scores, tracks, _ = index.search(stored[own], 5, exclude_track=0)
    assert (tracks != 0).all()
    np.testing.assert_allclose(scores, np.sort(stored[own] @ stored[others].T, axis=1)[:, ::-1][:, :5], atol=1e-5)
    # the hub penalty lowers hits on dense segments and raises hits on sparse ones, by penalty × excess
    plain, tracks, _ = index.search(stored[:3], 4)
    discounted, same_tracks, _ = index.search(stored[:3], 4, hub_penalty=0.5)
    ids = index.index.search(stored[:3], 4)[1]
    excess = index.density[ids] - index.meta["density_median"]
    np.testing.assert_allclose(discounted, plain - 0.5 * excess, atol=1e-5)
    assert (same_tracks == tracks).all()


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
def test_ivf_kinds_build_and_search(models, ref_folder: Path, tmp_path: Path, kind: str, caplog) -> None:
    loaded = models["a"]
    refs = index_refs_from_folder(ref_folder)
    cfg = IndexConfig(kind=kind, hop_s=0.1, nlist=64, nprobe=64, pq_m=8)
    with caplog.at_level(logging.WARNING, logger="musicid"):
        meta = build_index(refs, loaded, tmp_path / kind, cfg, progress=False)
    assert meta["kind"] == kind and meta["n_vectors"] == _expected_vectors(refs, loaded.spec, 0.1)
    assert 1 <= meta["nlist"] < 64 and "nlist 64 →" in caplog.text  # clamped to what the data supports
    index = load_index(tmp_path / kind, expected_signature=loaded.signature)
    ivf = faiss.extract_index_ivf(index.index)
    assert ivf.nlist == meta["nlist"] and ivf.nprobe == meta["nlist"]
    if kind == "ivf_pq":
        assert isinstance(index.index, faiss.IndexIVFPQ) and index.index.pq.M == 8
    signal = to_model_rate(decode(refs[2][1]).samples, decode(refs[2][1]).sample_rate, loaded.spec.sample_rate)
    from musicid.families.fingerprint.io import embed_signal

    embeddings, _ = embed_signal(loaded, signal, 0.5)
    scores, tracks, offsets = index.search(embeddings, 5)
    assert scores.shape == (len(embeddings), 5)
    valid = tracks >= 0
    assert valid.any() and (tracks[valid] < N_REFS).all() and np.isfinite(offsets[valid]).all()
    if kind == "ivf_flat":  # exact within the probed cells (all of them here)
        assert (tracks[:, 0] == 2).all()


def test_pq_m_must_divide_dim(models, ref_folder: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _count_embeds(monkeypatch)
    with pytest.raises(RefIndexError, match="pq_m"):
        build_index(index_refs_from_folder(ref_folder), models["a"], tmp_path / "x", IndexConfig(kind="ivf_pq", pq_m=5),
                    progress=False)
    assert calls == []  # refused before any embedding


def test_resume_after_crash_equals_clean_build(models, ref_folder: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    loaded = models["a"]
    refs = index_refs_from_folder(ref_folder)
    cfg = IndexConfig(checkpoint_every_refs=1)
    out = tmp_path / "resumed"

    calls = _count_embeds(monkeypatch, fail_after=2)
    with pytest.raises(SimulatedCrash):
        build_index(refs, loaded, out, cfg, progress=False)
    assert not out.exists()
    partial = partial_dir(out)
    assert sorted(p.name for p in partial.glob("part-*.npz")) == ["part-00000.npz", "part-00001.npz"]
    progress = json.loads((partial / "progress.json").read_text())
    assert progress["model_signature"] == loaded.signature and len(progress["parts"]) == 2

    calls = _count_embeds(monkeypatch)
    with caplog.at_level(logging.INFO, logger="musicid"):
        meta = build_index(refs, loaded, out, cfg, progress=False)
    assert calls == [Path(path).name for _, path in refs[2:]]  # only the remaining refs were embedded
    assert f"resuming: 2 of {N_REFS} refs already embedded" in caplog.text
    assert not partial.exists()

    clean_meta = build_index(refs, loaded, tmp_path / "clean", cfg, progress=False)
    assert meta == clean_meta
    for name in ("refs.json", "meta.json"):
        assert (out / name).read_text() == (tmp_path / "clean" / name).read_text()
    resumed, clean = np.load(out / "ids.npz"), np.load(tmp_path / "clean" / "ids.npz")
    for key in ("track_index", "offset_s"):
        np.testing.assert_array_equal(resumed[key], clean[key])
    a, b = load_index(out), load_index(tmp_path / "clean")
    np.testing.assert_array_equal(a.index.reconstruct_n(0, a.n_vectors), b.index.reconstruct_n(0, b.n_vectors))


def test_partial_from_another_model_is_refused(models, ref_folder: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    refs = index_refs_from_folder(ref_folder)
    cfg = IndexConfig(checkpoint_every_refs=1)
    out = tmp_path / "index"
    _count_embeds(monkeypatch, fail_after=3)
    with pytest.raises(SimulatedCrash):
        build_index(refs, models["a"], out, cfg, progress=False)
    assert partial_dir(out).exists()

    calls = _count_embeds(monkeypatch)
    with caplog.at_level(logging.INFO, logger="musicid"):
        meta = build_index(refs, models["b"], out, cfg, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert models["a"].signature in warnings[0] and models["b"].signature in warnings[0]
    assert "resuming" not in caplog.text
    assert len(calls) == N_REFS  # rebuilt from scratch
    assert meta["model_signature"] == models["b"].signature
    assert not partial_dir(out).exists()


def test_partial_for_other_refs_or_hop_is_refused(models, ref_folder: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    refs = index_refs_from_folder(ref_folder)
    out = tmp_path / "index"
    _count_embeds(monkeypatch, fail_after=2)
    with pytest.raises(SimulatedCrash):
        build_index(refs, models["a"], out, IndexConfig(checkpoint_every_refs=1), progress=False)
    calls = _count_embeds(monkeypatch, fail_after=2)
    with caplog.at_level(logging.WARNING, logger="musicid"), pytest.raises(SimulatedCrash):
        build_index(refs, models["a"], out, IndexConfig(checkpoint_every_refs=1, hop_s=0.25), progress=False)
    assert "hop_s" in caplog.text and len(calls) == 2
    caplog.clear()
    calls = _count_embeds(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="musicid"):
        meta = build_index(refs[:3], models["a"], out, IndexConfig(checkpoint_every_refs=1, hop_s=0.25), progress=False)
    assert "another list of refs" in caplog.text and len(calls) == 3 and meta["n_refs"] == 3


def test_undecodable_refs_are_skipped(models, ref_folder: Path, tmp_path: Path, caplog) -> None:
    refs = index_refs_from_folder(ref_folder)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with caplog.at_level(logging.WARNING, logger="musicid"):
        meta = build_index(refs[:2] + [("bad.wav", bad)] + refs[2:], models["a"], tmp_path / "index", IndexConfig(),
                           progress=False)
    assert meta["n_refs"] == N_REFS
    assert [(s["ref"], s["reason"]) for s in meta["skipped"]] == [("bad.wav", "undecodable")]
    assert "skipping bad.wav" in caplog.text
    index = load_index(tmp_path / "index")
    assert "bad.wav" not in [r["ref"] for r in index.refs]
    assert index.track_index.max() == N_REFS - 1
    with pytest.raises(RefIndexError, match="could be decoded"):
        build_index([("bad.wav", bad)], models["a"], tmp_path / "none", IndexConfig(), progress=False)
    assert not partial_dir(tmp_path / "none").exists() and not (tmp_path / "none").exists()


def test_load_index_refuses_other_signature_and_corruption(models, ref_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    build_index(index_refs_from_folder(ref_folder)[:2], models["a"], out, IndexConfig(), progress=False)
    with pytest.raises(IndexSignatureError) as info:
        load_index(out, expected_signature=models["b"].signature)
    message = str(info.value)
    assert models["a"].signature in message and models["b"].signature in message
    assert "musicid index build" in message and "dvc repro <family>-index" in message and "\n" not in message

    with pytest.raises(RefIndexError, match="index not found"):
        load_index(tmp_path / "nowhere")
    # meta.json records each binary file's size and sha256: a flipped bit or a truncation is refused, named
    good = (out / "index.faiss").read_bytes()
    flipped = bytearray(good)
    flipped[-5] ^= 0x10  # inside the last vector: faiss would read it as data
    (out / "index.faiss").write_bytes(bytes(flipped))
    with pytest.raises(RefIndexError, match=r"index.faiss: contents differ from the sha256 meta.json records \(corrupt\)"):
        load_index(out)
    (out / "index.faiss").write_bytes(good[:-40])
    with pytest.raises(RefIndexError, match=rf"index.faiss: {len(good) - 40} bytes but meta.json records {len(good)}"):
        load_index(out)
    (out / "index.faiss").write_bytes(good)
    load_index(out)  # restored: accepted again
    meta = json.loads((out / "meta.json").read_text())
    del meta["files"]  # an index written before the records: faiss's own checks still refuse garbage
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "index.faiss").write_bytes(b"garbage" * 20)
    with pytest.raises(RefIndexError, match="corrupt FAISS index") as info:
        load_index(out)
    assert "\n" not in str(info.value)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(RefIndexError, match="corrupt index metadata"):
        load_index(out)
    (out / "ids.npz").unlink()
    with pytest.raises(RefIndexError, match="missing ids.npz"):
        load_index(out)


def test_cli_index_build(models, ref_folder: Path, tmp_path: Path) -> None:
    model_dir = _make_model(tmp_path / "model", 0)
    out = tmp_path / "index"
    result = CliRunner().invoke(
        main, ["index", "build", str(ref_folder), "--out", str(out), "--model", str(model_dir),
               "--params", str(tmp_path / "absent.yaml"), "--kind", "ivf_flat"],
    )
    assert result.exit_code == 0, result.output
    assert f"{N_REFS} refs" in result.output and "vectors" in result.output and "real time" in result.output
    assert json.loads((out / "meta.json").read_text())["kind"] == "ivf_flat"

    result = CliRunner().invoke(main, ["index", "build", str(ref_folder), "--out", str(out), "--model",
                                       str(tmp_path / "no-model")])
    assert result.exit_code == 2 and "error:" in result.output and "not a model folder" in result.output
