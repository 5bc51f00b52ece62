"""PathGen cases: patient-level splits, clinical labels, gene groups and the expression hand-over.

* :func:`case_splits` - train / validation / calibration / test by patient (PathGen
  Figure 1a-b(ii)): train and validation from the shared scheme ``results/splits/<scheme>.tsv``,
  its test patients divided (seeded, by patient) into calibration and test.
* :func:`read_gene_groups` - the six MCAT groups, matched to the expression matrix by **exact**
  symbol (the public code matches by prefix and pulls in wrong genes).
* :func:`prepare` - the case table (grade label, survival time bin fitted on the training
  split, demographics, magnification level) and the real expression z-scored with the
  training split's statistics (:mod:`crossmodal.expression.normalise`).
* :func:`write_expression` / :func:`read_expression` - the per-case expression file format
  described in :mod:`crossmodal.pathgen`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from crossmodal.fileio import write_json, write_table
from crossmodal.splits import assign_splits

log = logging.getLogger(__name__)

META_COLUMNS = ["patient", "split", "source", "n_draws"]
SPLIT_NAMES = ("train", "val", "calibration", "test")


class PathGenDataError(ValueError):
    """Bad PathGen input; the message names the file."""


def case_splits(scheme: pd.DataFrame, samples, *, calibration_fraction: float, seed: int) -> pd.DataFrame:
    """Rows of the shared split table (results/splits/<scheme>.tsv) for ``samples``, with the
    scheme's test patients divided by patient into ``calibration`` and ``test``.

    Train and validation are the scheme's.  The division is stratified by cohort and seeded
    (:func:`crossmodal.splits.assign_splits`), so it depends only on the split table and the seed.
    """
    need = {"sample", "patient", "cohort", "split"}
    if need - set(scheme.columns):
        raise PathGenDataError(f"split table: missing column(s) {', '.join(sorted(need - set(scheme.columns)))}")
    df = scheme[scheme["sample"].isin(list(samples))].copy()
    if df.empty:
        raise PathGenDataError("split table: none of the PathGen cases is in the split scheme")
    test_pts = df[df.split == "test"].groupby("patient")["cohort"].first().to_frame("stratum")
    if len(test_pts):
        f = float(calibration_fraction)
        part = assign_splits(test_pts, train=1 - f, val=0.0, test=f, seed=seed, scheme="pathgen-calibration")
        cal = set(part.index[part == "test"])
        df.loc[df.patient.isin(cal) & (df.split == "test"), "split"] = "calibration"
    log.info("pathgen splits: %s", df.drop_duplicates("patient")["split"].value_counts().to_dict())
    return df.sort_values(["patient", "sample"]).reset_index(drop=True)


def read_gene_groups(path) -> pd.DataFrame:
    """Long table with columns ``gene`` and ``group`` (any order, extra columns ignored);
    groups keep the order of their first appearance, genes their order within a group.  A gene
    may belong to several groups (as in MCAT's signatures.csv); it is then listed once per group."""
    path = Path(path)
    if not path.is_file():
        raise PathGenDataError(f"gene groups {path}: file not found")
    df = pd.read_csv(path, sep="\t" if path.suffix != ".csv" else ",", dtype=str, keep_default_na=False)
    missing = {"gene", "group"} - set(df.columns)
    if missing:
        raise PathGenDataError(f"gene groups {path}: missing column(s) {', '.join(sorted(missing))}")
    df = df[(df.gene.str.strip() != "") & (df.group.str.strip() != "")][["gene", "group"]]
    df = df.assign(gene=df.gene.str.strip()).drop_duplicates(["gene", "group"])
    dup = df.gene[df.gene.duplicated()].unique()
    if len(dup):
        # MCAT builds each group's vector independently, so a gene listed in several groups
        # (EGFR: oncogene and protein kinase) is kept in each of them
        log.info("gene groups %s: %d gene(s) belong to several groups and are kept in each, e.g. %s",
                 path, len(dup), ", ".join(dup[:10]))
    order = list(dict.fromkeys(df.group))
    df["group"] = pd.Categorical(df.group, categories=order, ordered=True)
    return df.sort_values("group", kind="stable").reset_index(drop=True).astype({"group": str})


def with_features(genes: pd.DataFrame) -> pd.DataFrame:
    """``genes`` (rows gene, group) with a ``feature`` column: the expression-file column of the
    row - the gene symbol, or ``<gene>|<group>`` for a gene listed in several groups (each group
    then has its own column: the same real value, its own synthesized value)."""
    g = genes.reset_index(drop=True).copy()
    multi = g.gene.duplicated(keep=False)
    g["feature"] = np.where(multi, g.gene + "|" + g.group, g.gene)
    return g[["gene", "group", "feature"] + [c for c in g.columns if c not in ("gene", "group", "feature")]]


def read_genes(path) -> pd.DataFrame:
    """``results/pathgen/genes.tsv``: rows ``gene, group, feature`` in hand-over column order
    (files written before ``feature`` existed get it from :func:`with_features`)."""
    path = Path(path)
    if not path.is_file():
        raise PathGenDataError(f"gene table {path}: not found")
    g = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if {"gene", "group"} - set(g.columns):
        raise PathGenDataError(f"gene table {path}: needs columns gene, group (has {', '.join(g.columns)})")
    if "feature" not in g.columns:
        g = with_features(g[["gene", "group"]])
    if g.feature.duplicated().any():
        raise PathGenDataError(f"gene table {path}: feature {g.feature[g.feature.duplicated()].iloc[0]!r} "
                               "listed twice")
    # the models cut the hand-over columns into groups by size in order of first appearance, so
    # a group split over two runs of rows would silently give genes to the wrong group's token
    runs = g.group[g.group != g.group.shift()]
    if runs.duplicated().any():
        raise PathGenDataError(f"gene table {path}: the rows of group {runs[runs.duplicated()].iloc[0]!r} are not "
                               "contiguous (each group's genes must follow one another)")
    return g


def match_groups(groups: pd.DataFrame, available) -> tuple[pd.DataFrame, dict]:
    """Keep the genes whose symbol is **exactly** a column of the expression matrix."""
    avail = set(map(str, available))
    keep = groups[groups.gene.isin(avail)].reset_index(drop=True)
    qc = {}
    for g, sub in groups.groupby("group", sort=False):
        n_in = int(sub.gene.isin(avail).sum())
        qc[g] = {"listed": int(len(sub)), "matched": n_in,
                 "unmatched": sorted(set(sub.gene) - avail)[:50]}
    empty = [g for g, q in qc.items() if q["matched"] == 0]
    if empty:
        raise PathGenDataError(f"gene groups: no gene of group(s) {', '.join(empty)} is in the expression matrix "
                               "(exact symbol match)")
    return keep, qc


def planted_groups(groups: pd.DataFrame, truth_path) -> pd.DataFrame:
    """The toy's planted-signal genes of ``groups``: a cell-type marker (``marker_of``) or a
    non-zero ``*_loading`` (survival, MSI) in the toy answer key (results/toy/truth/genes.tsv)."""
    truth_path = Path(truth_path)
    if not truth_path.is_file():
        raise PathGenDataError(f"toy answer key {truth_path}: file not found")
    t = pd.read_csv(truth_path, sep="\t")
    need = {"gene", "marker_of", "survival_loading"} - set(t.columns)
    if need:
        raise PathGenDataError(f"toy answer key {truth_path}: missing column(s) {', '.join(sorted(need))}")
    planted = t.marker_of.fillna("").astype(str).str.strip() != ""
    for c in [c for c in t.columns if c.endswith("_loading")]:  # survival, MSI (and any later program)
        planted |= t[c].fillna(0).astype(float) != 0
    keep = groups[groups.gene.isin(set(t.gene[planted]))].reset_index(drop=True)
    log.info("pathgen.planted_only: %d of %d genes carry a planted signal", len(keep), len(groups))
    return keep


def write_expression(path, values: pd.DataFrame, meta: pd.DataFrame) -> None:
    """Write the per-case expression file (format in :mod:`crossmodal.pathgen`)."""
    missing = set(META_COLUMNS) - set(meta.columns)
    if missing:
        raise ValueError(f"write_expression: meta lacks {', '.join(sorted(missing))}")
    df = pd.concat([meta[META_COLUMNS].loc[values.index], values], axis=1)
    df.index.name = "sample"
    write_table(path, df, float_format="%.5g")


def read_expression(path, genes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(values (cases x features, in genes.tsv order), meta)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise PathGenDataError(f"expression file {path}: not found")
    df = pd.read_csv(path, sep="\t", index_col="sample")
    missing_meta = [c for c in META_COLUMNS if c not in df.columns]
    if missing_meta:
        raise PathGenDataError(f"expression file {path}: missing column(s) {', '.join(missing_meta)}")
    want = list(genes.feature if "feature" in genes.columns else genes.gene)
    missing = [g for g in want if g not in df.columns]
    if missing:
        raise PathGenDataError(f"expression file {path}: {len(missing)} feature(s) of genes.tsv missing, "
                               f"e.g. {', '.join(missing[:5])}")
    vals = df[want].astype(float)
    if vals.isna().any().any():
        raise PathGenDataError(f"expression file {path}: {int(vals.isna().sum().sum())} missing values")
    return vals, df[META_COLUMNS]


def age_group(age) -> str:
    """PathGen Table 4 age groups."""
    if pd.isna(age):
        return "unknown"
    return "age < 40" if age < 40 else ("age 40-60" if age <= 60 else "age > 60")


def prepare(samples: pd.DataFrame, counts: pd.DataFrame, clinical: pd.DataFrame, groups: pd.DataFrame,
            embeddings: dict[str, dict], splits: pd.DataFrame, *, n_bins: int, pseudocount: float = 1.0):
    """``(cases, genes, real_values, real_meta, qc)`` for the cases with slide + expression + clinical."""
    from crossmodal.expression.normalise import apply_scaler, fit_scaler, log_transform
    from crossmodal.metrics.survival import assign_bins, time_bins

    genes, gqc = match_groups(groups, counts.columns)
    sp = splits.set_index("sample")
    clin = clinical.set_index("patient")
    rows, excluded = [], []
    for s in sp.index:
        pat = sp.at[s, "patient"]
        why = None
        if s not in counts.index:
            why = "no expression"
        elif pat not in clin.index:
            why = "no clinical record"
        elif s not in embeddings:
            why = "no slide embedding"
        elif embeddings[s]["n"] == 0:
            why = "no tissue patch"
        elif pd.isna(clin.at[pat, "survival_time"]):
            why = "survival missing"
        elif not is_grade(clin.at[pat, "grade"]):
            # GX / Not Applicable / Unknown: no grade label.  MCAT_GR trains both heads on every
            # case, so the case is excluded (listed in prepare_qc.json), not kept for survival only
            why = f"grade missing or not assessable ({clin.at[pat, 'grade']!r})" if not pd.isna(
                clin.at[pat, "grade"]) else "grade missing"
        if why:
            excluded.append({"sample": s, "reason": why})
            continue
        c = clin.loc[pat]
        rows.append({"sample": s, "patient": pat, "cohort": sp.at[s, "cohort"], "split": sp.at[s, "split"],
                     "grade_name": str(c["grade"]), "survival_time": float(c["survival_time"]),
                     "event": int(c["event"]), "age": float(c["age"]) if "age" in c else np.nan,
                     "sex": str(c.get("sex", "unknown")), "level": int(embeddings[s]["magnification"]),
                     "n_patches": int(embeddings[s]["n"])})
    if excluded:
        n_grade = sum(e["reason"].startswith("grade") for e in excluded)
        if n_grade:
            log.warning("pathgen: %d case(s) without an assessable grade (missing, GX, Not Applicable, "
                        "Unknown) excluded", n_grade)
        log.warning("pathgen: %d case(s) excluded: %s", len(excluded),
                    "; ".join(f"{e['sample']} ({e['reason']})" for e in excluded[:10]))
    cases = pd.DataFrame(rows).set_index("sample", drop=False)
    train = cases[cases.split == "train"]
    if len(train) < 2:
        raise PathGenDataError(f"pathgen: {len(train)} training case(s) with slide, expression and clinical data")
    grades = sorted(cases.grade_name.unique(), key=_grade_key)
    cases["grade"] = cases.grade_name.map({g: i for i, g in enumerate(grades)}).astype(int)
    # one row per training patient for the fitted statistics: a patient with several slides (one
    # case row each, the same clinical record and expression) would otherwise count several times
    train_pat = train.drop_duplicates("patient")
    edges = time_bins(train_pat.survival_time, train_pat.event.astype(bool), n_bins)
    cases["time_bin"] = assign_bins(cases.survival_time, edges)
    cases["censored"] = 1 - cases.event
    cases["age_group"] = cases.age.map(age_group)
    genes = with_features(genes)
    logx = log_transform(counts.loc[cases.index, list(dict.fromkeys(genes.gene))], pseudocount)
    scaler = fit_scaler(logx.loc[train_pat.index])
    z, _ = apply_scaler(logx, scaler)
    z = z[list(genes.gene)].set_axis(list(genes.feature), axis=1)  # one column per (group, gene) row
    meta = cases[["patient", "split"]].assign(source="real", n_draws=0)
    qc = {"n_cases": int(len(cases)), "excluded": excluded,
          "n_excluded_no_grade": sum(e["reason"].startswith("grade") for e in excluded), "grades": grades,
          "time_bin_edges": [float(e) for e in edges], "groups": gqc,
          "splits": cases.split.value_counts().to_dict(), "scaler": f"training split ({len(train_pat)} patients, first case of each)"}
    return cases.reset_index(drop=True), genes, z, meta, qc


NOT_A_GRADE = frozenset({"", "gx", "x", "unknown", "not reported", "not applicable", "not allowed to collect",
                         "--", "nan", "na", "n/a"})


def is_grade(g) -> bool:
    """False for a missing grade and for the GDC values meaning "not assessable" (GX, Unknown,
    Not Applicable, ...): those are no grade label, not a grade above the highest."""
    return not pd.isna(g) and str(g).strip().lower() not in NOT_A_GRADE


def _grade_key(g: str):
    roman = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5}
    s = str(g).upper().replace("GRADE", "").replace("G", "").strip()
    try:
        return (0, float(s))
    except ValueError:
        return (0, roman[s]) if s in roman else (1, str(g))


def read_cases(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"sample": str, "patient": str, "grade_name": str})
    need = {"sample", "patient", "split", "grade", "time_bin", "censored", "survival_time", "event"}
    if need - set(df.columns):
        raise PathGenDataError(f"case table {path}: missing {', '.join(sorted(need - set(df.columns)))}")
    return df.set_index("sample", drop=False)


def write_prepared(outputs: dict, cases, genes, z, meta, qc) -> None:
    write_table(outputs["cases"], cases, index=False)
    write_table(outputs["genes"], genes, index=False)
    write_expression(outputs["real"], z, meta)
    write_json(outputs["qc"], qc)
