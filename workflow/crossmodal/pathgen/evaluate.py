"""Synthesized vs real expression (PathGen Results 2.2, Table 2, Figure 2(i)).

Per gene group and over all genes, on the test split: Spearman correlation of the real and
synthesized z-scores over all (case, gene) pairs, mean absolute error, and an unpaired
(Welch) t-test of the two value sets (the paper reports "unpaired t-tests" per group).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal import stats


def table2(real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame, samples) -> pd.DataFrame:
    samples = list(samples)
    rows = []
    groups = list(dict.fromkeys(genes.group))
    for name, cols in [(g, list(genes.gene[genes.group == g])) for g in groups] + [("all genes", list(genes.gene))]:
        r = real.loc[samples, cols].to_numpy().ravel()
        s = synth.loc[samples, cols].to_numpy().ravel()
        rho = stats.correlation(r, s, method="spearman", label=name)
        t = stats.ttest(r, s, label=name)
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
