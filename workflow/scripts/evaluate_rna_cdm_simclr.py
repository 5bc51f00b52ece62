from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "simclr_rna_cdm")
