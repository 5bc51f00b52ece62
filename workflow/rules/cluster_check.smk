# Self-check of cluster execution (not part of `all`): a tiny resumable training job through
# crossmodal.training and a rule that fails on purpose when config cluster.check_fail is true.
#   snakemake --profile profiles/<cluster> results/cluster_check/fail_check.json
# Used by tests/test_slurm.py and tests/test_pbs.py through tests/slurm/Snakefile, which
# includes the main Snakefile and, unless that already includes it, this file.
from crossmodal.training import gpu_request


rule train_cluster_check:
    output:
        model="results/cluster_check/model.pt",
        done="results/cluster_check/train.json",
    log:
        "logs/train_cluster_check/all.log",
    benchmark:
        "benchmarks/train_cluster_check/all.tsv"
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=10,
        mem_mb=2000,
    params:
        # checkpoints are not an output: Snakemake must not delete them when a job fails
        ckpt_dir="results/cluster_check/checkpoints",
        seed=config["seed"],
        steps=config["cluster"]["check_steps"],
        checkpoint_every=config["cluster"]["check_checkpoint_every"],
        step_delay_s=config["cluster"]["check_step_delay_s"],
        device=config["device"],
        num_processes=lambda wildcards, resources: max(1, resources.gpu),
        time_limit_s=lambda wildcards, resources: resources.runtime * 60,
        margin_s=60,
    script:
        "../scripts/train_cluster_check.py"


rule fail_cluster_check:
    input:
        done=rules.train_cluster_check.output.done,
    output:
        ok="results/cluster_check/fail_check.json",
    log:
        "logs/fail_cluster_check/all.log",
    benchmark:
        "benchmarks/fail_cluster_check/all.tsv"
    conda:
        "../../envs/base.yaml"
    resources:
        runtime=5,
        mem_mb=500,
    params:
        fail=config["cluster"]["check_fail"],
    script:
        "../scripts/fail_cluster_check.py"
