import crossmodal.expression.steps  # noqa: F401  registers the step (so not every step module is imported)
from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "plot_expression_summary")
