"""R², output variance, energy distance and k-NN precision/recall against references."""
from __future__ import annotations

import numpy as np
import pytest

from crossmodal.metrics import tabular as tb


def test_r2_equals_sklearn_uniform_average():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 6)) * [1, 10, 100, 0.1, 1, 5]
    p = y + rng.normal(size=y.shape) * [0.5, 2, 90, 0.2, 1, 1]
    assert tb.r2(y, p) == pytest.approx(r2_score(y, p, multioutput="uniform_average"), abs=1e-12)
    # uniform, not variance-weighted: the noisy high-variance column does not dominate
    assert tb.r2(y, p) != pytest.approx(r2_score(y, p, multioutput="variance_weighted"), abs=1e-3)
    with pytest.raises(ValueError, match=r"columns \[1\] have zero variance"):
        tb.r2(np.c_[y[:, 0], np.ones(50)], p[:, :2])


def test_output_variance_pct():
    rng = np.random.default_rng(1)
    real = rng.normal(scale=2.0, size=(400, 3))  # variance 4
    runs = real[None] + rng.normal(scale=0.2, size=(10, 400, 3))  # run-to-run variance 0.04
    assert tb.output_variance_pct(runs, real) == pytest.approx(100 * 0.04 * 0.9 / 4, rel=0.1)


def test_energy_distance_matches_independent_formulations():
    from scipy.spatial.distance import cdist
    from scipy.stats import energy_distance as scipy_1d

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(120, 5)), rng.normal(0.3, 1.2, size=(90, 5))
    ref = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert tb.energy_distance(x, y) == pytest.approx(ref, rel=1e-9)
    # in 1-D scipy's energy_distance is sqrt(2E|X-Y| - E|X-X'| - E|Y-Y'|)
    assert np.sqrt(tb.energy_distance(x[:, 0], y[:, 0])) == pytest.approx(scipy_1d(x[:, 0], y[:, 0]), rel=1e-9)
    assert tb.energy_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_knn_precision_recall():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 4))
    same = tb.knn_precision_recall(real, rng.normal(size=(300, 4)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = tb.knn_precision_recall(real, rng.normal(scale=0.05, size=(300, 4)))
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.2  # mode collapse: low recall
    far = tb.knn_precision_recall(real, rng.normal(10, 1, size=(300, 4)))
    assert far == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "k": 3}
    # brute-force check of precision
    from scipy.spatial.distance import cdist

    fake = rng.normal(0.5, 1, size=(50, 4))
    radii = np.sort(cdist(real, real), 1)[:, 3]
    expect = (cdist(fake, real) <= radii[None]).any(1).mean()
    assert tb.knn_precision_recall(real, fake)["precision"] == pytest.approx(expect)


def test_spearman_mae_by_group_pathgen_table2_layout():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(4)
    real = rng.normal(size=(40, 6))
    pred = real.copy()
    pred[:, :3] += rng.normal(scale=0.1, size=(40, 3))  # group "good": well predicted
    pred[:, 3:] = rng.normal(size=(40, 3))  # group "bad": noise
    t = tb.spearman_mae_by_group(real, pred, ["good"] * 3 + ["bad"] * 3).set_index("group")
    assert list(t.index) == ["good", "bad", "all genes"]
    assert t.loc["good", "spearman"] > 0.95 and abs(t.loc["bad", "spearman"]) < 0.3
    assert t.loc["good", "spearman"] == pytest.approx(spearmanr(real[:, :3].ravel(), pred[:, :3].ravel()).statistic)
    assert t.loc["bad", "mae"] == pytest.approx(np.abs(real[:, 3:] - pred[:, 3:]).mean())
    assert t.loc["all genes", "n_features"] == 6 and t.loc["all genes", "n_samples"] == 40
    with pytest.raises(ValueError, match="5 group labels for 6 features"):
        tb.spearman_mae_by_group(real, pred, ["a"] * 5)


def test_classification_scores_equal_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3))
    logits[np.arange(200), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = tb.classification_scores(y, p)
    assert s["f1_macro"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert s["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    assert 0.7 < s["auc"] < 1 and s["accuracy"] > 0.5
    # binary, and a perfect classifier
    yb = (p[:, 0] > 0.5).astype(int)
    assert tb.classification_scores(yb, np.c_[1 - p[:, 0], p[:, 0]])["auc"] == 1.0
    assert np.isnan(tb.classification_scores(np.zeros(5, int), np.full((5, 2), 0.5))["auc"])
