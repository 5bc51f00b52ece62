"""Statistical tests as tidy rows: thin wrappers over scipy / statsmodels.

Every function returns a ``dict`` (one table row) with ``test``, ``statistic``, ``p_value``
and the sample sizes, so report tables are ``pandas.DataFrame([row, row, ...])``.
:func:`adjust` adds multiple-testing corrected p-values to such a table.

ANOSIM (Clarke 1993) is written here on top of scipy because scikit-bio is not a dependency:
R = (mean between-group rank - mean within-group rank) / (n (n - 1) / 4) over the ranked
condensed distance matrix, with a permutation p-value (permutations + 1 in the denominator,
the convention of scikit-bio and vegan).

Public names: ``ranksum``, ``ttest``, ``greater_than``, ``tost``, ``correlation``, ``anosim``,
``adjust``.
"""
from __future__ import annotations

import numpy as np
from scipy import stats as _st


def _clean(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if np.isnan(a).any():
        raise ValueError(f"{name}: {int(np.isnan(a).sum())} NaN values; drop them explicitly first")
    return a


def ranksum(x, y, *, alternative: str = "two-sided", label: str = "") -> dict:
    """Wilcoxon rank-sum (Mann-Whitney U) test - PathGen Results 2.5 compares uncertainties so."""
    a, b = _clean("ranksum: x", x), _clean("ranksum: y", y)
    r = _st.mannwhitneyu(a, b, alternative=alternative)
    return {"test": "wilcoxon_ranksum", "label": label, "statistic": float(r.statistic),
            "p_value": float(r.pvalue), "n_x": len(a), "n_y": len(b),
            "median_x": float(np.median(a)), "median_y": float(np.median(b))}


def ttest(x, y, *, paired: bool = False, equal_var: bool = False, label: str = "") -> dict:
    """Paired (``ttest_rel``) or unpaired (Welch by default, ``ttest_ind``) t-test.

    Paired, with fewer than 2 pairs the p-value is NaN; with constant differences (zero variance,
    where scipy returns NaN) it is decided exactly: p 0 for a non-zero shift, 1 for none."""
    a, b = _clean("ttest: x", x), _clean("ttest: y", y)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"ttest: paired samples differ in length ({len(a)} vs {len(b)})")
        d = a - b
        if len(d) < 2 or np.ptp(d) == 0:
            p = np.nan if len(d) < 2 else (0.0 if d[0] != 0 else 1.0)
            t = np.nan if len(d) < 2 else (np.sign(d[0]) * np.inf if d[0] != 0 else 0.0)
            return {"test": "paired_t", "label": label, "statistic": float(t), "p_value": float(p),
                    "n_x": len(a), "n_y": len(b), "mean_x": float(a.mean()) if len(a) else np.nan,
                    "mean_y": float(b.mean()) if len(b) else np.nan}
        r = _st.ttest_rel(a, b)
        name = "paired_t"
    else:
        r = _st.ttest_ind(a, b, equal_var=equal_var)
        name = "student_t" if equal_var else "welch_t"
    return {"test": name, "label": label, "statistic": float(r.statistic), "p_value": float(r.pvalue),
            "n_x": len(a), "n_y": len(b), "mean_x": float(a.mean()), "mean_y": float(b.mean())}


def _greater(d: np.ndarray, mu: float) -> float:
    """p of H0 mean(d) <= mu vs H1 mean(d) > mu (one-sample t); constant ``d`` decided exactly."""
    if len(d) < 2:
        return float("nan")
    if np.ptp(d) == 0:
        return 0.0 if d[0] > mu else 1.0
    return float(_st.ttest_1samp(d, mu, alternative="greater").pvalue)


def greater_than(x, level: float, *, label: str = "") -> dict:
    """One-sided one-sample t-test that the mean of ``x`` exceeds ``level`` (e.g. fold accuracies
    above chance)."""
    a = _clean("greater_than: x", x)
    return {"test": "one_sample_t_greater", "label": label, "statistic": float(a.mean() - level) if len(a) else np.nan,
            "p_value": _greater(a, float(level)), "n_x": len(a), "n_y": 0, "level": float(level)}


def tost(x, y, margin: float, *, label: str = "") -> dict:
    """Paired equivalence test (two one-sided t-tests, Schuirmann 1987): H0 |mean(x - y)| >=
    ``margin``; ``p_value`` is the larger one-sided p (equivalent at level α when p <= α).
    ``statistic`` is the mean difference.  (statsmodels' ``ttost_paired`` computes the same but
    returns NaN for constant differences, which are decided exactly here.)"""
    if not margin > 0:
        raise ValueError(f"tost {label}: the equivalence margin must be > 0, got {margin}")
    a, b = _clean("tost: x", x), _clean("tost: y", y)
    if len(a) != len(b):
        raise ValueError(f"tost {label}: paired samples differ in length ({len(a)} vs {len(b)})")
    d = a - b
    p = max(_greater(d, -margin), _greater(-d, -margin)) if len(d) >= 2 else float("nan")
    return {"test": "tost_paired", "label": label, "statistic": float(d.mean()) if len(d) else np.nan,
            "p_value": p, "n_x": len(a), "n_y": len(b), "margin": float(margin)}


def correlation(x, y, *, method: str = "pearson", label: str = "") -> dict:
    """Pearson or Spearman correlation with its p-value."""
    a, b = _clean("correlation: x", x), _clean("correlation: y", y)
    if len(a) != len(b):
        raise ValueError(f"correlation: x and y differ in length ({len(a)} vs {len(b)})")
    if len(a) < 3:
        raise ValueError(f"correlation: needs at least 3 pairs, got {len(a)}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"correlation: method must be pearson or spearman, got {method!r}")
    if np.std(a) == 0 or np.std(b) == 0:  # undefined for a constant input
        stat, p = float("nan"), float("nan")
    else:
        r = _st.pearsonr(a, b) if method == "pearson" else _st.spearmanr(a, b)
        stat, p = float(r.statistic), float(r.pvalue)
    return {"test": method, "label": label, "statistic": stat, "p_value": p, "n_x": len(a), "n_y": len(b)}


def anosim(distances, groups, *, permutations: int = 999, seed: int = 0, label: str = "") -> dict:
    """ANOSIM R statistic and permutation p-value.

    ``distances``: square symmetric (n, n) matrix or condensed vector (scipy ``pdist`` order);
    ``groups``: n group labels (at least 2 groups, and not every sample its own group).
    """
    from scipy.spatial.distance import squareform

    d = np.asarray(distances, dtype=float)
    if d.ndim == 2:
        if d.shape[0] != d.shape[1] or not np.allclose(d, d.T):
            raise ValueError(f"anosim: distances must be a symmetric square matrix, got {d.shape}")
        d = squareform(d, checks=False)
    g = np.asarray(groups)
    n = len(g)
    if len(d) != n * (n - 1) // 2:
        raise ValueError(f"anosim: {len(d)} distances do not match {n} group labels")
    uniq = np.unique(g)
    if len(uniq) < 2 or len(uniq) == n:
        raise ValueError(f"anosim: needs 2..n-1 groups, got {len(uniq)} for {n} samples")
    ranks = _st.rankdata(d)
    iu = np.triu_indices(n, k=1)
    divisor = n * (n - 1) / 4.0

    def r_stat(labels):
        within = labels[iu[0]] == labels[iu[1]]
        return (ranks[~within].mean() - ranks[within].mean()) / divisor

    r_obs = r_stat(g)
    rng = np.random.default_rng(seed)
    perm = np.array([r_stat(rng.permutation(g)) for _ in range(permutations)])
    p = (1 + np.sum(perm >= r_obs)) / (permutations + 1) if permutations else float("nan")
    return {"test": "anosim", "label": label, "statistic": float(r_obs), "p_value": float(p),
            "n_x": n, "n_y": len(uniq), "permutations": permutations}


def adjust(rows, method: str = "fdr_bh", column: str = "p_value"):
    """Add ``p_adjusted`` (statsmodels ``multipletests``; default Benjamini-Hochberg) to a list
    of rows or a DataFrame; returns a DataFrame.  NaN p-values stay NaN and are not counted."""
    import pandas as pd
    from statsmodels.stats.multitest import multipletests

    df = pd.DataFrame(rows).copy()
    if column not in df:
        raise ValueError(f"adjust: no column {column!r} in the table")
    p = df[column].to_numpy(float)
    ok = ~np.isnan(p)
    adj = np.full(len(p), np.nan)
    if ok.any():
        adj[ok] = multipletests(p[ok], method=method)[1]
    df["p_adjusted"] = adj
    df["adjust_method"] = method
    return df
