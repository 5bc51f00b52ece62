import crossmodal.toy.steps  # noqa: F401  registers the step (so not every step module is imported)
from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "make_toy_slide")
