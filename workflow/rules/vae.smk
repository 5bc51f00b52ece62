# Generic β-VAE rules shared by RNA-GAN and RNA-CDM ({paper} in rna_gan, rna_cdm): each
# reads config[paper]["vae"]; {model} is "main" or a key of config[paper]["vae"]["models"].
# Logic: crossmodal.models.vae (steps train_vae, encode_expression).
from crossmodal.models import vae as vae_lib


rule train_vae:
    input:
        expression=lambda w: vae_lib.expression_inputs(config, w.paper, w.model),
        splits="results/splits/vae.tsv",
    output:
        model="results/{paper}/vae/{model}/model.pt",
        history="results/{paper}/vae/{model}/history.tsv",
        metrics=report(
            "results/{paper}/vae/{model}/test_metrics.tsv",
            caption="../report/vae_test_metrics.rst",
            category="β-VAE",
            subcategory="{paper}",
        ),
    log:
        "logs/train_vae/{paper}_{model}.log",
    benchmark:
        "benchmarks/train_vae/{paper}_{model}.tsv"
    wildcard_constraints:
        paper="rna_gan|rna_cdm",
        model="[A-Za-z0-9_]+",
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=64000,
    params:
        vae=lambda w: vae_lib.model_settings(config, w.paper, w.model),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_vae.py"


rule encode_expression:
    input:
        model="results/{paper}/vae/{model}/model.pt",
        expression="results/expression/{dataset}/z_vae.tsv.gz",
    output:
        latent="results/{paper}/vae/{model}/latent/{dataset}.tsv.gz",
    log:
        "logs/encode_expression/{paper}_{model}_{dataset}.log",
    benchmark:
        "benchmarks/encode_expression/{paper}_{model}_{dataset}.tsv"
    wildcard_constraints:
        paper="rna_gan|rna_cdm",
        model="[A-Za-z0-9_]+",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/encode_expression.py"
