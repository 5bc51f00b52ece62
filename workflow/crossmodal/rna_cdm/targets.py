"""Input functions and target lists of workflow/rules/rna_cdm.smk (rule files hold no logic)."""
from __future__ import annotations

import pandas as pd

R = "results/rna_cdm"


def _preset(config: dict) -> str:
    return config["rna_cdm"]["tile_preset"]


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


def extractor_weights(config: dict) -> list[str]:
    ext = config["rna_cdm"]["evaluate"]["extractor"]
    if ext == "cohort-ssl":
        return ["results/metrics/ssl/encoder.pt"]
    w = config.get("metrics", {}).get("inception_weights")
    return [w] if w else []


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


def external_sets(config: dict, samples: pd.DataFrame) -> list[str]:
    have = set(samples["dataset"])
    return [f"external_{d}" for d in config["rna_cdm"]["generate"]["external_datasets"] if d in have]


def targets(config: dict, samples: pd.DataFrame) -> list[str]:
    """Every RNA-CDM output the default target collects."""
    rc = config["rna_cdm"]
    if not rc["enabled"]:
        return []
    out = [f"{R}/vae/main/test_metrics.tsv", f"{R}/fid.tsv", f"{R}/figures/generated_tiles.png",
           f"{R}/cells/table1.tsv", f"{R}/reproduction.tsv"]
    out += [f"{R}/generated/{s}.lmdb" for s in external_sets(config, samples)]
    if rc["benchmark"]["enabled"]:
        out.append(f"{R}/samplers.tsv")
    return out
