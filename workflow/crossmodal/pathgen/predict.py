"""MCAT_GR runs (PathGen Methods 3.3): WSI only / WSI + synthesized / WSI + real expression.

Training: one case per step (MCAT trains with batch size 1 over variable-size bags), Adam
(paper: lr 2e-4), loss ``lambda L_survival + (1 - lambda) L_grade`` with lambda 0.3 (Results
2.3 and the Figure 8 caption, "lambda = 0 ... trained only using gradation loss"; Methods
equation (8) prints the weights the other way round - we follow the two statements that agree).
The validation split selects the epoch (lowest validation loss).  The "synthesized" run trains
and evaluates on PathGen's synthesized expression for every case (PathGen was trained on the
same training cases, so their synthesized expression is in-sample for PathGen).

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
    x = bag.unsqueeze(0)
    return model(x, None, None if expr is None else expr.unsqueeze(0))


def train(cases: pd.DataFrame, bags: dict, expression: pd.DataFrame | None, group_sizes, hp: dict, *,
          n_grades: int, seed: int):
    """Train MCAT_GR on the training split; returns ``(model, history DataFrame)``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    patch_dim = next(iter(bags.values())).shape[1]
    model = build(hp, patch_dim, n_grades, group_sizes)
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
            vl = float(np.mean([float(case_loss(s)) for s in va.index])) if len(va) else tot / len(tr)
        hist.append({"epoch": epoch + 1, "train_loss": tot / len(tr), "val_loss": vl})
        if vl < best:
            best, best_state = vl, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    log.info("MCAT_GR: best validation loss %.4f (epoch %d)", best,
             int(np.argmin([h["val_loss"] for h in hist])) + 1)
    return model.eval(), pd.DataFrame(hist)


@torch.no_grad()
def predict(model, cases: pd.DataFrame, bags: dict, expression: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    """One row per case: grade probabilities ``p_grade_<k>``, hazards, ``risk`` (MCAT's -sum S)."""
    from crossmodal.metrics.survival import risk_from_hazards

    rows = []
    for s in cases.index:
        e = None if expression is None else torch.tensor(expression.loc[s].to_numpy(), dtype=torch.float32)
        out = _forward(model, bags[s], e)
        p = torch.softmax(out["grade_logits"], 1)[0].numpy()
        r = {"sample": s, "split": cases.at[s, "split"], "expression": kind,
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


def evaluate(cases: pd.DataFrame, preds: dict[str, pd.DataFrame], *, n_boot: int, seed: int):
    """Test-split AUC and C-index per run, bootstrap distributions and rank-sum tests."""
    from crossmodal import stats

    rng = np.random.default_rng(seed)
    test = cases[cases.split == "test"]
    idx = [rng.integers(0, len(test), len(test)) for _ in range(n_boot)]
    rows, boots = [], {}
    for mode, pred in preds.items():
        p = pred.set_index("sample").loc[test.index]
        probs, risk = grade_probs(p), p["risk"].to_numpy()
        y, ev, t = test.grade.to_numpy(), test.event.to_numpy(), test.survival_time.to_numpy()
        a, c = auc(y, probs), cindex(ev, t, risk)
        ba, bc = [], []
        for ii in idx:
            ba.append(auc(y[ii], probs[ii]))
            bc.append(cindex(ev[ii], t[ii], risk[ii]))
        boots[mode] = (np.array(ba), np.array(bc))
        rows.append({"run": mode, "n_test": len(test), "auc": a, "c_index": c,
                     "auc_boot_sd": float(np.nanstd(ba)), "c_index_boot_sd": float(np.nanstd(bc))})
    tests = []
    modes = list(preds)
    for i, m1 in enumerate(modes):
        for m2 in modes[i + 1:]:
            for k, name in enumerate(("auc", "c_index")):
                x, y = boots[m1][k], boots[m2][k]
                x, y = x[~np.isnan(x)], y[~np.isnan(y)]
                if len(x) < 2 or len(y) < 2:
                    tests.append({"test": "wilcoxon_ranksum", "label": f"{name}: {m1} vs {m2}",
                                  "statistic": np.nan, "p_value": np.nan, "n_x": len(x), "n_y": len(y)})
                    continue
                tests.append(stats.ranksum(x, y, label=f"{name}: {m1} vs {m2}"))
    return pd.DataFrame(rows), pd.DataFrame(tests)


def save(path, model, hp, meta) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": "crossmodal-mcat-gr", "hp": hp, "meta": meta, "state": model.state_dict(),
                    "group_sizes": model.group_sizes, "patch_dim": model.patch_fc[0].in_features,
                    "n_grades": model.grade_head[-1].out_features}, tmp)


def load(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != "crossmodal-mcat-gr":
        raise ValueError(f"MCAT_GR checkpoint {path}: not a crossmodal-mcat-gr checkpoint")
    m = build(ck["hp"], ck["patch_dim"], ck["n_grades"], ck["group_sizes"])
    m.load_state_dict(ck["state"])
    return m.eval(), ck


def write_predictions(path, preds: pd.DataFrame) -> None:
    write_table(path, preds, index=False, float_format="%.6g")
