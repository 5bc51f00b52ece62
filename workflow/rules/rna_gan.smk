# RNA-GAN (Carrillo-Perez et al. 2023): β-VAE latent-space figures, one WGAN-GP DCGAN per
# tissue and variant (gan / rna_gan / control), generated tiles, FID + feature UMAPs,
# external-cohort classifier, Figure 5, SimCLR, and the reproduction table.
# Logic: crossmodal.rna_gan (input functions in crossmodal.rna_gan.targets).
from crossmodal.rna_gan import targets as rg

RG = config["rna_gan"]


rule plot_rna_gan_vae_latents:
    input:
        model="results/rna_gan/vae/main/model.pt",
        model_multi="results/rna_gan/vae/multi_tissue/model.pt",
        expression=lambda w: vae_lib.expression_inputs(config, "rna_gan", "main"),
        expression_multi=lambda w: rg.multi_expression(config),
        splits="results/splits/vae.tsv",
    output:
        reconstructed=report(
            "results/rna_gan/figures/fig2_reconstructed.png",
            caption="../report/rna_gan_fig2_reconstructed.rst",
            category="RNA-GAN",
            subcategory="Figure 2: β-VAE latent space",
        ),
        reconstructed_pdf="results/rna_gan/figures/fig2_reconstructed.pdf",
        generated=report(
            "results/rna_gan/figures/fig2_generated.png",
            caption="../report/rna_gan_fig2_generated.rst",
            category="RNA-GAN",
            subcategory="Figure 2: β-VAE latent space",
        ),
        generated_pdf="results/rna_gan/figures/fig2_generated.pdf",
        shifted=report(
            "results/rna_gan/figures/fig2_shifted.png",
            caption="../report/rna_gan_fig2_shifted.rst",
            category="RNA-GAN",
            subcategory="Figure 2: β-VAE latent space",
        ),
        shifted_pdf="results/rna_gan/figures/fig2_shifted.pdf",
        multi_tissue=report(
            "results/rna_gan/figures/fig2_multi_tissue.png",
            caption="../report/rna_gan_fig2_multi_tissue.rst",
            category="RNA-GAN",
            subcategory="Figure 2: β-VAE latent space",
        ),
        multi_tissue_pdf="results/rna_gan/figures/fig2_multi_tissue.pdf",
        checks=report(
            "results/rna_gan/vae/latent_checks.tsv",
            caption="../report/rna_gan_latent_checks.rst",
            category="RNA-GAN",
            subcategory="Figure 2: β-VAE latent space",
        ),
    log:
        "logs/plot_rna_gan_vae_latents/all.log",
    benchmark:
        "benchmarks/plot_rna_gan_vae_latents/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        seed=config["seed"],
        figures=RG["figures"],
        tissues=RG["tissues"],
        multi_cohorts=RG["vae"]["models"].get("multi_tissue", {}).get("cohorts"),
    script:
        "../scripts/plot_vae_latents.py"


rule train_rna_gan_generator:
    input:
        tiles=lambda w: rg.tissue_lmdbs(config, SAMPLES, w.tissue),
        latent=lambda w: rg.latent(config, SAMPLES, w.tissue),
        splits="results/splits/vae.tsv",
    output:
        model="results/rna_gan/gan/{tissue}/{variant}/generator.pt",
        history="results/rna_gan/gan/{tissue}/{variant}/history.tsv",
        snapshots="results/rna_gan/gan/{tissue}/{variant}/snapshots.npz",
        convergence=directory("results/rna_gan/gan/{tissue}/{variant}/convergence.lmdb"),
        done="results/rna_gan/gan/{tissue}/{variant}/done.json",
    log:
        "logs/train_rna_gan_generator/{tissue}_{variant}.log",
    benchmark:
        "benchmarks/train_rna_gan_generator/{tissue}_{variant}.tsv"
    wildcard_constraints:
        variant="gan|rna_gan|control",
    retries: 3
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=32000,
    params:
        tissue=lambda w: w.tissue,
        variant=lambda w: w.variant,
        gan=RG["gan"],
        seed=config["seed"],
        checkpoints=lambda w: f"results/rna_gan/gan/{w.tissue}/{w.variant}/checkpoints",
        # per-epoch tiles for the patients of the FID reference (evaluate_rna_gan_convergence)
        real_splits=RG["features"]["real_splits"],
        convergence=RG["convergence"],
        device=config["device"],
    script:
        "../scripts/train_tile_gan.py"


rule generate_rna_gan_tiles:
    input:
        model="results/rna_gan/gan/{tissue}/{variant}/generator.pt",
        latent=lambda w: rg.latent(config, SAMPLES, w.tissue),
        splits="results/splits/vae.tsv",
    output:
        tiles=directory("results/rna_gan/generated/{tissue}/{variant}.lmdb"),
    log:
        "logs/generate_rna_gan_tiles/{tissue}_{variant}.log",
    benchmark:
        "benchmarks/generate_rna_gan_tiles/{tissue}_{variant}.tsv"
    wildcard_constraints:
        variant="gan|rna_gan|control",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=gpu_request(config, 1),
    params:
        tissue=lambda w: w.tissue,
        variant=lambda w: w.variant,
        gan=RG["gan"],
        seed=config["seed"],
        tiles_per_patient=RG["generate"]["tiles_per_patient"],
        # the patients whose real tiles are the FID reference (evaluate_rna_gan_generators)
        splits=RG["features"]["real_splits"],
        device=config["device"],
    script:
        "../scripts/generate_tiles.py"


rule generate_rna_gan_external_tiles:
    input:
        models=expand(
            "results/rna_gan/gan/{tissue}/rna_gan/generator.pt", tissue=RG["tissues"]
        ),
        latent=f"results/rna_gan/vae/main/latent/{RG['external']['dataset']}.tsv.gz",
    output:
        tiles=directory("results/rna_gan/generated/external.lmdb"),
    log:
        "logs/generate_rna_gan_external_tiles/all.log",
    benchmark:
        "benchmarks/generate_rna_gan_external_tiles/all.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=gpu_request(config, 1),
    params:
        tissues=RG["tissues"],
        cohorts=lambda w: rg.external_cohorts(config),
        sample_cohort=lambda w: rg.external_sample_cohort(config, SAMPLES),
        gan=RG["gan"],
        seed=config["seed"],
        tiles_per_tissue=RG["generate"]["external_tiles_per_tissue"],
        device=config["device"],
    script:
        "../scripts/generate_external_tiles.py"


rule evaluate_rna_gan_generators:
    input:
        real=lambda w: rg.real_lmdbs(config, SAMPLES),
        generated=rg.per_tissue_variant(
            config, "results/rna_gan/generated/{tissue}/{variant}.lmdb"
        ),
        splits="results/splits/vae.tsv",
        extractor_weights=rg.extractor_weights(config),
    output:
        fid=report(
            "results/rna_gan/fid.tsv",
            caption="../report/rna_gan_fid.rst",
            category="RNA-GAN",
            subcategory="Figures 3-4: generated tiles",
        ),
        umap=report(
            "results/rna_gan/figures/tile_umap.png",
            caption="../report/rna_gan_tile_umap.rst",
            category="RNA-GAN",
            subcategory="Figures 3-4: generated tiles",
        ),
        umap_pdf="results/rna_gan/figures/tile_umap.pdf",
        silhouette=report(
            "results/rna_gan/tile_silhouette.tsv",
            caption="../report/rna_gan_tile_silhouette.rst",
            category="RNA-GAN",
            subcategory="Figures 3-4: generated tiles",
        ),
    log:
        "logs/evaluate_rna_gan_generators/all.log",
    benchmark:
        "benchmarks/evaluate_rna_gan_generators/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        # paper scale: Inception features of up to features.max_tiles (60k) tiles per tissue and
        # source (real + 3 generators); one set of decoded 256 px tiles (~12 GB) is held at a time
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=32000,
    params:
        tissues=RG["tissues"],
        variants=list(rg.VARIANTS),
        image_size=RG["gan"]["image_size"],
        extractor=RG["features"]["extractor"],
        max_tiles=RG["features"]["max_tiles"],
        real_splits=RG["features"]["real_splits"],
        silhouette_max_tiles=RG["features"]["silhouette_max_tiles"],
        silhouette_permutations=RG["features"]["silhouette_permutations"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/evaluate_tile_generators.py"


rule evaluate_rna_gan_convergence:
    input:
        real=lambda w: rg.real_lmdbs(config, SAMPLES),
        tiles=rg.per_tissue_variant(
            config, "results/rna_gan/gan/{tissue}/{variant}/convergence.lmdb"
        ),
        splits="results/splits/vae.tsv",
        extractor_weights=rg.extractor_weights(config),
    output:
        curves="results/rna_gan/convergence.tsv",
        reached=report(
            "results/rna_gan/epochs_to_quality.tsv",
            caption="../report/rna_gan_convergence.rst",
            category="RNA-GAN",
            subcategory="Figure 5: epochs",
        ),
        figure=report(
            "results/rna_gan/figures/convergence.png",
            caption="../report/rna_gan_convergence.rst",
            category="RNA-GAN",
            subcategory="Figure 5: epochs",
        ),
        figure_pdf="results/rna_gan/figures/convergence.pdf",
    log:
        "logs/evaluate_rna_gan_convergence/all.log",
    benchmark:
        "benchmarks/evaluate_rna_gan_convergence/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        # paper scale: Inception features of tiles_per_epoch x epochs tiles per generator
        gpu=gpu_request(config, 1),
        runtime=240,
        mem_mb=32000,
    params:
        tissues=RG["tissues"],
        variants=list(rg.VARIANTS),
        image_size=RG["gan"]["image_size"],
        extractor=RG["features"]["extractor"],
        max_tiles=RG["features"]["max_tiles"],
        real_splits=RG["features"]["real_splits"],
        kid_subsets=RG["convergence"]["kid_subsets"],
        smooth_epochs=RG["convergence"]["smooth_epochs"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/evaluate_gan_convergence.py"


rule plot_rna_gan_generated_tiles:
    input:
        snapshots=rg.per_tissue_variant(
            config, "results/rna_gan/gan/{tissue}/{variant}/snapshots.npz"
        ),
        reached="results/rna_gan/epochs_to_quality.tsv",
    output:
        figure=report(
            "results/rna_gan/figures/fig5_same_epoch.png",
            caption="../report/rna_gan_fig5.rst",
            category="RNA-GAN",
            subcategory="Figures 3-4: generated tiles",
        ),
        figure_pdf="results/rna_gan/figures/fig5_same_epoch.pdf",
    log:
        "logs/plot_rna_gan_generated_tiles/all.log",
    benchmark:
        "benchmarks/plot_rna_gan_generated_tiles/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        tissues=RG["tissues"],
        variants=list(rg.VARIANTS),
        epochs=rg.epochs_by_tissue_variant(config),
    script:
        "../scripts/plot_generated_tiles.py"


rule plot_rna_gan_external_tiles:
    input:
        tiles="results/rna_gan/generated/external.lmdb",
    output:
        figure=report(
            "results/rna_gan/figures/fig4d_external_tiles.png",
            caption="../report/rna_gan_fig4d_external_tiles.rst",
            category="RNA-GAN",
            subcategory="Figure 4D: external cohort",
        ),
        figure_pdf="results/rna_gan/figures/fig4d_external_tiles.pdf",
    log:
        "logs/plot_rna_gan_external_tiles/all.log",
    benchmark:
        "benchmarks/plot_rna_gan_external_tiles/all.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        tissues=RG["tissues"],
        cohorts=lambda w: rg.external_cohorts(config),
        seed=config["seed"],
    script:
        "../scripts/plot_external_tiles.py"


rule classify_rna_gan_external_tiles:
    input:
        real=lambda w: rg.real_lmdbs(config, SAMPLES),
        external="results/rna_gan/generated/external.lmdb",
        heldout=expand(
            "results/rna_gan/generated/{tissue}/rna_gan.lmdb", tissue=RG["tissues"]
        ),
        splits="results/splits/vae.tsv",
    output:
        metrics=report(
            "results/rna_gan/external_classifier.tsv",
            caption="../report/rna_gan_external_classifier.rst",
            category="RNA-GAN",
            subcategory="Figure 4D: external cohort",
        ),
    log:
        "logs/classify_rna_gan_external_tiles/all.log",
    benchmark:
        "benchmarks/classify_rna_gan_external_tiles/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        # paper scale: ~400k real 256 px training tiles, streamed from their LMDBs above 4 GB
        # (crossmodal.rna_gan.evaluate.IN_MEMORY_MAX_BYTES), 10 epochs of a ResNet-18
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=16000,
    params:
        tissues=RG["tissues"],
        classifier=RG["classifier"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/classify_external_tiles.py"


rule generate_rna_gan_pretraining_tiles:
    input:
        models=expand(
            "results/rna_gan/gan/{tissue}/rna_gan/generator.pt", tissue=RG["tissues"]
        ),
        latent=lambda w: rg.latent(config, SAMPLES, RG["tissues"][0]),
        splits="results/splits/vae.tsv",
    output:
        tiles=directory("results/rna_gan/simclr/synthetic.lmdb"),
    log:
        "logs/generate_rna_gan_pretraining_tiles/all.log",
    benchmark:
        "benchmarks/generate_rna_gan_pretraining_tiles/all.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=gpu_request(config, 1),
    params:
        tissues=RG["tissues"],
        gan=RG["gan"],
        n_tiles=RG["simclr"]["n_tiles"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_pretraining_tiles.py"


rule pretrain_rna_gan_simclr:
    input:
        tiles="results/rna_gan/simclr/synthetic.lmdb",
    output:
        encoder="results/rna_gan/simclr/encoder.pt",
        done="results/rna_gan/simclr/done.json",
    log:
        "logs/pretrain_rna_gan_simclr/all.log",
    benchmark:
        "benchmarks/pretrain_rna_gan_simclr/all.tsv"
    retries: 3
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=32000,
    params:
        simclr=RG["simclr"],
        seed=config["seed"],
        device=config["device"],
        checkpoints="results/rna_gan/simclr/checkpoints",
    script:
        "../scripts/simclr_pretrain.py"


rule cross_validate_rna_gan_simclr:
    input:
        encoder="results/rna_gan/simclr/encoder.pt",
        real=lambda w: rg.task_lmdbs(config, SAMPLES),
    output:
        cv=report(
            "results/rna_gan/simclr/cv.tsv",
            caption="../report/rna_gan_simclr.rst",
            category="RNA-GAN",
            subcategory="Figure S4: SimCLR on synthetic tiles",
        ),
        figure=report(
            "results/rna_gan/figures/simclr_confusion.png",
            caption="../report/rna_gan_simclr.rst",
            category="RNA-GAN",
            subcategory="Figure S4: SimCLR on synthetic tiles",
        ),
        figure_pdf="results/rna_gan/figures/simclr_confusion.pdf",
    log:
        "logs/cross_validate_rna_gan_simclr/all.log",
    benchmark:
        "benchmarks/cross_validate_rna_gan_simclr/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
    params:
        simclr=RG["simclr"],
        sample_cohort=lambda w: rg.sample_cohorts(SAMPLES, RG["simclr"]["task_cohorts"]),
        sample_patient=lambda w: rg.sample_patients(
            SAMPLES, RG["simclr"]["task_cohorts"]
        ),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/simclr_cv.py"


rule build_rna_gan_reproduction:
    input:
        vae_metrics="results/rna_gan/vae/main/test_metrics.tsv",
        multi_metrics="results/rna_gan/vae/multi_tissue/test_metrics.tsv",
        checks="results/rna_gan/vae/latent_checks.tsv",
        fid="results/rna_gan/fid.tsv",
        silhouette="results/rna_gan/tile_silhouette.tsv",
        convergence="results/rna_gan/epochs_to_quality.tsv",
        external="results/rna_gan/external_classifier.tsv",
        simclr=(["results/rna_gan/simclr/cv.tsv"] if RG["simclr"]["enabled"] else []),
    output:
        table=report(
            "results/rna_gan/reproduction.tsv",
            caption="../report/rna_gan_reproduction.rst",
            category="RNA-GAN",
            subcategory="Reproduction table",
        ),
    log:
        "logs/build_rna_gan_reproduction/all.log",
    benchmark:
        "benchmarks/build_rna_gan_reproduction/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        data=rg.data_label(config),
        extractor_note=f"features: {RG['features']['extractor']}",
        epochs=rg.epochs_by_tissue_variant(config),
    script:
        "../scripts/build_rna_gan_reproduction.py"


rule rna_gan_all:
    input:
        rg.targets(config),


ALL_TARGETS.extend(rg.targets(config))
