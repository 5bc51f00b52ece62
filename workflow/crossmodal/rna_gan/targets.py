"""Input functions and target lists for workflow/rules/rna_gan.smk (kept here: rule files
hold no logic)."""
from __future__ import annotations

import pandas as pd

from crossmodal import paths
from crossmodal.models.gan import VARIANTS

R = "results/rna_gan"
FIG2 = ("reconstructed", "generated", "shifted", "multi_tissue")


def _cohort_samples(samples: pd.DataFrame, cohort: str, with_slide: bool) -> list[str]:
    df = samples[samples["cohort"] == cohort]
    if with_slide:
        df = df[df["slide"].astype(bool)]
    return list(df.index)


def tissue_lmdbs(config: dict, samples: pd.DataFrame, tissue: str) -> list[str]:
    """Tile LMDBs of every slide of ``tissue`` (the step keeps the training patients')."""
    preset = config["tiling"]["default_preset"]
    ss = _cohort_samples(samples, tissue, True)
    if not ss:
        raise ValueError(f"rna_gan: no sample with a slide in cohort {tissue!r} "
                         f"(cohorts: {', '.join(sorted(samples['cohort'].unique()))})")
    return [f"results/tiles/{preset}/{s}.lmdb" for s in ss]


def real_lmdbs(config: dict, samples: pd.DataFrame) -> list[str]:
    return [p for t in config["rna_gan"]["tissues"] for p in tissue_lmdbs(config, samples, t)]


def task_lmdbs(config: dict, samples: pd.DataFrame) -> list[str]:
    """Real tile LMDBs of the SimCLR downstream task's cohorts (TCGA GBM and LUAD)."""
    return [p for c in config["rna_gan"]["simclr"]["task_cohorts"] for p in tissue_lmdbs(config, samples, c)]


def sample_cohorts(samples: pd.DataFrame, cohorts) -> dict:
    df = samples[samples["cohort"].isin(list(cohorts))]
    return {s: str(c) for s, c in df["cohort"].items()}


def sample_patients(samples: pd.DataFrame, cohorts) -> dict:
    """``sample -> patient`` of the cohorts' samples (a TCGA patient may have several slides)."""
    df = samples[samples["cohort"].isin(list(cohorts))]
    return {s: str(p) for s, p in df["patient"].items()}


def tissue_dataset(samples: pd.DataFrame, tissue: str) -> str:
    ds = samples.loc[samples["cohort"] == tissue, "dataset"].unique()
    if len(ds) != 1:
        raise ValueError(f"rna_gan: cohort {tissue!r} must belong to exactly one dataset, found {list(ds)}")
    return str(ds[0])


def latent(config: dict, samples: pd.DataFrame, tissue: str) -> str:
    return f"{R}/vae/main/latent/{tissue_dataset(samples, tissue)}.tsv.gz"


def external_cohorts(config: dict) -> dict:
    """External cohort -> the tissue whose RNA-GAN generates its tiles (config
    rna_gan.external.cohorts, aligned with rna_gan.tissues)."""
    rg = config["rna_gan"]
    cohorts, tissues = list(rg["external"]["cohorts"]), list(rg["tissues"])
    if len(cohorts) != len(tissues):
        raise ValueError(f"config: rna_gan.external.cohorts has {len(cohorts)} entries ({', '.join(cohorts)}) "
                         f"but rna_gan.tissues has {len(tissues)}; give one external cohort per tissue, same order")
    return dict(zip(cohorts, tissues))


def external_sample_cohort(config: dict, samples: pd.DataFrame) -> dict:
    """Sample -> cohort of the external dataset's samples in the configured external cohorts."""
    ext = config["rna_gan"]["external"]
    df = samples[(samples["dataset"] == ext["dataset"]) & samples["cohort"].isin(list(ext["cohorts"]))]
    missing = sorted(set(ext["cohorts"]) - set(df["cohort"]))
    if config["rna_gan"]["enabled"] and missing:
        raise ValueError(f"config: rna_gan.external.cohorts {', '.join(missing)} have no sample of dataset "
                         f"{ext['dataset']!r} in the sample table")
    return {s: str(c) for s, c in df["cohort"].items()}


def extractor_weights(config: dict) -> list[str]:
    """The weights file of ``rna_gan.features.extractor`` (:func:`crossmodal.paths.extractor_weights`)."""
    return paths.extractor_weights(config["rna_gan"]["features"]["extractor"], config)


def epochs_by_tissue(config: dict) -> dict:
    from crossmodal.rna_gan.generators import epochs_for

    g = config["rna_gan"]["gan"]
    return {t: epochs_for(g, t, "rna_gan") for t in config["rna_gan"]["tissues"]}


def epochs_by_tissue_variant(config: dict) -> dict:
    """{tissue: {variant: configured epochs}} (the reproduction table's 'fewer epochs' row)."""
    from crossmodal.rna_gan.generators import epochs_for

    g = config["rna_gan"]["gan"]
    return {t: {v: epochs_for(g, t, v) for v in VARIANTS} for t in config["rna_gan"]["tissues"]}


def multi_expression(config: dict) -> list[str]:
    from crossmodal.models.vae import expression_inputs

    return expression_inputs(config, "rna_gan", "multi_tissue")


def per_tissue_variant(config: dict, pattern: str) -> list[str]:
    return [pattern.format(tissue=t, variant=v) for t in config["rna_gan"]["tissues"] for v in VARIANTS]


def targets(config: dict) -> list[str]:
    """Every RNA-GAN output the default target collects."""
    if not config["rna_gan"]["enabled"]:
        return []
    out = [f"{R}/figures/fig2_{p}.png" for p in FIG2]
    out += [f"{R}/vae/main/test_metrics.tsv", f"{R}/vae/multi_tissue/test_metrics.tsv",
            f"{R}/vae/latent_checks.tsv", f"{R}/fid.tsv", f"{R}/figures/tile_umap.png", f"{R}/tile_silhouette.tsv",
            f"{R}/figures/fig5_same_epoch.png", f"{R}/figures/fig4d_external_tiles.png",
            f"{R}/external_classifier.tsv", f"{R}/epochs_to_quality.tsv", f"{R}/figures/convergence.png",
            f"{R}/reproduction.tsv"]
    if config["rna_gan"]["simclr"]["enabled"]:
        out += [f"{R}/simclr/cv.tsv", f"{R}/figures/simclr_confusion.png"]
    return out


def data_label(config: dict) -> str:
    """The reproduction table's ``data``: ``toy`` on the toy cohort, else the run's name."""
    return "toy" if config["cohort"]["source"] == "toy" else str(config["run_name"])
