from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "evaluate_gan_convergence")
