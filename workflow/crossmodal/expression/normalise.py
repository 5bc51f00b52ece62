"""log2(x + 1), then z-scores with mean / sd of the **training split only**.

RNA-GAN Methods ("Data"): "Z score normalization was applied ... using the training set data,
in order to not include the validation or the test set information"; RNA-CDM Methods ("Data
processing"): "log-transformed and then normalized with the z-score transformation from the
training set values".  The scaler is fit with scikit-learn's ``StandardScaler`` (population
sd; a gene constant on the training split gets sd 1, so its z-score is centred but not
inflated) and saved as a table (gene, mean, sd, n_train) that external cohorts reuse.

External cohorts (RNA-GAN: GSE120795 with the GTEx scaler; RNA-CDM: GSE50760 / GSE226069 with
the TCGA scaler) are transformed with the reference dataset's scaler; genes only the external
cohort has are dropped, and genes of the scaler that it lacks are set to ``missing_value`` (0)
at ``missing_stage``:

* ``raw`` (the pipeline default): the missing gene's *count* is 0, then log-transformed and
  z-scored like every other gene, i.e. ``z = (log2(0 + pseudocount) - mean) / sd``.  RNA-CDM
  Methods: genes "not present in the GEO series were set to 0. Then, data was log-transformed
  and normalized using z-score based on the TCGA data values"; RNA-GAN Methods: "initialized
  them as zero ... Data was normalized using the mean and standard deviation from the training
  set of the GTEx data and log transformed".
* ``z``: the missing gene's z-score is 0 (the reference mean), a milder imputation that does
  not read an unmeasured gene as "not expressed"; not what the papers did.

Both are reported (counts and names of missing and dropped genes).
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


def apply_scaler(logx: pd.DataFrame, scaler: pd.DataFrame, *, missing_value: float = 0.0,
                 missing_stage: str = "z", pseudocount: float = 1.0):
    """``(z, qc)``: z-scores on the scaler's genes (in its order).

    Absent genes get ``missing_value`` as their z-score (``missing_stage="z"``) or as their raw
    count, log-transformed with ``pseudocount`` and z-scored (``missing_stage="raw"``)."""
    if missing_stage not in ("raw", "z"):
        raise ValueError(f"missing_stage must be 'raw' or 'z', got {missing_stage!r}")
    genes = pd.Index(scaler["gene"])
    present = genes.intersection(logx.columns)
    missing = genes.difference(logx.columns)
    extra = logx.columns.difference(genes)
    mean = scaler.set_index("gene")["mean"]
    sd = scaler.set_index("gene")["sd"]
    z = (logx[present] - mean[present]) / sd[present]
    z = z.reindex(columns=genes)
    if len(missing):
        if missing_stage == "raw":
            lv = float(np.log2(missing_value + pseudocount))
            for g in missing:
                z[g] = (lv - mean[g]) / sd[g]
        else:
            z[list(missing)] = missing_value
    qc = {"n_samples": int(len(logx)), "n_genes": int(len(genes)), "n_genes_missing": int(len(missing)),
          "missing_genes": sorted(map(str, missing)), "missing_value": missing_value,
          "missing_stage": missing_stage,
          "n_genes_dropped_not_in_scaler": int(len(extra))}
    if len(missing):
        log.warning("%d of %d scaler genes missing from the cohort: set to %s %s",
                    len(missing), len(genes), missing_value,
                    "as a raw count, then log-transformed and z-scored" if missing_stage == "raw" else "after z-scoring")
    return z, qc
