# The planted-signal toy cohort (crossmodal.toy): expression in GDC / GTEx / GEO formats,
# FASTQ, clinical, omics and ground truth in one job; one job per slide.
from crossmodal import toy as toy_cohort

TOY_OUTPUTS = toy_cohort.cohort_outputs(config)


rule make_toy_cohort:
    output:
        samples=TOY_OUTPUTS["samples"],
        clinical=TOY_OUTPUTS["clinical"],
        slides=TOY_OUTPUTS["slides"],
        figure=report(
            TOY_OUTPUTS["figure"],
            caption="../report/toy_overview.rst",
            category="Toy cohort",
        ),
        figure_pdf=TOY_OUTPUTS["figure_pdf"],
        files=TOY_OUTPUTS["files"],
    log:
        "logs/make_toy_cohort/make_toy_cohort.log",
    benchmark:
        "benchmarks/make_toy_cohort/make_toy_cohort.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        seed=config["seed"],
        toy=config["toy"],
    script:
        "../scripts/make_toy_cohort.py"


rule make_toy_slide:
    input:
        slides=TOY_OUTPUTS["slides"],
    output:
        slide="results/toy/cohort/slides/{sample}.svs",
        nuclei="results/toy/truth/nuclei/{sample}.tsv",
    log:
        "logs/make_toy_slide/{sample}.log",
    benchmark:
        "benchmarks/make_toy_slide/{sample}.tsv"
    conda:
        "../../envs/wsi.yaml"
    params:
        seed=config["seed"],
        toy=config["toy"],
    script:
        "../scripts/make_toy_slide.py"


if config["cohort"]["source"] == "toy":
    ALL_TARGETS.extend(
        [
            TOY_OUTPUTS["samples"],
            TOY_OUTPUTS["clinical"],
            TOY_OUTPUTS["figure"],
        ]
        + toy_cohort.slide_outputs(config)
    )
