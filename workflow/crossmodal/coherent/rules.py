"""Input helpers for ``workflow/rules/coherent.smk`` (no logic in rule files)."""
from __future__ import annotations

from crossmodal.expression.rules import omics_paths

DIR = "results/coherent"


def raw_inputs(config: dict) -> dict:
    """Inputs of preprocess_coherent: four modality matrices, clinical (and survival), splits."""
    coh = config["coherent"]
    wsi = coh["wsi_embeddings"] or f"{DIR}/wsi_embeddings.tsv.gz"
    if coh["source"] == "xena":
        d = coh["xena_dir"]
        return {"rnaseq": f"{d}/rnaseq.tsv.gz", "cna": f"{d}/cna.tsv.gz", "rppa": f"{d}/protein.tsv.gz",
                "clinical": f"{d}/clinical.tsv", "survival": f"{d}/survival.tsv", "wsi": wsi,
                "splits": "results/splits/coherent.tsv"}
    toy = config["cohort"]["source"] == "toy"
    clinical = "results/toy/cohort/clinical.tsv" if toy else config["cohort"].get("clinical")
    if not clinical:
        raise ValueError("coherent: source toy on a user sample sheet needs cohort.clinical "
                         "(patient, stage, survival_time, event)")
    return {"rnaseq": f"results/expression/{coh['dataset']}/counts.tsv.gz",
            **omics_paths(config, "coherent (source toy)"),
            "clinical": clinical, "wsi": wsi, "splits": "results/splits/coherent.tsv"}


def slides(config: dict, samples, slide_samples) -> list[str]:
    """The slides embed_coherent_slides pools: those of the datasets the coherent split scheme
    covers (``splits.schemes.coherent.datasets``; null = every dataset with expression that is
    not normalised against another, as :func:`crossmodal.splits.scheme_datasets` resolves it)."""
    from crossmodal.splits import scheme_datasets

    settings = config["splits"]["schemes"].get("coherent") or {}
    inside = set(scheme_datasets(settings, samples, config["expression"]["reference"]))
    return [s for s in slide_samples if samples.loc[s, "dataset"] in inside]


def shard_inputs(config: dict) -> dict:
    """train_coherent_diffusion's ``shards`` input: the ``coherent.train_jobs`` shard banks it
    joins, or nothing when it trains the 16 models itself (``train_jobs: 1``)."""
    n = int(config["coherent"]["train_jobs"])
    if n == 1:
        return {}
    return {"shards": [f"{DIR}/models/shards/{i}_of_{n}.pt" for i in range(n)]}


def bank_job(config: dict) -> dict:
    """train_coherent_diffusion's GPUs and runtime (minutes): it trains the 16 models (one GPU,
    24 h) or, with ``coherent.train_jobs`` > 1, only joins the shard banks (no GPU, minutes)."""
    one = int(config["coherent"]["train_jobs"]) == 1
    return {"gpus": 1 if one else 0, "runtime": 1440 if one else 30}


def layouts(config: dict) -> dict:
    return {"rnaseq": "xena" if config["coherent"]["source"] == "xena" else "samples",
            "cna": "xena", "rppa": "xena", "wsi": "samples"}


def runs_by_default(config: dict) -> bool:
    """The chain joins the default target on the toy cohort or the Xena download."""
    coh = config["coherent"]
    return bool(coh["enabled"]) and (coh["source"] == "xena" or config["cohort"]["source"] == "toy")


def stand_in(config: dict) -> str:
    """What the tables must say about stand-ins next to each number."""
    parts = []
    if config["cohort"]["source"] == "toy" and config["coherent"]["source"] == "toy":
        parts.append("toy cohort")
    if not config["coherent"]["wsi_embeddings"]:
        parts.append("slide embeddings pooled from the cohort-ssl encoder (stand-in for Titan)")
    return "; ".join(parts)


def data_label(config: dict, samples) -> str:
    """``data`` of results/coherent/reproduction.tsv: ``toy`` (the toy cohort), the Xena cohort with
    its number of cancer types (cohorts of the sample sheet's coherent datasets), or the run's name
    (the toy source on a user sample sheet)."""
    if config["coherent"]["source"] == "toy":
        return "toy" if config["cohort"]["source"] == "toy" else config["run_name"]
    datasets = config["splits"]["schemes"].get("coherent", {}).get("datasets", ["tcga"])
    n = samples.loc[samples["dataset"].isin(datasets), "cohort"].nunique()
    return f"TCGA (Xena), {n} types" if n else "TCGA (Xena)"
