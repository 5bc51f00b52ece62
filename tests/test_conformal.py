"""PathGen Algorithms 3 and 4: coverage over 200 random splits, set sizes, equations (10)/(12)."""
from __future__ import annotations

import numpy as np
import pytest

from crossmodal import conformal as cf


def _classifier(n, k, sharpness, rng):
    """Exchangeable synthetic data: labels and softmax outputs of a classifier of given skill."""
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += sharpness
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), y


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_grade_set_coverage_over_200_splits(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    p, y = _classifier(1000, 4, 1.5, rng)
    cov = []
    for _ in range(200):
        perm = rng.permutation(1000)
        cal, test = perm[:500], perm[500:]
        sets = cf.grade_sets(p[cal], y[cal], p[test], alpha)
        cov.append(sets[np.arange(500), y[test]].mean())
    assert np.mean(cov) >= 1 - alpha - 0.01
    assert np.mean(cov) <= 1 - alpha + 0.03  # not trivially everything


def test_set_sizes_shrink_as_classifier_improves():
    rng = np.random.default_rng(1)
    sizes = []
    for sharp in (0.5, 1.5, 3.0, 6.0):
        p, y = _classifier(2000, 4, sharp, rng)
        sets = cf.grade_sets(p[:1000], y[:1000], p[1000:], 0.1)
        sizes.append(sets.sum(1).mean())
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert sizes[-1] < 1.05  # a near-perfect classifier: about one grade per set (some empty)


def test_quantile_is_the_papers_order_statistic():
    scores = np.arange(1, 20) / 20.0  # n = 19
    # level q = ceil(20 * 0.9) / 19 = 18/19: the empirical quantile is the 18th smallest score
    # (inverted CDF); numpy's 'higher' method at that level would take the 19th
    assert cf.conformal_quantile(scores, 0.1) == pytest.approx(np.quantile(scores, 18 / 19, method="inverted_cdf"))
    assert cf.conformal_quantile(scores, 0.1) == pytest.approx(18 / 20)
    assert cf.conformal_quantile(np.arange(1, 100) / 100, 0.5) == pytest.approx(0.50)  # k = ceil(100 * 0.5) = 50
    assert cf.conformal_quantile(scores[:5], 0.1) == np.inf  # too few for 90 %


def test_coverage_is_exact_not_one_rank_conservative():
    """Split conformal: with exchangeable scores, P(test score <= q_hat) = k / (n + 1) exactly,
    k = ceil((n+1)(1-alpha)).  n = 9, alpha = 0.2: k = 8, coverage 0.8 (the (k+1)-th smallest
    would give 0.9)."""
    rng = np.random.default_rng(0)
    cal = rng.random((20000, 9))
    test = rng.random(20000)
    q = np.array([cf.conformal_quantile(c, 0.2) for c in cal])
    assert abs(np.mean(test <= q) - 0.8) < 0.01


def test_grade_uncertainty_equation_10():
    sets = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]], bool)
    # |C|/N * Delta_max/(N-1)
    np.testing.assert_allclose(cf.grade_uncertainty(sets), [0.0, 2 / 4 * 1 / 3, 2 / 4 * 3 / 3, 0.0])


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_risk_bounds_coverage_and_equation_12(alpha):
    rng = np.random.default_rng(7)
    n = 1000
    bins = rng.integers(0, 4, n)
    r_true = cf.risk_bin_edges()[bins, 1]
    risk = r_true - rng.normal(0.5, 0.6, n)
    cov = []
    for _ in range(200):
        perm = rng.permutation(n)
        cal, test = perm[:500], perm[500:]
        out = cf.risk_sets(risk[cal], bins[cal], risk[test], alpha)
        cov.append(cf.risk_covered(risk[test], bins[test], out["q_hat"]).mean())
        # the true bin is in every set whose bound interval covers its upper risk
        hit = cf.risk_covered(risk[test], bins[test], out["q_hat"])
        assert out["sets"][np.arange(500), bins[test]][hit].all()
    assert np.mean(cov) >= 1 - alpha - 0.01
    width = 2 * out["q_hat"]
    np.testing.assert_allclose(out["uncertainty"], out["sets"].sum(1) / 4 * min(width, 4) / 4)


def test_risk_bin_layout_and_coverage_table():
    e = cf.risk_bin_edges(4, -5, -1)
    np.testing.assert_allclose(e, [[-2, -1], [-3, -2], [-4, -3], [-5, -4]])
    sets = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], bool)
    t = cf.coverage_table(sets, [0, 0, 2, 1], groups=["m", "f", "f", "m"], group_name="sex")
    assert list(t["sex"]) == ["all", "f", "m"]
    assert t.set_index("sex").loc["all", "coverage"] == 0.5
    assert t.set_index("sex").loc["f", "coverage"] == 0.5
    assert t.set_index("sex").loc["m", "mean_set_size"] == 1.5


def test_bad_probabilities_are_rejected():
    with pytest.raises(ValueError, match="cal_probs rows must be probabilities"):
        cf.grade_sets(np.ones((3, 2)), [0, 1, 0], np.full((2, 2), 0.5), 0.1)
