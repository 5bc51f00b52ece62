from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "perturb_rna_cdm")
