import crossmodal.cluster.check  # noqa: F401  registers the step without importing every step module
from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "fail_cluster_check")  # noqa: F821
