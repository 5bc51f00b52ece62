"""Interpretability (PathGen Results 2.4, Figures 3b-d, supplementary Table 3).

* **Distributed predictions** (Figures 3b/c): the MCAT_GR model of the ``synthesized`` run
  predicts grade and risk for every patch alone (a bag of one, with the case's synthesized
  expression); each patch's expected grade and risk are painted over the slide thumbnail.
* **Co-attention maps** (Figure 3d, Table 3): the MCAT_GR model of the ``real`` run is fed the
  real and then the synthesized expression of each test case; the genomic-guided co-attention
  weights over the patches (softmax over the bag, per gene group) of the two are compared by
  Spearman correlation and MAE over all (case, patch) pairs, per group and overall, and by the
  mean over maps (one case x group) of the Spearman correlation within the map
  (``spearman_within_case``).  Softmax weights of a bag of N patches sit near 1 / N, so the
  pooled correlation mostly ranks the bags' sizes (toy run: pooled 0.88, within-case 0.21); the
  within-case mean is the one that says whether the two maps rank the patches alike.  Our
  weights are softmax-normalised per bag, so our MAE is on a different scale from the paper's
  (which reports MAE 2.07 / 0.59 - unnormalised scores).  Figure 3d
  (:func:`plot_coattention`): the two maps of each gene group side by side over the thumbnail
  of the drawn test cases.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crossmodal.fileio import save_figure, write_table

log = logging.getLogger(__name__)


def coattention_table(model, bags: dict, real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame,
                      samples) -> pd.DataFrame:
    from crossmodal import stats

    groups = list(dict.fromkeys(genes.group))
    acc = {g: ([], []) for g in groups}
    with torch.no_grad():
        for s in samples:
            ws = []
            for expr in (real, synth):
                e = torch.tensor(expr.loc[s].to_numpy(), dtype=torch.float32)[None]
                ws.append(model(bags[s][None], None, e)["coattention"][0].numpy())  # (G, N)
            for gi, g in enumerate(groups):
                acc[g][0].append(ws[0][gi])
                acc[g][1].append(ws[1][gi])
    rows = []
    for name in groups + ["all genes"]:
        keys = groups if name == "all genes" else [name]
        r = np.concatenate([np.concatenate(acc[k][0]) for k in keys])
        y = np.concatenate([np.concatenate(acc[k][1]) for k in keys])
        rho = stats.correlation(r, y, method="spearman", label=name)
        # one map = one case x group; defined when the bag has >= 3 patches and neither map is flat
        within = [stats.correlation(a, b, method="spearman", label=f"{name} case {i}")["statistic"]
                  for k in keys for i, (a, b) in enumerate(zip(*acc[k])) if len(a) >= 3]
        within = np.asarray([w for w in within if np.isfinite(w)])
        rows.append({"group": name, "n_cases": len(list(samples)), "n_weights": len(r),
                     "mae": float(np.abs(r - y).mean()), "spearman": rho["statistic"], "spearman_p": rho["p_value"],
                     "n_maps": len(within),
                     "spearman_within_case": float(within.mean()) if len(within) else float("nan"),
                     "spearman_within_case_sd": float(within.std(ddof=1)) if len(within) > 1 else float("nan")})
    return pd.DataFrame(rows)


def _thumbnail(slide_path, max_dim: int = 512):
    import openslide

    sl = openslide.OpenSlide(str(slide_path))
    w0, h0 = sl.dimensions
    th = np.asarray(sl.get_thumbnail((max_dim, max_dim)).convert("RGB"))
    sl.close()
    return th, th.shape[1] / w0


def plot_heatmaps(model, bags: dict, emb: dict, synth: pd.DataFrame, cases: pd.DataFrame, slides: dict,
                  samples, path) -> pd.DataFrame:
    """Figure 3b/c-style panels; returns the per-patch predictions of the drawn cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from crossmodal.pathgen.predict import patch_predictions

    samples = list(samples)
    fig, axes = plt.subplots(max(len(samples), 1), 3, figsize=(10, 3.3 * max(len(samples), 1)), squeeze=False)
    n_grades = int(cases.grade.max()) + 1
    names = cases.drop_duplicates("grade").set_index("grade").grade_name.astype(str).to_dict()
    rows = []
    for ax_row, s in zip(axes, samples):
        pp = patch_predictions(model, bags[s], synth.loc[s].to_numpy())
        pp.insert(0, "sample", s)
        e = emb[s]
        pp["x"], pp["y"] = e["coords"][:, 0], e["coords"][:, 1]
        rows.append(pp)
        th, scale = _thumbnail(slides[s])
        box = float(e["size0"]) if np.isfinite(e["size0"]) else float(e["patch_size"])
        c = cases.loc[s]
        for ax, col, title, (lo, hi), cmap in (
                (ax_row[1], "expected_grade", "expected grade per patch", (0, n_grades - 1), "viridis"),
                (ax_row[2], "risk", "MCAT risk -ΣS per patch (higher = worse;\nthis case's range)",
                 (pp.risk.min(), pp.risk.max() + 1e-9), "magma")):
            ax.imshow(th)
            cm = plt.get_cmap(cmap)
            for _, r in pp.iterrows():
                v = (r[col] - lo) / max(hi - lo, 1e-9)
                ax.add_patch(Rectangle((r.x * scale, r.y * scale), box * scale, box * scale,
                                       color=cm(float(np.clip(v, 0, 1))), alpha=0.6, lw=0))
            sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
            bar = fig.colorbar(sm, ax=ax, fraction=0.046)
            if col == "expected_grade":  # the expectation over grade indices, ticks named as the cohort names them
                bar.set_ticks(range(n_grades), labels=[f"grade {names.get(k, k)}" for k in range(n_grades)])
                bar.ax.tick_params(labelsize=6)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        ax_row[0].imshow(th)
        ax_row[0].axis("off")
        ax_row[0].set_title(f"{s}\ntrue grade {c.grade_name}, {c.survival_time:.0f} d, "
                            f"{'dead' if c.event else 'alive'}", fontsize=8)
    fig.suptitle("PathGen distributed predictions (MCAT_GR, WSI + synthesized expression)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def coattention_maps(model, bag: torch.Tensor, real_expr, synth_expr) -> tuple[np.ndarray, np.ndarray]:
    """Co-attention weights (groups x patches) of one case with its real and its synthesized expression."""
    out = []
    with torch.no_grad():
        for expr in (real_expr, synth_expr):
            e = torch.tensor(np.asarray(expr, float), dtype=torch.float32)[None]
            w = model(bag[None], None, e)["coattention"]
            if w is None:
                raise ValueError("co-attention maps: the model takes no expression (WSI-only run)")
            out.append(w[0].numpy())
    return out[0], out[1]


def plot_coattention(model, bags: dict, emb: dict, real: pd.DataFrame, synth: pd.DataFrame, genes: pd.DataFrame,
                     slides: dict, samples, path) -> None:
    """Figure 3d: per drawn test case and gene group, the co-attention map with real (left) and
    synthesized (right) expression over the slide thumbnail, one colour scale per (case, group)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    samples = list(samples)
    groups = list(dict.fromkeys(genes.group))
    n = max(len(samples), 1)
    fig, axes = plt.subplots(len(groups), 2 * n, figsize=(2.6 * 2 * n, 2.4 * len(groups)), squeeze=False)
    cmap = plt.get_cmap("inferno")
    for ci, s in enumerate(samples):
        wr, ws = coattention_maps(model, bags[s], real.loc[s].to_numpy(), synth.loc[s].to_numpy())
        e = emb[s]
        th, scale = _thumbnail(slides[s])
        box = float(e["size0"]) if np.isfinite(e["size0"]) else float(e["patch_size"])
        for gi, g in enumerate(groups):
            lo, hi = float(min(wr[gi].min(), ws[gi].min())), float(max(wr[gi].max(), ws[gi].max()))
            for k, (w, kind) in enumerate(((wr[gi], "real"), (ws[gi], "synthesized"))):
                ax = axes[gi][2 * ci + k]
                ax.imshow(th)
                for (x, y), v in zip(e["coords"][:, :2], w):
                    ax.add_patch(Rectangle((x * scale, y * scale), box * scale, box * scale,
                                           color=cmap(float(np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1))),
                                           alpha=0.7, lw=0))
                ax.axis("off")
                ax.set_title(f"{s}\n{g}, {kind}" if gi == 0 else f"{g}, {kind}", fontsize=7)
            sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
            fig.colorbar(sm, ax=axes[gi][2 * ci + 1], fraction=0.046)
    fig.suptitle("PathGen co-attention maps per gene group: real vs synthesized expression "
                 "(MCAT_GR trained with real expression)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(inputs, outputs, params) -> None:
    from crossmodal.pathgen import predict
    from crossmodal.pathgen.cases import read_cases, read_expression, read_genes
    from crossmodal.pathgen.patches import read_embeddings
    from crossmodal.pathgen.synthesis import load_bags

    cases = read_cases(inputs["cases"])
    genes = read_genes(inputs["genes"])
    real, _ = read_expression(inputs["real"], genes)
    synth, _ = read_expression(inputs["synthesized"], genes)
    bags = load_bags(inputs["embeddings"], cases.index)
    test = sorted(cases.index[cases.split == "test"])
    by_name = {Path(p).name[:-4]: p for p in inputs["embeddings"]}
    model_real, _ = predict.load(inputs["model_real"])
    write_table(outputs["coattention"], coattention_table(model_real, bags, real, synth, genes, test),
                index=False, float_format="%.6g")
    model_syn, _ = predict.load(inputs["model_synthesized"])
    show = test[: int(params["heatmaps"]["n_cases"])]
    emb = {s: read_embeddings(by_name[s]) for s in show}
    pp = plot_heatmaps(model_syn, bags, emb, synth, cases, params["slides"], show, outputs["figure"])
    plot_coattention(model_real, bags, emb, real, synth, genes, params["slides"], show, outputs["coattention_figure"])
    write_table(outputs["patches"], pp, index=False, float_format="%.6g")
