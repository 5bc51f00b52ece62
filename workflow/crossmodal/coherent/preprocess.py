"""Coherent Denoising preprocessing (Methods, "Data collection and preprocessing" and "Data
splitting and scaling").  Every function that learns something from the data takes the
training sample ids and fits on those rows only; all matrices are samples x features.

* RNA-seq: Xena's log2(count + 1) back to counts (or raw counts as given), CPM, keep genes with
  CPM > 1 in at least 20% of the *training* samples, log2(CPM + 1);
* CNA: absolute gene-level copy number, zeros excluded (set missing), log2(CN / 2), clipped to
  [-2, 2];
* RPPA: median-centred **per protein** (a column median over the training samples).  The
  authors' public code centres per sample; the paper says per protein, which we follow;
* quality control: features with more than 10% missing (in training samples) dropped;
  outlier training samples (distance to the training median profile beyond
  ``median + k * MAD`` of those distances) dropped from training -- never from the test set,
  which must stay complete (the paper gives no formula, "modality-specific distributions");
* imputation: KNN for RNA-seq and RPPA, feature median for CNA, fit on the training rows only.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MODALITIES = ("cna", "rnaseq", "rppa", "wsi")


class CoherentInputError(ValueError):
    pass


def _train_rows(df: pd.DataFrame, train_ids, what: str) -> pd.DataFrame:
    ids = [s for s in train_ids if s in df.index]
    if len(ids) < 2:
        raise CoherentInputError(f"{what}: fewer than 2 training samples present ({len(ids)})")
    return df.loc[ids]


def rna_to_log_cpm(df: pd.DataFrame, train_ids, *, input_scale: str = "counts", min_cpm: float = 1.0,
                   min_fraction: float = 0.2, what: str = "rnaseq") -> pd.DataFrame:
    """log2(CPM + 1) of the genes with CPM > ``min_cpm`` in >= ``min_fraction`` of training samples."""
    x = df.astype(np.float64)
    if input_scale == "log2_count_plus1":
        x = np.exp2(x) - 1.0
    elif input_scale != "counts":
        raise CoherentInputError(f"{what}: input_scale must be counts or log2_count_plus1, got {input_scale!r}")
    if (x.to_numpy()[np.isfinite(x.to_numpy())] < -1e-6).any():
        raise CoherentInputError(f"{what}: negative counts (is input_scale right? got {input_scale!r})")
    x = x.clip(lower=0)
    lib = x.sum(axis=1, skipna=True)
    bad = lib.index[lib <= 0]
    if len(bad):
        raise CoherentInputError(f"{what}: samples with zero library size: {', '.join(map(str, bad[:10]))}")
    cpm = x.div(lib, axis=0) * 1e6
    tr = _train_rows(cpm, train_ids, what)
    keep = (tr > min_cpm).mean(axis=0) >= min_fraction
    if not keep.any():
        raise CoherentInputError(f"{what}: no gene has CPM > {min_cpm} in {min_fraction:.0%} of training samples")
    log.info("%s: %d of %d genes pass CPM > %g in >= %.0f%% of training samples", what, int(keep.sum()),
             len(keep), min_cpm, 100 * min_fraction)
    return np.log2(cpm.loc[:, keep] + 1.0)


def cna_log_ratio(df: pd.DataFrame, clip: float = 2.0) -> pd.DataFrame:
    """log2(CN / 2) with CN == 0 treated as missing, clipped to [-clip, clip]."""
    x = df.astype(np.float64)
    if (x.to_numpy()[np.isfinite(x.to_numpy())] < 0).any():
        raise CoherentInputError("cna: negative absolute copy numbers")
    x = x.mask(x == 0)
    return np.log2(x / 2.0).clip(-clip, clip)


def rppa_center(df: pd.DataFrame, train_ids) -> tuple[pd.DataFrame, pd.Series]:
    """Subtract each protein's (column's) median over the training samples."""
    med = _train_rows(df, train_ids, "rppa").median(axis=0, skipna=True)
    return df - med, med


def drop_sparse_features(df: pd.DataFrame, train_ids, max_missing: float, what: str) -> pd.DataFrame:
    frac = _train_rows(df, train_ids, what).isna().mean(axis=0)
    keep = frac <= max_missing
    if not keep.any():
        raise CoherentInputError(f"{what}: every feature has more than {max_missing:.0%} missing values")
    if (~keep).any():
        log.info("%s: dropped %d features with > %.0f%% missing", what, int((~keep).sum()), 100 * max_missing)
    return df.loc[:, keep]


def outlier_samples(df: pd.DataFrame, train_ids, k: float) -> list[str]:
    """Training samples whose distance to the training median profile exceeds median + k MAD."""
    if not k or k <= 0:
        return []
    tr = _train_rows(df, train_ids, "outliers")
    z = (tr - tr.median()) / tr.std(ddof=0).replace(0, 1.0)
    d = np.sqrt(np.nanmean(z.to_numpy() ** 2, axis=1))
    med = np.median(d)
    mad = np.median(np.abs(d - med)) or 1e-12
    return list(tr.index[d > med + k * 1.4826 * mad])


def impute(df: pd.DataFrame, train_ids, method: str, k: int = 5, what: str = "") -> pd.DataFrame:
    """KNN (``sklearn.impute.KNNImputer``) or feature-median imputation fit on the training rows."""
    from sklearn.impute import KNNImputer, SimpleImputer

    tr = _train_rows(df, train_ids, what)
    if method == "knn":
        imp = KNNImputer(n_neighbors=min(k, len(tr) - 1) or 1)
    elif method == "median":
        imp = SimpleImputer(strategy="median")
    else:
        raise CoherentInputError(f"{what}: unknown imputation method {method!r} (knn or median)")
    all_nan = tr.columns[tr.isna().all()]
    if len(all_nan):
        raise CoherentInputError(f"{what}: features missing in every training sample: {list(all_nan[:10])}")
    imp.fit(tr.to_numpy())
    out = pd.DataFrame(imp.transform(df.to_numpy()), index=df.index, columns=df.columns)
    return out


def preprocess_modality(name: str, df: pd.DataFrame, train_ids, s: dict) -> tuple[pd.DataFrame, dict]:
    """Modality-specific transform, QC and imputation; returns (matrix, qc record)."""
    qc = {"modality": name, "samples_in": int(len(df)), "features_in": int(df.shape[1])}
    if name == "rnaseq":
        df = rna_to_log_cpm(df, train_ids, input_scale=s["rna_input_scale"], min_cpm=s["min_cpm"],
                            min_fraction=s["min_cpm_fraction"])
    elif name == "cna":
        df = cna_log_ratio(df, s["cna_clip"])
    elif name == "rppa":
        df, _ = rppa_center(df, train_ids)
    df = drop_sparse_features(df, train_ids, s["max_missing"], name)
    # outlier detection looks at training samples only, so the gaps are filled with training medians
    tr_ids = [t for t in train_ids if t in df.index]
    out = outlier_samples(df.fillna(df.loc[tr_ids].median()), train_ids, s["outlier_mad"])
    if out:
        log.info("%s: %d training outliers removed", name, len(out))
        df = df.drop(index=out)
    method = {"cna": "median", "wsi": "median"}.get(name, "knn")
    if df.isna().any().any():
        df = impute(df, [t for t in train_ids if t not in out], method, s["knn_neighbors"], name)
    qc.update(samples_out=int(len(df)), features_out=int(df.shape[1]), outliers=out, imputation=method)
    return df, qc
