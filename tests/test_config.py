"""Config validation: defaults filled, unknown / mistyped keys named, docs generated from the schema."""
from pathlib import Path

import pytest
import yaml

from crossmodal.config import ConfigError, load_config, validate, SCHEMA_DIR

REPO = Path(__file__).resolve().parents[1]


def test_default_config_validates_and_fills_defaults():
    cfg = load_config(path=REPO / "config" / "config.yaml")
    assert cfg["seed"] == 0
    preset = cfg["tiling"]["presets"]["tile256"]
    # keys absent from config.yaml come from the schema
    assert preset["min_contrast"] == 12.75 and preset["pen_max_fraction"] == 0.05
    # keys config.yaml sets override the schema's default (jpeg)
    assert preset["format"] == "raw"
    assert cfg["splits"]["schemes"]["vae"]["train"] == 0.6


@pytest.mark.parametrize(
    "override, named",
    [
        ({"seeed": 1}, "seeed"),
        ({"tiling": {"presets": {"tile256": {"tile_sise": 128}}}}, "tiling.presets.tile256.tile_sise"),
        ({"cohort": {"sauce": "toy"}}, "cohort.sauce"),
    ],
)
def test_unknown_key_is_named(override, named):
    with pytest.raises(ConfigError) as e:
        load_config(override, path=REPO / "config" / "config.yaml")
    assert named in str(e.value) and "unknown key" in str(e.value)


@pytest.mark.parametrize(
    "override, named",
    [
        ({"seed": "zero"}, "seed"),
        ({"tiling": {"presets": {"tile256": {"tile_size": "big"}}}}, "tiling.presets.tile256.tile_size"),
        ({"device": "tpu"}, "device"),
        ({"cohort": {"source": "tcga"}}, "cohort.source"),
    ],
)
def test_mistyped_value_is_named(override, named):
    with pytest.raises(ConfigError) as e:
        load_config(override, path=REPO / "config" / "config.yaml")
    assert str(e.value).startswith(f"config: {named}:")


def test_every_config_file_validates():
    files = sorted((REPO / "config").glob("*.yaml"))
    assert files
    for f in files:
        cfg = yaml.safe_load(f.read_text()) or {}
        validate(cfg, SCHEMA_DIR / "config.schema.yaml", str(f))


def test_config_readme_matches_schema():
    from crossmodal.configdoc import render

    committed = (REPO / "config" / "README.md").read_text()
    assert committed == render(), "config/README.md is stale: run `python -m crossmodal.configdoc`"


def test_every_schema_key_has_a_description():
    from crossmodal import configdoc

    top = yaml.safe_load((SCHEMA_DIR / "config.schema.yaml").read_text())
    rows = []
    configdoc._rows(top, "", SCHEMA_DIR, top, rows)
    missing = [name for name, typ, default, desc in rows if not desc]
    assert not missing, f"config keys without a description in the schema: {missing}"
