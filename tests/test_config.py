"""Config validation: defaults filled, unknown / mistyped keys named, docs generated from the schema."""
import copy
import re
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
        ({"rna_cdm": {"vae": {"models": {"extra": {"laten": 3}}}}}, "rna_cdm.vae.models.extra.laten"),
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


@pytest.mark.parametrize("override, named", [
    ({"tiling": {"presets": {"tile256": {"target_mpp": float("nan")}}}}, "tiling.presets.tile256.target_mpp: nan"),
    ({"tiling": {"presets": {"tile256": {"target_mpp": float("inf")}}}}, "tiling.presets.tile256.target_mpp: inf"),
    ({"expression": {"pseudocount": float("nan")}}, "expression.pseudocount: nan"),
    ({"rna_gan": {"vae": {"lr": float("nan")}}}, "rna_gan.vae.lr: nan"),
    ({"expression": {"missing_value": float("-inf")}}, "expression.missing_value: -inf"),
])
def test_non_finite_numbers_are_refused_naming_the_key(override, named):
    """JSON Schema bounds are false for NaN (so NaN passes minimum / exclusiveMinimum) and inf
    passes any bound without a maximum; YAML's .nan / .inf are refused wherever they appear."""
    with pytest.raises(ConfigError, match=re.escape(f"config: {named} is not a finite number")):
        load_config(override, path=REPO / "config" / "config.yaml")
    text = "tiling:\n  presets:\n    tile256:\n      target_mpp: .nan\n"
    with pytest.raises(ConfigError, match=re.escape("config: tiling.presets.tile256.target_mpp: nan is not")):
        load_config(yaml.safe_load(text), path=REPO / "config" / "config.yaml")


@pytest.mark.parametrize("override, message", [
    ({"pathgen": {"conformal": {"n_bins": 5}}}, "pathgen.conformal.n_bins (5) must equal pathgen.mcat.n_bins (4)"),
    ({"pathgen": {"conformal": {"risk_min": -1.0, "risk_max": -5.0}}}, "risk_min (-1.0) must be below risk_max"),
    ({"pathgen": {"cross_fit": {"folds": 1}}}, "pathgen.cross_fit.folds is 1"),
])
def test_pathgen_settings_must_agree_with_the_model(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(override, path=REPO / "config" / "config.yaml")


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


PAPER_CONFIGS = ["rna_gan.yaml", "rna_cdm.yaml", "pathgen.yaml", "coherent.yaml"]


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, prefix + (k,))
        elif not isinstance(v, dict):
            yield prefix + (k,), v


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return KeyError
        d = d[k]
    return d


def _used_presets(cfg: dict) -> set:
    """Tiling presets a (merged, validated) config tiles: the default, the metrics preset and
    each enabled chain's preset(s)."""
    used = {cfg["tiling"]["default_preset"], cfg["metrics"]["preset"]}
    for chain in ("rna_gan", "rna_cdm", "coherent"):
        if cfg[chain].get("enabled", True) and cfg[chain].get("preset"):
            used.add(cfg[chain]["preset"])
    if cfg["pathgen"].get("enabled", True):
        used.update(cfg["pathgen"]["patches"]["presets"])
    return used


def toy_leaks(paper_file: str) -> list[str]:
    """Keys config/config.yaml (the toy) sets that change the paper run's value when Snakemake
    merges ``config/<paper_file>`` over it (``--configfile``: nested keys merged, lists
    replaced): leaves the paper config does not restate whose toy value differs from what the
    paper config alone (schema defaults filled) gives. Skipped: sections the paper run does not
    read - the ``toy`` section (sheet cohorts), chains and split schemes it sets
    ``enabled: false`` (metrics.enabled only drops the standalone metrics targets: its encoder,
    FID and cell-count settings are still read) and tiling presets no enabled chain tiles."""
    from snakemake.utils import update_config

    toy = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config" / paper_file).read_text())
    alone = validate(copy.deepcopy(paper), SCHEMA_DIR / "config.schema.yaml", paper_file)
    merged = copy.deepcopy(toy)
    update_config(merged, copy.deepcopy(paper))
    merged = validate(merged, SCHEMA_DIR / "config.schema.yaml", f"config.yaml + {paper_file}")
    presets = _used_presets(merged)
    leaked = []
    for path, value in _leaves(toy):
        if path[0] == "toy" and merged["cohort"]["source"] != "toy":
            continue
        if any(_get(paper, path[:i] + ("enabled",)) is False for i in range(1, len(path))
               if path[:i] != ("metrics",)):
            continue
        if path[:2] == ("tiling", "presets") and path[2] not in presets:
            continue
        if _get(paper, path) is KeyError and _get(alone, path) != value:
            leaked.append(".".join(path))
    return leaked


@pytest.mark.parametrize("paper_file", PAPER_CONFIGS)
def test_paper_config_restates_every_toy_value_its_run_reads(paper_file):
    """Each paper config claims to restate every key the toy config sets; a key it misses keeps
    the toy value in the merged real-data config (e.g. a 32 px SR crop, raw tiles)."""
    leaked = toy_leaks(paper_file)
    assert not leaked, f"config/{paper_file} must restate these toy values of config/config.yaml: {leaked}"


def test_toy_leak_check_can_fail(monkeypatch):
    """The check above names a key the paper config drops (here rna_cdm.train.steps)."""
    real = yaml.safe_load
    def drop_steps(text):
        d = real(text)
        if isinstance(d, dict) and d.get("run_name") == "tcga_rna_cdm":
            del d["rna_cdm"]["train"]["steps"]
        return d
    monkeypatch.setattr(yaml, "safe_load", drop_steps)
    assert "rna_cdm.train.steps" in toy_leaks("rna_cdm.yaml")


@pytest.mark.parametrize("override, message", [
    ({"rna_cdm": {"lowres_blur_kernel": 4}}, "rna_cdm.lowres_blur_kernel (4) must be odd"),
    ({"rna_cdm": {"sampler": {"S_tmin": 50.0, "S_tmax": 0.05}}}, "rna_cdm.sampler.S_tmin (50.0) must be below"),
    ({"rna_cdm": {"sampler": {"S_tmin": 1.0, "S_tmax": 1.0}}}, "rna_cdm.sampler.S_tmin (1.0) must be below"),
    ({"rna_cdm": {"sr_unet": {"image_size": 16}}}, "rna_cdm.sr_unet.image_size (16) must exceed "
                                                   "rna_cdm.base_unet.image_size (16)"),
])
def test_rna_cdm_cascade_settings_are_checked_before_training(override, message):
    """Settings that would fail (or silently misbehave) only once training or sampling starts
    are refused when the config is loaded, naming the key."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(override, path=REPO / "config" / "config.yaml")
    # the shipped toy and paper values pass
    load_config({"rna_cdm": {"lowres_blur_kernel": 5, "sampler": {"S_tmin": 0.05, "S_tmax": 50.0}}},
                path=REPO / "config" / "config.yaml")
