"""Conformal grade sets and risk bounds for the MCAT_GR runs (PathGen Methods 3.4, Tables 4-5).

Uses :mod:`crossmodal.conformal` (Algorithms 3 and 4, equations 10 and 12).  Calibration
variants, for a run that takes expression:

* ``cal=<kind>, test=<kind>`` - calibrated on the calibration split with the **same kind** of
  expression the test uses (the valid procedure: calibration and test scores exchangeable);
* ``cal=real, test=synthesized`` - what PathGen's public code does (calibrates on real, tests on
  synthetic); reported for comparison, its coverage guarantee does not hold.

Everything is per **patient** (PathGen reports patients; the sample sheet has one row per
diagnostic slide): MCAT_GR predicts once per patient from the pooled bag of its slides
(:func:`crossmodal.pathgen.predict.patient_bags`; read through :func:`crossmodal.pathgen.predict.per_patient`) before calibration, so a patient with several slides is one calibration / test point; the
magnification level of a patient is that of its first slide.

Per-patient file ``conformal/cases.tsv``: run, calibration, test, valid, patient, n_slides,
grade_set_size, grade_covered, grade_uncertainty (eq. 10), risk (MCAT's ``-sum_k S_k``, in
[-n_bins, 0]), risk_scaled (the same on [risk_min, risk_max], the scale of eq. 12 and of the
bounds), risk_lb, risk_ub, risk_covered, risk_uncertainty (eq. 12), p_true_grade (predicted
probability of the patient's grade).

Fairness tables: coverage / mean set size / uncertainty, and the group's AUC (grade rows) or
C-index (risk rows) as in Tables 4 / 5, by sex, age group, magnification level,
censorship, grade and time bin.  ``mc_coverage``: coverage averaged over ``n_resplits`` random
re-partitions of the calibration + test cases into calibration / test of the same sizes - the
Monte-Carlo estimate of the marginal coverage that split conformal guarantees (>= 1 - alpha) -
with its standard error ``mc_*_coverage_se`` (:func:`mc_coverage_tolerance`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal import conformal

FAIRNESS = ["sex", "age_group", "level", "censorship", "grade_name", "time_bin"]

# coverage "holds" down to this many standard errors below 1 - alpha (issue 7's toy check)
COVERAGE_SE = 3


def coverage_tolerance(alpha: float, n: int) -> float:
    """How far below ``1 - alpha`` the coverage of ONE split with ``n`` test cases may fall by
    sampling error alone: :data:`COVERAGE_SE` binomial standard errors,
    ``3 * sqrt(alpha (1 - alpha) / n)``."""
    return COVERAGE_SE * float(np.sqrt(alpha * (1 - alpha) / n)) if n > 0 else float("nan")


def mc_coverage_tolerance(se: float) -> float:
    """How far below ``1 - alpha`` the re-split mean coverage (``mc_*_coverage``) may fall by
    Monte-Carlo error alone: :data:`COVERAGE_SE` standard errors of that mean (``mc_*_coverage_se``,
    the SD over re-splits / sqrt(re-splits)).  Over random calibration / test partitions of one
    pool of exchangeable cases, split conformal's mean coverage is exactly
    ceil((n_cal + 1)(1 - alpha)) / (n_cal + 1) >= 1 - alpha without ties (more with ties), so only
    the Monte-Carlo error of the re-splits separates the estimate from the guarantee."""
    return COVERAGE_SE * float(se)


def _sets(cal: pd.DataFrame, test: pd.DataFrame, cases: pd.DataFrame, hp: dict) -> dict:
    from crossmodal.pathgen.predict import grade_probs

    a = hp["alpha"]
    gs = conformal.grade_sets(grade_probs(cal), cases.loc[cal.index, "grade"], grade_probs(test), a)
    rk = conformal.risk_sets(_scale(cal.risk, hp), cases.loc[cal.index, "time_bin"], _scale(test.risk, hp), a,
                             n_bins=hp["n_bins"], risk_min=hp["risk_min"], risk_max=hp["risk_max"])
    return {"grade_sets": gs, "grade_unc": conformal.grade_uncertainty(gs), **rk}


def _scale(risk, hp):
    """MCAT's risk ``-sum_k S_k`` lies in [-n_bins, 0]; map it onto [risk_min, risk_max] (eq. 12)."""
    r = np.asarray(risk, float)
    return hp["risk_min"] + (r + hp["n_bins"]) / hp["n_bins"] * (hp["risk_max"] - hp["risk_min"])


def conformal_tables(cases: pd.DataFrame, pred: pd.DataFrame, run: str, hp: dict, *, seed: int):
    """``(per_patient, summary, fairness)`` for one run's predictions (all expression kinds)."""
    from crossmodal.pathgen.predict import auc, cindex, grade_probs, per_patient

    cpp = per_patient(cases)
    cpp = cpp.assign(censorship=np.where(cpp.censored == 1, "alive", "dead"))
    kinds = list(dict.fromkeys(pred.expression))
    variants = [(k, k) for k in kinds]
    if "real" in kinds and "synthesized" in kinds:
        variants.append(("real", "synthesized"))
    pp = {k: per_patient(cases, pred[pred.expression == k])[1] for k in kinds}
    per, summ, fair = [], [], []
    for cal_kind, test_kind in variants:
        pc, pt = pp[cal_kind], pp[test_kind]
        cal = pc[pc.split == "calibration"]
        test = pt[pt.split == "test"]
        r = _sets(cal, test, cpp, hp)
        y, b = cpp.loc[test.index, "grade"].to_numpy(), cpp.loc[test.index, "time_bin"].to_numpy()
        g_cov = r["grade_sets"][np.arange(len(y)), y]
        r_cov = conformal.risk_covered(_scale(test.risk, hp), b, r["q_hat"], n_bins=hp["n_bins"],
                                       risk_min=hp["risk_min"], risk_max=hp["risk_max"])
        probs = grade_probs(test)
        ev, tt = cpp.loc[test.index, "event"].to_numpy(), cpp.loc[test.index, "survival_time"].to_numpy()
        valid = cal_kind == test_kind
        label = {"run": run, "calibration": cal_kind, "test": test_kind, "valid": valid}
        per.append(pd.DataFrame({**label, "patient": test.index, "n_slides": cpp.loc[test.index, "n_slides"].to_numpy(),
                                 "grade_set_size": r["grade_sets"].sum(1),
                                 "grade_covered": g_cov, "grade_uncertainty": r["grade_unc"],
                                 "risk": test.risk.to_numpy(), "risk_scaled": _scale(test.risk, hp),
                                 "risk_lb": r["lb"], "risk_ub": r["ub"],
                                 "risk_covered": r_cov, "risk_uncertainty": r["uncertainty"],
                                 "p_true_grade": probs[np.arange(len(y)), y]}))
        mc = _mc_coverage(pc, pt, cpp, hp, seed) if valid else {}
        summ.append({**label, "alpha": hp["alpha"], "n_calibration": len(cal), "n_test": len(test),
                     "grade_coverage": float(g_cov.mean()), "grade_uncertainty": float(r["grade_unc"].mean()),
                     "risk_coverage": float(r_cov.mean()), "risk_uncertainty": float(np.mean(r["uncertainty"])),
                     **mc})
        for col in FAIRNESS:
            groups = cpp.loc[test.index, col].astype(str).to_numpy()
            for what, sets, lab, unc in (("grade", r["grade_sets"], y, r["grade_unc"]),
                                         ("risk", r["sets"], b, r["uncertainty"])):
                t = conformal.coverage_table(sets, lab, groups, unc, group_name="group")
                if what == "risk":  # coverage of the interval itself (eq. 11), not only of the bin set
                    t["interval_coverage"] = [float(r_cov.mean())] + [float(r_cov[groups == g].mean())
                                                                      for g in t.group[1:]]
                # Tables 4 / 5: the group's AUC (grading) / C-index (survival), NaN where undefined
                masks = [np.ones(len(groups), bool)] + [groups == g for g in t.group[1:]]
                if what == "grade":
                    t["auc"] = [auc(y[k], probs[k]) for k in masks]
                else:
                    t["c_index"] = [cindex(ev[k], tt[k], test.risk.to_numpy()[k]) for k in masks]
                fair.append(t.assign(**label, task=what, stratify=col))
    fairness = pd.concat(fair, ignore_index=True)
    fairness = fairness[~((fairness.group == "all") & fairness.duplicated(["run", "calibration", "test", "task", "group"]))]
    return pd.concat(per, ignore_index=True), pd.DataFrame(summ), fairness.reset_index(drop=True)


def subgroup_tests(per_case: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """Supplementary Tables 4 / 5 p-values: per group of each fairness stratification (and
    ``all``), Wilcoxon rank-sum tests of WSI + real (tested on real) against WSI + synthesized
    (tested on synthesized), both validly calibrated, on the per-patient predicted scores -
    ``p_true_grade`` (grade) and ``risk_scaled`` (risk) - and on the per-patient uncertainties
    (eq. 10 / 12).  Empty when either run is missing."""
    from crossmodal import stats
    from crossmodal.pathgen.predict import per_patient

    d = per_case[per_case.valid.astype(str).str.lower() == "true"]
    a = d[(d.run == "real") & (d.test == "real")].set_index("patient")
    b = d[(d.run == "synthesized") & (d.test == "synthesized")].set_index("patient")
    if a.empty or b.empty:
        return pd.DataFrame(columns=["stratify", "group", "task", "quantity", "test", "statistic", "p_value",
                                     "n_x", "n_y"])
    cpp = per_patient(cases)
    cpp = cpp.assign(censorship=np.where(cpp.censored == 1, "alive", "dead"))
    rows = []
    for col in ["all"] + FAIRNESS:
        groups = [("all", list(a.index))] if col == "all" else [
            (str(g), list(ix)) for g, ix in cpp.loc[a.index].groupby(cpp.loc[a.index, col].astype(str)).groups.items()]
        for g, ix in groups:
            for task, score, unc in (("grade", "p_true_grade", "grade_uncertainty"),
                                     ("risk", "risk_scaled", "risk_uncertainty")):
                for quantity in (score, unc):
                    x, y = a.loc[ix, quantity].to_numpy(float), b.loc[b.index.intersection(ix), quantity].to_numpy(float)
                    base = {"stratify": col, "group": g, "task": task, "quantity": quantity}
                    if len(x) < 1 or len(y) < 1:
                        rows.append({**base, "test": "wilcoxon_ranksum", "statistic": np.nan, "p_value": np.nan,
                                     "n_x": len(x), "n_y": len(y)})
                        continue
                    r = stats.ranksum(x, y, label=f"{col}={g}: {quantity}, real vs synthesized")
                    rows.append({**base, "test": r["test"], "statistic": r["statistic"], "p_value": r["p_value"],
                                 "n_x": r["n_x"], "n_y": r["n_y"]})
    return pd.DataFrame(rows)


def _mc_coverage(pc, pt, cases, hp, seed) -> dict:
    import math

    pool = list(pc.index[pc.split.isin(["calibration", "test"])])
    n_cal = int((pc.split == "calibration").sum())
    if n_cal == 0 or math.ceil((n_cal + 1) * (1 - hp["alpha"])) > n_cal or len(pool) == n_cal:
        # too few calibration cases: every set is the full set; a Monte-Carlo estimate says nothing
        return {"mc_grade_coverage": float("nan"), "mc_risk_coverage": float("nan"),
                "mc_grade_coverage_se": float("nan"), "mc_risk_coverage_se": float("nan"),
                "mc_resplits": 0, "mc_n_test": len(pool) - n_cal}
    rng = np.random.default_rng(seed)
    g, r = [], []
    for _ in range(hp["n_resplits"]):
        perm = rng.permutation(pool)
        cal, test = pc.loc[perm[:n_cal]], pt.loc[perm[n_cal:]]
        res = _sets(cal, test, cases, hp)
        y = cases.loc[test.index, "grade"].to_numpy()
        g.append(res["grade_sets"][np.arange(len(y)), y].mean())
        r.append(conformal.risk_covered(_scale(test.risk, hp), cases.loc[test.index, "time_bin"], res["q_hat"],
                                        n_bins=hp["n_bins"], risk_min=hp["risk_min"], risk_max=hp["risk_max"]).mean())
    se = np.sqrt(hp["n_resplits"])
    return {"mc_grade_coverage": float(np.mean(g)), "mc_risk_coverage": float(np.mean(r)),
            "mc_grade_coverage_se": float(np.std(g, ddof=1) / se) if len(g) > 1 else float("nan"),
            "mc_risk_coverage_se": float(np.std(r, ddof=1) / se) if len(r) > 1 else float("nan"),
            "mc_resplits": hp["n_resplits"], "mc_n_test": len(pool) - n_cal}


def plot_fairness(per_case: pd.DataFrame, cases: pd.DataFrame, path) -> None:
    """Figure 5b: predicted risk (rescaled onto [risk_min, risk_max], the scale of the bounds and of
    eq. 12) vs risk uncertainty (eq. 12) per test patient, colour = grade, marker = alive / dead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.fileio import save_figure

    from crossmodal.pathgen.predict import per_patient

    d = per_case[per_case.valid].copy()
    d = d.join(per_patient(cases)[["grade_name", "censored"]], on="patient")
    combos = list(d.groupby(["run", "test"]).groups)
    fig, axes = plt.subplots(1, len(combos), figsize=(4 * len(combos), 3.5), squeeze=False)
    grades = sorted(d.grade_name.unique())
    cmap = plt.get_cmap("viridis", max(len(grades), 2))
    for ax, (run, kind) in zip(axes[0], combos):
        sub = d[(d.run == run) & (d.test == kind)]
        for gi, gname in enumerate(grades):
            for cens, mk in ((1, "o"), (0, "x")):
                s = sub[(sub.grade_name == gname) & (sub.censored == cens)]
                ax.scatter(s.risk_scaled, s.risk_uncertainty, color=cmap(gi), marker=mk,
                           label=f"grade {gname}, {'alive' if cens else 'dead'}")
        ax.set_title(f"{run}, test expression: {kind}", fontsize=9)
        ax.set_xlabel("predicted risk, rescaled (eq. 12 scale)")
        ax.set_ylabel("risk uncertainty (eq. 12)")
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
