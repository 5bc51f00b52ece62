"""Gene harmonisation: one samples x genes count matrix per dataset.

Each sample's expression file is read with the reader of its ``expression_format``; genes are
gene symbols (Ensembl version suffixes stripped, duplicated symbols summed - see
:mod:`crossmodal.expression.readers`).  The dataset's matrix then keeps

1. the genes measured in **every** sample of the dataset (RNA-CDM Methods, "Data processing":
   "we selected those genes the different cancer types have in common"), and
2. if a protein-coding gene list is configured, only the genes on it (RNA-GAN Methods,
   "Data": 19,198 protein-coding genes).  ``None`` keeps the intersection alone.

A gene list is a TSV with a ``gene_name`` (or ``gene`` / ``symbol``) column; when it also has
``gene_type``, only rows with ``gene_type == protein_coding`` count.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from crossmodal.expression.readers import (
    ExpressionInputError,
    collapse_duplicates,
    read_gct,
    read_geo_series_matrix,
    read_kallisto_abundance,
    read_star_counts,
    strip_version,
)

log = logging.getLogger(__name__)

PER_SAMPLE = {"star_counts", "kallisto", "fastq"}
SHARED = {"gct", "geo_series_matrix"}


def load_gene_list(path) -> list[str]:
    """Gene symbols of a gene-list TSV (protein-coding rows only when ``gene_type`` is given)."""
    path = Path(path)
    if not path.exists():
        raise ExpressionInputError(f"{path}: gene list not found (expression.protein_coding)")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    col = next((c for c in ("gene_name", "gene", "symbol") if c in df.columns), None)
    if col is None:
        raise ExpressionInputError(f"{path}: gene list needs a gene_name, gene or symbol column "
                                   f"(columns: {', '.join(df.columns)})")
    if "gene_type" in df.columns:
        df = df[df["gene_type"] == "protein_coding"]
    genes = sorted(set(df[col]) - {""})
    if not genes:
        raise ExpressionInputError(f"{path}: gene list holds no protein-coding gene")
    return genes


_ENSEMBL = re.compile(r"^ENSG\d{11}(\.\d+)?(_PAR_Y)?$")


def load_gene_ids(path) -> pd.Series | None:
    """``gene_id`` (unversioned Ensembl) -> symbol of a gene-list TSV with a ``gene_id`` and a
    ``gene_name`` column (all rows, whatever their type); None when it has no ids."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "gene_id" not in df.columns or "gene_name" not in df.columns:
        return None
    df = df[(df["gene_id"] != "") & (df["gene_name"] != "")]
    ids = strip_version(df["gene_id"])
    return pd.Series(df["gene_name"].to_numpy(), index=ids).groupby(level=0).first()


def ensembl_to_symbols(m: pd.DataFrame, id_to_symbol: pd.Series | None, path, *,
                       duplicates: str = "sum") -> pd.DataFrame:
    """A table whose gene ids are Ensembl ids (``ENSG...``, e.g. GSE120795's supplementary counts)
    on gene symbols: ids mapped through ``id_to_symbol`` (the gene list's ``gene_id``), rows of an
    unmapped id dropped, a symbol's rows handled by ``duplicates`` (as in every reader).  A table of symbols is returned unchanged;
    Ensembl ids without a mapping are an error naming the file (otherwise no gene would match
    the reference and every gene would be set to the missing value)."""
    ids = pd.Series(m.index.astype(str))
    if len(ids) == 0 or ids.str.match(_ENSEMBL).mean() < 0.5:
        return m
    if id_to_symbol is None:
        raise ExpressionInputError(f"{path}: genes are Ensembl ids (e.g. {ids.iloc[0]}), not symbols; "
                                   "give expression.protein_coding a gene list with gene_id and gene_name "
                                   "columns to map them")
    sym = id_to_symbol.reindex(strip_version(ids)).to_numpy()
    keep = pd.notna(sym)
    log.info("%s: %d of %d Ensembl ids mapped to gene symbols through the gene list (%d dropped)",
             path, int(keep.sum()), len(ids), int((~keep).sum()))
    if not keep.any():
        raise ExpressionInputError(f"{path}: none of its {len(ids)} Ensembl ids (e.g. {ids.iloc[0]}) is on "
                                   "the gene list's gene_id column")
    out = m.loc[keep]
    out.index = pd.Index(sym[keep], name=m.index.name)
    return collapse_duplicates(out, path, duplicates=duplicates)


def read_sample_counts(sources: list[dict], *, t2g=None, nan_policy="error", duplicates="sum",
                       star_column="unstranded", kallisto_value="est_counts",
                       id_to_symbol: pd.Series | None = None) -> dict[str, pd.Series]:
    """``{sample: counts per gene}`` for ``sources`` = ``[{sample, format, file}, ...]``.

    A shared file (GCT, GEO series matrix) is read once; a sample id absent from it, or a
    per-sample file that does not exist, is an error naming the sample and the file.  A GEO
    table of Ensembl ids is put on symbols with ``id_to_symbol`` (:func:`ensembl_to_symbols`).
    """
    shared: dict[str, pd.DataFrame] = {}
    out: dict[str, pd.Series] = {}
    for src in tqdm(sources, desc="reading expression", unit="sample", disable=len(sources) < 20):
        sample, fmt, path = src["sample"], src["format"], str(src["file"])
        if not Path(path).exists():
            raise ExpressionInputError(f"sample {sample}: expression file {path} does not exist")
        if fmt == "star_counts":
            s = read_star_counts(path, column=star_column, nan_policy=nan_policy, duplicates=duplicates)
        elif fmt in ("kallisto", "fastq"):
            if t2g is None:
                raise ExpressionInputError(f"sample {sample}: {fmt} input needs a transcript-to-gene table "
                                           "(expression.kallisto.t2g)")
            s = read_kallisto_abundance(path, t2g, value=kallisto_value, nan_policy=nan_policy)
        elif fmt in SHARED:
            if path not in shared:
                if fmt == "gct":
                    shared[path] = read_gct(path, nan_policy=nan_policy, duplicates=duplicates)
                else:
                    m = read_geo_series_matrix(path, nan_policy=nan_policy, duplicates=duplicates)[0]
                    shared[path] = ensembl_to_symbols(m, id_to_symbol, path, duplicates=duplicates)
            m = shared[path]
            if sample not in m.columns:
                raise ExpressionInputError(f"sample {sample}: no column {sample!r} in {path} "
                                           f"({m.shape[1]} sample columns, e.g. {', '.join(map(str, m.columns[:3]))})")
            s = m[sample]
        else:
            raise ExpressionInputError(f"sample {sample}: unknown expression_format {fmt!r}")
        out[sample] = s.astype(float)
    return out


def harmonise(per_sample: dict[str, pd.Series], gene_list: list[str] | None = None, *,
              min_sample_genes: float = 0.5, files: dict[str, str] | None = None):
    """``(samples x genes matrix, qc)``: genes common to all samples, on the list if given.

    A sample holding fewer genes than ``min_sample_genes`` x the median sample's count is an
    error naming it (and its file, from ``files``): the intersection would otherwise shrink
    every sample to that file's genes - a file cut at a line boundary reads as a small panel.
    ``qc["genes_per_sample"]`` gives the min / median / max and the sample with the fewest."""
    if not per_sample:
        raise ValueError("no samples to harmonise")
    counts = pd.Series({k: int(len(v)) for k, v in per_sample.items()})
    med = float(counts.median())
    few = counts[counts < min_sample_genes * med].sort_values()
    if len(few):
        files = files or {}
        named = "; ".join(f"{k}: {n} genes" + (f" ({files[k]})" if k in files else "") for k, n in few.items())
        raise ExpressionInputError(
            f"{len(few)} sample(s) hold fewer than {min_sample_genes:g} x the median sample's {med:g} genes - "
            f"{named}. Only genes in every sample are kept, so these would shrink the whole matrix: a truncated "
            "or wrong file? (expression.min_sample_genes: 0 keeps them)")
    union = pd.Index([])
    common = None
    for s in per_sample.values():
        union = union.union(s.index)
        common = s.index if common is None else common.intersection(s.index)
    genes = pd.Index(sorted(common))
    qc = {"n_samples": len(per_sample), "n_genes_union": int(len(union)),
          "n_genes_common": int(len(genes)), "n_dropped_not_in_all_samples": int(len(union) - len(genes)),
          "genes_per_sample": {"min": int(counts.min()), "median": med, "max": int(counts.max()),
                               "fewest": str(counts.idxmin())}}
    if gene_list is not None:
        keep = genes.intersection(pd.Index(gene_list))
        qc["protein_coding_list_size"] = len(gene_list)
        qc["n_dropped_not_protein_coding"] = int(len(genes) - len(keep))
        qc["n_list_genes_absent"] = int(len(set(gene_list) - set(keep)))
        genes = keep
    if len(genes) == 0:
        raise ExpressionInputError("no gene is common to all samples (and on the gene list): "
                                   "check the gene identifiers of the inputs")
    mat = pd.DataFrame({k: v.reindex(genes).to_numpy() for k, v in per_sample.items()},
                       index=genes).T
    mat.index.name = "sample"
    mat.columns.name = "gene"
    qc["n_genes"] = int(mat.shape[1])
    lib = mat.sum(axis=1)
    qc["library_size"] = {"min": float(lib.min()), "median": float(np.median(lib)), "max": float(lib.max())}
    log.info("harmonised %d samples: %d genes in the union, %d in all samples, %d kept",
             len(per_sample), len(union), qc["n_genes_common"], qc["n_genes"])
    return mat, qc
