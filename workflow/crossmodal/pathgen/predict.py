"""MCAT_GR runs (PathGen Methods 3.3): WSI only / WSI + synthesized / WSI + real expression.

Training: one case per step (MCAT trains with batch size 1 over variable-size bags), Adam
(paper: lr 2e-4), loss ``lambda L_survival + (1 - lambda) L_grade`` with lambda 0.3 (Results
2.3 and the Figure 8 caption, "lambda = 0 ... trained only using gradation loss"; Methods
equation (8) prints the weights the other way round - we follow the two statements that agree).
``mcat.select_epoch``: ``last`` (default; MCAT trains a fixed number of epochs without early
stopping, PathGen does not say) keeps the final epoch, ``val_loss`` the epoch of lowest
validation loss.  The "synthesized" run trains and evaluates on PathGen's synthesized expression for every case (PathGen was trained on the
same training cases, so their synthesized expression is in-sample for PathGen).

MCAT_GR trains and predicts per **patient**, as MCAT (whose data loader concatenates the features
of all of a case's slides into one bag) and the public PathGen code built on it: :func:`patient_bags`
pools a patient's slide bags into one bag and averages its expression rows (the same real
expression file for every slide; PathGen's per-slide syntheses, i.e. more draws).  A patient
counts once in training and in validation, whatever its number of slides.  Predictions have one
row per patient whose ``sample`` is its first slide (as in :func:`per_patient`'s case table), so
:func:`evaluate` and the conformal tables read them through :func:`per_patient` unchanged.
Predictions of every case are written with each kind of expression the run can take
(``real`` and ``synthesized`` for the genomic runs) so that conformal calibration can use the
same kind of expression as the test (:mod:`crossmodal.pathgen.uncertainty`).
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from crossmodal.fileio import atomic_path, write_table

log = logging.getLogger(__name__)

MODES = ("wsi", "synthesized", "real")


def total_loss(out: dict, grade: torch.Tensor, time_bin: torch.Tensor, censored: torch.Tensor, lam: float):
    """``lam * L_survival + (1 - lam) * L_grade`` (PathGen Results 2.3, Figure 8)."""
    from crossmodal.metrics.survival import nll_survival_loss

    l_grade = F.cross_entropy(out["grade_logits"], grade)
    l_risk = nll_survival_loss(out["hazard_logits"], time_bin, censored)
    return lam * l_risk + (1 - lam) * l_grade


def build(hp: dict, patch_dim: int, n_grades: int, group_sizes):
    from crossmodal.models.mcat import MCATGR

    return MCATGR(patch_dim, n_grades, hp["n_bins"], group_sizes=group_sizes, d_model=hp["d_model"],
                  n_heads=hp["n_heads"], dropout=hp["dropout"])


def _forward(model, bag, expr):
    """One bag (and expression row) through ``model`` on the model's device; outputs on the CPU
    (``.to`` keeps the graph, so a loss on them still trains the model)."""
    dev = next(model.parameters()).device
    x = bag.unsqueeze(0).to(dev)
    out = model(x, None, None if expr is None else expr.unsqueeze(0).to(dev))
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def patient_bags(cases: pd.DataFrame, bags: dict, expression: pd.DataFrame | None = None):
    """``(cases_pp, bags_pp, expression_pp)``: one row / bag / expression row per patient.

    ``cases``: the per-slide case table (index ``sample``, column ``patient``); ``bags``: sample ->
    (n, d) tensor; the patient's bag is its slides' patches concatenated in slide order, its
    expression the mean of its slides' rows.  ``cases_pp`` is :func:`per_patient`'s table (indexed
    by patient; ``sample`` = first slide, ``n_slides``)."""
    missing = [s for s in cases.index if s not in bags]
    if missing:
        raise ValueError(f"MCAT_GR: no patch bag for case(s) {', '.join(map(str, missing[:5]))}")
    cpp = per_patient(cases)
    slides = cases.groupby("patient", sort=False).groups
    pooled = {p: torch.cat([bags[s] for s in slides[p]]) for p in cpp.index}
    expr = None
    if expression is not None:
        expr = expression.loc[cases.index].groupby(cases["patient"].to_numpy(), sort=False).mean().loc[cpp.index]
    return cpp, pooled, expr


def train(cases: pd.DataFrame, bags: dict, expression: pd.DataFrame | None, group_sizes, hp: dict, *,
          n_grades: int, seed: int, device: str = "cpu"):
    """Train MCAT_GR on the training split's patients (one pooled bag each, :func:`patient_bags`)
    on ``device``; returns ``(model, history DataFrame)`` (the model stays on ``device``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cases, bags, expression = patient_bags(cases, bags, expression)
    patch_dim = next(iter(bags.values())).shape[1]
    model = build(hp, patch_dim, n_grades, group_sizes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    tr = cases[cases.split == "train"]
    va = cases[cases.split == "val"]
    E = None if expression is None else torch.tensor(expression.loc[cases.index].to_numpy(), dtype=torch.float32)
    pos = {s: i for i, s in enumerate(cases.index)}

    def lab(s):
        r = cases.loc[s]
        return (torch.tensor([int(r.grade)]), torch.tensor([int(r.time_bin)]), torch.tensor([int(r.censored)]))

    def case_loss(s):
        out = _forward(model, bags[s], None if E is None else E[pos[s]])
        return total_loss(out, *lab(s), hp["lambda_survival"])

    select = hp.get("select_epoch", "last")
    if select not in ("last", "val_loss"):
        raise ValueError(f"mcat.select_epoch: {select!r} is not 'last' or 'val_loss'")
    if select == "val_loss" and not len(va):
        raise ValueError("mcat.select_epoch 'val_loss': the case table has no validation case")
    best, best_state, hist = np.inf, None, []
    for epoch in tqdm(range(hp["epochs"]), desc="MCAT_GR training", leave=False, disable=None):
        model.train()
        tot = 0.0
        for s in tr.index[rng.permutation(len(tr))]:
            loss = case_loss(s)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item()
        model.eval()
        with torch.no_grad():
            vl = float(np.mean([float(case_loss(s)) for s in va.index])) if len(va) else float("nan")
        hist.append({"epoch": epoch + 1, "train_loss": tot / len(tr), "val_loss": vl})
        if select == "val_loss" and vl < best:
            best, best_state = vl, copy.deepcopy(model.state_dict())
    if select == "val_loss":
        model.load_state_dict(best_state)
        log.info("MCAT_GR: epoch %d of lowest validation loss %.4f kept",
                 int(np.nanargmin([h["val_loss"] for h in hist])) + 1, best)
    else:
        log.info("MCAT_GR: last epoch (%d) kept, validation loss %.4f", len(hist), hist[-1]["val_loss"])
    return model.eval(), pd.DataFrame(hist)


@torch.no_grad()
def predict(model, cases: pd.DataFrame, bags: dict, expression: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    """One row per patient (its slides pooled, :func:`patient_bags`; ``sample`` = its first slide,
    ``n_slides``): grade probabilities ``p_grade_<k>``, hazards, ``risk`` (MCAT's -sum S)."""
    from crossmodal.metrics.survival import risk_from_hazards

    cpp, bags, expression = patient_bags(cases, bags, expression)
    rows = []
    for pt in cpp.index:
        e = None if expression is None else torch.tensor(expression.loc[pt].to_numpy(), dtype=torch.float32)
        out = _forward(model, bags[pt], e)
        p = torch.softmax(out["grade_logits"], 1)[0].numpy()
        r = {"sample": cpp.at[pt, "sample"], "patient": pt, "n_slides": int(cpp.at[pt, "n_slides"]),
             "split": cpp.at[pt, "split"], "expression": kind,
             "risk": float(risk_from_hazards(out["hazard_logits"])[0])}
        r.update({f"p_grade_{k}": float(v) for k, v in enumerate(p)})
        r.update({f"hazard_{k}": float(v) for k, v in enumerate(torch.sigmoid(out["hazard_logits"])[0].numpy())})
        rows.append(r)
    return pd.DataFrame(rows)


@torch.no_grad()
def patch_predictions(model, bag: torch.Tensor, expression=None) -> pd.DataFrame:
    """Distributed predictions (PathGen Figures 3b/c): each patch alone as a bag of one."""
    from crossmodal.metrics.survival import risk_from_hazards

    rows = []
    e = None if expression is None else torch.tensor(np.asarray(expression), dtype=torch.float32)
    for i in range(len(bag)):
        out = _forward(model, bag[i:i + 1], e)
        p = torch.softmax(out["grade_logits"], 1)[0].numpy()
        rows.append({"patch": i, "expected_grade": float((p * np.arange(len(p))).sum()),
                     "risk": float(risk_from_hazards(out["hazard_logits"])[0])})
    return pd.DataFrame(rows)


def grade_probs(pred: pd.DataFrame) -> np.ndarray:
    cols = sorted([c for c in pred.columns if c.startswith("p_grade_")], key=lambda c: int(c.rsplit("_", 1)[1]))
    return pred[cols].to_numpy()


def auc(labels, probs) -> float:
    """Macro one-vs-rest AUC over the grades present (binary AUC with two grades)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, int)
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    p = probs[:, present]
    p = p / p.sum(1, keepdims=True)
    if len(present) == 2:
        return float(roc_auc_score(labels == present[1], p[:, 1]))
    return float(roc_auc_score(labels, p, multi_class="ovr", labels=present, average="macro"))


def cindex(event, time, risk) -> float:
    """C-index, NaN (not an error) when the cases hold no comparable pair (tiny test splits)."""
    from crossmodal.metrics.survival import concordance_index

    event = np.asarray(event).astype(bool)
    time = np.asarray(time, float)
    if not event.any() or not (time[event][:, None] < time[None, :]).any():
        return float("nan")
    return concordance_index(event, time, risk)


def per_patient(cases: pd.DataFrame, pred: pd.DataFrame | None = None):
    """Pool a patient's slides (PathGen reports patients; the GDC sample sheet has one row per
    diagnostic slide): the case table reduced to one row per patient (labels are per patient;
    ``sample`` becomes the patient's first slide, ``n_slides`` counts them) and, with ``pred``, the
    patient's predictions indexed by patient (:func:`predict` already gives one row per patient; rows
    of several slides of one patient - per-slide predictions - are averaged).

    Returns ``cases_pp`` (indexed by patient) or ``(cases_pp, pred_pp)`` with ``pred_pp`` indexed
    by patient.  Errors when one patient's slides disagree on a label or split.
    """
    c = cases.reset_index(drop=True)
    for col in ("split", "grade", "time_bin", "censored", "survival_time", "event"):
        if col in c.columns:
            bad = c.groupby("patient")[col].nunique(dropna=False)
            if (bad > 1).any():
                raise ValueError(f"case table: patient(s) {', '.join(map(str, bad.index[bad > 1][:5]))} have "
                                 f"slides with different {col!r}")
    cpp = c.groupby("patient", sort=False).first()
    cpp["n_slides"] = c.groupby("patient", sort=False).size()
    if pred is None:
        return cpp
    p = pred.copy()
    missing = set(p["sample"]) - set(c["sample"])
    if missing:
        raise ValueError(f"predictions: sample(s) not in the case table: {', '.join(sorted(missing)[:5])}")
    p["patient"] = p["sample"].map(c.set_index("sample")["patient"])
    num = [k for k in p.columns if k.startswith(("p_grade_", "hazard_")) or k == "risk"]
    keep = [k for k in ("split", "expression") if k in p.columns]
    agg = p.groupby("patient", sort=False)[num].mean()
    if keep:
        agg = agg.join(p.groupby("patient", sort=False)[keep].first())
    return cpp, agg


def p_true_grade(labels, probs) -> np.ndarray:
    """Per-patient predicted probability of the true grade (the per-patient grading score)."""
    labels = np.asarray(labels, int)
    return np.asarray(probs, float)[np.arange(len(labels)), labels]


def concordance_contributions(event, time, risk) -> np.ndarray:
    """Per-patient share of the comparable pairs it belongs to that ``risk`` orders correctly
    (Harrell's pairs; ties in risk count 1/2); NaN for a patient in no comparable pair.  Harrell's
    C-index is the pair-weighted mean of these."""
    e = np.asarray(event).astype(bool)
    t = np.asarray(time, float)
    r = np.asarray(risk, float)
    comp = e[:, None] & (t[:, None] < t[None, :])  # i dies before j is last seen
    conc = np.where(r[:, None] > r[None, :], 1.0, np.where(r[:, None] == r[None, :], 0.5, 0.0))
    n = comp.sum(1) + comp.sum(0)
    good = (comp * conc).sum(1) + (comp * conc).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, good / np.maximum(n, 1), np.nan)


def paired_bootstrap_p(diffs) -> float:
    """Two-sided percentile p-value of a paired bootstrap difference, ``2 min(P(d <= 0), P(d >= 0))``
    with the add-one estimate ``(count + 1) / (n + 1)`` (never 0 from finitely many resamples),
    capped at 1; NaN resamples dropped."""
    d = np.asarray(diffs, float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float("nan")
    n = len(d)
    return float(min(1.0, 2 * min(((d <= 0).sum() + 1) / (n + 1), ((d >= 0).sum() + 1) / (n + 1))))


def evaluate(cases: pd.DataFrame, preds: dict[str, pd.DataFrame], *, n_boot: int, seed: int):
    """Test-split AUC and C-index per run (per **patient**, read through :func:`per_patient`),
    bootstrap standard deviations, and tests between runs.

    The paper compares runs with "Wilcoxon rank-sum" tests (Results 2.3; supplementary Tables 4/5:
    "to compare the scores ... predicted using real and synthesized transcriptomic data").  We run
    the rank-sum test on **per-patient** quantities - the predicted probability of the true grade
    (grading) and the patient's concordance share (:func:`concordance_contributions`, survival) -
    so its p-value depends on the test patients, not on a number of bootstrap copies (a test on
    bootstrap copies of AUC / C-index has a p-value that falls with ``n_boot``).  The paper does
    not say which per-patient scores it ranks; these are our choice.  Beside it, a paired
    bootstrap of the AUC / C-index difference (same resampled patients for both runs) gives
    ``test = paired_bootstrap`` rows; its p-value converges as ``n_boot`` grows.
    """
    from crossmodal import stats

    cpp = per_patient(cases)
    test = cpp[cpp.split == "test"]
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(test), len(test)) for _ in range(n_boot)]
    y, ev, t = test.grade.to_numpy(), test.event.to_numpy(), test.survival_time.to_numpy()
    rows, boots, per = [], {}, {}
    for mode, pred in preds.items():
        _, ppp = per_patient(cases, pred)
        missing = set(test.index) - set(ppp.index)
        if missing:
            raise ValueError(f"predictions of run {mode!r}: no prediction for test patient(s) "
                             f"{', '.join(sorted(missing)[:5])}")
        p = ppp.loc[test.index]
        probs, risk = grade_probs(p), p["risk"].to_numpy()
        a, c = auc(y, probs), cindex(ev, t, risk)
        ba = np.array([auc(y[ii], probs[ii]) for ii in idx])
        bc = np.array([cindex(ev[ii], t[ii], risk[ii]) for ii in idx])
        boots[mode] = (ba, bc)
        per[mode] = (p_true_grade(y, probs), concordance_contributions(ev, t, risk))
        rows.append({"run": mode, "n_test": len(test), "n_test_slides": int(test.n_slides.sum()), "auc": a,
                     "c_index": c, "auc_boot_sd": float(np.nanstd(ba)) if len(ba) else np.nan,
                     "c_index_boot_sd": float(np.nanstd(bc)) if len(bc) else np.nan})
    tests = []
    modes = list(preds)
    for i, m1 in enumerate(modes):
        for m2 in modes[i + 1:]:
            for k, (name, metric) in enumerate((("p(true grade)", "auc"), ("concordance share", "c_index"))):
                x, z = per[m1][k], per[m2][k]
                x, z = x[~np.isnan(x)], z[~np.isnan(z)]
                label = f"{name} per patient: {m1} vs {m2}"
                if len(x) < 2 or len(z) < 2:
                    tests.append({"test": "wilcoxon_ranksum", "label": label, "statistic": np.nan,
                                  "p_value": np.nan, "n_x": len(x), "n_y": len(z)})
                else:
                    tests.append(stats.ranksum(x, z, label=label))
                d = boots[m1][k] - boots[m2][k]
                tests.append({"test": "paired_bootstrap", "label": f"{metric} difference: {m1} - {m2}",
                              "statistic": float(np.nanmean(d)) if (~np.isnan(d)).any() else np.nan,
                              "p_value": paired_bootstrap_p(d), "n_x": len(test), "n_y": len(test)})
    return pd.DataFrame(rows), pd.DataFrame(tests)


def save(path, model, hp, meta) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": "crossmodal-mcat-gr", "hp": hp, "meta": meta, "state": model.state_dict(),
                    "group_sizes": model.group_sizes, "patch_dim": model.patch_fc[0].in_features,
                    "n_grades": model.grade_head[-1].out_features}, tmp)


def load(path):
    from crossmodal.fileio import load_checkpoint

    ck = load_checkpoint(path, "MCAT_GR checkpoint", fmt="crossmodal-mcat-gr", hint="written by rule train_mcat_gr")
    m = build(ck["hp"], ck["patch_dim"], ck["n_grades"], ck["group_sizes"])
    m.load_state_dict(ck["state"])
    return m.eval(), ck


def write_predictions(path, preds: pd.DataFrame) -> None:
    write_table(path, preds, index=False, float_format="%.6g")
