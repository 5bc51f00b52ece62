from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "benchmark_rna_cdm_samplers")
