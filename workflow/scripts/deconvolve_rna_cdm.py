from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "deconvolve_rna_cdm")
