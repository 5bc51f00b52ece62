# PathGen (Dey et al.): slide patches -> embeddings -> co-attention diffusion of six gene
# groups -> synthesized expression -> MCAT_GR grading + survival (WSI only / + synthesized /
# + real) -> conformal sets, fairness tables, heatmaps, reproduction table.
# Logic: crossmodal.pathgen (input functions in crossmodal.pathgen.targets).
from crossmodal.pathgen import targets as pgt
from crossmodal.rna_cdm import targets as rct

PG = config["pathgen"]
PG_CASES = pgt.cases(config, SAMPLES)
PG_SPLITS = f"results/splits/{PG['splits']['scheme']}.tsv"
PG_DATA = {
    "cases": "results/pathgen/cases.tsv",
    "genes": "results/pathgen/genes.tsv",
    "real": "results/pathgen/expression/real.tsv.gz",
}


rule embed_patches:
    input:
        unpack(lambda w: pgt.embed_inputs(config, SAMPLES)),
    output:
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
        summary="results/pathgen/embeddings/summary.tsv",
    log:
        "logs/embed_patches/all.log",
    benchmark:
        "benchmarks/embed_patches/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=32000,
    params:
        patches=PG["patches"],
        magnification_levels=pgt.magnification_levels(config),
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/embed_patches.py"


rule prepare_pathgen_data:
    input:
        **pgt.prepare_inputs(config),
        counts=f"results/expression/{PG['dataset']}/counts.tsv.gz",
        splits=PG_SPLITS,
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
    output:
        cases="results/pathgen/cases.tsv",
        genes="results/pathgen/genes.tsv",
        real="results/pathgen/expression/real.tsv.gz",
        qc="results/pathgen/prepare_qc.json",
    log:
        "logs/prepare_pathgen_data/all.log",
    benchmark:
        "benchmarks/prepare_pathgen_data/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        calibration_fraction=PG["splits"]["calibration_fraction"],
        n_bins=PG["mcat"]["n_bins"],
        pseudocount=PG["pseudocount"],
        seed=config["seed"],
    script:
        "../scripts/prepare_pathgen_data.py"


rule train_pathgen:
    input:
        **PG_DATA,
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
    output:
        model="results/pathgen/model/pathgen.pt",
        losses="results/pathgen/model/losses.tsv",
    log:
        "logs/train_pathgen/all.log",
    benchmark:
        "benchmarks/train_pathgen/all.tsv"
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=32000,
    params:
        model=PG["model"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_pathgen.py"


# beyond the paper (pathgen.cross_fit.folds >= 2): one more PathGen per fold of the training
# patients, trained on the other folds; sample_pathgen synthesizes each training case with the
# model that did not see it
rule train_pathgen_fold:
    input:
        **PG_DATA,
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
    output:
        model="results/pathgen/model/cross_fit/fold{fold}.pt",
        losses="results/pathgen/model/cross_fit/fold{fold}_losses.tsv",
    log:
        "logs/train_pathgen_fold/{fold}.log",
    benchmark:
        "benchmarks/train_pathgen_fold/{fold}.tsv"
    wildcard_constraints:
        fold="[0-9]+",
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=720,
        mem_mb=32000,
    params:
        model=PG["model"],
        fold=lambda w: int(w.fold) - 1,
        folds=PG["cross_fit"]["folds"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_pathgen.py"


rule sample_pathgen:
    input:
        **PG_DATA,
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
        model="results/pathgen/model/pathgen.pt",
        fold_models=expand(
            "results/pathgen/model/cross_fit/fold{fold}.pt",
            fold=range(1, PG["cross_fit"]["folds"] + 1),
        ),
    output:
        synthesized="results/pathgen/expression/synthesized.tsv.gz",
    log:
        "logs/sample_pathgen/all.log",
    benchmark:
        "benchmarks/sample_pathgen/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=240,
        mem_mb=32000,
    params:
        n_draws=PG["model"]["n_draws"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/sample_pathgen.py"


rule evaluate_pathgen:
    input:
        **PG_DATA,
        synthesized="results/pathgen/expression/synthesized.tsv.gz",
        summary="results/pathgen/embeddings/summary.tsv",
    output:
        table=report(
            "results/pathgen/table2.tsv",
            caption="../report/pathgen_table2.rst",
            category="PathGen",
            subcategory="Synthesized expression",
        ),
        figure=report(
            "results/pathgen/figures/fig2_synthesized_vs_real.png",
            caption="../report/pathgen_fig2.rst",
            category="PathGen",
            subcategory="Synthesized expression",
        ),
        figure_pdf="results/pathgen/figures/fig2_synthesized_vs_real.pdf",
    log:
        "logs/evaluate_pathgen/all.log",
    benchmark:
        "benchmarks/evaluate_pathgen/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        split="test",
    script:
        "../scripts/evaluate_pathgen.py"


rule train_mcat_gr:
    input:
        **PG_DATA,
        synthesized="results/pathgen/expression/synthesized.tsv.gz",
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
    output:
        model="results/pathgen/mcat_gr/{run}/model.pt",
        history="results/pathgen/mcat_gr/{run}/history.tsv",
        predictions="results/pathgen/mcat_gr/{run}/predictions.tsv",
    log:
        "logs/train_mcat_gr/{run}.log",
    benchmark:
        "benchmarks/train_mcat_gr/{run}.tsv"
    wildcard_constraints:
        run="wsi|synthesized|real",
    retries: 2
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
        runtime=240,
        mem_mb=32000,
    params:
        mcat=PG["mcat"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_mcat_gr.py"


rule evaluate_mcat_gr:
    input:
        cases=PG_DATA["cases"],
        predictions=pgt.predictions(),
    output:
        table=report(
            "results/pathgen/prediction.tsv",
            caption="../report/pathgen_prediction.rst",
            category="PathGen",
            subcategory="Grading and survival",
        ),
        tests=report(
            "results/pathgen/prediction_tests.tsv",
            caption="../report/pathgen_prediction_tests.rst",
            category="PathGen",
            subcategory="Grading and survival",
        ),
    log:
        "logs/evaluate_mcat_gr/all.log",
    benchmark:
        "benchmarks/evaluate_mcat_gr/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        n_boot=PG["mcat"]["n_boot"],
        seed=config["seed"],
    script:
        "../scripts/evaluate_mcat_gr.py"


rule compute_pathgen_conformal:
    input:
        cases=PG_DATA["cases"],
        predictions=pgt.predictions(),
    output:
        cases="results/pathgen/conformal/cases.tsv",
        summary=report(
            "results/pathgen/conformal/summary.tsv",
            caption="../report/pathgen_conformal.rst",
            category="PathGen",
            subcategory="Uncertainty and fairness",
        ),
        tests=report(
            "results/pathgen/conformal/tests.tsv",
            caption="../report/pathgen_conformal_tests.rst",
            category="PathGen",
            subcategory="Uncertainty and fairness",
        ),
        fairness=report(
            "results/pathgen/conformal/fairness.tsv",
            caption="../report/pathgen_fairness.rst",
            category="PathGen",
            subcategory="Uncertainty and fairness",
        ),
        figure=report(
            "results/pathgen/figures/fig5b_fairness.png",
            caption="../report/pathgen_fig5b.rst",
            category="PathGen",
            subcategory="Uncertainty and fairness",
        ),
        figure_pdf="results/pathgen/figures/fig5b_fairness.pdf",
    log:
        "logs/compute_pathgen_conformal/all.log",
    benchmark:
        "benchmarks/compute_pathgen_conformal/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        conformal=PG["conformal"],
        seed=config["seed"],
    script:
        "../scripts/compute_pathgen_conformal.py"


rule plot_pathgen_heatmaps:
    input:
        **PG_DATA,
        synthesized="results/pathgen/expression/synthesized.tsv.gz",
        embeddings=expand("results/pathgen/embeddings/{sample}.npz", sample=PG_CASES),
        model_real="results/pathgen/mcat_gr/real/model.pt",
        model_synthesized="results/pathgen/mcat_gr/synthesized/model.pt",
    output:
        figure=report(
            "results/pathgen/figures/heatmaps.png",
            caption="../report/pathgen_heatmaps.rst",
            category="PathGen",
            subcategory="Interpretability",
        ),
        figure_pdf="results/pathgen/figures/heatmaps.pdf",
        patches="results/pathgen/heatmaps/patch_predictions.tsv",
        coattention_figure=report(
            "results/pathgen/figures/fig3d_coattention.png",
            caption="../report/pathgen_fig3d.rst",
            category="PathGen",
            subcategory="Interpretability",
        ),
        coattention_figure_pdf="results/pathgen/figures/fig3d_coattention.pdf",
        coattention=report(
            "results/pathgen/coattention.tsv",
            caption="../report/pathgen_coattention.rst",
            category="PathGen",
            subcategory="Interpretability",
        ),
    log:
        "logs/plot_pathgen_heatmaps/all.log",
    benchmark:
        "benchmarks/plot_pathgen_heatmaps/all.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        heatmaps=PG["heatmaps"],
        slides={s: SAMPLES.loc[s, "slide"] for s in PG_CASES},
    script:
        "../scripts/plot_pathgen_heatmaps.py"


rule generate_pathgen_round_trip_tiles:
    input:
        base="results/rna_cdm/unet/base/model.pt",
        sr="results/rna_cdm/unet/sr/model.pt",
        latent=lambda w: pgt.round_trip_latent(config, SAMPLES),
        splits=PG_DATA["cases"],
    output:
        tiles=directory("results/pathgen/round_trip/tiles.lmdb"),
    log:
        "logs/generate_pathgen_round_trip_tiles/test.log",
    benchmark:
        "benchmarks/generate_pathgen_round_trip_tiles/test.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
    params:
        rna_cdm=rct.cascade_config(config, "sample"),
        cohorts=config["rna_cdm"]["cohorts"],
        split="test",
        tiles_per_patient=PG["round_trip"]["tiles_per_case"],
        mpp=lambda w: pgt.round_trip_mpp(config),
        source="pathgen_round_trip",
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/generate_rna_cdm_tiles.py"


rule evaluate_pathgen_round_trip:
    input:
        **PG_DATA,
        synthesized="results/pathgen/expression/synthesized.tsv.gz",
        model="results/pathgen/model/pathgen.pt",
        tiles="results/pathgen/round_trip/tiles.lmdb",
        rna_cdm_splits="results/splits/vae.tsv",
        encoder=lambda w: pgt.encoder_weights(config),
    output:
        expression="results/pathgen/expression/round_trip.tsv.gz",
        table=report(
            "results/pathgen/round_trip.tsv",
            caption="../report/pathgen_round_trip.rst",
            category="PathGen",
            subcategory="Round trip (beyond the paper)",
        ),
        figure=report(
            "results/pathgen/figures/round_trip.png",
            caption="../report/pathgen_round_trip_fig.rst",
            category="PathGen",
            subcategory="Round trip (beyond the paper)",
        ),
        figure_pdf="results/pathgen/figures/round_trip.pdf",
    log:
        "logs/evaluate_pathgen_round_trip/test.log",
    benchmark:
        "benchmarks/evaluate_pathgen_round_trip/test.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=gpu_request(config, 1),
    params:
        patches=PG["patches"],
        patch_size=lambda w: pgt.round_trip_patch_size(config),
        n_draws=PG["model"]["n_draws"],
        split="test",
        rna_cdm_train_splits=config["rna_cdm"]["train_splits"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/evaluate_pathgen_round_trip.py"


rule build_pathgen_reproduction:
    input:
        unpack(lambda w: pgt.reproduction_extra(config)),
        table2="results/pathgen/table2.tsv",
        prediction="results/pathgen/prediction.tsv",
        tests="results/pathgen/prediction_tests.tsv",
        conformal="results/pathgen/conformal/summary.tsv",
        conformal_tests="results/pathgen/conformal/tests.tsv",
        coattention="results/pathgen/coattention.tsv",
        embed_summary="results/pathgen/embeddings/summary.tsv",
    output:
        table=report(
            "results/pathgen/reproduction.tsv",
            caption="../report/pathgen_reproduction.rst",
            category="PathGen",
            subcategory="Reproduction",
        ),
    log:
        "logs/build_pathgen_reproduction/all.log",
    benchmark:
        "benchmarks/build_pathgen_reproduction/all.tsv"
    conda:
        "../../envs/base.yaml"
    params:
        toy=config["cohort"]["source"] == "toy",
        data=pgt.data_label(config),
    script:
        "../scripts/build_pathgen_reproduction.py"


rule pathgen_all:
    input:
        pgt.default_targets(config),


ALL_TARGETS.extend(pgt.default_targets(config))
