# Coherent Denoising (issue 8; crossmodal.coherent): preprocessing, 32-d latents, the 12
# single-condition and 4 multi-condition MLP DDPMs, the Coherent Denoising ensemble,
# Tables 1-3, Figures 1-5 and the reproduction table under results/coherent/.
from crossmodal import paths
from crossmodal.coherent import rules as coh_rules

COH = config["coherent"]
COH_DIR = "results/coherent"
COH_STAND_IN = coh_rules.stand_in(config)
COH_BANK_JOB = coh_rules.bank_job(config)
COH_SLIDES = coh_rules.slides(config, SAMPLES, SLIDE_SAMPLES)


COH_LATENTS = {
    "latents": f"{COH_DIR}/latents/latents.tsv.gz",
    "labels": f"{COH_DIR}/data/labels.tsv",
}
COH_GENERATED = dict(COH_LATENTS, generated=f"{COH_DIR}/generated/test.npz")


rule embed_coherent_slides:
    input:
        tiles=expand(
            "results/tiles/{preset}/{sample}.lmdb",
            preset=COH["preset"],
            sample=COH_SLIDES,
        ),
        # the encoder trained on the coherent split's training patients only
        encoder=paths.ssl_encoder_path(config, "coherent"),
    output:
        embeddings=f"{COH_DIR}/wsi_embeddings.tsv.gz",
    log:
        "logs/embed_coherent_slides/all.log",
    benchmark:
        "benchmarks/embed_coherent_slides/all.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        max_tiles=COH["wsi_max_tiles"],
        seed=config["seed"],
    script:
        "../scripts/embed_coherent_slides.py"


rule preprocess_coherent:
    input:
        **(coh_rules.raw_inputs(config) if coh_rules.runs_by_default(config) else {}),
    output:
        cna=f"{COH_DIR}/data/cna.tsv.gz",
        rnaseq=f"{COH_DIR}/data/rnaseq.tsv.gz",
        rppa=f"{COH_DIR}/data/rppa.tsv.gz",
        wsi=f"{COH_DIR}/data/wsi.tsv.gz",
        labels=f"{COH_DIR}/data/labels.tsv",
        qc=f"{COH_DIR}/data/qc.json",
    log:
        "logs/preprocess_coherent/all.log",
    benchmark:
        "benchmarks/preprocess_coherent/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        preprocess=COH["preprocess"],
        source=COH["source"],
        stage_column=COH["stage_column"],
        layouts=coh_rules.layouts(config),
    script:
        "../scripts/preprocess_coherent.py"


rule encode_coherent_latents:
    input:
        cna=f"{COH_DIR}/data/cna.tsv.gz",
        rnaseq=f"{COH_DIR}/data/rnaseq.tsv.gz",
        rppa=f"{COH_DIR}/data/rppa.tsv.gz",
        wsi=f"{COH_DIR}/data/wsi.tsv.gz",
        labels=f"{COH_DIR}/data/labels.tsv",
    output:
        latents=COH_LATENTS["latents"],
        history=f"{COH_DIR}/latents/history.tsv",
    log:
        "logs/encode_coherent_latents/all.log",
    benchmark:
        "benchmarks/encode_coherent_latents/all.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        latents=COH["latents"],
        seed=config["seed"],
    script:
        "../scripts/encode_coherent_latents.py"


rule train_coherent_shard:
    input:
        **COH_LATENTS,
    output:
        shard=f"{COH_DIR}/models/shards/{{shard}}_of_{COH['train_jobs']}.pt",
    log:
        "logs/train_coherent_shard/{shard}.log",
    benchmark:
        "benchmarks/train_coherent_shard/{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=16000,
    params:
        diffusion=COH["diffusion"],
        seed=config["seed"],
        device=config["device"],
        checkpoints=f"{COH_DIR}/models/checkpoints",
        shard=lambda w: (int(w.shard), COH["train_jobs"]),
    script:
        "../scripts/train_coherent_shard.py"


rule train_coherent_diffusion:
    input:
        **COH_LATENTS,
        **coh_rules.shard_inputs(config),
    output:
        models=f"{COH_DIR}/models/models.pt",
        val_mse=report(
            f"{COH_DIR}/models/val_mse.tsv",
            caption="../report/coherent_val_mse.rst",
            category="Coherent Denoising",
        ),
        history=f"{COH_DIR}/models/history.tsv",
    log:
        "logs/train_coherent_diffusion/all.log",
    benchmark:
        "benchmarks/train_coherent_diffusion/all.tsv"
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, COH_BANK_JOB["gpus"]),
        runtime=COH_BANK_JOB["runtime"],
        mem_mb=16000,
    params:
        diffusion=COH["diffusion"],
        seed=config["seed"],
        device=config["device"],
        checkpoints=f"{COH_DIR}/models/checkpoints",
    script:
        "../scripts/train_coherent_diffusion.py"


rule generate_coherent:
    input:
        **COH_LATENTS,
        models=f"{COH_DIR}/models/models.pt",
    output:
        generated=COH_GENERATED["generated"],
        rejection=report(
            f"{COH_DIR}/generated/rejection.tsv",
            caption="../report/coherent_rejection.rst",
            category="Coherent Denoising",
        ),
    log:
        "logs/generate_coherent/all.log",
    benchmark:
        "benchmarks/generate_coherent/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=16000,
    params:
        generate=COH["generate"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_coherent.py"


rule evaluate_coherent_reconstruction:
    input:
        **COH_GENERATED,
    output:
        table=report(
            f"{COH_DIR}/table1.tsv",
            caption="../report/coherent_table1.rst",
            category="Coherent Denoising",
        ),
        figure=report(
            f"{COH_DIR}/figure1_umap.png",
            caption="../report/coherent_figure1.rst",
            category="Coherent Denoising",
        ),
        figure_pdf=f"{COH_DIR}/figure1_umap.pdf",
    log:
        "logs/evaluate_coherent_reconstruction/all.log",
    benchmark:
        "benchmarks/evaluate_coherent_reconstruction/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        stand_in=COH_STAND_IN,
        embedding=COH["figure1_embedding"],
        seed=config["seed"],
    script:
        "../scripts/evaluate_coherent_reconstruction.py"


rule evaluate_coherent_classifiers:
    input:
        **COH_GENERATED,
    output:
        table=report(
            f"{COH_DIR}/figure2_f1.tsv",
            caption="../report/coherent_figure2.rst",
            category="Coherent Denoising",
        ),
        figure=report(
            f"{COH_DIR}/figure2_f1.png",
            caption="../report/coherent_figure2.rst",
            category="Coherent Denoising",
        ),
        figure_pdf=f"{COH_DIR}/figure2_f1.pdf",
    log:
        "logs/evaluate_coherent_classifiers/all.log",
    benchmark:
        "benchmarks/evaluate_coherent_classifiers/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        downstream=COH["downstream"],
        stand_in=COH_STAND_IN,
        seed=config["seed"],
    script:
        "../scripts/evaluate_coherent_classifiers.py"


rule evaluate_coherent_completion:
    input:
        **COH_GENERATED,
    output:
        table=report(
            f"{COH_DIR}/table2.tsv",
            caption="../report/coherent_table2.rst",
            category="Coherent Denoising",
        ),
        scores=f"{COH_DIR}/table2_scores.tsv",
        figure=report(
            f"{COH_DIR}/figure3_completion.png",
            caption="../report/coherent_figure3.rst",
            category="Coherent Denoising",
        ),
        figure_pdf=f"{COH_DIR}/figure3_completion.pdf",
    log:
        "logs/evaluate_coherent_completion/all.log",
    benchmark:
        "benchmarks/evaluate_coherent_completion/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        downstream=COH["downstream"],
        stand_in=COH_STAND_IN,
        seed=config["seed"],
    script:
        "../scripts/evaluate_coherent_completion.py"


rule evaluate_coherent_privacy:
    input:
        **COH_GENERATED,
    output:
        table=report(
            f"{COH_DIR}/table3.tsv",
            caption="../report/coherent_table3.rst",
            category="Coherent Denoising",
        ),
        figure=report(
            f"{COH_DIR}/figure5_unconditional.png",
            caption="../report/coherent_figure5.rst",
            category="Coherent Denoising",
        ),
        figure_pdf=f"{COH_DIR}/figure5_unconditional.pdf",
    log:
        "logs/evaluate_coherent_privacy/all.log",
    benchmark:
        "benchmarks/evaluate_coherent_privacy/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        downstream=COH["downstream"],
        stand_in=COH_STAND_IN,
        seed=config["seed"],
    script:
        "../scripts/evaluate_coherent_privacy.py"


rule evaluate_coherent_prioritisation:
    input:
        **COH_GENERATED,
    output:
        table=f"{COH_DIR}/figure4_prioritisation.tsv",
        scores=f"{COH_DIR}/figure4_scores.tsv",
        figure=report(
            f"{COH_DIR}/figure4_prioritisation.png",
            caption="../report/coherent_figure4.rst",
            category="Coherent Denoising",
        ),
        figure_pdf=f"{COH_DIR}/figure4_prioritisation.pdf",
    log:
        "logs/evaluate_coherent_prioritisation/all.log",
    benchmark:
        "benchmarks/evaluate_coherent_prioritisation/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        downstream=COH["downstream"],
        seed=config["seed"],
    script:
        "../scripts/evaluate_coherent_prioritisation.py"


rule build_coherent_reproduction:
    input:
        table1=f"{COH_DIR}/table1.tsv",
        fig2=f"{COH_DIR}/figure2_f1.tsv",
        table2=f"{COH_DIR}/table2.tsv",
        table3=f"{COH_DIR}/table3.tsv",
        fig4=f"{COH_DIR}/figure4_prioritisation.tsv",
        fig4_scores=f"{COH_DIR}/figure4_scores.tsv",
        rejection=f"{COH_DIR}/generated/rejection.tsv",
    output:
        table=report(
            f"{COH_DIR}/reproduction.tsv",
            caption="../report/coherent_reproduction.rst",
            category="Coherent Denoising",
        ),
    log:
        "logs/build_coherent_reproduction/all.log",
    benchmark:
        "benchmarks/build_coherent_reproduction/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        data=coh_rules.data_label(config, SAMPLES),
        stand_in=COH_STAND_IN,
    script:
        "../scripts/build_coherent_reproduction.py"


COH_TARGETS = [
    f"{COH_DIR}/{f}"
    for f in (
        "table1.tsv",
        "figure1_umap.png",
        "figure2_f1.png",
        "table2.tsv",
        "figure3_completion.png",
        "table3.tsv",
        "figure5_unconditional.png",
        "figure4_prioritisation.png",
        "reproduction.tsv",
        "generated/rejection.tsv",
    )
]


rule coherent_all:
    input:
        COH_TARGETS,


# real-data configs run the chain only on the Xena download (config/coherent.yaml)
if coh_rules.runs_by_default(config):
    ALL_TARGETS.extend(COH_TARGETS)


# optional (not in the default target): the paper's hyperparameter grid
rule search_coherent_hyperparameters:
    input:
        **COH_LATENTS,
    output:
        table=f"{COH_DIR}/grid/search.tsv",
        best=f"{COH_DIR}/grid/best.tsv",
    log:
        "logs/search_coherent_hyperparameters/all.log",
    benchmark:
        "benchmarks/search_coherent_hyperparameters/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=1440,
        mem_mb=16000,
    params:
        diffusion=COH["diffusion"],
        grid=COH["grid"]["values"],
        kinds=COH["grid"]["kinds"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/search_coherent_hyperparameters.py"
