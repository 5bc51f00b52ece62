"""Tidy test rows over scipy/statsmodels; ANOSIM against a hand-checked permutation example."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as st

from crossmodal import stats


def test_wrappers_equal_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(0.8, size=30)
    assert stats.ranksum(x, y)["p_value"] == pytest.approx(st.mannwhitneyu(x, y).pvalue)
    assert stats.ttest(x, y, paired=True)["p_value"] == pytest.approx(st.ttest_rel(x, y).pvalue)
    assert stats.ttest(x, y)["p_value"] == pytest.approx(st.ttest_ind(x, y, equal_var=False).pvalue)
    r = stats.correlation(x, 2 * x + rng.normal(scale=0.1, size=30), method="spearman")
    assert r["statistic"] > 0.95 and r["test"] == "spearman"
    with pytest.raises(ValueError, match="ranksum: x: 1 NaN"):
        stats.ranksum([1, np.nan], [1, 2])


def test_anosim_hand_checked_example():
    # 4 samples, groups a a b b; distances chosen so within-group pairs are the two smallest
    d = np.array([[0, 1, 4, 5], [1, 0, 6, 3], [4, 6, 0, 2], [5, 3, 2, 0]], float)
    # condensed: (0,1)=1 (0,2)=4 (0,3)=5 (1,2)=6 (1,3)=3 (2,3)=2 -> ranks 1,4,5,6,3,2
    # within (0,1),(2,3): ranks 1, 2 -> mean 1.5; between: 4,5,6,3 -> mean 4.5
    # R = (4.5 - 1.5) / (4 * 3 / 4) = 1.0
    row = stats.anosim(d, ["a", "a", "b", "b"], permutations=999, seed=0)
    assert row["statistic"] == pytest.approx(1.0)
    # exact permutation p: of the 6 distinct labelings of 2+2 samples, 2 (this one and its swap) give R=1
    assert row["p_value"] == pytest.approx(2 / 6, abs=0.05)
    # exhaustive check of the permutation distribution
    rs = []
    for perm in itertools.permutations(range(4)):
        rs.append(stats.anosim(d, np.array(["a", "a", "b", "b"])[list(perm)], permutations=0)["statistic"])
    assert np.mean(np.array(rs) >= 1.0 - 1e-12) == pytest.approx(1 / 3)


def test_adjust_benjamini_hochberg():
    from statsmodels.stats.multitest import multipletests

    rows = [{"p_value": p} for p in (0.01, 0.04, 0.03, np.nan, 0.5)]
    df = stats.adjust(rows)
    ok = ~np.isnan(df.p_value)
    np.testing.assert_allclose(df.p_adjusted[ok], multipletests(df.p_value[ok], method="fdr_bh")[1])
    assert np.isnan(df.p_adjusted[3])
