"""Split-conformal prediction for grading and survival risk (PathGen Methods 3.4).

Grading (PathGen Algorithm 3, after Angelopoulos & Bates 2021):

1. calibration scores ``s_i = 1 - p_i[y_i]``;
2. ``q_hat`` = the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the scores, i.e. the
   ``k``-th smallest score, ``k = ceil((n + 1)(1 - alpha))`` - the order statistic for which
   ``1 - alpha <= coverage < 1 - alpha + 1 / (n + 1)`` holds for exchangeable data.  (Angelopoulos
   & Bates' example code calls ``numpy.quantile(scores, k / n, method="higher")``, which picks the
   ``(k + 1)``-th score for k < n: one rank more conservative than the quantile the paper writes.);
3. the set of a test sample holds every class ``j`` with ``p_j >= 1 - q_hat``.

When ``ceil((n + 1)(1 - alpha)) > n`` the calibration set is too small for the requested
coverage: ``q_hat`` is +inf and every set holds all classes (logged as a warning).

Grading uncertainty, PathGen equation (10): ``|C| / N * Delta_max / (N - 1)`` with N classes
and ``Delta_max`` the largest difference between (ordinal) grade indices in the set; 0 for an
empty set.

Risk (PathGen Algorithm 4): survival time is divided into N time bins (N = 4); bin ``t``
(0 = earliest event, highest risk) covers the risk interval
``[risk_max - (t + 1) w, risk_max - t w]`` with ``w = (risk_max - risk_min) / N`` and, per
equation (12), ``risk_max = -1``, ``risk_min = -5``.  Calibration score
``|r_i - risk_est_i|`` with ``r_i`` the upper risk bound of the true bin; bounds
``risk_pred -/+ q_hat``; the set C holds every time bin whose risk interval overlaps
``[risk_lb, risk_ub]`` (the paper's text says "the time bins covered between the lower and
upper bound"; its Algorithm 4 prints the test as ``risk_lb <= t_lb or t_ub <= risk_ub``, which
read literally would include nearly every bin - we follow the text and note the difference).
Risk uncertainty, equation (12): ``|C| / N * |risk_ub - risk_lb| / (risk_max - risk_min)``.

Public names: ``conformal_quantile``, ``grade_sets``, ``grade_uncertainty``, ``risk_bin_edges``,
``risk_sets``, ``risk_covered``, ``coverage_table``.
"""
from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def conformal_quantile(scores, alpha: float) -> float:
    """``q_hat`` of PathGen Algorithms 3/4: the empirical quantile of the scores at level
    q = ceil((n+1)(1-alpha))/n, i.e. the k-th smallest score with k = ceil((n+1)(1-alpha)) - the
    order statistic of the split-conformal guarantee 1-alpha <= coverage < 1-alpha + 1/(n+1).
    (numpy's ``method="higher"`` at that level, used in Angelopoulos & Bates' example code, takes
    the (k+1)-th smallest: one rank more conservative than the paper's quantile.)"""
    s = np.asarray(scores, dtype=float).ravel()
    n = len(s)
    if n == 0:
        raise ValueError("conformal_quantile: empty calibration set")
    if not 0 < alpha < 1:
        raise ValueError(f"conformal_quantile: alpha must be in (0, 1), got {alpha}")
    if np.isnan(s).any():
        raise ValueError("conformal_quantile: calibration scores contain NaN")
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        log.warning("conformal: %d calibration samples are too few for alpha=%g; sets hold every class", n, alpha)
        return float("inf")
    return float(np.sort(s)[k - 1])


def _probs(name: str, p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"grade_sets: {name} must be (n, n_classes), got shape {p.shape}")
    if (p < -1e-9).any() or (p > 1 + 1e-9).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError(f"grade_sets: {name} rows must be probabilities summing to 1 (softmax outputs)")
    return p


def grade_sets(cal_probs, cal_labels, test_probs, alpha: float) -> np.ndarray:
    """Conformal grade sets (PathGen Algorithm 3): bool array (n_test, n_classes)."""
    cp, tp = _probs("cal_probs", cal_probs), _probs("test_probs", test_probs)
    y = np.asarray(cal_labels).astype(int)
    if cp.shape[1] != tp.shape[1]:
        raise ValueError(f"grade_sets: cal_probs has {cp.shape[1]} classes, test_probs {tp.shape[1]}")
    if len(y) != len(cp):
        raise ValueError(f"grade_sets: {len(y)} calibration labels for {len(cp)} calibration rows")
    if y.min() < 0 or y.max() >= cp.shape[1]:
        raise ValueError(f"grade_sets: calibration labels outside 0..{cp.shape[1] - 1}")
    scores = 1.0 - cp[np.arange(len(y)), y]
    q_hat = conformal_quantile(scores, alpha)
    return tp >= 1.0 - q_hat


def grade_uncertainty(sets) -> np.ndarray:
    """PathGen equation (10) per sample: ``|C|/N * Delta_max/(N-1)``."""
    s = np.asarray(sets, bool)
    n_cls = s.shape[1]
    size = s.sum(1)
    idx = np.arange(n_cls)
    hi = np.where(s, idx, -1).max(1)
    lo = np.where(s, idx, n_cls).min(1)
    spread = np.where(size > 0, hi - lo, 0)
    return size / n_cls * spread / max(n_cls - 1, 1)


def risk_bin_edges(n_bins: int = 4, risk_min: float = -5.0, risk_max: float = -1.0) -> np.ndarray:
    """(n_bins, 2) risk interval [lb, ub] of each time bin; bin 0 = earliest = highest risk."""
    w = (risk_max - risk_min) / n_bins
    t = np.arange(n_bins)
    return np.stack([risk_max - (t + 1) * w, risk_max - t * w], axis=1)


def risk_sets(cal_risk, cal_bins, test_risk, alpha: float, *, n_bins: int = 4,
              risk_min: float = -5.0, risk_max: float = -1.0) -> dict:
    """Conformal risk bounds (PathGen Algorithm 4).

    ``cal_risk`` / ``test_risk``: predicted risk; ``cal_bins``: true time bin of each
    calibration patient (0 = earliest).  Returns ``lb``, ``ub`` (n_test,), ``sets`` (n_test,
    n_bins) bool, ``q_hat`` and ``uncertainty`` (equation (12)).
    """
    cr = np.asarray(cal_risk, float).ravel()
    tr = np.asarray(test_risk, float).ravel()
    b = np.asarray(cal_bins).astype(int).ravel()
    if len(b) != len(cr):
        raise ValueError(f"risk_sets: {len(b)} calibration bins for {len(cr)} calibration risks")
    if b.min() < 0 or b.max() >= n_bins:
        raise ValueError(f"risk_sets: calibration bins outside 0..{n_bins - 1}")
    edges = risk_bin_edges(n_bins, risk_min, risk_max)
    r_true = edges[b, 1]
    q_hat = conformal_quantile(np.abs(r_true - cr), alpha)
    lb, ub = tr - q_hat, tr + q_hat
    sets = (edges[None, :, 0] <= ub[:, None]) & (lb[:, None] <= edges[None, :, 1])
    width = np.minimum(np.abs(ub - lb), risk_max - risk_min)  # an infinite bound counts as the full range
    unc = sets.sum(1) / n_bins * width / (risk_max - risk_min)
    return {"lb": lb, "ub": ub, "sets": sets, "q_hat": q_hat, "uncertainty": unc}


def risk_covered(test_risk, test_bins, q_hat, *, n_bins: int = 4, risk_min: float = -5.0,
                 risk_max: float = -1.0) -> np.ndarray:
    """Whether the upper risk bound of each true bin lies within ``risk_pred -/+ q_hat``
    (the event equation (11) guarantees with probability >= 1 - alpha)."""
    edges = risk_bin_edges(n_bins, risk_min, risk_max)
    r_true = edges[np.asarray(test_bins).astype(int), 1]
    return np.abs(r_true - np.asarray(test_risk, float)) <= q_hat


def coverage_table(sets, labels, groups=None, uncertainty=None, *, group_name: str = "group"):
    """Coverage / mean set size / mean uncertainty per subgroup (PathGen Tables 4-5 layout).

    ``sets`` (n, K) bool, ``labels`` (n,) true class or bin; ``groups`` (n,) subgroup labels
    (one row per group plus an ``all`` row).  Returns a DataFrame.
    """
    import pandas as pd

    s = np.asarray(sets, bool)
    y = np.asarray(labels).astype(int)
    if len(y) != len(s):
        raise ValueError(f"coverage_table: {len(y)} labels for {len(s)} sets")
    covered = s[np.arange(len(y)), y]
    unc = np.full(len(y), np.nan) if uncertainty is None else np.asarray(uncertainty, float)
    g = np.full(len(y), "all", dtype=object) if groups is None else np.asarray(groups, dtype=object)
    rows = []
    for name, mask in [("all", np.ones(len(y), bool))] + [(k, g == k) for k in sorted(set(g) - {"all"}, key=str)]:
        rows.append({group_name: name, "n": int(mask.sum()), "coverage": float(covered[mask].mean()),
                     "mean_set_size": float(s[mask].sum(1).mean()),
                     "uncertainty": float(np.nanmean(unc[mask])) if not np.isnan(unc[mask]).all() else np.nan})
    return pd.DataFrame(rows)
