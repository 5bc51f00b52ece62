from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "embed_coherent_slides")
