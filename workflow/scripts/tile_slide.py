import crossmodal.tiling  # noqa: F401  registers the step (so not every step module is imported)
from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "tile_slide")
