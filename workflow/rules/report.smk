# The run summary: per-rule wall times from the benchmark files (the time budget of
# `make run` is watched here) and the report's front page.


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
    log:
        "logs/summarise_runtimes/all.log",
    conda:
        "../../envs/base.yaml"
    script:
        "../scripts/summarise_runtimes.py"


ALL_TARGETS.append("results/report/runtimes.tsv")
