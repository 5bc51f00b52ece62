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


def table2(real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame, samples) -> pd.DataFrame:
    """Table 2 rows over ``samples`` (rows of ``real`` / ``synth``; pass patient-level rows,
    :func:`per_patient`, so that a patient counts once)."""
    samples = list(samples)
    rows = []
    groups = list(dict.fromkeys(genes.group))
    for name, cols in [(g, list(genes.gene[genes.group == g])) for g in groups] + [("all genes", list(genes.gene))]:
        r = real.loc[samples, cols].to_numpy().ravel()
        s = synth.loc[samples, cols].to_numpy().ravel()
        rho = stats.correlation(r, s, method="spearman", label=name)
        # aggregate expression of the group per case (mean over its genes), real vs synthesized
        t = stats.ttest(real.loc[samples, cols].mean(axis=1), synth.loc[samples, cols].mean(axis=1), label=name)
        rows.append({"group": name, "n_genes": len(cols), "n_cases": len(samples), "mae": float(np.abs(r - s).mean()),
                     "spearman": rho["statistic"], "spearman_p": rho["p_value"],
                     "ttest_statistic": t["statistic"], "ttest_p": t["p_value"]})
    return pd.DataFrame(rows)


def plot(real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame, samples, table: pd.DataFrame, path,
         encoder_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.fileio import save_figure

    groups = list(dict.fromkeys(genes.group))
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(3 * (len(groups) + 1), 3.2), squeeze=False)
    for ax, g in zip(axes[0], groups + ["all genes"]):
        cols = list(genes.gene) if g == "all genes" else list(genes.gene[genes.group == g])
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
