"""C-index equals scikit-survival's on a dataset it ships; the MCAT NLL survival loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.metrics import survival as sv


def test_cindex_equals_sksurv_on_veterans_lung_cancer():
    from sksurv.datasets import load_veterans_lung_cancer
    from sksurv.metrics import concordance_index_censored

    x, y = load_veterans_lung_cancer()
    event, time = y["Status"], y["Survival_in_days"]
    risk = -x["Karnofsky_score"].to_numpy(float)  # a poorer performance score -> higher risk
    ours = sv.concordance_index(event, time, risk)
    assert ours == pytest.approx(concordance_index_censored(event, time, risk)[0], abs=1e-12)
    assert 0.6 < ours < 0.8  # Karnofsky is prognostic in this trial
    assert sv.concordance_index(event, time, -risk) == pytest.approx(1 - ours, abs=0.01)


def test_cindex_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths differ"):
        sv.concordance_index([1, 0], [1.0, 2.0, 3.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="risk has 1 non-finite"):
        sv.concordance_index([1, 0, 1], [1.0, 2.0, 3.0], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="no events"):
        sv.concordance_index([0, 0], [1.0, 2.0], [0.1, 0.2])


def test_nll_loss_matches_hand_computed_likelihood_and_learns():
    logits = torch.tensor([[0.0, 1.0, -1.0, 0.5], [2.0, -0.5, 0.0, 0.0]])
    label, cens = torch.tensor([2, 1]), torch.tensor([0.0, 1.0])
    h = torch.sigmoid(logits)
    # patient 0 died in bin 2: survived bins 0, 1 then the event; patient 1 censored in bin 1
    l0 = -(torch.log(1 - h[0, 0]) + torch.log(1 - h[0, 1]) + torch.log(h[0, 2]))
    l1 = -(torch.log(1 - h[1, 0]) + torch.log(1 - h[1, 1]))
    assert float(sv.nll_survival_loss(logits, label, cens)) == pytest.approx(float((l0 + l1) / 2), rel=1e-6)

    # fitting the loss on data with an ordering makes the risk concordant with it
    torch.manual_seed(0)
    t = torch.randint(0, 4, (64,))
    x = torch.nn.functional.one_hot(t, 4).float()
    lin = torch.nn.Linear(4, 4)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        sv.nll_survival_loss(lin(x), t, torch.zeros(64)).backward()
        opt.step()
    risk = sv.risk_from_hazards(lin(x))
    # pairs with tied times are not comparable, so a perfect ordering of the bins gives 1
    assert sv.concordance_index(np.ones(64, bool), t.numpy().astype(float), risk) > 0.95


def test_time_bins_cover_everyone():
    rng = np.random.default_rng(0)
    time, event = rng.exponential(30, 200), rng.random(200) < 0.6
    edges = sv.time_bins(time, event, 4)
    b = sv.assign_bins(time, edges)
    assert edges[0] == 0 and np.isinf(edges[-1]) and set(b) == {0, 1, 2, 3}
    counts = np.bincount(b[event], minlength=4)
    assert counts.min() >= 0.2 * event.sum()  # quartiles of uncensored times


def test_time_dependent_auc_without_censoring_is_the_roc_auc_of_the_cumulative_cases():
    """Without censoring the IPCW weights are equal, so the cumulative/dynamic AUC at t is the
    plain ROC AUC of risk for 'event by t' - an independent formulation."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    z = rng.normal(size=300)
    time = rng.exponential(100 * np.exp(-z))  # higher z -> earlier death
    event = np.ones(300, bool)
    times = np.quantile(time, [0.25, 0.5, 0.75])
    auc, mean = sv.time_dependent_auc(event, time, event, time, z, times)
    for a, t in zip(auc, times):
        assert a == pytest.approx(roc_auc_score(time <= t, z), rel=1e-9)
    assert 0.6 < mean < 0.9  # the planted risk is found
    noise, _ = sv.time_dependent_auc(event, time, event, time, rng.normal(size=300), times)
    assert np.all(np.abs(noise - 0.5) < 0.12)
    with pytest.raises(ValueError, match="times must lie in"):
        sv.time_dependent_auc(event, time, event, time, z, [time.max() + 1])
