# Expression (issue 2, item 6): kallisto on FASTQ, one harmonised count matrix per dataset,
# patient-level splits (written once), log2 + z-scores with training-split statistics, and the
# summary figures. All logic is in crossmodal.expression and crossmodal.splits.
from crossmodal.expression import rules as expr

EXPR = config["expression"]
EXPR_DATASETS = expr.expression_datasets(SAMPLES)
FASTQ_SAMPLES = expr.fastq_samples(SAMPLES)


rule build_kallisto_index:
    input:
        fasta=EXPR["kallisto"]["transcriptome"],
    output:
        index=expr.KALLISTO_INDEX,
    log:
        "logs/build_kallisto_index/index.log",
    benchmark:
        "benchmarks/build_kallisto_index/index.tsv"
    conda:
        "../../envs/kallisto.yaml"
    params:
        version=EXPR["kallisto"]["version"],
        kmer=EXPR["kallisto"]["kmer"],
    script:
        "../scripts/build_kallisto_index.py"


rule quantify_kallisto:
    input:
        index=expr.KALLISTO_INDEX,
        fastq=lambda w: expr.fastq_files(SAMPLES, w.sample),
    output:
        abundance="results/expression/kallisto/{sample}/abundance.tsv",
        run_info="results/expression/kallisto/{sample}/run_info.json",
    log:
        "logs/quantify_kallisto/{sample}.log",
    benchmark:
        "benchmarks/quantify_kallisto/{sample}.tsv"
    wildcard_constraints:
        sample=expr.choice_regex(FASTQ_SAMPLES),
    conda:
        "../../envs/kallisto.yaml"
    threads: EXPR["kallisto"]["threads"]
    params:
        version=EXPR["kallisto"]["version"],
        fragment_length=EXPR["kallisto"]["fragment_length"],
        fragment_sd=EXPR["kallisto"]["fragment_sd"],
        seed=config["seed"],
    script:
        "../scripts/quantify_kallisto.py"


rule build_expression_matrix:
    input:
        unpack(lambda w: expr.matrix_inputs(SAMPLES, config, w.dataset)),
    output:
        counts="results/expression/{dataset}/counts.tsv.gz",
        qc="results/expression/{dataset}/qc.json",
    log:
        "logs/build_expression_matrix/{dataset}.log",
    benchmark:
        "benchmarks/build_expression_matrix/{dataset}.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        sources=lambda w: expr.matrix_sources(SAMPLES, w.dataset),
        nan_policy=EXPR["nan_policy"],
        min_sample_genes=EXPR["min_sample_genes"],
        duplicates=EXPR["duplicates"],
        star_column=EXPR["star_column"],
        kallisto_value=EXPR["kallisto"]["value"],
    script:
        "../scripts/build_expression_matrix.py"


# The split depends only on the sample table's content (a param), the omics matrices' sample
# ids (ancient: their file times never trigger a rerun) and the seed.
rule make_splits:
    input:
        unpack(
            lambda w: {
                k: ancient(v) for k, v in expr.split_inputs(config, w.scheme).items()
            }
        ),
    output:
        splits="results/splits/{scheme}.tsv",
    log:
        "logs/make_splits/{scheme}.log",
    benchmark:
        "benchmarks/make_splits/{scheme}.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        samples=expr.sample_records(SAMPLES),
        settings=lambda w: expr.split_scheme(config, w.scheme),
        scheme=lambda w: w.scheme,
        reference=EXPR["reference"],
        seed=config["seed"],
    script:
        "../scripts/make_splits.py"


rule normalise_expression:
    input:
        unpack(lambda w: expr.normalise_inputs(SAMPLES, config, w.dataset, w.scheme)),
    output:
        z="results/expression/{dataset}/z_{scheme}.tsv.gz",
        scaler="results/expression/{dataset}/scaler_{scheme}.tsv",
        qc="results/expression/{dataset}/z_{scheme}.qc.json",
    log:
        "logs/normalise_expression/{dataset}_{scheme}.log",
    benchmark:
        "benchmarks/normalise_expression/{dataset}_{scheme}.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        pseudocount=EXPR["pseudocount"],
        missing_value=EXPR["missing_value"],
        missing_stage=EXPR["missing_stage"],
    script:
        "../scripts/normalise_expression.py"


rule plot_expression_summary:
    input:
        **expr.summary_inputs(SAMPLES, config),
    output:
        library_sizes=report(
            "results/expression/summary/library_sizes.png",
            caption="../report/expression_library_sizes.rst",
            category="Expression",
        ),
        library_sizes_pdf="results/expression/summary/library_sizes.pdf",
        pca=report(
            "results/expression/summary/pca.png",
            caption="../report/expression_pca.rst",
            category="Expression",
        ),
        pca_pdf="results/expression/summary/pca.pdf",
        missing_genes=report(
            "results/expression/summary/missing_genes.png",
            caption="../report/expression_missing_genes.rst",
            category="Expression",
        ),
        missing_genes_pdf="results/expression/summary/missing_genes.pdf",
    log:
        "logs/plot_expression_summary/summary.log",
    benchmark:
        "benchmarks/plot_expression_summary/summary.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        samples=expr.sample_records(SAMPLES),
        seed=config["seed"],
    script:
        "../scripts/plot_expression_summary.py"


ALL_TARGETS.extend(expr.targets(SAMPLES, config))
