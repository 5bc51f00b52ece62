from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "evaluate_rna_cdm_super_resolution")
