"""Survival metrics and losses.

* :func:`concordance_index` - Harrell's C-index; identical to scikit-survival's
  ``concordance_index_censored`` (which it calls: one implementation, maintained upstream),
  with input checks that name the offending argument.
* :func:`nll_survival_loss` - the discrete-time negative log-likelihood survival loss over time
  bins of MCAT (Chen et al. 2021, ICCV; the loss PathGen's MCAT_GR uses for risk, PathGen
  Methods 3.3.2), written in torch.
* :func:`risk_from_hazards` - MCAT's risk score ``-sum_k S_k`` from per-bin hazards.
* :func:`time_bins` - quartile time bins computed on uncensored patients (MCAT's binning);
  :func:`assign_bins` the bin of each time.
* :func:`time_dependent_auc` - cumulative/dynamic AUC at given times with inverse-probability-
  of-censoring weights (Uno et al. 2007 / Hung & Chiang 2010), scikit-survival's
  ``cumulative_dynamic_auc`` with input checks.

Public names: ``concordance_index``, ``nll_survival_loss``, ``risk_from_hazards``,
``time_bins``, ``assign_bins``, ``time_dependent_auc``.
"""
from __future__ import annotations

import numpy as np


def _as_1d(name: str, x, dtype=None) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"concordance_index: {name} must be 1-D, got shape {a.shape}")
    return a


def concordance_index(event, time, risk) -> float:
    """Harrell's C-index: the fraction of comparable pairs ordered correctly by ``risk``.

    ``event`` (bool: death observed), ``time`` (follow-up), ``risk`` (higher = earlier event).
    Ties in risk count 1/2.  Equal to ``sksurv.metrics.concordance_index_censored(...)[0]``.
    """
    from sksurv.metrics import concordance_index_censored

    e = _as_1d("event", event)
    t = _as_1d("time", time, float)
    r = _as_1d("risk", risk, float)
    if not (len(e) == len(t) == len(r)):
        raise ValueError(f"concordance_index: lengths differ (event {len(e)}, time {len(t)}, risk {len(r)})")
    if not np.isin(e, [0, 1, True, False]).all():
        raise ValueError("concordance_index: event must be boolean (1 = event observed)")
    for name, a in (("time", t), ("risk", r)):
        if not np.isfinite(a).all():
            raise ValueError(f"concordance_index: {name} has {int((~np.isfinite(a)).sum())} non-finite values")
    if not e.astype(bool).any():
        raise ValueError("concordance_index: no events - the C-index is undefined")
    return float(concordance_index_censored(e.astype(bool), t, r)[0])


def time_bins(time, event, n_bins: int = 4) -> np.ndarray:
    """Bin edges (length ``n_bins + 1``) at the quantiles of uncensored survival times (MCAT);
    the first edge is 0 and the last +inf so every patient falls in a bin."""
    t = np.asarray(time, float)
    e = np.asarray(event, bool)
    base = t[e] if e.sum() >= n_bins else t
    q = np.quantile(base, np.linspace(0, 1, n_bins + 1))
    q[0], q[-1] = 0.0, np.inf
    return q


def assign_bins(time, edges) -> np.ndarray:
    """Index of the time bin of each ``time`` given ``edges`` from :func:`time_bins`."""
    edges = np.asarray(edges, float)
    return np.clip(np.searchsorted(edges, np.asarray(time, float), side="right") - 1, 0, len(edges) - 2)


def nll_survival_loss(hazards_logits, label, censored, alpha: float = 0.0, eps: float = 1e-7):
    """Discrete-time NLL survival loss (MCAT ``NLLSurvLoss``).

    ``hazards_logits`` (B, K) logits of the per-bin hazard h_k = P(T = k | T >= k);
    ``label`` (B,) long: the patient's time bin; ``censored`` (B,) 1 = censored (alive).
    With S_k = prod_{j<=k} (1 - h_j) and S_{-1} = 1::

        uncensored: -log S_{y-1} - log h_y
        censored:   -log S_y
        loss = (1 - alpha) * (uncensored + censored) + alpha * uncensored   (mean over batch)

    ``alpha`` = 0 (MCAT's default when training) gives the plain likelihood.
    """
    import torch

    h = torch.sigmoid(hazards_logits)
    y = label.long().view(-1, 1)
    c = censored.float().view(-1, 1)
    s = torch.cumprod(1 - h, dim=1)
    s_pad = torch.cat([torch.ones_like(c), s], dim=1)  # s_pad[:, k] = S_{k-1}
    s_prev = torch.gather(s_pad, 1, y).clamp_min(eps)
    h_this = torch.gather(h, 1, y).clamp_min(eps)
    s_this = torch.gather(s_pad, 1, y + 1).clamp_min(eps)
    uncensored = -(1 - c) * (torch.log(s_prev) + torch.log(h_this))
    censored_term = -c * torch.log(s_this)
    loss = (1 - alpha) * (uncensored + censored_term) + alpha * uncensored
    return loss.mean()


def risk_from_hazards(hazards_logits):
    """MCAT's risk score ``-sum_k S_k`` (higher = earlier event), as a numpy array."""
    import torch

    h = torch.sigmoid(torch.as_tensor(hazards_logits, dtype=torch.float32))
    s = torch.cumprod(1 - h, dim=1)
    return (-s.sum(dim=1)).detach().cpu().numpy()


def time_dependent_auc(event_train, time_train, event_test, time_test, risk, times) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC of ``risk`` (higher = earlier event) at each of ``times``.

    Cases at t: test patients with an event at or before t; controls: those still at risk after
    t; censoring is corrected with the Kaplan-Meier censoring distribution of the *training*
    set (``event_train``, ``time_train``).  ``times`` must lie within the test follow-up range.
    Returns ``(auc per time, mean AUC weighted by the survival function)``, as
    ``sksurv.metrics.cumulative_dynamic_auc``.
    """
    from sksurv.metrics import cumulative_dynamic_auc
    from sksurv.util import Surv

    et, tt = _as_1d("event_train", event_train), _as_1d("time_train", time_train, float)
    es, ts = _as_1d("event_test", event_test), _as_1d("time_test", time_test, float)
    r = _as_1d("risk", risk, float)
    tm = np.atleast_1d(np.asarray(times, float))
    if len(et) != len(tt) or len(es) != len(ts) or len(ts) != len(r):
        raise ValueError(f"time_dependent_auc: lengths differ (train {len(et)}/{len(tt)}, "
                         f"test {len(es)}/{len(ts)}, risk {len(r)})")
    if not np.isfinite(r).all():
        raise ValueError(f"time_dependent_auc: risk has {int((~np.isfinite(r)).sum())} non-finite values")
    lo, hi = ts[es.astype(bool)].min() if es.astype(bool).any() else np.inf, ts.max()
    if (tm < lo).any() or (tm >= hi).any():
        raise ValueError(f"time_dependent_auc: times must lie in [{lo:g}, {hi:g}) (first test event, "
                         f"last test follow-up), got {tm.min():g}..{tm.max():g}")
    auc, mean = cumulative_dynamic_auc(Surv.from_arrays(et.astype(bool), tt), Surv.from_arrays(es.astype(bool), ts),
                                       r, tm)
    return np.asarray(auc, float), float(mean)
