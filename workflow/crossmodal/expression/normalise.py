"""log2(x + 1), then z-scores with mean / sd of the **training split only**.

RNA-GAN Methods ("Data"): "Z score normalization was applied ... using the training set data,
in order to not include the validation or the test set information"; RNA-CDM Methods ("Data
processing"): "log-transformed and then normalized with the z-score transformation from the
training set values".  The scaler is fit with scikit-learn's ``StandardScaler`` (population
sd; a gene constant on the training split gets sd 1, so its z-score is centred but not
inflated) and saved as a table (gene, mean, sd, n_train) that external cohorts reuse.

External cohorts (RNA-GAN: GSE120795 with the GTEx scaler; RNA-CDM: GSE50760 / GSE226069 with
the TCGA scaler) are transformed with the reference dataset's scaler; genes of the scaler
that the external cohort lacks are set to ``missing_value`` (0) **after** z-scoring - the
papers "initialized them as zero" in the model's (z-scored) input - and genes only the
external cohort has are dropped.  Both are reported.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SCALER_COLUMNS = ["gene", "mean", "sd", "n_train"]


def log_transform(counts: pd.DataFrame, pseudocount: float = 1.0) -> pd.DataFrame:
    """``log2(counts + pseudocount)``."""
    return np.log2(counts.astype(float) + pseudocount)


def fit_scaler(logx_train: pd.DataFrame) -> pd.DataFrame:
    """Per-gene mean and sd of the (log) training matrix (samples x genes)."""
    if len(logx_train) < 2:
        raise ValueError(f"the training split has {len(logx_train)} sample(s); need at least 2 to fit a scaler")
    from sklearn.preprocessing import StandardScaler  # imported here: ~1 s, needed by one rule

    sc = StandardScaler().fit(logx_train.to_numpy())
    return pd.DataFrame({"gene": logx_train.columns, "mean": sc.mean_, "sd": sc.scale_,
                         "n_train": len(logx_train)})


def apply_scaler(logx: pd.DataFrame, scaler: pd.DataFrame, *, missing_value: float = 0.0):
    """``(z, qc)``: z-scores on the scaler's genes (in its order); absent genes = ``missing_value``."""
    genes = pd.Index(scaler["gene"])
    present = genes.intersection(logx.columns)
    missing = genes.difference(logx.columns)
    extra = logx.columns.difference(genes)
    mean = scaler.set_index("gene")["mean"]
    sd = scaler.set_index("gene")["sd"]
    z = (logx[present] - mean[present]) / sd[present]
    z = z.reindex(columns=genes)
    if len(missing):
        z[list(missing)] = missing_value
    qc = {"n_samples": int(len(logx)), "n_genes": int(len(genes)), "n_genes_missing": int(len(missing)),
          "missing_genes": sorted(map(str, missing)), "missing_value": missing_value,
          "n_genes_dropped_not_in_scaler": int(len(extra))}
    if len(missing):
        log.warning("%d of %d scaler genes missing from the cohort: set to %s after z-scoring",
                    len(missing), len(genes), missing_value)
    return z, qc
