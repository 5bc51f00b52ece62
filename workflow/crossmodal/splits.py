"""Patient-level train / val / test splits, stratified, seeded, written once.

- scheme ``vae``: 60/20/20 of the patients, stratified by cohort (RNA-GAN Methods, "β-VAE";
  RNA-CDM Methods, "β-VAE");
- scheme ``coherent``: 80/5/15 stratified by cancer type, and **only complete cases in the
  test set** - patients with RNA, CNA, RPPA and a slide (Coherent Denoising Methods, "Data
  splitting and scaling": "Only samples with all modalities available were included in the
  test set").

Every sample of a patient gets the patient's split, so a patient never straddles splits.  A
patient whose samples fall in several strata (a GTEx donor with lung and brain cortex samples) is
stratified on the set of them, joined with "+".
Within each stratum the patients are sorted, then shuffled by a generator seeded from
``(seed, scheme, stratum)``; split sizes are ``round(n * fraction)`` for test and val (at
least one training patient kept), the rest train.  For complete-case schemes the test
patients are drawn among the stratum's complete patients only (a warning if there are too
few).  The result depends only on the sample table's content, the omics files' sample ids
and the seed - not on row order, file times or anything upstream - so reruns give
byte-identical files.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from crossmodal.fileio import write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OUT_COLUMNS = ["patient", "sample", "cohort", "dataset", "split"]


class SplitError(ValueError):
    pass


def _rng(seed: int, *parts) -> np.random.Generator:
    h = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def omics_sample_ids(path) -> set[str]:
    """Sample ids (column names after the feature column) of a Xena-layout matrix."""
    path = Path(path)
    if not path.exists():
        raise SplitError(f"{path}: omics matrix not found (expression.omics)")
    header = pd.read_csv(path, sep="\t", nrows=0)
    if header.shape[1] < 1:
        raise SplitError(f"{path}: empty omics matrix")
    return set(map(str, header.columns[1:]))


def member_rows(samples: pd.DataFrame, datasets: list[str], members: str = "expression",
                cna_ids: set | None = None, rppa_ids: set | None = None) -> pd.Series:
    """Rows of the sample table a scheme splits: in ``datasets`` and with expression
    (``members="expression"``) or with any modality - expression, a slide, or a CNA / RPPA
    profile under the sample or patient id (``"any"``)."""
    if members not in ("expression", "any"):
        raise SplitError(f"splits: members must be 'expression' or 'any', got {members!r}")
    ds = samples["dataset"].isin(datasets)
    has = samples["expression"].fillna("").astype(str) != ""
    if members == "any":
        ids = (cna_ids or set()) | (rppa_ids or set())
        has = has | (samples["slide"].fillna("").astype(str) != "") | samples["sample"].isin(ids) \
            | samples["patient"].isin(ids)
    return ds & has


def patient_table(samples: pd.DataFrame, datasets: list[str], *, stratify: str = "cohort",
                  cna_ids: set | None = None, rppa_ids: set | None = None,
                  members: str = "expression") -> pd.DataFrame:
    """One row per patient with expression in ``datasets`` (``members="any"``: with any
    modality, :func:`member_rows`): stratum and modality flags.

    A CNA / RPPA profile belongs to a patient when a column of the omics matrix is one of the
    patient's sample ids or the patient id itself.
    """
    if stratify not in samples.columns:
        raise SplitError(f"splits: stratify column {stratify!r} is not a sample-table column "
                         f"({', '.join(samples.columns)})")
    s = samples.copy()
    s["expression"] = s["expression"].fillna("").astype(str)
    s["slide"] = s["slide"].fillna("").astype(str)
    rna = s[member_rows(s, datasets, members, cna_ids, rppa_ids)]
    if rna.empty:
        what = "expression" if members == "expression" else "any modality"
        raise SplitError(f"splits: no sample with {what} in dataset(s) {', '.join(datasets)} "
                         f"(datasets in the sample table: {', '.join(sorted(s['dataset'].unique()))})")
    if rna[stratify].isna().any():
        bad = rna.loc[rna[stratify].isna(), "sample"].iloc[0]
        raise SplitError(f"splits: sample {bad} has no {stratify} value (stratify column)")
    # A patient with samples in several strata (a GTEx donor who gave lung and brain cortex) is
    # stratified on the set of its values ("GTEx-Brain_Cortex+GTEx-Lung"): the patient stays in
    # one split and each single-value stratum keeps its shares.
    strata = rna.groupby("patient")[stratify].agg(lambda v: "+".join(sorted(set(map(str, v)))))
    multi = rna.groupby("patient")[stratify].nunique() > 1
    if multi.any():
        log.info("splits: %d of %d patients have samples in several %s values; each is stratified "
                 "on its set of values (e.g. %s)", int(multi.sum()), len(strata), stratify,
                 strata[multi].iloc[0])
    pts = strata.rename("stratum").to_frame().sort_index()
    allrows = s[s["patient"].isin(pts.index)]
    ids = allrows.groupby("patient")["sample"].apply(lambda x: set(x))
    pts["has_rna"] = allrows[allrows["expression"] != ""].groupby("patient").size().reindex(pts.index).fillna(0) > 0
    pts["has_slide"] = allrows.groupby("patient")["slide"].apply(lambda x: (x != "").any())
    for name, idset in (("has_cna", cna_ids), ("has_rppa", rppa_ids)):
        if idset is None:
            pts[name] = False
        else:
            pts[name] = [bool((ids[p] | {p}) & idset) for p in pts.index]
    pts["complete"] = pts[["has_rna", "has_slide", "has_cna", "has_rppa"]].all(axis=1)
    return pts


def _sizes(n: int, val: float, test: float) -> tuple[int, int]:
    n_test = int(np.floor(n * test + 0.5))
    n_val = int(np.floor(n * val + 0.5))
    while n_test + n_val > max(n - 1, 0) and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def assign_splits(pts: pd.DataFrame, *, train: float, val: float, test: float, seed: int,
                  scheme: str, complete_case_test: bool = False) -> pd.Series:
    """``patient -> split`` for the patient table of :func:`patient_table`."""
    total = train + val + test
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"splits.schemes.{scheme}: train + val + test = {total:g}, must be 1")
    out = {}
    for stratum in sorted(pts["stratum"].unique()):
        group = pts[pts["stratum"] == stratum].sort_index()
        rng = _rng(seed, scheme, stratum)
        order = list(group.index[rng.permutation(len(group))])
        n_val, n_test = _sizes(len(order), val, test)
        if complete_case_test:
            complete = [p for p in order if group.at[p, "complete"]]
            if len(complete) < n_test:
                log.warning("splits %s: stratum %s has %d complete patient(s), fewer than the %d test "
                            "patients asked for; the test set takes all of them", scheme, stratum,
                            len(complete), n_test)
                n_test = len(complete)
            test_p = complete[:n_test]
        else:
            test_p = order[:n_test]
        rest = [p for p in order if p not in set(test_p)]
        for p in test_p:
            out[p] = "test"
        for p in rest[:n_val]:
            out[p] = "val"
        for p in rest[n_val:]:
            out[p] = "train"
        log.info("splits %s: %s: %d patients -> train %d / val %d / test %d", scheme, stratum,
                 len(order), len(rest) - n_val, n_val, len(test_p))
    return pd.Series(out, name="split").sort_index()


def scheme_datasets(settings: dict, samples: pd.DataFrame, reference: dict | None) -> list[str]:
    """The datasets a scheme splits: ``settings['datasets']`` or every dataset with expression
    that is not normalised against another one (``expression.reference``)."""
    if settings.get("datasets"):
        return list(settings["datasets"])
    has = samples[samples["expression"].fillna("").astype(str) != ""]["dataset"].unique()
    return sorted(d for d in has if d not in (reference or {}))


def make_splits(samples: pd.DataFrame, settings: dict, *, seed: int, scheme: str,
                reference: dict | None = None, cna_ids=None, rppa_ids=None) -> pd.DataFrame:
    """The split table (columns patient, sample, cohort, dataset, split) of one scheme."""
    datasets = scheme_datasets(settings, samples, reference)
    cc = bool(settings.get("complete_case_test", False))
    if cc and (cna_ids is None or rppa_ids is None):
        raise SplitError(f"splits.schemes.{scheme}: complete_case_test needs the CNA and RPPA matrices")
    members = settings.get("members", "expression")
    pts = patient_table(samples, datasets, stratify=settings.get("stratify", "cohort"),
                        cna_ids=cna_ids, rppa_ids=rppa_ids, members=members)
    split = assign_splits(pts, train=settings["train"], val=settings["val"], test=settings["test"],
                          seed=seed, scheme=scheme, complete_case_test=cc)
    s = samples[samples["patient"].isin(split.index) & member_rows(samples, datasets, members, cna_ids, rppa_ids)]
    out = s[["patient", "sample", "cohort", "dataset"]].copy()
    out["split"] = out["patient"].map(split)
    return out.sort_values(["patient", "sample"]).reset_index(drop=True)[OUT_COLUMNS]


@step("make_splits")
def make_splits_step(inputs, outputs, params, *, threads=1, log=None):
    """Patient-level stratified train/val/test split of one scheme -> results/splits/<scheme>.tsv."""
    samples = pd.DataFrame(params["samples"])
    settings = params["settings"]
    cna = omics_sample_ids(inputs["cna"]) if inputs.get("cna") else None
    rppa = omics_sample_ids(inputs["rppa"]) if inputs.get("rppa") else None
    table = make_splits(samples, settings, seed=int(params["seed"]), scheme=params["scheme"],
                        reference=params.get("reference"), cna_ids=cna, rppa_ids=rppa)
    write_table(outputs["splits"], table, index=False)
    return table


def load_splits(path) -> pd.DataFrame:
    """Read a split table written by ``make_splits`` (indexed by sample)."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = set(OUT_COLUMNS) - set(df.columns)
    if missing:
        raise SplitError(f"{path}: not a split table (missing columns {', '.join(sorted(missing))})")
    return df.set_index("sample", drop=False)


def select_lmdbs(lmdbs, splits: pd.DataFrame, which_splits, *, cohorts=None, only_cohorts: bool = False,
                 what: str = "tiles") -> list[str]:
    """The tile LMDBs (in the given order) whose slide's sample is in one of ``which_splits`` of
    the split table and, when ``cohorts`` is given, in one of those cohorts.

    The sample is read from each LMDB's header, not guessed from its file name.  A sample missing
    from the split table is an error naming the LMDB; with ``only_cohorts`` so is a sample of
    another cohort (the caller was handed the wrong LMDBs); an empty selection is an error naming
    ``what`` asked for it."""
    from crossmodal.data import read_header

    sp = splits.set_index("sample") if "sample" in splits.columns else splits
    cohorts = None if cohorts is None else [str(c) for c in ([cohorts] if isinstance(cohorts, str) else cohorts)]
    which = {str(w) for w in ([which_splits] if isinstance(which_splits, str) else which_splits)}
    keep = []
    for p in lmdbs:
        sample = str(read_header(p).get("sample", ""))
        if sample not in sp.index:
            raise SplitError(f"{p}: sample {sample!r} is not in the split table")
        cohort = str(sp.loc[sample, "cohort"])
        if cohorts is not None and cohort not in cohorts:
            if only_cohorts:
                raise SplitError(f"{p}: sample {sample} is {cohort}, not {' / '.join(cohorts)}")
            continue
        if str(sp.loc[sample, "split"]) in which:
            keep.append(str(p))
    if not keep:
        of = f"of cohorts {cohorts} " if cohorts is not None else ""
        raise SplitError(f"{what}: no slides {of}in splits {sorted(which)} among {len(lmdbs)} tile LMDBs")
    return keep
