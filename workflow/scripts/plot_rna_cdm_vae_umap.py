from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "plot_rna_cdm_vae_umap")
