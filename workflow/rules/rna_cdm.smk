# RNA-CDM (Carrillo-Perez et al.): cascaded 64 -> 256 px diffusion conditioned on β-VAE
# latents (VAE: rules train_vae / encode_expression with paper=rna_cdm in vae.smk), EDM
# training, Karras sampling, β-VAE UMAP (Fig. 2), FID/KID/IS, cell-type table and Fig. 3A, sampler benchmark, deconvolution and
# perturbation (Suppl. Figs 3-4), downstream classifiers (Fig. 4), SimCLR (Suppl. Fig. 5),
# reproduction table.
# Logic: crossmodal.rna_cdm (input functions in crossmodal.rna_cdm.targets).
from crossmodal.rna_cdm import targets as rct
from crossmodal.models import vae as vae_lib
from crossmodal.training import gpu_request

RC = config["rna_cdm"]


rule plot_rna_cdm_vae_umap:
    input:
        model="results/rna_cdm/vae/main/model.pt",
        expression=lambda w: vae_lib.expression_inputs(config, "rna_cdm", "main"),
        splits="results/splits/vae.tsv",
    output:
        figure=report(
            "results/rna_cdm/figures/vae_umap.png",
            caption="../report/rna_cdm_vae_umap.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/figures/vae_umap.pdf",
        table=report(
            "results/rna_cdm/vae/main/umap_silhouette.tsv",
            caption="../report/rna_cdm_vae_umap.rst",
            category="RNA-CDM",
        ),
    log:
        "logs/plot_rna_cdm_vae_umap/test.log",
    benchmark:
        "benchmarks/plot_rna_cdm_vae_umap/test.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        cohorts=RC["vae"]["cohorts"],
        split=RC["evaluate"]["umap_split"],
        umap_neighbors=RC["evaluate"]["umap_neighbors"],
        data_note=rct.data_note(config),
        seed=config["seed"],
    script:
        "../scripts/plot_rna_cdm_vae_umap.py"


rule train_rna_cdm_base:
    input:
        tiles=lambda w: rct.tile_lmdbs(config, SAMPLES),
        latent=lambda w: rct.latent(config, SAMPLES),
        splits="results/splits/vae.tsv",
    output:
        model="results/rna_cdm/unet/base/model.pt",
        history="results/rna_cdm/unet/base/history.tsv",
        done="results/rna_cdm/unet/base/done.json",
    log:
        "logs/train_rna_cdm_base/all.log",
    benchmark:
        "benchmarks/train_rna_cdm_base/all.tsv"
    retries: 3
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, RC["train"]["gpus"]),
        runtime=RC["train"]["runtime_min"],
        mem_mb=RC["train"]["mem_mb"],
    params:
        stage="base",
        rna_cdm=rct.cascade_config(config, "train"),
        seed=config["seed"],
        device=config["device"],
        # checkpoints are not an output: Snakemake must not delete them when a job fails
        checkpoints="results/rna_cdm/unet/base/checkpoints",
        num_processes=lambda wildcards, resources: max(1, resources.gpu),
        runtime_min=lambda wildcards, resources: resources.runtime,
    script:
        "../scripts/train_rna_cdm.py"


rule train_rna_cdm_sr:
    input:
        tiles=lambda w: rct.tile_lmdbs(config, SAMPLES),
        latent=lambda w: rct.latent(config, SAMPLES),
        splits="results/splits/vae.tsv",
    output:
        model="results/rna_cdm/unet/sr/model.pt",
        history="results/rna_cdm/unet/sr/history.tsv",
        done="results/rna_cdm/unet/sr/done.json",
    log:
        "logs/train_rna_cdm_sr/all.log",
    benchmark:
        "benchmarks/train_rna_cdm_sr/all.tsv"
    retries: 3
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, RC["train"]["gpus"]),
        runtime=RC["train"]["runtime_min"],
        mem_mb=RC["train"]["mem_mb"],
    params:
        stage="sr",
        rna_cdm=rct.cascade_config(config, "train"),
        seed=config["seed"],
        device=config["device"],
        checkpoints="results/rna_cdm/unet/sr/checkpoints",
        num_processes=lambda wildcards, resources: max(1, resources.gpu),
        runtime_min=lambda wildcards, resources: resources.runtime,
    script:
        "../scripts/train_rna_cdm.py"


rule generate_rna_cdm_tiles:
    input:
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        latent=lambda w: rct.latent(config, SAMPLES),
        splits="results/splits/vae.tsv",
    output:
        tiles=directory("results/rna_cdm/generated/test.lmdb"),
    log:
        "logs/generate_rna_cdm_tiles/test.log",
    benchmark:
        "benchmarks/generate_rna_cdm_tiles/test.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        cohorts=RC["cohorts"],
        split="test",
        tiles_per_patient=RC["generate"]["tiles_per_patient"],
        mpp=rct.tile_mpp(config),
        source="test",
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_rna_cdm_tiles.py"


# the evaluation set: evaluate.tiles_per_cohort per cancer type over the test patients (planned
# only when that is set; null = test.lmdb above is the evaluation set)
rule generate_rna_cdm_evaluation_tiles:
    input:
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        latent=lambda w: rct.latent(config, SAMPLES),
        splits="results/splits/vae.tsv",
    output:
        tiles=directory("results/rna_cdm/generated/evaluation.lmdb"),
    log:
        "logs/generate_rna_cdm_evaluation_tiles/test.log",
    benchmark:
        "benchmarks/generate_rna_cdm_evaluation_tiles/test.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=32000,
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        cohorts=RC["cohorts"],
        split="test",
        tiles_per_patient=RC["generate"]["tiles_per_patient"],
        tiles_per_cohort=RC["evaluate"]["tiles_per_cohort"],
        mpp=rct.tile_mpp(config),
        source="test",
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_rna_cdm_tiles.py"


rule generate_rna_cdm_external_tiles:
    input:
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        latent="results/rna_cdm/vae/main/latent/{dataset}.tsv.gz",
    output:
        tiles=directory("results/rna_cdm/generated/external_{dataset}.lmdb"),
    log:
        "logs/generate_rna_cdm_external_tiles/{dataset}.log",
    benchmark:
        "benchmarks/generate_rna_cdm_external_tiles/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        cohorts=RC["generate"]["external_cohorts"],
        sample_cohort=lambda w: rct.sample_cohort(SAMPLES, w.dataset),
        tiles_per_patient=RC["generate"]["external_tiles_per_sample"],
        mpp=rct.tile_mpp(config),
        source=lambda w: w.dataset,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_rna_cdm_tiles.py"


rule evaluate_rna_cdm:
    input:
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        generated=rct.evaluation_tiles(config),
        splits="results/splits/vae.tsv",
        extractor_weights=rct.extractor_weights(config),
    output:
        table=report(
            "results/rna_cdm/fid.tsv",
            caption="../report/rna_cdm_fid.rst",
            category="RNA-CDM",
        ),
    log:
        "logs/evaluate_rna_cdm/all.log",
    benchmark:
        "benchmarks/evaluate_rna_cdm/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=64000,
    params:
        cohorts=RC["cohorts"],
        extractor=RC["evaluate"]["extractor"],
        max_images=RC["evaluate"]["max_images"],
        kid_subset_size=RC["evaluate"]["kid_subset_size"],
        tiles_per_cohort=RC["evaluate"]["tiles_per_cohort"],
        data_note=rct.data_note(config),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/evaluate_rna_cdm.py"


rule evaluate_rna_cdm_super_resolution:
    input:
        sr="results/rna_cdm/unet/sr/model.pt",
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        latent=lambda w: rct.latent(config, SAMPLES),
        splits="results/splits/vae.tsv",
    output:
        table=report(
            "results/rna_cdm/cells/super_resolution.tsv",
            caption="../report/rna_cdm_super_resolution.rst",
            category="RNA-CDM",
        ),
        counts="results/rna_cdm/cells/super_resolution_tiles.tsv",
        figure=report(
            "results/rna_cdm/figures/super_resolution.png",
            caption="../report/rna_cdm_super_resolution.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/figures/super_resolution.pdf",
    log:
        "logs/evaluate_rna_cdm_super_resolution/test.log",
    benchmark:
        "benchmarks/evaluate_rna_cdm_super_resolution/test.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        cohorts=RC["cohorts"],
        split="test",
        tiles_per_patient=RC["evaluate"]["sr_fidelity_tiles"],
        mpp=rct.tile_mpp(config),
        cells=rct.cell_params(config),
        data_note=rct.data_note(config),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/evaluate_rna_cdm_super_resolution.py"


rule plot_rna_cdm_tiles:
    input:
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        generated="results/rna_cdm/generated/test.lmdb",
        splits="results/splits/vae.tsv",
    output:
        figure=report(
            "results/rna_cdm/figures/generated_tiles.png",
            caption="../report/rna_cdm_tiles.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/figures/generated_tiles.pdf",
    log:
        "logs/plot_rna_cdm_tiles/all.log",
    benchmark:
        "benchmarks/plot_rna_cdm_tiles/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        cohorts=RC["cohorts"],
        per_row=RC["evaluate"]["per_row"],
        seed=config["seed"],
    script:
        "../scripts/plot_rna_cdm_tiles.py"


rule plot_rna_cdm_external_tiles:
    input:
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        generated="results/rna_cdm/generated/external_{dataset}.lmdb",
        splits="results/splits/vae.tsv",
    output:
        figure=report(
            "results/rna_cdm/figures/external_{dataset}_tiles.png",
            caption="../report/rna_cdm_external_tiles.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/figures/external_{dataset}_tiles.pdf",
    log:
        "logs/plot_rna_cdm_external_tiles/{dataset}.log",
    benchmark:
        "benchmarks/plot_rna_cdm_external_tiles/{dataset}.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        cohorts=RC["generate"]["external_cohorts"],
        per_row=RC["evaluate"]["per_row"],
        real_title="real (TCGA test patients)",
        generated_title=lambda w: f"RNA-CDM from {w.dataset} expression (missing genes 0)",
        title=lambda w: f"RNA-CDM Suppl. Fig. 2: tiles from the external cohort {w.dataset}",
        seed=config["seed"],
    script:
        "../scripts/plot_rna_cdm_tiles.py"


# {set}: test (tiles_per_patient, for the deconvolution) or evaluation (tiles_per_cohort, Table 1)
rule count_rna_cdm_cells:
    input:
        lmdb="results/rna_cdm/generated/{set}.lmdb",
    output:
        counts="results/rna_cdm/cells/generated_{set}.tsv",
    log:
        "logs/count_rna_cdm_cells/{set}.log",
    benchmark:
        "benchmarks/count_rna_cdm_cells/{set}.tsv"
    wildcard_constraints:
        set="test|evaluation",
    conda:
        "../../envs/wsi.yaml"
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=32000,
    params:
        cells=rct.cell_params(config),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/count_cells.py"


rule plot_rna_cdm_cell_table:
    input:
        counts=lambda w: rct.real_cell_counts(config, SAMPLES),
        synthetic_counts=rct.evaluation_cell_counts(config),
        truth=MET_TRUTH,
    output:
        table=report(
            "results/rna_cdm/cells/table1.tsv",
            caption="../report/rna_cdm_cell_table.rst",
            category="RNA-CDM",
        ),
        correlations=report(
            "results/rna_cdm/cells/counted_vs_planted.tsv",
            caption="../report/rna_cdm_counted_vs_planted.rst",
            category="RNA-CDM",
        ),
        figure=report(
            "results/rna_cdm/cells/counted_vs_planted.png",
            caption="../report/rna_cdm_counted_vs_planted.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/cells/counted_vs_planted.pdf",
        distribution=report(
            "results/rna_cdm/figures/cell_distributions.png",
            caption="../report/rna_cdm_cell_distributions.rst",
            category="RNA-CDM",
        ),
        distribution_pdf="results/rna_cdm/figures/cell_distributions.pdf",
    log:
        "logs/plot_rna_cdm_cell_table/all.log",
    benchmark:
        "benchmarks/plot_rna_cdm_cell_table/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        cells=config["metrics"]["cells"],
        cohorts={s: str(SAMPLES.loc[s, "cohort"]) for s in SLIDE_SAMPLES},
    script:
        "../scripts/plot_cell_table.py"


rule benchmark_rna_cdm_samplers:
    input:
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        latent=lambda w: rct.latent(config, SAMPLES),
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        splits="results/splits/vae.tsv",
        extractor_weights=rct.extractor_weights(config),
    output:
        table=report(
            "results/rna_cdm/samplers.tsv",
            caption="../report/rna_cdm_samplers.rst",
            category="RNA-CDM",
        ),
    log:
        "logs/benchmark_rna_cdm_samplers/all.log",
    benchmark:
        "benchmarks/benchmark_rna_cdm_samplers/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        cohorts=RC["cohorts"],
        n_tiles=RC["benchmark"]["n_tiles"],
        extractor=RC["evaluate"]["extractor"],
        kid_subset_size=RC["evaluate"]["kid_subset_size"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/benchmark_rna_cdm_samplers.py"


rule deconvolve_rna_cdm:
    input:
        signature=RC["deconvolution"]["signature"],
        counts=lambda w: rct.counts(config, SAMPLES),
        splits="results/splits/vae.tsv",
        generated_counts="results/rna_cdm/cells/generated_test.tsv",
        truth=MET_TRUTH,
    output:
        fractions="results/rna_cdm/deconvolution/fractions.tsv",
        correlations=report(
            "results/rna_cdm/deconvolution/correlations.tsv",
            caption="../report/rna_cdm_deconvolution.rst",
            category="RNA-CDM",
        ),
        figure=report(
            "results/rna_cdm/deconvolution/correlations.png",
            caption="../report/rna_cdm_deconvolution.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/deconvolution/correlations.pdf",
    log:
        "logs/deconvolve_rna_cdm/all.log",
    benchmark:
        "benchmarks/deconvolve_rna_cdm/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        deconvolution=RC["deconvolution"],
    script:
        "../scripts/deconvolve_rna_cdm.py"


rule perturb_rna_cdm:
    input:
        signature=RC["deconvolution"]["signature"],
        fractions="results/rna_cdm/deconvolution/fractions.tsv",
        counts=lambda w: rct.counts(config, SAMPLES),
        scaler=lambda w: rct.scaler(config, SAMPLES),
        vae="results/rna_cdm/vae/main/model.pt",
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        splits="results/splits/vae.tsv",
    output:
        table=report(
            "results/rna_cdm/perturbation/summary.tsv",
            caption="../report/rna_cdm_perturbation.rst",
            category="RNA-CDM",
        ),
        tiles="results/rna_cdm/perturbation/tiles.tsv",
        figure=report(
            "results/rna_cdm/perturbation/cell_percentages.png",
            caption="../report/rna_cdm_perturbation.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/perturbation/cell_percentages.pdf",
    log:
        "logs/perturb_rna_cdm/all.log",
    benchmark:
        "benchmarks/perturb_rna_cdm/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        deconvolution=RC["deconvolution"],
        perturbation=RC["perturbation"],
        cohorts=RC["cohorts"],
        split=RC["deconvolution"]["split"],
        cells=rct.cell_params(config),
        mpp=rct.tile_mpp(config),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/perturb_rna_cdm.py"


rule classify_rna_cdm_downstream:
    input:
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        generated=rct.evaluation_tiles(config),
        splits="results/splits/vae.tsv",
    output:
        table=report(
            "results/rna_cdm/downstream/summary.tsv",
            caption="../report/rna_cdm_downstream.rst",
            category="RNA-CDM",
        ),
        folds="results/rna_cdm/downstream/folds.tsv",
        figure=report(
            "results/rna_cdm/downstream/accuracy.png",
            caption="../report/rna_cdm_downstream.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/downstream/accuracy.pdf",
        confusion=report(
            "results/rna_cdm/downstream/confusion.png",
            caption="../report/rna_cdm_confusion.rst",
            category="RNA-CDM",
        ),
        confusion_pdf="results/rna_cdm/downstream/confusion.pdf",
    log:
        "logs/classify_rna_cdm_downstream/all.log",
    benchmark:
        "benchmarks/classify_rna_cdm_downstream/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        downstream=RC["downstream"],
        cohorts=RC["cohorts"],
        data_note=rct.data_note(config),
        generator_splits=RC["train_splits"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/classify_rna_cdm_downstream.py"


rule evaluate_rna_cdm_simclr:
    input:
        generated=rct.evaluation_tiles(config),
        real=lambda w: rct.tile_lmdbs(config, SAMPLES),
        splits="results/splits/vae.tsv",
        labels=rct.simclr_labels(config),
    output:
        encoder="results/rna_cdm/simclr/encoder.pt",
        done="results/rna_cdm/simclr/done.json",
        table=report(
            "results/rna_cdm/simclr/summary.tsv",
            caption="../report/rna_cdm_simclr.rst",
            category="RNA-CDM",
        ),
        folds="results/rna_cdm/simclr/folds.tsv",
        figure=report(
            "results/rna_cdm/simclr/accuracy.png",
            caption="../report/rna_cdm_simclr.rst",
            category="RNA-CDM",
        ),
        figure_pdf="results/rna_cdm/simclr/accuracy.pdf",
    log:
        "logs/evaluate_rna_cdm_simclr/all.log",
    benchmark:
        "benchmarks/evaluate_rna_cdm_simclr/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=gpu_request(config, 1),
    params:
        simclr=RC["simclr"],
        # checkpoints are not an output: Snakemake must not delete them when a job fails
        checkpoints="results/rna_cdm/simclr/checkpoints",
        data_note=rct.data_note(config),
        generator_splits=RC["train_splits"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/evaluate_rna_cdm_simclr.py"


rule build_rna_cdm_reproduction:
    input:
        vae_metrics="results/rna_cdm/vae/main/test_metrics.tsv",
        vae_model="results/rna_cdm/vae/main/model.pt",
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        base_done="results/rna_cdm/unet/base/done.json",
        sr_done="results/rna_cdm/unet/sr/done.json",
        fid="results/rna_cdm/fid.tsv",
        table1="results/rna_cdm/cells/table1.tsv",
        samplers=rct.evaluation_tables(config, "samplers"),
        super_resolution=rct.evaluation_tables(config, "super_resolution"),
        deconvolution=rct.experiment_tables(config, "deconvolution"),
        perturbation=rct.experiment_tables(config, "perturbation"),
        downstream=rct.experiment_tables(config, "downstream"),
        simclr=rct.experiment_tables(config, "simclr"),
        umap="results/rna_cdm/vae/main/umap_silhouette.tsv",
        external=lambda w: rct.external_lmdbs(config, SAMPLES),
    output:
        table=report(
            "results/rna_cdm/reproduction.tsv",
            caption="../report/rna_cdm_reproduction.rst",
            category="RNA-CDM",
        ),
    log:
        "logs/build_rna_cdm_reproduction/all.log",
    benchmark:
        "benchmarks/build_rna_cdm_reproduction/all.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        data=rct.data_label(config),
        data_note=rct.data_note(config),
    script:
        "../scripts/build_rna_cdm_reproduction.py"


rule rna_cdm_all:
    input:
        rct.targets(config, SAMPLES),


ALL_TARGETS.extend(rct.targets(config, SAMPLES))
