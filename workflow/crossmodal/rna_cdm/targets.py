"""Input functions and target lists of workflow/rules/rna_cdm.smk (rule files hold no logic)."""
from __future__ import annotations

import pandas as pd

from crossmodal import paths

R = "results/rna_cdm"


def _preset(config: dict) -> str:
    return config["rna_cdm"]["tile_preset"]


#: the rna_cdm keys that shape the trained cascade; the sampling steps also read the samplers and
#: generation sizes. Rules pass only these, so changing an evaluation or downstream setting does
#: not make Snakemake retrain (or regenerate from) the cascade.
TRAIN_KEYS = ("cohorts", "train_splits", "base_unet", "sr_unet", "lowres_blur_sigma", "lowres_blur_kernel", "edm",
              "train")
SAMPLE_KEYS = TRAIN_KEYS + ("sampler", "ddpm", "generate")


def cascade_config(config: dict, purpose: str) -> dict:
    """The part of ``config["rna_cdm"]`` a ``purpose`` ("train" or "sample") step reads."""
    keys = {"train": TRAIN_KEYS, "sample": SAMPLE_KEYS}[purpose]
    return {k: config["rna_cdm"][k] for k in keys}


def tile_lmdbs(config: dict, samples: pd.DataFrame) -> list[str]:
    """Tile LMDBs of every slide of the diffusion cohorts (the steps keep the split they need)."""
    cohorts = config["rna_cdm"]["cohorts"]
    df = samples[samples["cohort"].isin(cohorts) & samples["slide"].astype(bool)]
    missing = sorted(set(cohorts) - set(df["cohort"]))
    if missing:
        raise ValueError(f"rna_cdm.cohorts: no sample with a slide in {', '.join(missing)} "
                         f"(cohorts with slides: {', '.join(sorted(samples.loc[samples['slide'].astype(bool), 'cohort'].unique()))})")
    return [f"results/tiles/{_preset(config)}/{s}.lmdb" for s in df.index]


def dataset_of_cohorts(config: dict, samples: pd.DataFrame) -> str:
    """The expression dataset holding the diffusion cohorts' slide samples (TCGA)."""
    cohorts = config["rna_cdm"]["cohorts"]
    ds = samples.loc[samples["cohort"].isin(cohorts) & samples["slide"].astype(bool), "dataset"].unique()
    if len(ds) != 1:
        raise ValueError(f"rna_cdm.cohorts must come from one expression dataset with slides, found {list(ds)}")
    return str(ds[0])


def latent(config: dict, samples: pd.DataFrame, dataset: str | None = None) -> str:
    return f"{R}/vae/main/latent/{dataset or dataset_of_cohorts(config, samples)}.tsv.gz"


def sample_cohort(samples: pd.DataFrame, dataset: str) -> dict:
    df = samples[samples["dataset"] == dataset]
    return {s: str(c) for s, c in df["cohort"].items()}


def tile_mpp(config: dict) -> float | None:
    """µm per pixel of a generated tile: the preset's mpp scaled by tile_size / generated size."""
    p = config["tiling"]["presets"][_preset(config)]
    mpp = p.get("target_mpp")
    return None if mpp is None else float(mpp) * int(p["tile_size"]) / int(config["rna_cdm"]["sr_unet"]["image_size"])


def evaluation_set(config: dict) -> str:
    """Name of the generated set the evaluations read (FID / KID / IS, Table 1, Fig. 4, Suppl.
    Fig. 5): ``evaluation`` (evaluate.tiles_per_cohort per cancer type) or, when that is null,
    ``test`` (the generate.tiles_per_patient set the deconvolution reads)."""
    return "test" if config["rna_cdm"]["evaluate"]["tiles_per_cohort"] is None else "evaluation"


def evaluation_tiles(config: dict) -> str:
    return f"{R}/generated/{evaluation_set(config)}.lmdb"


def evaluation_cell_counts(config: dict) -> str:
    return f"{R}/cells/generated_{evaluation_set(config)}.tsv"


def extractor_weights(config: dict) -> list[str]:
    """The weights file of ``rna_cdm.evaluate.extractor`` (:func:`crossmodal.paths.extractor_weights`)."""
    return paths.extractor_weights(config["rna_cdm"]["evaluate"]["extractor"], config)


def cell_params(config: dict) -> dict:
    """The metrics stage's counter settings, counting every generated tile (no per-slide cap)."""
    return {**config["metrics"]["cells"], "max_tiles_per_slide": None}


def real_cell_counts(config: dict, samples: pd.DataFrame) -> list[str]:
    preset = _preset(config)
    return [f"results/metrics/cells/{preset}/per_slide/{p.split('/')[-1][:-5]}.tsv"
            for p in tile_lmdbs(config, samples)]


def data_note(config: dict) -> str:
    return ("toy planted-signal cohort (not TCGA): numbers are not comparable to the paper's"
            if config["cohort"]["source"] == "toy" else "")


def data_label(config: dict) -> str:
    """``data`` of the reproduction table: ``toy``, or the real cohort the diffusion model ran on
    (``TCGA (5 projects)`` for the paper's TCGA projects)."""
    if config["cohort"]["source"] == "toy":
        return "toy"
    cohorts = list(config["rna_cdm"]["cohorts"])
    if all(str(c).startswith("TCGA-") for c in cohorts):
        return f"TCGA ({len(cohorts)} projects)"
    return f"{config['run_name']} ({', '.join(map(str, cohorts))})"


def external_sets(config: dict, samples: pd.DataFrame) -> list[str]:
    have = set(samples["dataset"])
    return [f"external_{d}" for d in config["rna_cdm"]["generate"]["external_datasets"] if d in have]


def external_lmdbs(config: dict, samples: pd.DataFrame) -> list[str]:
    """The generated tile LMDBs of the external GEO-style datasets (Supplementary Figure 2)."""
    return [f"{R}/generated/{s}.lmdb" for s in external_sets(config, samples)]


def counts(config: dict, samples: pd.DataFrame) -> str:
    """Raw counts of the diffusion cohorts' expression dataset (input of the deconvolution)."""
    return f"results/expression/{dataset_of_cohorts(config, samples)}/counts.tsv.gz"


def scaler(config: dict, samples: pd.DataFrame) -> str:
    """The training-split scaler that normalised the VAE's input (reused for perturbed expression)."""
    return f"results/expression/{dataset_of_cohorts(config, samples)}/scaler_vae.tsv"


def simclr_labels(config: dict) -> list[str]:
    lab = config["rna_cdm"]["simclr"]["labels"]
    return [lab] if lab else []


def experiments(config: dict) -> dict[str, bool]:
    """Which of the deconvolution / perturbation / downstream / SimCLR experiments run."""
    rc = config["rna_cdm"]
    dec = bool(rc["deconvolution"]["enabled"])
    return {"deconvolution": dec, "perturbation": dec and bool(rc["perturbation"]["classes"]),
            "downstream": bool(rc["downstream"]["enabled"]),
            "simclr": bool(rc["simclr"]["enabled"]) and bool(rc["simclr"]["labels"])}


EXPERIMENT_TABLES = {"deconvolution": f"{R}/deconvolution/correlations.tsv",
                     "perturbation": f"{R}/perturbation/summary.tsv",
                     "downstream": f"{R}/downstream/summary.tsv",
                     "simclr": f"{R}/simclr/summary.tsv"}
EXPERIMENT_FIGURES = {"deconvolution": [f"{R}/deconvolution/correlations.png"],
                      "perturbation": [f"{R}/perturbation/cell_percentages.png"],
                      "downstream": [f"{R}/downstream/accuracy.png", f"{R}/downstream/confusion.png"],
                      "simclr": [f"{R}/simclr/accuracy.png"]}


def experiment_tables(config: dict, which: str) -> list[str]:
    """The table of experiment ``which`` if it runs (optional inputs of the reproduction table)."""
    return [EXPERIMENT_TABLES[which]] if experiments(config)[which] else []


def evaluation_tables(config: dict, which: str) -> list[str]:
    """The table of an optional evaluation if it runs: ``samplers`` (``rna_cdm.benchmark.enabled``)
    or ``super_resolution`` (``rna_cdm.evaluate.sr_fidelity_tiles`` > 0)."""
    rc = config["rna_cdm"]
    on = {"samplers": bool(rc["benchmark"]["enabled"]),
          "super_resolution": rc["evaluate"]["sr_fidelity_tiles"] > 0}
    path = {"samplers": f"{R}/samplers.tsv", "super_resolution": f"{R}/cells/super_resolution.tsv"}
    return [path[which]] if on[which] else []


def targets(config: dict, samples: pd.DataFrame) -> list[str]:
    """Every RNA-CDM output the default target collects."""
    rc = config["rna_cdm"]
    if not rc["enabled"]:
        return []
    out = [f"{R}/vae/main/test_metrics.tsv", f"{R}/figures/vae_umap.png", f"{R}/fid.tsv",
           f"{R}/figures/generated_tiles.png",
           f"{R}/cells/table1.tsv", f"{R}/figures/cell_distributions.png", f"{R}/reproduction.tsv"]
    out += external_lmdbs(config, samples)
    out += [f"{R}/figures/{s}_tiles.png" for s in external_sets(config, samples)]
    sr = evaluation_tables(config, "super_resolution")
    out += sr + ([f"{R}/figures/super_resolution.png"] if sr else [])
    out += evaluation_tables(config, "samplers")
    for k, on in experiments(config).items():
        if on:
            out += [EXPERIMENT_TABLES[k], *EXPERIMENT_FIGURES[k]]
    return out
