"""Synthesized vs real expression (PathGen Results 2.2, Table 2, Figure 2(i)).

Per gene group and over all genes, on the test split, per **patient** (a patient's slides are
averaged, :func:`per_patient`): Spearman correlation of the real and synthesized z-scores over
all (patient, gene) pairs, mean absolute error, and an unpaired (Welch) t-test of the patients'
aggregate expression of the group - the mean over the group's genes - real vs synthesized (Table
2 caption: "an unpaired T-test for the aggregate gene expression level of each group").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal import stats


def per_patient(values: pd.DataFrame, cases: pd.DataFrame, samples) -> pd.DataFrame:
    """Rows ``samples`` of ``values`` averaged per patient (``cases``: sample -> patient)."""
    samples = list(samples)
    missing = [x for x in samples if x not in values.index]
    if missing:
        raise ValueError(f"expression: no row for sample(s) {', '.join(missing[:5])}")
    pat = cases.set_index("sample").loc[samples, "patient"].to_numpy()
    return values.loc[samples].groupby(pat, sort=False).mean()


def features(genes: pd.DataFrame) -> np.ndarray:
    """The expression-file columns of ``genes`` (genes.tsv rows), in order: ``feature`` (a gene in
    several groups has one column per group, :func:`crossmodal.pathgen.cases.with_features`)."""
    return (genes.feature if "feature" in genes.columns else genes.gene).to_numpy(dtype=object)


def table2(real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame, samples,
           baseline: pd.Series | None = None) -> pd.DataFrame:
    """Table 2 rows over ``samples`` (rows of ``real`` / ``synth``; pass patient-level rows,
    :func:`per_patient`, so that a patient counts once): Spearman and MAE from the metrics module
    (:func:`crossmodal.metrics.tabular.spearman_mae_by_group`), plus the t-test of each group's
    aggregate expression.  ``baseline`` (optional, one value per gene: the training patients'
    mean) adds ``mae_training_mean``, the MAE of predicting that mean for every patient - the
    number a synthesized MAE has to beat to carry information about the patient."""
    from crossmodal.metrics.tabular import spearman_mae_by_group

    samples, feats = list(samples), features(genes)
    genes_all = list(feats)
    t = spearman_mae_by_group(real.loc[samples, genes_all], synth.loc[samples, genes_all], genes.group.to_numpy())
    t = t.rename(columns={"n_features": "n_genes", "n_samples": "n_cases"})
    if baseline is not None:
        missing = [g for g in genes_all if g not in baseline.index]
        if missing:
            raise ValueError(f"table2 baseline: no training mean for gene(s) {', '.join(missing[:5])}")
        const = pd.DataFrame([baseline.loc[genes_all].to_numpy(float)] * len(samples), index=samples, columns=genes_all)
        err = (real.loc[samples, genes_all] - const).abs()
        groups = genes.group.to_numpy()
        t["mae_training_mean"] = [float(err.to_numpy().mean()) if name == "all genes"
                                  else float(err.loc[:, groups == name].to_numpy().mean())
                                  for name in t.group]
    tests = []
    for name in t.group:
        cols = genes_all if name == "all genes" else list(feats[genes.group.to_numpy() == name])
        # aggregate expression of the group per case (mean over its genes), real vs synthesized
        r = stats.ttest(real.loc[samples, cols].mean(axis=1), synth.loc[samples, cols].mean(axis=1), label=name)
        tests.append({"ttest_statistic": r["statistic"], "ttest_p": r["p_value"]})
    cols = ["group", "n_genes", "n_cases", "mae", "spearman", "spearman_p", "ttest_statistic", "ttest_p"]
    return pd.concat([t, pd.DataFrame(tests)], axis=1)[cols + (["mae_training_mean"] if baseline is not None else [])]


def plot(real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame, samples, table: pd.DataFrame, path,
         encoder_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.fileio import save_figure

    groups = list(dict.fromkeys(genes.group))
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(3 * (len(groups) + 1), 3.2), squeeze=False)
    for ax, g in zip(axes[0], groups + ["all genes"]):
        feats = features(genes)
        cols = list(feats) if g == "all genes" else list(feats[genes.group.to_numpy() == g])
        r = real.loc[list(samples), cols].to_numpy().ravel()
        s = synth.loc[list(samples), cols].to_numpy().ravel()
        ax.hexbin(r, s, gridsize=25, mincnt=1, cmap="viridis")
        lim = [min(r.min(), s.min()), max(r.max(), s.max())]
        ax.plot(lim, lim, "r--", lw=0.8)
        row = table.set_index("group").loc[g]
        ax.set_title(f"{g}\nρ {row.spearman:.3f}, MAE {row.mae:.3f}", fontsize=8)
        ax.set_xlabel("real (z)")
        ax.set_ylabel("synthesized (z)")
    fig.suptitle(f"PathGen: synthesized vs real expression, test split (patch encoder: {encoder_label})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
