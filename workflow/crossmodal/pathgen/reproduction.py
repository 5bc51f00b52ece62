"""PathGen reproduction table: each paper claim next to this run's number.

``results/pathgen/reproduction.tsv`` has the shared columns of :mod:`crossmodal.reproduction`
(``claim``, ``paper_value`` - "0.713 (GBMLGG) / 0.717 (KIRC)" -, ``paper_section``, ``this_run``,
``data`` - ``toy`` or the TCGA project(s) of the PathGen cases -, ``direction_holds``, ``note``)
and then ``paper_gbmlgg``, ``paper_kirc`` (the paper's numbers for TCGA-GBMLGG / TCGA-KIRC as
numbers) and ``n`` (cases this run's number is computed on).  Every note starts with the
stand-ins (the cohort-trained SimCLR encoder instead of UNI, the planted-signal toy cohort) and
says what "direction" means for its row; bare values (MAE, uncertainty, WSI only) are ``n/a``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal.pathgen.uncertainty import COVERAGE_SE, coverage_tolerance, mc_coverage_tolerance
from crossmodal.reproduction import Claims, fmt, holds, join_notes

# Table 2 (supplementary): MAE, Spearman per gene group, GBMLGG then KIRC
TABLE2 = {
    "tumour_suppressor": ("Tumor Suppressor Genes", 0.137, 0.472, 0.116, 0.629),
    "oncogene": ("Oncogenes", 0.085, 0.770, 0.074, 0.817),
    "protein_kinase": ("Protein Kinases", 0.084, 0.749, 0.078, 0.785),
    "cell_differentiation": ("Cell Differentiation Markers", 0.069, 0.724, 0.070, 0.777),
    "transcription_factor": ("Transcription Factors", 0.122, 0.615, 0.117, 0.666),
    "cytokine_growth_factor": ("Cytokines and Growth Factors", 0.062, 0.771, 0.095, 0.610),
    "all genes": ("All genes", 0.098, 0.713, 0.097, 0.717),
}
# Results 2.3: AUC, C-index per run (GBMLGG, KIRC)
PREDICTION = {"wsi": ((0.823, 0.842), (0.714, 0.671)), "synthesized": ((0.890, 0.861), (0.773, 0.681)),
              "real": ((0.907, 0.866), (0.778, 0.697))}
RUN_LABEL = {"wsi": "WSI only", "synthesized": "WSI + synthesized", "real": "WSI + real"}
# Results 2.5: overall uncertainty, real -> synthesized (GBMLGG, KIRC)
UNCERTAINTY = {"grade": ((0.407, 0.413), (0.292, 0.334)), "risk": ((0.446, 0.438), (0.898, 0.909))}
# Results 2.4 / Table 3: co-attention maps real vs synthesized, all genes (Spearman, MAE)
COATTENTION = ((0.939, 2.069), (0.851, 0.591))
# supplementary Tables 4 / 5, "overall" rows: coverage real -> synthesized (GBMLGG, KIRC), alpha 0.1
COVERAGE = {"grade": ((0.981, 0.981), (0.922, 0.948)), "risk": ((0.933, 0.923), (0.882, 0.928))}
# supplementary Tables 4 / 5, "overall" rows: Wilcoxon rank-sum p, real vs synthesized (GBMLGG, KIRC)
P_REAL_VS_SYNTH = {"auc": (0.995, 0.850), "c_index": (0.604, 0.300)}
# supplementary Tables 4 / 5, "overall" rows: Wilcoxon rank-sum p of the uncertainties, real vs
# synthesized (GBMLGG, KIRC); Results 2.5.1: "the uncertainty profile ... matches"
P_UNCERTAINTY = {"grade": (0.935, 0.068), "risk": (0.652, 0.307)}
# conformal/tests.tsv quantity that Tables 4 / 5 rank per task ("the scores ... predicted")
TABLES45_SCORE = {"auc": ("grade", "p_true_grade"), "c_index": ("risk", "risk_scaled")}
# "highly correlated" (Results 2.2): issue 7's toy threshold on Spearman rho
RHO_MIN = 0.5
ALPHA_TEST = 0.05

SEC_TABLE2 = "Results 2.2; supplementary Table 2"
SEC_IMPROVES = "Results 2.3.1; Figures 2.a.ii, 2.b.ii"
SEC_REAL = "Results 2.3.2; Figures 2.a.ii, 2.b.ii"
SEC_NO_DIFFERENCE = "Results 2.3.2; supplementary Tables 4-5"
SEC_CONFORMAL = "Results 2.5.1; supplementary Tables 4-5"
SEC_COATTENTION = "Results 2.4.2; Figures 2.a.iv, 2.b.iv; supplementary Table 3"
SEC_BEYOND = "beyond the paper (issue 7)"


def _key(group: str) -> str:
    return str(group).lower().replace("tumor", "tumour").replace(" ", "_") if group != "all genes" else group


def _paper(gbmlgg, kirc) -> str:
    """The paper's two numbers as printed (three decimals)."""
    return f"{gbmlgg:.3f} (GBMLGG) / {kirc:.3f} (KIRC)"


def _correlated(r: pd.Series) -> tuple[bool | str, str]:
    """``direction_holds`` and the note of a "highly correlated" row (Spearman ``rho`` and, when
    the table has it, ``spearman_p``)."""
    rho = r.spearman
    direction = f"direction = rho > {RHO_MIN} (\"highly correlated\"; issue 7's toy threshold)"
    if "spearman_p" not in r.index:
        return holds(rho > RHO_MIN, rho), direction
    p = r.spearman_p
    return (holds(rho > RHO_MIN and p < ALPHA_TEST, rho, p),
            f"{direction} and its p < {ALPHA_TEST} (here p = {fmt(p, 3)})")


def _table2_rows(c: Claims, t2: pd.DataFrame) -> None:
    """Results 2.2 / supplementary Table 2: Spearman (directional), MAE (a value) and, when
    table2.tsv has it, the unpaired t-test of the group's aggregate expression (p > 0.05)."""
    for _, r in t2.iterrows():
        ref = TABLE2.get(_key(r.group))
        label = ref[0] if ref else r.group
        pg = (ref[2], ref[4]) if ref else (np.nan, np.nan)
        mg = (ref[1], ref[3]) if ref else (np.nan, np.nan)
        n = int(r.n_cases)
        ok, note = _correlated(r)
        note = join_notes(note, "the p treats every (patient, gene) pair as independent, as the paper's "
                                "does: anti-conservative")
        if np.isfinite(r.get("spearman_training_cases", np.nan)):
            kind = r.get("training_cases_synthesis", "in sample")
            kind = "in sample" if not isinstance(kind, str) else kind
            note = join_notes(note, f"on its own training cases ({kind}; the synthesized expression MCAT_GR's "
                                    f"synthesized run trains on) rho {fmt(r.spearman_training_cases)}")
        c.add(f"Spearman real vs synthesized: {label}", _paper(*pg) if ref else "not in the paper", SEC_TABLE2,
              fmt(r.spearman), ok, note, paper_gbmlgg=pg[0], paper_kirc=pg[1], n=n)
        base = r.get("mae_training_mean", np.nan)
        c.add(f"MAE real vs synthesized: {label}", _paper(*mg) if ref else "not in the paper", SEC_TABLE2,
              fmt(r.mae), note=join_notes(
                  "a value, not a direction: the paper's MAE is on its own scale (z-scores here)",
                  f"predicting every test patient the training patients' mean gives MAE {fmt(base)}"
                  if np.isfinite(base) else ""),
              paper_gbmlgg=mg[0], paper_kirc=mg[1], n=n)
        if "ttest_p" in r.index:
            c.add(f"no significant difference in group expression, real vs synthesized (unpaired t-test): {label}",
                  "p > 0.05 (both cohorts)", SEC_TABLE2, fmt(r.ttest_p), holds(r.ttest_p > ALPHA_TEST, r.ttest_p),
                  join_notes(f"direction = p > {ALPHA_TEST} (no significant difference); Welch t-test of the "
                             "per-patient mean expression of the group's genes, real vs synthesized; the text's bound "
                             "(Results 2.2) is quoted: supplementary Table 2's p-value column, captioned as this "
                             "t-test, prints p < 1e-5 for every group, and its all-genes values (1.18e-67, 3.65e-69) "
                             "are the Spearman p-values of the text", LOW_POWER.format(n=n)),
                  paper_gbmlgg=ALPHA_TEST, paper_kirc=ALPHA_TEST, n=n)


def _prediction_rows(c: Claims, pred: pd.DataFrame) -> None:
    """Results 2.3: AUC / C-index of the three MCAT_GR runs; real >= synthesized > WSI only."""
    for run, ((ag, cg), (ak, ck)) in PREDICTION.items():
        if run not in pred.index:
            continue
        r, lab = pred.loc[run], RUN_LABEL[run]
        section = SEC_REAL if run == "real" else SEC_IMPROVES
        for metric, what, pg, pk in (("auc", "grading AUC", ag, ak), ("c_index", "survival C-index", cg, ck)):
            ours = r[metric]
            if run == "wsi":
                ok, note = holds(), "the baseline of the two runs with expression (a value, not a direction)"
            else:
                ref = "wsi" if run == "synthesized" else "synthesized"
                other = pred.loc[ref, metric] if ref in pred.index else np.nan
                if run == "synthesized":
                    ok = holds(ours > other, ours, other)
                    note = f"direction = above WSI only (here {fmt(other)})"
                else:
                    ok = holds(ours >= other, ours, other)
                    note = (f"direction = at least WSI + synthesized (here {fmt(other)}; the paper's order real >= "
                            "synthesized > WSI only)")
            c.add(f"{what}, {lab}", _paper(pg, pk), section, fmt(ours), ok, note, paper_gbmlgg=pg, paper_kirc=pk,
                  n=int(r.n_test))


def _conformal_rows(c: Claims, summ: pd.DataFrame) -> None:
    """Results 2.5.1 / supplementary Tables 4-5, overall rows: uncertainty (a value) and coverage
    (>= 1 - alpha within Monte-Carlo error) of the valid calibration variants."""
    summ = summ[summ.valid.astype(str).str.lower() == "true"]
    for task, ((g_real, g_syn), (k_real, k_syn)) in UNCERTAINTY.items():
        for kind, pg, pk in (("real", g_real, k_real), ("synthesized", g_syn, k_syn)):
            s = summ[(summ.run == kind) & (summ.test == kind)]
            if s.empty:
                continue
            s = s.iloc[0]
            n_test, n_cal = int(s.n_test), int(s.n_calibration)
            c.add(f"{task} uncertainty (eq. {10 if task == 'grade' else 12}), WSI + {kind}", _paper(pg, pk),
                  SEC_CONFORMAL, fmt(s[f"{task}_uncertainty"]),
                  note="a value, not a direction (normalised prediction-set size)",
                  paper_gbmlgg=pg, paper_kirc=pk, n=n_test)
            (cg_real, cg_syn), (ck_real, ck_syn) = COVERAGE[task]
            cg, ck = (cg_real, ck_real) if kind == "real" else (cg_syn, ck_syn)
            target, cov = 1 - s.alpha, s[f"{task}_coverage"]
            mc_col = f"mc_{task}_coverage"
            if f"{mc_col}_se" in s.index:
                tol = mc_coverage_tolerance(s[f"{mc_col}_se"])
                judged, what = s[mc_col], (f"the mean coverage over {int(s.mc_resplits)} calibration/test re-splits "
                                           f"({fmt(s[mc_col], 3)}; {n_cal} calibration + {n_test} test cases)")
                se_kind = "Monte-Carlo SE of that mean"
            else:
                tol = coverage_tolerance(s.alpha, n_test)
                judged, what = cov, f"this split's coverage ({n_test} test cases; no Monte-Carlo re-splits)"
                se_kind = "binomial SE"
            note = join_notes(f"direction = {what} >= 1 - alpha - {COVERAGE_SE} {se_kind} = {fmt(target - tol, 3)} "
                              "(issue 7's toy coverage check)",
                              f"{task} sets: normalised size (uncertainty) {fmt(s[f'{task}_uncertainty'], 3)} - near 1 "
                              "every set holds (nearly) every class, so a high coverage comes cheap")
            c.add(f"{task} coverage (target >= 1 - alpha = {target:g}), WSI + {kind}", _paper(cg, ck), SEC_CONFORMAL,
                  fmt(cov), holds(judged >= target - tol, judged, tol), note, paper_gbmlgg=cg, paper_kirc=ck,
                  n=n_test)


def _overall(ctests: pd.DataFrame | None, task: str, quantity: str) -> pd.Series | None:
    """The ``stratify == all`` rank-sum row of conformal/tests.tsv (real vs synthesized) for one
    task and quantity, or None."""
    if ctests is None:
        return None
    t = ctests[(ctests.stratify == "all") & (ctests.task == task) & (ctests.quantity == quantity)]
    return None if t.empty else t.iloc[0]


LOW_POWER = ("p > 0.05 is weak evidence of no difference with this few patients (a rank-sum of {n} vs {n} "
             "detects only large shifts)")


def _significance_rows(c: Claims, tests: pd.DataFrame, ctests: pd.DataFrame | None = None) -> None:
    """Results 2.3: WSI + synthesized beats WSI only (rank-sum p < 0.05); WSI + synthesized and
    WSI + real do not differ (p > 0.05; Tables 4 / 5 give the overall p-values, computed on the
    predicted scores - ``ctests``, conformal/tests.tsv, when given - and the same for the
    uncertainties, Results 2.5.1)."""
    for metric, score, what in (("auc", "p(true grade)", "grading"), ("c_index", "concordance share", "survival")):
        pr_g, pr_k = P_REAL_VS_SYNTH[metric]
        for a, b, claim, paper, section, pg, pk in (
                ("wsi", "synthesized", "WSI only vs WSI + synthesized, paper: p < 0.05 (improvement)",
                 "p < 0.05 (both cohorts)", SEC_IMPROVES, ALPHA_TEST, ALPHA_TEST),
                ("synthesized", "real", "WSI + synthesized vs WSI + real, paper: p > 0.05 (no difference)",
                 _paper(pr_g, pr_k), SEC_NO_DIFFERENCE, pr_g, pr_k)):
            t = tests[(tests.test == "wilcoxon_ranksum") & (tests.label == f"{score} per patient: {a} vs {b}")]
            if t.empty:
                continue
            t = t.iloc[0]
            p = t.p_value
            base = f"ranks per-patient {score} (the paper does not say which score)"
            if a == "wsi":
                # Mann-Whitney U of the first sample (WSI only) below n_x n_y / 2: the synthesized run ranks higher
                u, nx, ny = (t.get(k, np.nan) for k in ("statistic", "n_x", "n_y"))
                ok = holds(p < ALPHA_TEST and u < nx * ny / 2, p, u, nx, ny)
                note = join_notes(f"direction = p < {ALPHA_TEST} and WSI + synthesized's scores rank higher "
                                  "(U of WSI only < n_x n_y / 2)", base,
                                  "the paper gives only p < 0.05 (0.05 quoted as the bound)")
            else:
                n = int(t.n_x)
                task, quantity = TABLES45_SCORE[metric]
                o = _overall(ctests, task, quantity)
                if o is not None:
                    # Tables 4 / 5 rank the predicted scores themselves (conformal/tests.tsv)
                    base = (f"ranks per-patient predicted {quantity} (conformal/tests.tsv, as Tables 4 / 5: \"the "
                            f"scores ... predicted\"); per-patient {score} (prediction_tests.tsv) gives p = {fmt(p, 3)}")
                    p, n = o.p_value, int(o.n_x)
                ok = holds(p > ALPHA_TEST, p)
                note = join_notes(f"direction = p > {ALPHA_TEST} (no difference)", base,
                                  "paper p from Tables 4 / 5 (overall)", LOW_POWER.format(n=n))
            c.add(f"{what} Wilcoxon rank-sum p, {claim}", paper, section, fmt(p), ok, note, paper_gbmlgg=pg,
                  paper_kirc=pk, n=n if a != "wsi" else int(t.n_x))
    for task, (pg, pk) in P_UNCERTAINTY.items():
        o = _overall(ctests, task, f"{task}_uncertainty")
        if o is None:
            continue
        c.add(f"{task} uncertainty Wilcoxon rank-sum p, WSI + synthesized vs WSI + real, paper: p > 0.05 "
              "(profiles match)", _paper(pg, pk), SEC_CONFORMAL, fmt(o.p_value), holds(o.p_value > ALPHA_TEST, o.p_value),
              join_notes(f"direction = p > {ALPHA_TEST} (no difference)",
                         f"ranks per-patient {task} uncertainty (eq. {10 if task == 'grade' else 12}), each calibrated "
                         "on its own kind of expression (conformal/tests.tsv)", "paper p from Tables 4 / 5 (overall)",
                         LOW_POWER.format(n=int(o.n_x))),
              paper_gbmlgg=pg, paper_kirc=pk, n=int(o.n_x))


def build(inputs, params) -> pd.DataFrame:
    """The claims table; ``params``: ``data`` (``toy`` or the cohort), ``toy`` (bool)."""
    emb = pd.read_csv(inputs["embed_summary"], sep="\t")
    encoder = str(emb.encoder.iloc[0]) if len(emb) else "?"
    stand = []
    if "stand-in" in encoder:
        stand.append(f"patch encoder {encoder}")
    if params.get("toy"):
        stand.append("planted-signal toy cohort (planted groups, not MCAT signatures)")
    c = Claims(params["data"], join_notes(*stand) if stand else "real data, paper setting")
    _table2_rows(c, pd.read_csv(inputs["table2"], sep="\t"))
    _prediction_rows(c, pd.read_csv(inputs["prediction"], sep="\t").set_index("run"))
    _conformal_rows(c, pd.read_csv(inputs["conformal"], sep="\t"))
    if inputs.get("tests"):
        ctests = pd.read_csv(inputs["conformal_tests"], sep="\t") if inputs.get("conformal_tests") else None
        _significance_rows(c, pd.read_csv(inputs["tests"], sep="\t"), ctests)
    co = pd.read_csv(inputs["coattention"], sep="\t").set_index("group")
    if "all genes" in co.index:
        r = co.loc["all genes"]
        (rho_g, mae_g), (rho_k, mae_k) = COATTENTION
        if "spearman_within_case" in r.index:
            # softmax weights of a bag of N patches sit near 1 / N: pooled over cases, the correlation
            # ranks the bags' sizes, so the direction is judged within each case x group map
            rho = r.spearman_within_case
            ok = holds(rho > RHO_MIN, rho)
            note = join_notes(f"direction = mean within-case Spearman over {int(r.n_maps)} maps (case x gene group) "
                              f"> {RHO_MIN} (sd {fmt(r.spearman_within_case_sd, 3)})",
                              f"pooled over all (case, patch) weights, as a single table value reads, rho "
                              f"{fmt(r.spearman, 3)}: softmax weights sit near 1 / (patches in the bag), so pooling "
                              "bags of different sizes correlates the sizes, not the attention; the paper does not "
                              "say how it pooled")
            ours = fmt(rho)
        else:
            (ok, note), ours = _correlated(r), fmt(r.spearman)
        c.add("co-attention maps real vs synthesized: Spearman, all genes", _paper(rho_g, rho_k), SEC_COATTENTION,
              ours, ok, note, paper_gbmlgg=rho_g, paper_kirc=rho_k, n=int(r.n_cases))
        c.add("co-attention maps real vs synthesized: MAE, all genes", _paper(mae_g, mae_k), SEC_COATTENTION,
              fmt(r.mae), note="a value, not a direction: the paper's MAE is on its own attention scale",
              paper_gbmlgg=mae_g, paper_kirc=mae_k, n=int(r.n_cases))
    if inputs.get("round_trip"):
        rt = pd.read_csv(inputs["round_trip"], sep="\t").set_index("group")
        if "all genes" in rt.index:
            r = rt.loc["all genes"]
            for metric, lab in (("spearman", "Spearman"), ("mae", "MAE")):
                c.add(f"round trip expression -> RNA-CDM tiles -> PathGen: {lab} vs input, all genes",
                      "none (beyond the paper)", SEC_BEYOND, fmt(r[f"{metric}_round_trip"]),
                      note=join_notes(f"none of the papers measures this; PathGen from the real slide on the same cases: "
                                      f"{fmt(r[f'{metric}_real_tiles'], 3)}",
                                      f"{int(r.n_seen_by_rna_cdm)} of {int(r.n_cases)} cases' tiles trained RNA-CDM "
                                      "(its splits differ from PathGen's), so its leg is partly in sample"
                                      if "n_seen_by_rna_cdm" in r.index and np.isfinite(r.n_seen_by_rna_cdm) else ""),
                      paper_gbmlgg=np.nan, paper_kirc=np.nan,
                      n=int(r.n_cases))
    return c.frame()
