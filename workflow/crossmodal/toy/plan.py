"""The toy cohort's sample sheet and file layout, computed from the config alone.

Nothing here reads or writes files, so Snakemake can call :func:`plan` and
:func:`cohort_outputs` while it builds the DAG.
"""
from __future__ import annotations

import functools
import json

import pandas as pd

from crossmodal.config import SCHEMA_DIR, validate
from crossmodal.samplesheet import COLUMNS

ROOT = "results/toy"
CELL_TYPES = ["tumour", "lymphocyte", "connective", "necrotic", "normal_epithelial"]
STAR_SUFFIX = ".rna_seq.augmented_star_gene_counts.tsv"

# the files make_cohort writes, relative to the toy root (besides the per-sample ones)
FIXED_OUTPUTS = {
    "samples": "cohort/samples.tsv",
    "clinical": "cohort/clinical.tsv",
    "cna": "cohort/omics/cna.tsv.gz",
    "rppa": "cohort/omics/rppa.tsv.gz",
    "gene_groups": "cohort/gene_groups.tsv",
    "gct": "cohort/expression/gtex/gene_tpm.gct",
    "geo": "cohort/expression/external/GSE_TOY_series_matrix.txt",
    "transcriptome": "cohort/fastq/transcriptome.fa",
    "t2g": "cohort/fastq/t2g.tsv",
    "fractions": "truth/fractions.tsv",
    "patients": "truth/patients.tsv",
    "genes": "truth/genes.tsv",
    "slides": "truth/slides.tsv",
    "rppa_map": "truth/rppa_map.tsv",
    "fastq_abundance": "truth/fastq_abundance.tsv",
    "readme": "truth/README.md",
    "manifest": "truth/manifest.json",
    "figure": "truth/overview.png",
    "figure_pdf": "truth/overview.pdf",
}


def toy_settings(config: dict) -> tuple[dict, int]:
    """``(toy section with defaults filled, seed)`` from a full config or a bare toy section.

    ``config`` is either a pipeline config (keys ``seed``, ``toy``, ...) or a dict with only
    ``seed`` and ``toy``; missing toy keys take the schema's defaults.
    """
    toy = json.loads(_validated(json.dumps(config.get("toy") or {}, sort_keys=True)))
    return toy, int(config.get("seed", 0))


@functools.lru_cache(maxsize=16)
def _validated(toy_json: str) -> str:
    # validation re-reads the schema files; Snakemake asks for the plan several times
    toy = json.loads(toy_json)
    validate(toy, SCHEMA_DIR / "config" / "toy.schema.yaml", "config: toy")
    return json.dumps(toy)


def _abbr(project: str) -> str:
    return project.split("-", 1)[1]


def plan(config: dict, root: str = ROOT) -> pd.DataFrame:
    """The toy cohort's sample sheet (columns ``samplesheet.COLUMNS``), paths under ``root``."""
    toy, _ = toy_settings(config)
    c = f"{root}/cohort"
    rows = []

    def add(patient, sample, cohort, dataset, slide, expression, fmt):
        rows.append(dict(patient=patient, sample=sample, cohort=cohort, dataset=dataset,
                         slide=slide, expression=expression, expression_format=fmt, mpp=None))

    for project in toy["cancer_types"]:
        for i in range(1, toy["patients_per_cancer"] + 1):
            patient = f"TOY-{_abbr(project)}-{i:04d}"
            sample = f"{patient}-01A"
            add(patient, sample, project, "tcga", f"{c}/slides/{sample}.svs",
                f"{c}/expression/star_counts/{sample}{STAR_SUFFIX}", "star_counts")
    for k, tissue in enumerate(toy["tissues"], start=1):
        for i in range(1, toy["patients_per_tissue"] + 1):
            patient = f"GTEX-TOY{k}{i:03d}"
            sample = f"{patient}-0126-SM-TOY{k}"
            add(patient, sample, tissue, "gtex", f"{c}/slides/{sample}.svs",
                f"{c}/{FIXED_OUTPUTS['gct'].split('/', 1)[1]}", "gct")
    n = 0
    for project in toy["cancer_types"]:
        for _ in range(toy["external_per_cancer"]):
            n += 1
            add(f"GEO-TOY-{n:04d}", f"GSM9{n:06d}", project, "external", "",
                f"{c}/{FIXED_OUTPUTS['geo'].split('/', 1)[1]}", "geo_series_matrix")
    for i in range(1, toy["fastq_samples"] + 1):
        patient = f"TOY-FQ-{i:04d}"
        sample = f"{patient}-01A"
        project = toy["cancer_types"][(i - 1) % len(toy["cancer_types"])]
        add(patient, sample, project, "fastq", "", f"{c}/fastq/{sample}.fastq.gz", "fastq")
    return pd.DataFrame(rows, columns=COLUMNS)


def cohort_outputs(config: dict, root: str = ROOT) -> dict:
    """Outputs of rule ``make_toy_cohort`` (everything but the slides), by name.

    Every key of ``FIXED_OUTPUTS``, plus ``star_counts`` and ``fastq`` (per-sample lists) and
    ``files``: every path except samples, clinical, slides and the figure, in one list.
    """
    sheet = plan(config, root)
    out: dict = {k: f"{root}/{v}" for k, v in FIXED_OUTPUTS.items()}
    out["star_counts"] = sheet.loc[sheet.expression_format == "star_counts", "expression"].tolist()
    out["fastq"] = sheet.loc[sheet.expression_format == "fastq", "expression"].tolist()
    named = {"samples", "clinical", "slides", "figure", "figure_pdf"}
    out["files"] = ([v for k, v in out.items() if k in FIXED_OUTPUTS and k not in named]
                    + out["star_counts"] + out["fastq"])
    return out


def slide_outputs(config: dict, root: str = ROOT) -> list[str]:
    """Every toy slide path (one ``make_toy_slide`` job each)."""
    sheet = plan(config, root)
    return [s for s in sheet["slide"] if s]
