from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "search_coherent_hyperparameters")
