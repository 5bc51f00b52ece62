# Real-data downloads (GDC/TCGA, GTEx, GEO, UCSC Xena, MCAT; issue 4). Not part of `all`.
# With download.cohorts empty (the toy config) only the empty target download_all exists.
# Every network rule is local (login node; compute nodes reach the internet only by proxy).
# offline=true: no network rule is defined, so Snakemake stops while building the DAG with a
# missing-input error naming every file a real run would fetch.
from crossmodal.download.manifest import Plan

DOWNLOAD = Plan(config)
DL_RAW = DOWNLOAD.raw_dir
DL_OUT = DOWNLOAD.out_dir


rule download_all:
    input:
        DOWNLOAD.target_inputs(),
    localrule: True


if DOWNLOAD.cohorts and DOWNLOAD.offline:
    DOWNLOAD.warn_offline()


if DOWNLOAD.cohorts:

    checkpoint query_manifest:
        output:
            manifest=f"{DL_RAW}/{{cohort}}/manifest.tsv",
        log:
            "logs/query_manifest/{cohort}.log",
        benchmark:
            "benchmarks/query_manifest/{cohort}.tsv"
        wildcard_constraints:
            cohort=DOWNLOAD.manifest_constraint(),
        localrule: True
        conda:
            "../../envs/download.yaml"
        params:
            dl=lambda w: DOWNLOAD.params(w.cohort),
            offline=config["offline"],
        script:
            "../scripts/query_manifest.py"

    if not DOWNLOAD.offline:

        rule fetch_file:
            input:
                manifest=ancient(f"{DL_RAW}/{{cohort}}/manifest.tsv"),
            output:
                file=f"{DL_RAW}/{{cohort}}/raw/{{file_id}}/{{file_name}}",
            log:
                "logs/fetch_file/{cohort}/{file_id}/{file_name}.log",
            benchmark:
                "benchmarks/fetch_file/{cohort}/{file_id}/{file_name}.tsv"
            wildcard_constraints:
                cohort=DOWNLOAD.constraint(),
                file_id="[^/]+",
                file_name="[^/]+",
            localrule: True
            conda:
                "../../envs/download.yaml"
            resources:
                download_slots=1,
            params:
                entry=lambda w: DOWNLOAD.entry(w.cohort, w.file_id),
                http=config["download"]["http"],
                token=lambda w: DOWNLOAD.token(w.cohort),
            script:
                "../scripts/fetch_file.py"

    for dl_source in ("gdc", "gtex", "xena", "mcat"):
        if DOWNLOAD.of_source(dl_source):

            rule:
                name:
                    f"build_{dl_source}_cohort"
                input:
                    manifest=f"{DL_RAW}/{{cohort}}/manifest.tsv",
                    files=DOWNLOAD.raw_inputs(checkpoints),
                output:
                    **DOWNLOAD.output_patterns(dl_source),
                log:
                    f"logs/build_{dl_source}_cohort/{{cohort}}.log",
                benchmark:
                    f"benchmarks/build_{dl_source}_cohort/{{cohort}}.tsv"
                wildcard_constraints:
                    cohort=DOWNLOAD.constraint(dl_source),
                conda:
                    "../../envs/download.yaml"
                params:
                    dl=lambda w: DOWNLOAD.params(w.cohort),
                script:
                    "../scripts/build_cohort.py"

    if DOWNLOAD.of_source("geo"):

        rule parse_geo_series:
            input:
                manifest=f"{DL_RAW}/{{cohort}}/manifest.tsv",
                files=DOWNLOAD.raw_inputs(checkpoints, series=True),
            output:
                **DOWNLOAD.geo_output_patterns(),
            log:
                "logs/parse_geo_series/{cohort}/{series}.log",
            benchmark:
                "benchmarks/parse_geo_series/{cohort}/{series}.tsv"
            wildcard_constraints:
                cohort=DOWNLOAD.constraint("geo"),
                series="GSE[0-9]+",
            conda:
                "../../envs/download.yaml"
            params:
                dl=lambda w: DOWNLOAD.params(w.cohort),
                series=lambda w: w.series,
            script:
                "../scripts/parse_geo_series.py"

        rule build_geo_cohort:
            input:
                manifest=f"{DL_RAW}/{{cohort}}/manifest.tsv",
                matrices=DOWNLOAD.geo_series_inputs("matrix"),
                characteristics=DOWNLOAD.geo_series_inputs("characteristics"),
            output:
                **DOWNLOAD.output_patterns("geo"),
            log:
                "logs/build_geo_cohort/{cohort}.log",
            benchmark:
                "benchmarks/build_geo_cohort/{cohort}.tsv"
            wildcard_constraints:
                cohort=DOWNLOAD.constraint("geo"),
            conda:
                "../../envs/download.yaml"
            params:
                dl=lambda w: DOWNLOAD.params(w.cohort),
            script:
                "../scripts/build_cohort.py"

    for dl_cohort in DOWNLOAD.cohorts:

        rule:
            name:
                f"download_{dl_cohort}"
            input:
                DOWNLOAD.target_inputs([dl_cohort]),
            localrule: True
