"""The work identifier: metrics, leak-free splits and stores, CQT, augmentation, losses, backbones,
resumable training, identify (and its refusals), works add, evaluate-folder."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from musicid.audio.cqt import ConstantQ
from musicid.cli import main
from musicid.config import (WorksEvaluateConfig, WorksFeaturesConfig, WorksModelConfig, WorksRerankConfig,
                            WorksSplitConfig, WorksTrainConfig)
from musicid.errors import ConfigError, LeakageError, NotReadyError
from musicid.families.works.augment import random_erase, roll_pitch
from musicid.families.works.evaluate import Performances, embed_frames
from musicid.families.works.features import build_feature_stores, check_store_leakage
from musicid.families.works.identify import WorkIdentifier
from musicid.families.works.align import chroma_recipe, pitch_classes
from musicid.families.works.index import write_works_index
from musicid.families.works.io import load_model
from musicid.families.works.losses import batch_hard_triplet, focal_loss
from musicid.families.works.metrics import ranking_metrics
from musicid.families.works.model import WorkEncoder, WorkSpec
from musicid.families.works.split import assign_roles, find_leaks
from musicid.families.works.train import train_works
from musicid.store.ragged import RaggedStore, write_ragged_store

RECIPE = chroma_recipe(WorksRerankConfig())
FEATURES = WorksFeaturesConfig(train_speeds=[1.0, 1.1], chunk_mb=0.05, shard_mb=0.2, extra_synthetic_works=2,
                                extra_synthetic_versions=2, extra_synthetic_duration_s=[3.0, 4.0])
MODEL = WorksModelConfig(embedding_dim=16, dim=32, conformer_layers=1, conformer_heads=2, conformer_ffn=32,
                         conformer_kernel=7, cqtnet_channels=[8, 16])
TRAIN = WorksTrainConfig(epochs=3, steps_per_epoch=2, works_per_batch=3, per_work=2, chunk_frames=[50, 75], eval_every=1,
                         patience=5, device="cpu")
SPLIT = WorksSplitConfig(val_unseen_works=0.2, test_unseen_works=0.2, val_seen_performances=0.1, test_seen_performances=0.1)


# --- metrics --------------------------------------------------------------------------------------


def test_ranking_metrics_by_hand() -> None:
    # q0 (work A): self skipped; B at 0.1 ranks first, A's other take second → AP 1/2, first hit at rank 2
    # q1 (work B): its only other performance is nearest → AP 1, rank 1
    # q2 (work C): no other performance of C → left out and counted
    distances = np.array([[0.0, 0.1, 0.2, 0.3], [0.5, 0.0, 0.4, 0.1], [0.2, 0.3, 0.1, 0.0]])
    refs = ["a1", "b1", "a2", "b2"]
    result = ranking_metrics(distances, ["A", "B", "C"], ["A", "B", "A", "B"], ["a1", "b1", "c1"], refs)
    assert result["queries"] == 2 and result["skipped"] == 1
    assert result["ap"] == [0.5, 1.0] and result["rank1"] == [2, 1]
    assert result["mAP"] == 0.75 and result["MR1"] == 1.5 and result["top1"] == 0.5 and result["top10"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(distances, ["A"], refs)


# --- splits ---------------------------------------------------------------------------------------


def _tracks(n_works: int, per_work: int) -> list[dict]:
    return [{"track_id": f"w{w:02d}_v{v}", "work_id": f"w{w:02d}", "path": f"w{w}_{v}.wav", "duration_s": 30.0,
             "content_hash": f"h{w}_{v}"} for w in range(n_works) for v in range(per_work)]


def test_split_roles_are_leak_free_deterministic_and_complete() -> None:
    tracks = _tracks(20, 3) + [{**_tracks(1, 1)[0], "track_id": "solo", "work_id": "solo", "content_hash": "hs"}]
    roles = assign_roles(tracks, SPLIT)
    assert roles == assign_roles(tracks, SPLIT)
    assert sum(len(r) for r in roles.values()) == len(tracks)
    works = {role: {t["work_id"] for t in members} for role, members in roles.items()}
    assert len(works["test_unseen"]) == 4 and len(works["val_unseen"]) == 4  # 20 % of the 20 eligible works each
    assert len(roles["test_unseen"]) == 12 and not works["test_unseen"] & works["train"]
    assert works["test_seen"] <= works["train"] and works["val_seen"] <= works["train"] and len(roles["test_seen"]) >= 4
    assert "solo" in works["train"]  # a single performance can only train
    assert find_leaks(roles) == []
    roles["train"].append(roles["test_unseen"][0])
    problems = find_leaks(roles)
    assert any("appears in test_unseen, train" in p for p in problems)
    assert any("of test_unseen has performances in train" in p for p in problems)
    with pytest.raises(NotReadyError, match="need at least 2"):
        assign_roles(_tracks(1, 3), SPLIT)


# --- stores, features -----------------------------------------------------------------------------


def test_ragged_store_round_trip(tmp_path: Path) -> None:
    items = [(np.random.rand(n, 8).astype(np.float32), {"id": f"t{n}"}) for n in (5, 300, 1)]
    meta = write_ragged_store(tmp_path / "s.zarr", items, 8, dtype="float32", chunk_mb=0.001, shard_mb=0.004)
    store = RaggedStore(tmp_path / "s.zarr")
    assert len(store) == 3 and meta["frames"] == 306 and store.column("id") == ["t5", "t300", "t1"]
    assert np.array_equal(store.item(1), items[1][0]) and np.array_equal(store.item(1, 10, 20), items[1][0][10:20])
    assert store.summary()["file_count"] < 20  # sharded: a few files, not one per chunk
    picked = store.load_items([0, 2])  # two runs of consecutive items: each read as one slice
    assert [p.shape for p in picked] == [(5, 8), (1, 8)] and np.array_equal(picked[1], items[2][0])
    assert all(np.array_equal(a, b) for a, b in zip(store.load_items([0, 1, 2]), store.load_all()))
    assert store.load_items([]) == []
    shown = CliRunner().invoke(main, ["store", "info", str(tmp_path / "s.zarr"), str(tmp_path / "s.zarr"), "--json"])
    assert shown.exit_code == 0 and [s["items"] for s in json.loads(shown.output)] == [3, 3]
    # a prime frame count (one shard) still gets ~chunk_mb chunks, not a tiny divisor of the count
    prime = [(np.random.rand(n, 8).astype(np.float16), {"id": str(n)}) for n in (4001, 2006)]
    meta = write_ragged_store(tmp_path / "p.zarr", prime, 8, dtype="float16", chunk_mb=0.01, shard_mb=64)
    assert meta["frames"] == 6007 and meta["rows_per_chunk"] == int(0.01 * (1 << 20)) // 16
    assert meta["rows_per_shard"] % meta["rows_per_chunk"] == 0 and meta["rows_per_shard"] >= 6007
    assert all(np.array_equal(a, b.astype(np.float32)) for a, (b, _) in zip(RaggedStore(tmp_path / "p.zarr").load_all(), prime))
    with pytest.raises(Exception, match="expected"):
        write_ragged_store(tmp_path / "bad.zarr", [(np.zeros((3, 4)), {})], 8)
    assert not (tmp_path / "bad.zarr").exists()


def test_cqt_puts_a_tone_in_its_bin() -> None:
    cqt = ConstantQ(16000, 640, 32.70, 96, 12)
    t = np.arange(16000 * 3) / 16000
    for freq, bin_ in ((440.0, 45), (65.41, 12), (3520.0, 81)):
        spec = cqt(torch.from_numpy(np.sin(2 * np.pi * freq * t).astype(np.float32))[None])
        assert spec.shape == (1, 96, 3 * 25) == (1, 96, cqt.frames(16000 * 3))
        assert int(spec[0, :, 40].argmax()) == bin_
    with pytest.raises(ValueError, match="Nyquist"):
        ConstantQ(8000, 640, 32.70, 96, 12)


def test_pitch_roll_methods_and_erase() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(10, 48)
    x[:, 20] = 1.0
    rolled = roll_pitch(x, "default", 6, gen)
    assert rolled.sum() == 10 and abs(int(rolled[0].argmax()) - 20) <= 6
    edge = torch.zeros(10, 48)
    edge[:, 46] = 1.0
    shifted = roll_pitch(edge, "low_melody", 6, torch.Generator().manual_seed(1))
    assert shifted[:, :6].sum() == 0 and shifted.sum() <= 10  # up, dropping what passes the top, never wrapping
    flex = roll_pitch(x, "flex_melody", 12, torch.Generator().manual_seed(2), bins_per_octave=12)
    assert 12 <= int(flex[0].argmax()) <= 36  # the tonal centre stays an octave from either edge
    with pytest.raises(ValueError, match="allowed: default, low_melody, flex_melody"):
        roll_pitch(x, "sideways", 3, gen)
    erased = random_erase(torch.ones(40, 48), torch.Generator().manual_seed(0))
    assert erased.shape == (40, 48) and erased.sum() <= 40 * 48


def test_losses_and_backbones() -> None:
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.isclose(focal_loss(logits, labels, 0.0), torch.nn.functional.cross_entropy(logits, labels))
    assert focal_loss(logits, labels, 2.0) < focal_loss(logits, labels, 0.0)
    apart = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1.0, 0.01], [-1.0, 0], [-1.0, 0.01]]), dim=1)
    pairs = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(apart, pairs, 0.3) == 0 and batch_hard_triplet(apart, torch.tensor([0, 1, 0, 1]), 0.3) > 0
    for backbone in ("conformer", "cqtnet"):
        model = WorkEncoder(WorkSpec(backbone=backbone, embedding_dim=16, dim=32, conformer_layers=1, conformer_heads=2,
                                     conformer_ffn=32, conformer_kernel=7, cqtnet_channels=(8, 16), n_classes=3)).eval()
        for frames in (50, 333):
            out = model(torch.rand(2, frames, 96))
            assert out.shape == (2, 16) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


# --- a tiny trained bundle --------------------------------------------------------------------------


def _render_works(root: Path, n_works: int = 5, versions: int = 3, seconds: float = 6.0) -> list[dict]:
    from musicid.config import SynthConfig
    from musicid.data.synth import render_track

    cfg = SynthConfig(seed=5, n_works=n_works, versions_per_work=versions, min_duration_s=seconds,
                      max_duration_s=seconds)
    tracks = []
    for w in range(n_works):
        for v in range(versions):
            audio, rate, _ = render_track(w, v, cfg)
            path = root / f"w{w}" / f"w{w}_v{v}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, rate)
            tracks.append({"track_id": f"w{w}_v{v}", "work_id": f"w{w}", "path": f"w{w}/w{w}_v{v}.wav",
                           "duration_s": seconds, "content_hash": hashlib.sha256(path.read_bytes()).hexdigest()})
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "track_id", "work_id"])
        writer.writerows([t["path"], t["track_id"], t["work_id"]] for t in tracks)
    return tracks


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("works")
    tracks = _render_works(root / "audio")
    roles = assign_roles(tracks, SPLIT)
    summary = build_feature_stores(roles, root / "audio", root / "shards", FEATURES, workers=1)
    result = train_works(root / "shards", MODEL, TRAIN, WorksEvaluateConfig(), root / "model", root / "report",
                         root / "ckpt", progress=False)
    loaded = load_model(root / "model", "cpu")
    perf = Performances.from_stores([RaggedStore(root / "shards" / f"{s}.zarr") for s in ("train", "val", "test")],
                                    skip_roles=("train_synthetic",))
    vectors = embed_frames(loaded.model, perf.frames, loaded.device, loaded.spec.min_frames)
    hashes = {t["track_id"]: t["content_hash"] for t in tracks}
    write_works_index(root / "index", vectors, [{"ref": t, "work_id": w, "content_hash": hashes[t], "duration_s": 6.0}
                                                for t, w in zip(perf.track_ids, perf.work_ids)],
                      loaded.signature, loaded.sample_rate, MODEL_INDEX,
                      [pitch_classes(frames, FEATURES.bins_per_octave, RECIPE) for frames in perf.frames], RECIPE)
    return {"root": root, "tracks": tracks, "roles": roles, "summary": summary, "result": result, "loaded": loaded}


from musicid.config import VectorIndexConfig, WorksIdentifyConfig  # noqa: E402

MODEL_INDEX = VectorIndexConfig(device="cpu")


def test_feature_stores_hold_speed_copies_for_train_only(bundle: dict) -> None:
    shards = bundle["root"] / "shards"
    stores = {s: RaggedStore(shards / f"{s}.zarr") for s in ("train", "val", "test")}
    assert bundle["summary"]["leakage"]["ok"]
    roles = stores["train"].column("role")
    assert roles.count("train") == 2 * len(bundle["roles"]["train"]) and roles.count("train_synthetic") == 4
    assert set(stores["train"].column("speed")) == {1.0, 1.1}
    assert {w for w, r in zip(stores["train"].column("work_id"), roles) if r == "train_synthetic"} == {
        "synthetic-1000000", "synthetic-1000001"}  # generator works, training only
    assert set(stores["val"].column("speed")) == set(stores["test"].column("speed")) == {1.0}
    # a 1.1× copy is ~10 % shorter
    speeds, lengths = stores["train"].column("speed"), [stores["train"].length(i) for i in range(len(stores["train"]))]
    assert lengths[speeds.index(1.1)] < lengths[speeds.index(1.0)]
    # a store that holds a test performance's speed copy is refused, naming it
    leaky = bundle["root"] / "leaky"
    frames = np.zeros((60, 96), np.float16)
    row = {"work_id": "w9", "role": "test_unseen", "content_hash": "x"}
    write_ragged_store(leaky / "train.zarr", [(frames, {**row, "track_id": "a", "speed": 1.0, "role": "train",
                                                        "work_id": "w8", "content_hash": "y"})], 96)
    write_ragged_store(leaky / "test.zarr", [(frames, {**row, "track_id": "b", "speed": 1.1})], 96)
    with pytest.raises(LeakageError, match="test.zarr holds speed-augmented copies"):
        check_store_leakage({"train": RaggedStore(leaky / "train.zarr"), "test": RaggedStore(leaky / "test.zarr")})


def test_training_writes_history_and_resumes_to_the_same_model(bundle: dict, tmp_path: Path) -> None:
    result = bundle["result"]
    history = (bundle["root"] / "report" / "history.csv").read_text()
    assert "val_mAP" in history and "mAP_test_unseen" in history and len(result.history) == 3
    config = json.loads((bundle["root"] / "model" / "config.json").read_text())
    assert config["family"] == "works" and config["spec"]["min_frames"] == 50 and len(config["classes"]) >= 2

    class Stop(Exception):
        pass

    def stop_at_2(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    shards = bundle["root"] / "shards"
    with pytest.raises(Stop):
        train_works(shards, MODEL, TRAIN, WorksEvaluateConfig(), tmp_path / "m", tmp_path / "r", bundle["root"] / "ckpt",
                    progress=False, on_epoch=stop_at_2)
    resumed = train_works(shards, MODEL, TRAIN, WorksEvaluateConfig(), tmp_path / "m", tmp_path / "r",
                          bundle["root"] / "ckpt", progress=False)
    assert resumed.resumed_from_epoch == 2 and resumed.signature == result.signature


def test_identify_ranks_works_and_refuses_short_or_broken_queries(bundle: dict, tmp_path: Path) -> None:
    identifier = WorkIdentifier(bundle["loaded"], bundle["root"] / "index")
    query = bundle["roles"]["test_unseen"][0]
    answer = identifier.identify_path(bundle["root"] / "audio" / query["path"], top=3)
    assert [set(w) for w in answer["works"]] == [{"work_id", "score", "alignment", "performances"}] * 3
    # re-ranked by chroma alignment (the index is smaller than rerank.top_k, so every work was aligned)
    assert answer["works"][0]["alignment"] >= answer["works"][1]["alignment"] >= answer["works"][2]["alignment"]
    # the query itself is indexed: its own work comes first with a near-perfect score
    assert answer["works"][0]["work_id"] == query["work_id"] and answer["works"][0]["score"] > 0.99
    # without the second stage: cosine order, no alignment scores
    plain = WorkIdentifier(bundle["loaded"], bundle["root"] / "index",
                           WorksIdentifyConfig(rerank=WorksRerankConfig(top_k=0))).identify_path(
        bundle["root"] / "audio" / query["path"], top=3)
    assert [set(w) for w in plain["works"]] == [{"work_id", "score", "performances"}] * 3
    assert plain["works"][0]["score"] >= plain["works"][1]["score"] >= plain["works"][2]["score"]
    by_centroid = identifier.identify_path(bundle["root"] / "audio" / query["path"], top=2, use_centroids=True)
    assert len(by_centroid["works"]) == 2
    audio, rate = sf.read(bundle["root"] / "audio" / query["path"])
    sf.write(tmp_path / "short.wav", audio[: rate], rate)
    short = identifier.identify_path(tmp_path / "short.wav")
    assert "1.0 s is shorter than the model's shortest chunk (2.0 s = 50 frames at 0.04 s)" in short["error"]
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    assert identifier.identify_path(tmp_path / "broken.wav")["error"]


def test_queries_make_their_chroma_as_the_index_recorded_it(bundle: dict, tmp_path: Path) -> None:
    """An index records its chroma recipe; one from before recipes (plain folded CQT) is still queried with plain chroma."""
    from musicid.families.works.align import PLAIN_CHROMA, fold_chroma
    from musicid.families.works.index import CHROMA_FILE, load_chroma

    index = bundle["root"] / "index"
    assert json.loads((index / "meta.json").read_text())["chroma"] == RECIPE
    query = bundle["roles"]["test_unseen"][0]
    path = bundle["root"] / "audio" / query["path"]
    position = [r["ref"] for r in json.loads((index / "refs.json").read_text())].index(query["track_id"])
    current = WorkIdentifier(bundle["loaded"], index)
    assert current.chroma_recipe == RECIPE
    stored = load_chroma(index)[position]
    def same(a: np.ndarray, b: np.ndarray) -> bool:  # the store holds float16 CQT: a near-tie between bins may flip a peak
        a, b = a.astype(np.float32), b.astype(np.float32)
        return np.abs(a - b).mean() < 0.02 * np.abs(a).mean()
    assert same(bundle["loaded"].analyse_path(path, chroma_recipe=current.chroma_recipe)[1], stored)

    legacy = tmp_path / "legacy"
    shutil.copytree(index, legacy)
    meta = json.loads((legacy / "meta.json").read_text())
    del meta["chroma"]
    (legacy / "meta.json").write_text(json.dumps(meta))
    plain = [fold_chroma(f, FEATURES.bins_per_octave) for f in
             Performances.from_stores([RaggedStore(bundle["root"] / "shards" / f"{s}.zarr") for s in ("train", "val", "test")],
                                      skip_roles=("train_synthetic",)).frames]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in plain])])
    np.savez(legacy / CHROMA_FILE, frames=np.concatenate(plain), offsets=offsets)
    old = WorkIdentifier(bundle["loaded"], legacy)
    assert old.chroma_recipe == PLAIN_CHROMA
    query_chroma = bundle["loaded"].analyse_path(path, chroma_recipe=old.chroma_recipe)[1]
    assert same(query_chroma, load_chroma(legacy)[position]) and not same(query_chroma, stored)
    assert old.identify_path(path, top=1)["works"][0]["work_id"] == query["work_id"]


def test_works_add_skips_duplicates_quarantines_bad_audio_and_refuses_other_models(bundle: dict, tmp_path: Path) -> None:
    root = bundle["root"]
    new = tmp_path / "new"
    new.mkdir()
    audio, rate = sf.read(root / "audio" / bundle["tracks"][0]["path"])
    sf.write(new / "fresh.wav", np.roll(audio, rate // 3, axis=0) * 0.8, rate)
    (new / "dup.wav").write_bytes((root / "audio" / bundle["tracks"][1]["path"]).read_bytes())
    (new / "broken.flac").write_bytes(b"fLaC" + bytes(400))
    (new / "works.csv").write_text("file,work_id,track_id\nfresh.wav,w0,fresh\ndup.wav,w0,dup\nbroken.flac,w1,broken\n")
    def add(index: Path, out: Path, model: Path) -> object:
        return CliRunner().invoke(main, ["works", "add", str(new), "--csv", str(new / "works.csv"), "--index", str(index),
                                         "--out", str(out), "--model", str(model), "--no-dvc"])

    result = add(root / "index", tmp_path / "extended", root / "model")
    assert result.exit_code == 0, result.output
    assert "skipped dup: already indexed (as w0_v1)" in result.output and "quarantined broken" in result.output
    assert "1 added, 1 already indexed, 1 quarantined" in result.output
    extended = json.loads((tmp_path / "extended" / "works.json").read_text())
    assert extended["fresh"] == "w0" and len(extended) == len(json.loads((root / "index" / "works.json").read_text())) + 1
    identifier = WorkIdentifier(bundle["loaded"], tmp_path / "extended")
    assert identifier.identify_path(new / "fresh.wav", top=1)["works"][0]["performances"][0]["ref"] == "fresh"
    # adding the same folder again adds nothing new
    assert "0 added, 2 already indexed" in add(tmp_path / "extended", tmp_path / "again", root / "model").output
    # another model's index is refused naming both signatures
    other = WorkEncoder(WorkSpec.from_dict(json.loads((root / "model" / "config.json").read_text())["spec"]))
    from musicid.families.works.io import save_model

    torch.manual_seed(99)
    other_signature = save_model(WorkEncoder(other.spec), tmp_path / "other")
    refused = add(root / "index", tmp_path / "refused", tmp_path / "other")
    assert refused.exit_code == 2 and other_signature in refused.output and bundle["loaded"].signature in refused.output
    # a CSV without work ids names the column
    (new / "bad.csv").write_text("file,track\nfresh.wav,x\n")
    bad = CliRunner().invoke(main, ["works", "add", str(new), "--csv", str(new / "bad.csv"), "--index", str(root / "index"),
                                    "--model", str(root / "model")])
    assert bad.exit_code == 2 and "missing column 'work_id'" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_evaluate_folder_scores_all_against_all(bundle: dict) -> None:
    root = bundle["root"]
    works_file = root / "only.txt"
    works_file.write_text("w0\nw1\nw2\n")
    result = CliRunner().invoke(main, ["works", "evaluate-folder", str(root / "audio"), "--model", str(root / "model"),
                                       "--only-works", str(works_file), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["performances"] == 9 and figures["works"] == 3 and figures["queries"] == 9
    assert 0 < figures["mAP"] <= 1 and figures["MR1"] >= 1 and figures["seconds_per_query"] > 0
    with pytest.raises(ConfigError, match="missing column 'file'"):
        from musicid.families.works.collection import read_collection

        (root / "nofile.csv").write_text("work_id\nw0\n")
        read_collection(root / "audio", root / "nofile.csv")


def test_finetune_starts_from_a_model_and_trains_on_a_folder(bundle: dict, tmp_path: Path) -> None:
    import yaml

    root = bundle["root"]
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["works"]["train"].update({"epochs": 1, "steps_per_epoch": 2, "works_per_batch": 3, "per_work": 2,
                                     "chunk_frames": [50], "device": "cpu"})
    params["works"]["split"].update({"val_unseen_works": 0.4})
    params["works"]["features"].update({"train_speeds": [1.0]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["works", "finetune", str(root / "audio"), "--init", str(root / "model"), "--out",
                                       str(tmp_path / "tuned"), "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    tuned = load_model(tmp_path / "tuned", "cpu")
    assert summary["signature"] == tuned.signature != bundle["loaded"].signature
    assert tuned.info["init_model"] == str(root / "model") and summary["performances"] == 15
    # the backbone started from the init model: its spec is kept (the classifier is new: the folder's works)
    assert tuned.spec.embedding_dim == bundle["loaded"].spec.embedding_dim and tuned.spec.n_classes != 0


@pytest.mark.parametrize("rates", [(44100, 16000), (22050, 16000), (16000 * 0.9, 16000), (16000 * 1.1, 16000)])
def test_resampling_and_speed_copies_equal_librosa_soxr_hq(rates: tuple[float, int]) -> None:
    """soxr is called directly (librosa's import costs seconds per process): same samples, same length."""
    import librosa

    from musicid.audio import to_model_rate
    from musicid.families.works.features import speed_change

    source, target = rates
    signal = np.random.default_rng(0).standard_normal(24_007).astype(np.float32)
    expected = librosa.resample(signal, orig_sr=source, target_sr=target, res_type="soxr_hq").astype(np.float32)
    assert np.array_equal(to_model_rate(signal, source, target), expected)
    if source < target * 1.2:  # a speed copy: the signal played source / target times faster
        assert np.array_equal(speed_change(signal, target, source / target), expected)


def test_production_training_resumes_mid_fold_to_the_same_model_and_reports_best_epochs_from_mlflow(
        bundle: dict, tmp_path: Path, mlflow_db: Path) -> None:
    """works-train-prod's library: 2 folds + final; killed (an exception) in fold 2, rerun → the same final
    model and metrics as an uninterrupted run (exactly: every draw is seeded per phase and checkpointed);
    each phase is a nested MLflow run, and `exp best-epochs` ranks the same epochs as the stage's report."""
    from musicid.config import TrackingConfig, WorksProdConfig
    from musicid.experiments.best_epochs import best_epochs
    from musicid.families.works.prod import train_works_prod
    from musicid.tracking import stage_run

    shards, prod = bundle["root"] / "shards", WorksProdConfig(folds=2, epochs=2, final_epochs=2)
    reference = train_works_prod(shards, MODEL, TRAIN, prod, tmp_path / "ref", tmp_path / "ref-report",
                                 tmp_path / "ref-state", progress=False)
    assert list(reference["phases"]) == ["fold-1", "fold-2", "final"]
    assert sum(reference["fold_performances"].values()) > 0 and reference["train_works"] >= 4
    tracking = TrackingConfig(system_metrics=False)

    class Stop(Exception):
        pass

    epochs_done = []

    def stop_in_fold_2(epoch: int) -> None:
        epochs_done.append(epoch)
        if len(epochs_done) == 3:  # fold-1 epochs 1, 2; fold-2 epoch 1
            raise Stop

    with pytest.raises(Stop), stage_run("works-train-prod", tracking, {"prod": prod.model_dump()}, family="works") as run:
        train_works_prod(shards, MODEL, TRAIN, prod, tmp_path / "model", tmp_path / "report", tmp_path / "state",
                         run=run, progress=False, on_epoch=stop_in_fold_2)
    assert not (tmp_path / "model").exists(), "no model is published by an interrupted run"
    with stage_run("works-train-prod", tracking, {"prod": prod.model_dump()}, family="works") as run:
        resumed = train_works_prod(shards, MODEL, TRAIN, prod, tmp_path / "model", tmp_path / "report",
                                   tmp_path / "state", run=run, progress=False)
    assert resumed["signature"] == reference["signature"] and resumed["final"] == reference["final"]
    assert (tmp_path / "report" / "best-epochs.md").read_text().startswith("# Best epochs of production training")
    found, by_network, metrics = best_epochs(None)
    assert found.info.run_id == run.run_id and metrics == [f"mAP_{n}" for n in ("test_unseen", "val_unseen")]
    (ranked,) = by_network.values()  # one network: no network tag
    key = "average"
    assert [(r["phase"], r["epoch"]) for r in ranked[key]] == [(r["phase"], r["epoch"]) for r in resumed["best_epochs"][key]]
    out = CliRunner().invoke(main, ["exp", "best-epochs", run.run_id, "--top", "3"])
    assert out.exit_code == 0 and "## by mAP_test_unseen" in out.output and "| 3 |" in out.output, out.output
