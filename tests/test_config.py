from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from musicid.config import load_params, parse_params
from musicid.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid_and_complete() -> None:
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # every key the code knows is spelled out in params.yaml, so users can find it (family sections nest)
    from pydantic import BaseModel

    def check(model: BaseModel, node: dict, path: str) -> None:
        assert set(node) == set(type(model).model_fields), path
        for name, value in model:
            if isinstance(value, BaseModel) and name != "gates":
                check(value, node[name], f"{path}.{name}")

    check(params, raw, "params")
    assert params.fingerprint.shards.window_samples == 16000
    assert params.works.registry.model_name == "musicid-work-identifier"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"fingerprint": {"shards": {"compressor": "lz5"}}},
         "fingerprint.shards.compressor: Input should be 'none', 'zstd' or 'blosc' (got 'lz5')"),
        ({"fingerprint": {"shards": {"dtype": "int8"}}}, "fingerprint.shards.dtype: Input should be 'float16', 'float32' or 'int16'"),
        ({"fingerprint": {"shards": {"compressor": "blosc", "level": 12}}}, "level 12 is out of range for blosc (allowed 0-9)"),
        ({"fingerprint": {"shards": {"windw_s": 1}}},
         "unknown key fingerprint.shards.windw_s; allowed keys here: dtype, compressor, level"),
        ({"shard": {}}, "unknown key shard; allowed keys here: synth, ingest, prepare, tracking, train, fingerprint, works"),
        ({"works": {"model": {"backbone": "lstm"}}}, "works.model.backbone: Input should be 'conformer' or 'cqtnet' (got 'lstm')"),
        ({"works": {"train": {"roll_method": "up"}}},
         "works.train.roll_method: Input should be 'default', 'low_melody' or 'flex_melody' (got 'up')"),
        ({"works": {"features": {"train_speeds": [0.9, 1.1]}}}, "train_speeds must include 1.0"),
        ({"works": {"split": {"val_unseen_works": 0.5, "test_unseen_works": 0.5}}},
         "val_unseen_works + test_unseen_works must be < 1"),
        ({"works": {"features": {"n_bins": 120}}}, "must be below Nyquist"),
        ({"prepare": {"val_fraction": 0.5, "test_fraction": 0.5}}, "val_fraction + test_fraction must be < 1"),
        ({"synth": {"n_works": 0}}, "synth.n_works: Input should be greater than or equal to 1 (got 0)"),
        ({"synth": {"formats": ["mp3"]}}, "synth.formats.0: Input should be 'flac', 'ogg' or 'wav' (got 'mp3')"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fingerprint: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_config_is_frozen() -> None:
    params = parse_params({})
    with pytest.raises(Exception):
        params.fingerprint.shards.dtype = "float32"  # type: ignore[misc]


def test_every_cli_command_is_in_the_readme() -> None:
    import click

    from musicid.cli import main

    def paths(command: click.Command, prefix: list[str]):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from paths(sub, prefix + [name])
        else:
            yield " ".join(prefix)

    readme = (REPO / "README.md").read_text()
    missing = [p for p in paths(main, []) if f"musicid {p}" not in readme and not p.startswith("stage ")]
    assert not missing, f"README does not mention: {missing}"
    assert "musicid stage NAME" in readme
