from crossmodal.steps import run_from_snakemake

run_from_snakemake(snakemake, "render_reproduction_table")
