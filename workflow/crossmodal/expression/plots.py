"""Report figures of the expression stage."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from crossmodal.fileio import save_figure  # noqa: E402

log = logging.getLogger(__name__)


def _listify(x):
    return x if isinstance(x, list) else [x]


def _dataset(path) -> str:
    return Path(path).parent.name


def plot_library_sizes(counts: dict[str, pd.DataFrame], cohort: pd.Series, path) -> None:
    rows = []
    for ds, m in counts.items():
        lib = m.sum(axis=1)
        rows += [(ds, cohort.get(s, "?"), v) for s, v in lib.items()]
    df = pd.DataFrame(rows, columns=["dataset", "cohort", "lib"])
    groups = sorted(df.groupby(["dataset", "cohort"]).groups)
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(groups) + 2), 4))
    data = [np.log10(df[(df.dataset == d) & (df.cohort == c)]["lib"].clip(lower=1)) for d, c in groups]
    ax.boxplot(data, showfliers=True)
    for i, y in enumerate(data, start=1):
        ax.scatter(np.full(len(y), i) + np.linspace(-0.15, 0.15, len(y)), y, s=8, alpha=0.6)
    ax.set_xticks(range(1, len(groups) + 1), [f"{c}\n({d})" for d, c in groups], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("log10 library size (reads on harmonised genes)")
    ax.set_title("Library sizes per cohort")
    save_figure(fig, path)
    plt.close(fig)


def plot_pca(z: dict[str, pd.DataFrame], cohort: pd.Series, splits: pd.DataFrame, path, seed: int = 0) -> None:
    """PCA of the z-scored matrices on their common genes, fit on the training split only
    (``seed``: the randomized solver scikit-learn picks for a wide matrix)."""
    common = None
    for m in z.values():
        common = m.columns if common is None else common.intersection(m.columns)
    X = pd.concat([m[common] for m in z.values()])
    ds = pd.concat([pd.Series(d, index=m.index) for d, m in z.items()])
    train = X.index.isin(splits.index[splits["split"] == "train"])
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if len(common) < 2 or train.sum() < 3:
        ax.text(0.5, 0.5, "too few genes / training samples for a PCA", ha="center")
    else:
        pca = PCA(n_components=2, random_state=seed).fit(X[train].to_numpy())
        P = pca.transform(X.to_numpy())
        labels = cohort.reindex(X.index).fillna("?")
        markers = {d: m for d, m in zip(sorted(set(ds)), "os^vDP*X")}
        cmap = plt.get_cmap("tab10")
        for k, c in enumerate(sorted(set(labels))):
            for d in sorted(set(ds)):
                sel = ((labels == c) & (ds == d)).to_numpy()
                if sel.any():
                    ax.scatter(P[sel, 0], P[sel, 1], s=18, color=cmap(k % 10), marker=markers[d],
                               label=f"{c} ({d})", alpha=0.8)
        ev = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC1 ({ev[0]:.0%} of training variance)")
        ax.set_ylabel(f"PC2 ({ev[1]:.0%})")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(f"PCA of z-scored expression ({len(common)} common genes; fit on train)")
    save_figure(fig, path)
    plt.close(fig)


def missing_label(qc: dict) -> str:
    """Legend entry of the missing genes, from what ``normalise_expression`` recorded in the
    z-score QC (``missing_stage``, ``missing_value``; see :func:`crossmodal.expression.apply_scaler`)."""
    stage, value = qc.get("missing_stage"), qc.get("missing_value", 0.0)
    if stage == "raw":
        return f"missing -> count {value:g} before log + z-score"
    if stage == "z":
        return f"missing -> z-score {value:g}"
    return "missing (stage not recorded)"


def plot_missing(qcs: dict[str, dict], path) -> None:
    """Per external dataset: the reference scaler's genes it has, lacks (labelled with the
    ``missing_stage`` its QC records) and the genes only it has (dropped)."""
    ext = {d: q for d, q in qcs.items() if not str(q.get("scaler_source", "")).startswith("training")}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if not ext:
        ax.text(0.5, 0.5, "no external dataset (all datasets have their own training split)", ha="center")
        ax.axis("off")
    else:
        names = sorted(ext)
        present = [ext[d]["n_genes"] - ext[d]["n_genes_missing"] for d in names]
        missing = [ext[d]["n_genes_missing"] for d in names]
        extra = [ext[d]["n_genes_dropped_not_in_scaler"] for d in names]
        y = np.arange(len(names))
        ax.barh(y, present, label="present", color="tab:green")
        labels = [missing_label(ext[d]) for d in names]
        for k, lab in enumerate(dict.fromkeys(labels)):  # one legend entry per stage (datasets may differ)
            sel = [i for i, l in enumerate(labels) if l == lab]
            ax.barh(y[sel], np.take(missing, sel), left=np.take(present, sel), label=lab,
                    color=("tab:red", "tab:orange", "tab:purple")[k % 3])
        ax.barh(y, extra, left=np.add(present, missing), label="only in cohort (dropped)", color="tab:gray")
        ax.set_yticks(y, names)
        for i, d in enumerate(names):
            ax.text(present[i] + missing[i] + extra[i], i, f"  {missing[i]} missing", va="center", fontsize=8)
        ax.set_xlabel("genes of the reference scaler")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    ax.set_title("External cohorts: genes missing from the reference gene set")
    save_figure(fig, path)
    plt.close(fig)


def plot_summary(inputs, outputs, params) -> None:
    samples = pd.DataFrame(params["samples"]).set_index("sample")
    cohort = samples["cohort"]
    counts = {_dataset(p): pd.read_csv(p, sep="\t", index_col="sample") for p in _listify(inputs["counts"])}
    z = {_dataset(p): pd.read_csv(p, sep="\t", index_col="sample") for p in _listify(inputs["z"])}
    qcs = {_dataset(p): json.loads(Path(p).read_text()) for p in _listify(inputs["zqc"])}
    splits = pd.read_csv(inputs["splits"], sep="\t", index_col="sample")
    sparse = [d for d, q in qcs.items() if q["n_genes"] and q["n_genes_missing"] / q["n_genes"] > 0.5]
    if sparse:
        log.info("PCA leaves out %s: more than half of the reference genes missing", ", ".join(sparse))
    z = {d: m for d, m in z.items() if d not in sparse}
    log.info("plotting library sizes of %d datasets", len(counts))
    plot_library_sizes(counts, cohort, outputs["library_sizes"])
    log.info("plotting PCA of %d z-scored datasets", len(z))
    plot_pca(z, cohort, splits, outputs["pca"], seed=int(params.get("seed", 0)))
    plot_missing(qcs, outputs["missing_genes"])
