from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "build_rna_cdm_reproduction")
