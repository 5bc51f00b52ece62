# Evaluation toolkit (issue 3; crossmodal.metrics, crossmodal.cells, crossmodal.models.ssl):
# the cohort-ssl SimCLR encoder, the real-vs-real FID/KID/IS table and the cell-type table.
from crossmodal import paths

METRICS = config["metrics"]
MET_PRESET = METRICS["preset"]
MET_TILES = expand(
    "results/tiles/{preset}/{sample}.lmdb", preset=MET_PRESET, sample=SLIDE_SAMPLES
)
MET_SPLITS = f"results/splits/{METRICS['splits']}.tsv"
MET_TRUTH = paths.toy_truth(config)
MET_ENCODER = paths.ssl_encoder(config, "cohort-ssl" in METRICS["extractors"])


# One encoder per split scheme that asks for one: metrics.splits' for the FID / KID / IS features,
# PathGen's and Coherent's for their patch / slide embeddings (their test patients train no feature).
rule train_ssl_encoder:
    input:
        tiles=MET_TILES,
        splits="results/splits/{scheme}.tsv",
    output:
        encoder="results/metrics/ssl/{scheme}/encoder.pt",
        done="results/metrics/ssl/{scheme}/done.json",
        losses=report(
            "results/metrics/ssl/{scheme}/losses.tsv",
            caption="../report/metrics_ssl.rst",
            category="Metrics",
            subcategory="SimCLR encoders",
        ),
    log:
        "logs/train_ssl_encoder/{scheme}.log",
    benchmark:
        "benchmarks/train_ssl_encoder/{scheme}.tsv"
    retries: 3
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=32000,
    params:
        ssl=METRICS["ssl"],
        seed=config["seed"],
        device=config["device"],
        checkpoints=lambda w: f"results/metrics/ssl/{w.scheme}/checkpoints",
    script:
        "../scripts/train_ssl_encoder.py"


rule compute_real_fid:
    input:
        tiles=MET_TILES,
        splits=MET_SPLITS,
        encoder=MET_ENCODER,
    output:
        table=report(
            "results/metrics/real_vs_real.tsv",
            caption="../report/metrics_real_vs_real.rst",
            category="Metrics",
        ),
    log:
        "logs/compute_real_fid/all.log",
    benchmark:
        "benchmarks/compute_real_fid/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        extractors=METRICS["extractors"],
        inception_weights=METRICS["inception_weights"],
        fid=METRICS["fid"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/compute_real_fid.py"


rule count_cells:
    input:
        lmdb="results/tiles/{preset}/{sample}.lmdb",
    output:
        counts="results/metrics/cells/{preset}/per_slide/{sample}.tsv",
    log:
        "logs/count_cells/{preset}/{sample}.log",
    benchmark:
        "benchmarks/count_cells/{preset}/{sample}.tsv"
    conda:
        "../../envs/wsi.yaml"
    params:
        cells=METRICS["cells"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/count_cells.py"


rule plot_cell_table:
    input:
        counts=expand(
            "results/metrics/cells/{{preset}}/per_slide/{sample}.tsv",
            sample=SLIDE_SAMPLES,
        ),
        truth=MET_TRUTH,
    output:
        table=report(
            "results/metrics/cells/{preset}/table1.tsv",
            caption="../report/metrics_cell_table.rst",
            category="Metrics",
        ),
        correlations=report(
            "results/metrics/cells/{preset}/counted_vs_planted.tsv",
            caption="../report/metrics_cell_correlations.rst",
            category="Metrics",
        ),
        figure=report(
            "results/metrics/cells/{preset}/counted_vs_planted.png",
            caption="../report/metrics_cell_correlations.rst",
            category="Metrics",
        ),
        figure_pdf="results/metrics/cells/{preset}/counted_vs_planted.pdf",
    log:
        "logs/plot_cell_table/{preset}.log",
    benchmark:
        "benchmarks/plot_cell_table/{preset}.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        cells=METRICS["cells"],
        cohorts={s: str(SAMPLES.loc[s, "cohort"]) for s in SLIDE_SAMPLES},
    script:
        "../scripts/plot_cell_table.py"


if METRICS["enabled"]:
    ALL_TARGETS.extend(
        [
            paths.ssl_encoder_path(config),
            "results/metrics/real_vs_real.tsv",
            f"results/metrics/cells/{MET_PRESET}/table1.tsv",
            f"results/metrics/cells/{MET_PRESET}/counted_vs_planted.tsv",
        ]
    )
