# Whole-slide tiling (crossmodal.tiling): one LMDB of tiles per slide and preset, its QC
# and a thumbnail with the kept tiles outlined; a per-preset QC table and figure.


rule tile_slide:
    input:
        slide=sample_field("slide"),
    output:
        lmdb=directory("results/tiles/{preset}/{sample}.lmdb"),
        qc="results/tiles/{preset}/{sample}.qc.json",
        thumb=report(
            "results/tiles/{preset}/{sample}.thumb.png",
            caption="../report/tiling_thumbnail.rst",
            category="Tiling",
            subcategory="{preset}",
            labels={"preset": "{preset}", "sample": "{sample}"},
        ),
        thumb_pdf="results/tiles/{preset}/{sample}.thumb.pdf",
    log:
        "logs/tile_slide/{preset}/{sample}.log",
    benchmark:
        "benchmarks/tile_slide/{preset}/{sample}.tsv"
    conda:
        "../../envs/wsi.yaml"
    params:
        preset=lambda wildcards: config["tiling"]["presets"][wildcards.preset],
        seed=config["seed"],
        mpp=sample_field("mpp"),
        thumbnail_size=config["tiling"]["thumbnail_size"],
    script:
        "../scripts/tile_slide.py"


rule summarise_tiling:
    input:
        qc=expand("results/tiles/{{preset}}/{sample}.qc.json", sample=SLIDE_SAMPLES),
    output:
        table=report(
            "results/tiles/{preset}/qc.tsv",
            caption="../report/tiling_qc.rst",
            category="Tiling",
            subcategory="{preset}",
            labels={"preset": "{preset}", "figure": "QC table"},
        ),
        figure=report(
            "results/tiles/{preset}/qc.png",
            caption="../report/tiling_qc.rst",
            category="Tiling",
            subcategory="{preset}",
            labels={"preset": "{preset}", "figure": "QC per slide"},
        ),
        figure_pdf="results/tiles/{preset}/qc.pdf",
    log:
        "logs/summarise_tiling/{preset}.log",
    benchmark:
        "benchmarks/summarise_tiling/{preset}.tsv"
    conda:
        "../../envs/wsi.yaml"
    script:
        "../scripts/summarise_tiling.py"


ALL_TARGETS.extend(expand("results/tiles/{preset}/qc.tsv", preset=PRESETS))
ALL_TARGETS.extend(
    expand(
        "results/tiles/{preset}/{sample}.thumb.png",
        preset=config["tiling"]["default_preset"],
        sample=SLIDE_SAMPLES,
    )
)
