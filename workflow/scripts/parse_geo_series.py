import crossmodal.download.steps  # noqa: F401  registers the step without importing every module
from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "parse_geo_series")
