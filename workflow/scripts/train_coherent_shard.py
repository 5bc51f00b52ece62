from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "train_coherent_shard")
