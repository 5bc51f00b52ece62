# The run summary: per-rule wall times from the benchmark files (where the time of
# `make run` goes) and the report's front page; every paper's reproduction table
# rendered as HTML (the report shows TSVs only as downloads).


rule summarise_runtimes:
    input:
        pipeline_targets,
    output:
        table=report(
            "results/report/runtimes.tsv",
            caption="../report/runtimes.rst",
            category="Run summary",
        ),
        figure=report(
            "results/report/runtimes.png",
            caption="../report/runtimes.rst",
            category="Run summary",
        ),
        figure_pdf="results/report/runtimes.pdf",
    log:
        "logs/summarise_runtimes/all.log",
    benchmark:
        "benchmarks/summarise_runtimes/all.tsv"
    conda:
        "../../envs/base.yaml"
    script:
        "../scripts/summarise_runtimes.py"


ALL_TARGETS.append("results/report/runtimes.tsv")


rule render_reproduction_table:
    input:
        table="results/{paper}/reproduction.tsv",
    output:
        html=report(
            "results/{paper}/reproduction.html",
            caption="../report/reproduction_html.rst",
            category="Reproduction tables",
            subcategory="{paper}",
        ),
    log:
        "logs/render_reproduction_table/{paper}.log",
    benchmark:
        "benchmarks/render_reproduction_table/{paper}.tsv"
    wildcard_constraints:
        paper="rna_gan|rna_cdm|pathgen|coherent",
    conda:
        "../../envs/base.yaml"
    script:
        "../scripts/render_reproduction_table.py"


ALL_TARGETS.extend(
    t.replace("reproduction.tsv", "reproduction.html")
    for t in list(ALL_TARGETS)
    if Path(str(t)).name == "reproduction.tsv"
)


rule summarise_reproduction:
    input:
        tables=[t for t in ALL_TARGETS if Path(str(t)).name == "reproduction.tsv"],
    output:
        table=report(
            "results/report/reproduction_summary.tsv",
            caption="../report/reproduction_summary.rst",
            category="Run summary",
        ),
        figure=report(
            "results/report/reproduction_summary.png",
            caption="../report/reproduction_summary.rst",
            category="Run summary",
        ),
        figure_pdf="results/report/reproduction_summary.pdf",
    log:
        "logs/summarise_reproduction/all.log",
    benchmark:
        "benchmarks/summarise_reproduction/all.tsv"
    conda:
        "../../envs/base.yaml"
    script:
        "../scripts/summarise_reproduction.py"


if any(Path(str(t)).name == "reproduction.tsv" for t in ALL_TARGETS):
    ALL_TARGETS.append("results/report/reproduction_summary.tsv")
