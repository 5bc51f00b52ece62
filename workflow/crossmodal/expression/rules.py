"""DAG helpers for ``workflow/rules/expression.smk`` (kept here: rule files hold no logic).

Paths:

- ``results/expression/kallisto/index.idx`` and ``.../{sample}/abundance.tsv`` (+ run_info.json);
- ``results/expression/{dataset}/counts.tsv.gz`` (samples x genes) and ``qc.json``;
- ``results/splits/{scheme}.tsv``;
- ``results/expression/{dataset}/z_{scheme}.tsv.gz``, ``scaler_{scheme}.tsv``, ``z_{scheme}.qc.json``;
- ``results/expression/summary/*.png`` (+ .pdf).
"""
from __future__ import annotations

import pandas as pd

from crossmodal.splits import scheme_datasets

ROOT = "results/expression"
KALLISTO_INDEX = f"{ROOT}/kallisto/index.idx"
SAMPLE_COLUMNS = ["patient", "sample", "cohort", "dataset", "slide", "expression", "expression_format"]
FIGURES = ["library_sizes", "pca", "missing_genes"]


def _with_expression(samples: pd.DataFrame) -> pd.DataFrame:
    return samples[samples["expression"].fillna("").astype(str) != ""]


def expression_datasets(samples: pd.DataFrame) -> list[str]:
    return sorted(_with_expression(samples)["dataset"].unique())


def fastq_samples(samples: pd.DataFrame) -> list[str]:
    return sorted(samples.index[samples["expression_format"] == "fastq"])


def fastq_files(samples: pd.DataFrame, sample: str) -> list[str]:
    return [p for p in str(samples.loc[sample, "expression"]).split(";") if p]


def abundance_path(sample: str) -> str:
    return f"{ROOT}/kallisto/{sample}/abundance.tsv"


def matrix_sources(samples: pd.DataFrame, dataset: str) -> list[dict]:
    """``[{sample, format, file}]`` of a dataset; FASTQ samples read their kallisto output."""
    rows = _with_expression(samples)
    rows = rows[rows["dataset"] == dataset].sort_index()
    out = []
    for rec in rows.to_dict(orient="records"):
        if rec["expression_format"] == "fastq":
            out.append(dict(sample=rec["sample"], format="kallisto", file=abundance_path(rec["sample"])))
        else:
            out.append(dict(sample=rec["sample"], format=rec["expression_format"], file=rec["expression"]))
    return out


def matrix_inputs(samples: pd.DataFrame, config: dict, dataset: str) -> dict:
    """Named inputs of ``build_expression_matrix`` for one dataset."""
    src = matrix_sources(samples, dataset)
    if not src:
        raise ValueError(f"dataset {dataset!r} has no sample with expression")
    out: dict = {"files": sorted({s["file"] for s in src})}
    if any(s["format"] == "kallisto" for s in src):
        out["t2g"] = config["expression"]["kallisto"]["t2g"]
    if config["expression"]["protein_coding"]:
        out["genes"] = config["expression"]["protein_coding"]
    return out


def scheme_names(config: dict) -> list[str]:
    """The enabled split schemes (``splits.schemes.<name>.enabled``)."""
    return sorted(k for k, v in config["splits"]["schemes"].items() if v.get("enabled", True))


def sample_records(samples: pd.DataFrame) -> list[dict]:
    """The sample-table content a split depends on (a rule param: only content triggers reruns)."""
    return samples[SAMPLE_COLUMNS].sort_index().fillna("").astype(str).to_dict(orient="records")


def split_scheme(config: dict, scheme: str) -> dict:
    """The settings of split scheme ``scheme``; a clear error naming it if it is not configured."""
    schemes = config["splits"]["schemes"]
    if scheme not in scheme_names(config):
        raise ValueError(f"results/splits/{scheme}.tsv was requested but split scheme {scheme!r} is not "
                         f"among the enabled config splits.schemes (enabled: {', '.join(scheme_names(config)) or 'none'})")
    return schemes[scheme]


def split_inputs(config: dict, scheme: str) -> dict:
    if split_scheme(config, scheme).get("complete_case_test"):
        return omics_paths(config, f"split scheme {scheme!r} (complete_case_test)")
    return {}


def omics_paths(config: dict, who: str) -> dict:
    """``expression.omics`` (copy number, RPPA); a clear error naming the key when unset."""
    omics = config["expression"]["omics"]
    missing = [k for k in ("cna", "rppa") if not omics.get(k)]
    if missing:
        raise ValueError(f"{who} needs config expression.omics.{' and expression.omics.'.join(missing)} "
                         "(gene-level copy-number / RPPA matrices, Xena layout)")
    return {"cna": omics["cna"], "rppa": omics["rppa"]}


def normalise_plan(samples: pd.DataFrame, config: dict) -> dict[tuple[str, str], str | None]:
    """``{(dataset, scheme): reference}``: reference None = fit on the scheme's training split,
    else the dataset whose scaler is applied (``expression.reference``)."""
    ref = config["expression"]["reference"]
    plan: dict = {}
    for scheme in scheme_names(config):
        inside = scheme_datasets(config["splits"]["schemes"][scheme], samples, ref)
        for d in expression_datasets(samples):
            if d in inside:
                plan[(d, scheme)] = None
            elif d in ref and ref[d] in inside:
                plan[(d, scheme)] = ref[d]
    return plan


def normalise_inputs(samples: pd.DataFrame, config: dict, dataset: str, scheme: str) -> dict:
    plan = normalise_plan(samples, config)
    if (dataset, scheme) not in plan:
        raise ValueError(f"dataset {dataset!r} is neither split by scheme {scheme!r} nor given a "
                         "reference dataset in expression.reference")
    ref = plan[(dataset, scheme)]
    out = {"counts": f"{ROOT}/{dataset}/counts.tsv.gz"}
    if ref is None:
        out["splits"] = f"results/splits/{scheme}.tsv"
    else:
        out["scaler"] = f"{ROOT}/{ref}/scaler_{scheme}.tsv"
    return out


def normalise_targets(samples: pd.DataFrame, config: dict) -> list[str]:
    return [f"{ROOT}/{d}/z_{s}.tsv.gz" for (d, s) in sorted(normalise_plan(samples, config))]


def summary_inputs(samples: pd.DataFrame, config: dict) -> dict:
    scheme = config["expression"]["summary_scheme"]
    plan = normalise_plan(samples, config)
    ds = sorted(d for (d, s) in plan if s == scheme)
    return {
        "counts": [f"{ROOT}/{d}/counts.tsv.gz" for d in expression_datasets(samples)],
        "z": [f"{ROOT}/{d}/z_{scheme}.tsv.gz" for d in ds],
        "zqc": [f"{ROOT}/{d}/z_{scheme}.qc.json" for d in ds],
        "splits": f"results/splits/{scheme}.tsv",
    }


def targets(samples: pd.DataFrame, config: dict) -> list[str]:
    """Everything this stage adds to the default target."""
    out = [f"{ROOT}/{d}/counts.tsv.gz" for d in expression_datasets(samples)]
    out += [f"results/splits/{s}.tsv" for s in scheme_names(config)]
    out += normalise_targets(samples, config)
    out += [f"{ROOT}/summary/{f}.png" for f in FIGURES]
    return out


def choice_regex(names) -> str:
    """A wildcard constraint matching exactly ``names`` (and nothing when empty)."""
    import re

    return "(?:" + "|".join(re.escape(n) for n in names) + ")" if names else "(?!x)x"
