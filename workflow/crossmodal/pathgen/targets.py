"""Input functions and target lists for workflow/rules/pathgen.smk (rule files hold no logic)."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from crossmodal import paths

R = "results/pathgen"
RUNS = ("wsi", "synthesized", "real")


def cases(config: dict, samples: pd.DataFrame) -> list[str]:
    """Samples of ``pathgen.dataset`` (and ``pathgen.cohorts``) with a slide and expression;
    none while ``pathgen.enabled`` is false."""
    pg = config["pathgen"]
    if not pg.get("enabled", True):
        return []
    df = samples[(samples["dataset"] == pg["dataset"]) & samples["slide"].astype(bool)
                 & samples["expression"].fillna("").astype(str).astype(bool)]
    if pg.get("cohorts"):
        df = df[df["cohort"].isin(list(pg["cohorts"]))]
    return sorted(df.index)


def preset(config: dict, sample: str) -> str:
    """The tiling preset (magnification) drawn for ``sample`` from the seed (Methods 3.1)."""
    presets = list(config["pathgen"]["patches"]["presets"])
    if len(presets) == 1:
        return presets[0]
    rng = np.random.default_rng([int(config["seed"]), zlib.crc32(sample.encode())])
    return presets[int(rng.integers(len(presets)))]


def magnification_levels(config: dict) -> dict[str, int]:
    """``preset -> level`` with 1 the finest (smallest target_mpp) preset, as in the paper's
    "magnification level 1 corresponds to the highest magnification"; empty while
    ``pathgen.enabled`` is false."""
    if not config["pathgen"].get("enabled", True):
        return {}
    pr = config["tiling"]["presets"]
    names = list(config["pathgen"]["patches"]["presets"])
    missing = [p for p in names if p not in pr]
    if missing:
        raise ValueError(f"pathgen.patches.presets: {', '.join(missing)} not in tiling.presets "
                         f"({', '.join(pr)})")
    order = sorted(names, key=lambda p: float(pr[p].get("target_mpp", 0.5)))
    return {p: i + 1 for i, p in enumerate(order)}


def embed_inputs(config: dict, samples: pd.DataFrame) -> dict:
    """Inputs of rule embed_patches: one patch LMDB per case (+ the cohort-ssl encoder)."""
    out = {"lmdbs": [f"results/tiles/{preset(config, s)}/{s}.lmdb" for s in cases(config, samples)]}
    if config["pathgen"]["patches"]["encoder"] == "cohort-ssl":
        out["encoder"] = paths.ssl_encoder_path(config, config["pathgen"]["splits"]["scheme"])
    return out


def embeddings(config: dict, samples: pd.DataFrame) -> list[str]:
    return [f"{R}/embeddings/{s}.npz" for s in cases(config, samples)]


def prepare_inputs(config: dict) -> dict:
    """Inputs of rule prepare_pathgen_data besides the counts, splits and embeddings (none while
    ``pathgen.enabled`` is false, so that a run without PathGen needs no clinical table)."""
    if not config["pathgen"].get("enabled", True):
        return {}
    return {"clinical": clinical(config), "gene_groups": gene_groups(config), "truth_genes": truth_genes(config)}


def clinical(config: dict) -> str:
    pg = config["pathgen"]
    if pg.get("clinical"):
        return pg["clinical"]
    if config["cohort"]["source"] == "toy":
        return "results/toy/cohort/clinical.tsv"
    if config["cohort"].get("clinical"):
        return config["cohort"]["clinical"]
    raise ValueError("pathgen: no clinical table - set pathgen.clinical or cohort.clinical "
                     "(columns patient, grade, survival_time, event, age, sex)")


def gene_groups(config: dict) -> str:
    pg = config["pathgen"]
    if pg.get("gene_groups"):
        return pg["gene_groups"]
    if config["cohort"]["source"] == "toy":
        return "results/toy/cohort/gene_groups.tsv"
    return "results/download/mcat_signatures/signatures.tsv"


def truth_genes(config: dict) -> list[str]:
    """The toy answer key when ``pathgen.planted_only`` keeps only the planted-signal genes."""
    if not config["pathgen"].get("planted_only"):
        return []
    if config["cohort"]["source"] != "toy":
        raise ValueError("pathgen.planted_only: only the toy cohort has planted genes (results/toy/truth/genes.tsv); "
                         "set it to false for real data")
    return ["results/toy/truth/genes.tsv"]


def predictions(runs=RUNS) -> list[str]:
    return [f"{R}/mcat_gr/{r}/predictions.tsv" for r in runs]


def round_trip_enabled(config: dict) -> bool:
    """The round trip needs RNA-CDM's generator: on when both chains and ``pathgen.round_trip`` are."""
    return bool(config["pathgen"].get("enabled", True) and config["pathgen"]["round_trip"]["enabled"]
                and config["rna_cdm"].get("enabled", True))


def round_trip_latent(config: dict, samples: pd.DataFrame) -> str:
    """RNA-CDM's β-VAE latent codes of the PathGen dataset (the generator's input)."""
    from crossmodal.rna_cdm import targets as rct

    return rct.latent(config, samples, config["pathgen"]["dataset"])


def round_trip_mpp(config: dict) -> float | None:
    from crossmodal.rna_cdm import targets as rct

    return rct.tile_mpp(config)


def round_trip_patch_size(config: dict) -> int:
    """Generated tiles are resized to the PathGen patch size (the first patch preset's tile_size)."""
    return int(config["tiling"]["presets"][config["pathgen"]["patches"]["presets"][0]]["tile_size"])


def encoder_weights(config: dict) -> list[str]:
    return paths.ssl_encoder(config, config["pathgen"]["patches"]["encoder"] == "cohort-ssl",
                             config["pathgen"]["splits"]["scheme"])


def reproduction_extra(config: dict) -> dict:
    """The round-trip table joins the reproduction table when the round trip runs."""
    return {"round_trip": f"{R}/round_trip.tsv"} if round_trip_enabled(config) else {}


def data_label(config: dict) -> str:
    """The reproduction table's ``data``: ``toy``, else the cohorts of the PathGen cases
    (``pathgen.cohorts``, e.g. ``TCGA-GBM + TCGA-LGG``; ``pathgen.dataset`` when every cohort is kept)."""
    if config["cohort"]["source"] == "toy":
        return "toy"
    pg = config["pathgen"]
    return " + ".join(map(str, pg.get("cohorts") or [])) or str(pg.get("dataset") or config.get("run_name", ""))


def default_targets(config: dict) -> list[str]:
    if not config["pathgen"].get("enabled", True):
        return []
    rt = [f"{R}/round_trip.tsv", f"{R}/figures/round_trip.png"] if round_trip_enabled(config) else []
    return rt + [f"{R}/table2.tsv", f"{R}/figures/fig2_synthesized_vs_real.png", f"{R}/prediction.tsv",
            f"{R}/prediction_tests.tsv", f"{R}/conformal/summary.tsv", f"{R}/conformal/fairness.tsv",
            f"{R}/conformal/tests.tsv",
            f"{R}/figures/fig5b_fairness.png", f"{R}/figures/heatmaps.png", f"{R}/figures/fig3d_coattention.png",
            f"{R}/coattention.tsv",
            f"{R}/reproduction.tsv"]
