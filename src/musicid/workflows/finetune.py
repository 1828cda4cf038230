"""Fine-tune a works model on a folder of performances: the works stages in a scratch folder.

The folder (audio + CSV of work ids) is linked into `<out>.work/`, ingested, split with the
folder's own works (a share kept unseen for validation), featurised and trained starting from
`init` (its backbone and head; a new classifier for the new works; no extra synthetic works), with
the same functions as the DVC stages. The fine-tuned model folder lands at `out`.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from musicid.config import Params
from musicid.workflows.chain import link_files, run_chain, with_updates


def finetune(folder: Path, tracks: list[dict[str, str]], init: Path, out: Path, params: Params,
             epochs: int | None = None) -> dict[str, Any]:
    from musicid.families.works.train import train_works
    from musicid.fsutil import read_json
    from musicid.layout import family_layout

    work = out.parent / f".{out.name}.work"
    source = work / "source"
    link_files(folder, [t["file"] for t in tracks], source)
    with (source / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "track_id", "work_id", "version", "title", "style"])
        writer.writeheader()
        for t in tracks:
            writer.writerow({"file": t["file"], "track_id": t["track_id"], "work_id": t["work_id"], "version": "",
                             "title": "", "style": ""})
    spec = read_json(init / "config.json")["spec"]
    updates = {
        "ingest": {"source": str(source.resolve()), "source_type": "auto", "metadata": "metadata.csv",
                   "query_duration_s": 1.0},
        "works.split": {"test_unseen_works": 0.0, "test_seen_performances": 0.0, "val_unseen_works": 0.15,
                        "val_seen_performances": 0.0},
        "works.features": {"sample_rate": spec["sample_rate"], "n_bins": spec["n_bins"],
                           "bins_per_octave": spec["bins_per_octave"], "fmin_hz": spec["fmin_hz"], "hop_s": spec["hop_s"],
                           "extra_synthetic_works": 0},  # adapt to the folder's music alone
        "works.model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()
                        if k in ("backbone", "embedding_dim", "dim", "conformer_layers", "conformer_heads", "conformer_ffn",
                                 "conformer_kernel", "cqtnet_channels", "dropout")},
        "works.train": {"epochs": epochs} if epochs else {},
        "tracking": {"enabled": False},
    }
    tuned = with_updates(params, updates)
    run_chain(work, tuned, ("ingest", "works-split", "works-features"))
    layout = family_layout("works")
    result = train_works(work / layout.shards, tuned.works.model, tuned.works.train, tuned.works.evaluate.model_copy(
        update={"testsets": ["val_unseen"]}), out, work / layout.train_report, work / layout.checkpoints, init_model=init)
    shutil.copytree(work / layout.train_report, out.parent / f"{out.name}-report", dirs_exist_ok=True)
    return {"model": str(out), "signature": result.signature, "best_epoch": result.best_epoch,
            "val_mAP": result.best["val_mAP"], "performances": len(tracks), "work_dir": str(work)}
