"""One layout, one dvc.yaml: every family's stages and artifact paths agree, and each stage depends on its code."""

from __future__ import annotations

from pathlib import Path

import yaml

from musicid.families import FAMILIES, FAMILY_NAMES
from musicid.layout import family_layout
from musicid.stages import COMMON_STAGES, all_stages

REPO = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_runs_exactly_the_stages_musicid_knows() -> None:
    assert set(DVC) == set(all_stages())
    for name, stage in DVC.items():
        assert stage["cmd"] == f"musicid stage {name}"
    assert list(COMMON_STAGES) == ["synth", "ingest", "prepare"]


def test_family_outputs_live_under_the_family_layout() -> None:
    for family in FAMILY_NAMES:
        layout = family_layout(family)
        roots = {str(p) for p in (layout.manifests, layout.shards, layout.model, layout.index, layout.reports,
                                  layout.labelled, layout.note_shards)}
        outs = [out for name in FAMILIES[family].stage_names() for out in DVC[name]["outs"]]
        networks = [o for o in outs if o.startswith(f"models/{family}-")]  # layout.network(name)
        assert networks == [str(layout.network(o.split("-", 1)[1])) for o in networks]
        outs = [o for o in outs if o not in networks]
        assert outs and all(any(out == root or out.startswith(root + "/") for root in roots) for out in outs), outs
        assert str(layout.model) in outs and str(layout.shards) in outs
        if "index" in FAMILIES[family].stages:  # a family that searches a catalog keeps its index here
            assert str(layout.index) in outs


def test_every_stage_depends_on_its_code_and_only_its_familys() -> None:
    for family in FAMILY_NAMES:
        for name in FAMILIES[family].stage_names():
            code = [d for d in DVC[name]["deps"] if d.startswith("src/")]
            (own,) = FAMILIES[family].code
            assert f"{own}/stages.py" in code, name
            others = [d for d in code if d.startswith("src/musicid/families/") and not d.startswith(own + "/")]
            assert not others, (name, others)
            assert all((REPO / d).exists() for d in code), name
    # the model's code is a dependency of every stage that loads the model
    for family in FAMILY_NAMES:
        users = {n for n in FAMILIES[family].stage_names() if f"src/musicid/families/{family}/model.py" in DVC[n]["deps"]}
        loaders = {"train", "index", "evaluate", "report"} & set(FAMILIES[family].stages)
        if f"src/musicid/families/{family}/train.py" in DVC.get(f"{family}-train-prod", {}).get("deps", []):
            loaders.add("train-prod")  # production training of the family's model (pitch's trains its note networks)
        assert users == {f"{family}-{s}" for s in loaders}, users


def test_training_does_not_read_index_params() -> None:
    for family in FAMILY_NAMES:
        params = DVC[f"{family}-train"]["params"]
        assert not [p for p in params if ".index" in p], params
