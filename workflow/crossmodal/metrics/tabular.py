"""Metrics on tabular (omics / embedding) data - Coherent Denoising's evaluation.

One definition each:

* :func:`r2` - R² computed per feature, then averaged with equal weight over features
  (scikit-learn's ``r2_score(..., multioutput='uniform_average')``, which it calls).  Coherent
  Denoising Table 1 reports the mean R² ± sd over 10 generation runs; use
  :func:`r2_over_runs` for that.  Features with zero variance in ``y_true`` are an error here
  (scikit-learn silently scores them 1 or 0), naming the columns.
* :func:`output_variance_pct` - Coherent Denoising Results "output variance": per test sample,
  the variance across repeated generations, averaged over samples and features, as a
  percentage of the real data's variance (averaged over features).
* :func:`energy_distance` - multivariate energy distance (Székely & Rizzo) between samples
  ``x`` and ``y``: ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` with V-statistics (the means include the
  zero diagonal), computed in blocks so memory stays bounded.  Coherent Denoising Table 3.
* :func:`knn_precision_recall` - improved precision / recall of Kynkäänniemi et al. (2019,
  NeurIPS): k-NN balls around real (resp. generated) points as the manifold estimate;
  ``f1`` is their harmonic mean (Coherent Denoising Table 3 "F1 coverage", ref. 50).
* :func:`spearman_mae_by_group` - PathGen Table 2 layout: per gene group (and over all genes),
  Spearman's rho of real vs predicted values over all (sample, gene) pairs, its p-value, and
  the mean absolute error.
* :func:`classification_scores` - accuracy, macro F1 and (one-vs-rest, macro) ROC AUC of class
  probabilities (Coherent Denoising's downstream classifier F1, PathGen's grading AUC); thin
  wrappers over scikit-learn.

Public names: ``r2``, ``r2_over_runs``, ``output_variance_pct``, ``energy_distance``,
``knn_precision_recall``, ``spearman_mae_by_group``, ``classification_scores``.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _2d(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples x features), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite values")
    return a


def r2(y_true, y_pred) -> float:
    """Uniform-average R² over features (== sklearn ``r2_score(multioutput='uniform_average')``)."""
    from sklearn.metrics import r2_score

    t, p = _2d("r2: y_true", y_true), _2d("r2: y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"r2: y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.shape[0] < 2:
        raise ValueError("r2: needs at least 2 samples")
    const = np.flatnonzero(t.var(axis=0) == 0)
    if len(const):
        raise ValueError(f"r2: y_true columns {const[:10].tolist()} have zero variance; R² is undefined there")
    return float(r2_score(t, p, multioutput="uniform_average"))


def r2_over_runs(y_true, runs) -> tuple[float, float]:
    """Mean and population sd (ddof=0) of :func:`r2` over repeated generations ``runs``
    (sequence of arrays shaped like ``y_true``), as Coherent Denoising Table 1."""
    vals = np.array([r2(y_true, r) for r in runs])
    return float(vals.mean()), float(vals.std())


def output_variance_pct(runs, y_real) -> float:
    """Variance across repeated generations (runs x samples x features), averaged over samples
    and features, as a percentage of the average per-feature variance of ``y_real``."""
    g = np.asarray(runs, dtype=np.float64)
    if g.ndim == 2:
        g = g[:, :, None]
    if g.ndim != 3 or g.shape[0] < 2:
        raise ValueError(f"output_variance_pct: runs must be (n_runs >= 2, samples, features), got {g.shape}")
    real = _2d("output_variance_pct: y_real", y_real)
    if real.shape[1] != g.shape[2]:
        raise ValueError(f"output_variance_pct: runs have {g.shape[2]} features, y_real {real.shape[1]}")
    real_var = real.var(axis=0).mean()
    if real_var == 0:
        raise ValueError("output_variance_pct: the real data has zero variance")
    return float(100.0 * g.var(axis=0).mean() / real_var)


def _mean_pairwise_dist(a: np.ndarray, b: np.ndarray, block: int = 2048) -> float:
    total = 0.0
    b2 = (b * b).sum(1)
    for i in range(0, len(a), block):
        x = a[i:i + block]
        d2 = (x * x).sum(1)[:, None] + b2[None, :] - 2.0 * x @ b.T
        total += np.sqrt(np.maximum(d2, 0.0)).sum()
    return total / (len(a) * len(b))


def energy_distance(x, y) -> float:
    """Energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (Euclidean, V-statistic)."""
    a, b = _2d("energy_distance: x", x), _2d("energy_distance: y", y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"energy_distance: x has {a.shape[1]} features, y {b.shape[1]}")
    return float(2 * _mean_pairwise_dist(a, b) - _mean_pairwise_dist(a, a) - _mean_pairwise_dist(b, b))


def _kth_radius(a: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    if len(a) <= k:
        raise ValueError(f"knn_precision_recall: needs more than k={k} points per set, got {len(a)}")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(a)
    dist, _ = nn.kneighbors(a)  # column 0 is the point itself
    return dist[:, k]


def _in_manifold(points: np.ndarray, ref: np.ndarray, radii: np.ndarray, block: int = 2048) -> np.ndarray:
    out = np.zeros(len(points), bool)
    r2 = (ref * ref).sum(1)
    rad2 = radii ** 2
    for i in range(0, len(points), block):
        p = points[i:i + block]
        d2 = (p * p).sum(1)[:, None] + r2[None, :] - 2.0 * p @ ref.T
        out[i:i + block] = (d2 <= rad2[None, :] + 1e-12).any(axis=1)
    return out


def knn_precision_recall(real, fake, k: int = 3) -> dict:
    """Improved precision/recall (Kynkäänniemi et al. 2019, k = 3 as in their paper).

    precision: fraction of ``fake`` within the k-NN ball of some real point; recall: fraction of
    ``real`` within the k-NN ball of some fake point; f1 = 2PR / (P + R) (0 when both are 0).
    """
    a, b = _2d("knn_precision_recall: real", real), _2d("knn_precision_recall: fake", fake)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"knn_precision_recall: real has {a.shape[1]} features, fake {b.shape[1]}")
    precision = float(_in_manifold(b, a, _kth_radius(a, k)).mean())
    recall = float(_in_manifold(a, b, _kth_radius(b, k)).mean())
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": float(f1), "k": int(k)}


def spearman_mae_by_group(real, pred, groups=None, *, all_label: str = "all genes"):
    """Spearman's rho (with p-value) and MAE of ``pred`` vs ``real`` per feature group.

    ``real`` / ``pred``: (samples x features) arrays or DataFrames of equal shape (e.g. z-scored
    expression of the test cases); ``groups``: one label per feature (e.g. the gene group of
    each gene) or None.  Per group, the statistics are taken over all (sample, feature) pairs of
    the group's features, as PathGen Table 2; the last row (``all_label``) pools every feature.
    Returns a DataFrame with columns group, n_features, n_samples, spearman, spearman_p, mae.
    """
    import pandas as pd

    from crossmodal import stats

    t, p = _2d("spearman_mae_by_group: real", real), _2d("spearman_mae_by_group: pred", pred)
    if t.shape != p.shape:
        raise ValueError(f"spearman_mae_by_group: real {t.shape} and pred {p.shape} differ in shape")
    g = np.full(t.shape[1], all_label, dtype=object) if groups is None else np.asarray(groups, dtype=object)
    if len(g) != t.shape[1]:
        raise ValueError(f"spearman_mae_by_group: {len(g)} group labels for {t.shape[1]} features")
    names = [k for k in dict.fromkeys(g.tolist()) if k != all_label]
    rows = []
    for name, cols in [(k, g == k) for k in names] + [(all_label, np.ones(len(g), bool))]:
        r, q = t[:, cols].ravel(), p[:, cols].ravel()
        rho = stats.correlation(r, q, method="spearman", label=str(name))
        rows.append({"group": name, "n_features": int(cols.sum()), "n_samples": t.shape[0],
                     "spearman": rho["statistic"], "spearman_p": rho["p_value"],
                     "mae": float(np.abs(r - q).mean())})
    return pd.DataFrame(rows)


def classification_scores(y_true, proba) -> dict:
    """Accuracy, macro F1 and ROC AUC (binary; one-vs-rest macro for more classes) of class
    probabilities ``proba`` (n, K) against integer labels ``y_true`` in 0..K-1.

    AUC is NaN when ``y_true`` holds a single class (undefined).  F1 is macro over all K classes
    (a class never predicted scores 0), as scikit-learn's ``f1_score(average='macro')``.
    """
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    pr = _2d("classification_scores: proba", proba)
    y = np.asarray(y_true).astype(int).ravel()
    k = pr.shape[1]
    if len(y) != len(pr):
        raise ValueError(f"classification_scores: {len(y)} labels for {len(pr)} probability rows")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"classification_scores: labels outside 0..{k - 1}")
    pred = pr.argmax(1)
    out = {"n": len(y), "accuracy": float(accuracy_score(y, pred)),
           "f1_macro": float(f1_score(y, pred, average="macro", labels=np.arange(k), zero_division=0))}
    present = np.unique(y)
    if len(present) < 2:
        out["auc"] = float("nan")
    elif k == 2:
        out["auc"] = float(roc_auc_score(y, pr[:, 1]))
    else:
        p = pr[:, present] / pr[:, present].sum(1, keepdims=True)
        out["auc"] = float(roc_auc_score(y, p, multi_class="ovr", labels=present, average="macro")
                           if len(present) > 2 else roc_auc_score(y == present[1], p[:, 1]))
    return out
