"""Writers for the expression formats real data arrive in.

- GDC STAR-counts TSV (``*.rna_seq.augmented_star_gene_counts.tsv``): a ``# gene-model``
  line, the nine-column header, the four ``N_*`` STAR summary rows, then one row per gene;
- GTEx GCT v1.2 (``#1.2``, dimensions line, ``Name``/``Description`` + one column per sample);
- GEO series matrix (``!Series_*`` and ``!Sample_*`` lines, then the table between
  ``!series_matrix_table_begin`` and ``!series_matrix_table_end``, ``ID_REF`` = gene symbol).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal.fileio import write_text

STAR_HEADER = ["gene_id", "gene_name", "gene_type", "unstranded", "stranded_first",
               "stranded_second", "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded"]


def _f(x: float) -> str:
    return f"{x:.4f}"


def star_counts_text(genes: pd.DataFrame, counts: np.ndarray, rng: np.random.Generator) -> str:
    """One sample's GDC STAR-counts TSV as text (``counts``: unstranded counts per gene)."""
    counts = np.asarray(counts, dtype=np.int64)
    # a reverse-stranded library: almost all reads on the second strand
    first = rng.binomial(counts, 0.03)
    second = counts - rng.binomial(counts, 0.02)
    length_kb = genes["length_bp"].to_numpy() / 1e3
    rpk = counts / length_kb
    tpm = rpk / rpk.sum() * 1e6 if rpk.sum() > 0 else np.zeros_like(rpk)
    total = counts.sum()
    pc = genes["gene_type"].to_numpy() == "protein_coding"
    uq = np.percentile(counts[pc], 75) if pc.any() else 0
    fpkm = counts / length_kb / (total / 1e6) if total else np.zeros_like(rpk)
    fpkm_uq = counts / length_kb / (uq / 1e6) if uq else np.zeros_like(rpk)
    mapped = int(total)
    lines = ["# gene-model: GENCODE v36", "\t".join(STAR_HEADER)]
    for name, frac in [("N_unmapped", 0.04), ("N_multimapping", 0.06), ("N_noFeature", 0.05),
                       ("N_ambiguous", 0.01)]:
        v = int(rng.binomial(mapped, frac))
        lines.append(f"{name}\t\t\t{v}\t{int(rng.binomial(mapped, frac * 1.5))}\t{v // 2}\t\t\t")
    for i, (gid, sym, gt) in enumerate(zip(genes["gene_id"], genes["gene"], genes["gene_type"])):
        lines.append(f"{gid}\t{sym}\t{gt}\t{counts[i]}\t{first[i]}\t{second[i]}\t"
                     f"{_f(tpm[i])}\t{_f(fpkm[i])}\t{_f(fpkm_uq[i])}")
    return "\n".join(lines) + "\n"


def write_star_counts(path, genes, counts, rng) -> None:
    write_text(path, star_counts_text(genes, counts, rng))


def tpm(genes: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    """Transcripts per million (genes x samples) of read counts: reads per kilobase of the gene's
    length, scaled so that each sample sums to 10^6 (what GTEx's gene_tpm GCT holds)."""
    rpk = np.asarray(counts, float) / (genes["length_bp"].to_numpy(float)[:, None] / 1e3)
    tot = rpk.sum(axis=0, keepdims=True)
    return np.divide(rpk * 1e6, tot, out=np.zeros_like(rpk), where=tot > 0)


def write_gct(path, genes: pd.DataFrame, counts: np.ndarray, samples: list[str]) -> None:
    """GTEx-style GCT v1.2 of gene TPM (rows = genes, ``Name`` = Ensembl id), like the
    ``gene_tpm`` GCT the GTEx download fetches (``download.gtex.expression``, RNA-GAN's input):
    the planted per-sample library size does not survive into it, as in the real file."""
    values = tpm(genes, counts)
    lines = ["#1.2", f"{len(genes)}\t{len(samples)}", "\t".join(["Name", "Description"] + list(samples))]
    for i, (gid, sym) in enumerate(zip(genes["gene_id"], genes["gene"])):
        lines.append("\t".join([gid, sym] + [f"{v:.3f}" for v in values[i]]))
    write_text(path, "\n".join(lines) + "\n")


def write_series_matrix(path, symbols: list[str], values: np.ndarray, samples: list[str],
                        titles: list[str], labels: list[str], *, accession: str = "GSE_TOY") -> None:
    """GEO series matrix of raw counts (rows = gene symbols, columns = GSM accessions)."""
    q = lambda xs: "\t".join(f'"{x}"' for x in xs)  # noqa: E731
    head = [
        f'!Series_title\t"Toy external cohort for generalisation experiments ({accession})"',
        f'!Series_geo_accession\t"{accession}"',
        '!Series_status\t"Public on Jan 01 2024"',
        '!Series_summary\t"Simulated by crossmodal.toy: a cohort sequenced elsewhere, with a '
        'different gene panel and depth; values are raw read counts per gene."',
        '!Series_overall_design\t"Tumour RNA-seq of several cancer types."',
        '!Series_type\t"Expression profiling by high throughput sequencing"',
        '!Series_platform_id\t"GPL_TOY"',
        "",
        f"!Sample_title\t{q(titles)}",
        f"!Sample_geo_accession\t{q(samples)}",
        f"!Sample_source_name_ch1\t{q(['tumour'] * len(samples))}",
        f"!Sample_organism_ch1\t{q(['Homo sapiens'] * len(samples))}",
        f"!Sample_characteristics_ch1\t{q(['cancer type: ' + c for c in labels])}",
        f"!Sample_characteristics_ch1\t{q(['tissue: primary tumour'] * len(samples))}",
        f"!Sample_data_processing\t{q(['raw read counts per gene'] * len(samples))}",
        f"!Sample_platform_id\t{q(['GPL_TOY'] * len(samples))}",
        "!series_matrix_table_begin",
        "\t".join(['"ID_REF"'] + [f'"{s}"' for s in samples]),
    ]
    rows = ["\t".join([f'"{sym}"'] + [str(int(v)) for v in values[i]]) for i, sym in enumerate(symbols)]
    write_text(path, "\n".join(head + rows + ["!series_matrix_table_end"]) + "\n")
