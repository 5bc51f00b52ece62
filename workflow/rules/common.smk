# Helpers shared by all rule files - the validated config, the sample table and
# ALL_TARGETS, the list of targets the default target collects.
from crossmodal.config import validate, SCHEMA_DIR
from crossmodal import samplesheet
from crossmodal.training import gpu_request

# `--config offline=true` arrives as a string (Snakemake reads only True/False as booleans)
if isinstance(config.get("offline"), str):
    config["offline"] = config["offline"].strip().lower() in ("true", "1", "yes")
validate(config, SCHEMA_DIR / "config.schema.yaml", "config")

SAMPLES = samplesheet.load(config)
SAMPLE_IDS = list(SAMPLES.index)
SLIDE_SAMPLES = [s for s in SAMPLE_IDS if SAMPLES.loc[s, "slide"]]
PRESETS = list(config["tiling"]["presets"])
ALL_TARGETS = []


def sample_field(field):
    """Input function: a column of the sample table for {sample}."""

    def fn(wildcards):
        return SAMPLES.loc[wildcards.sample, field]

    return fn


def pipeline_targets(wildcards):
    """Every default target except the run summary itself (so the summary runs last)."""
    return [t for t in ALL_TARGETS if not str(t).startswith("results/report/")]
