"""RNA-CDM deconvolution and perturbation experiments (Methods "HoverNet and deconvolution
experiments"; Supplementary Figures 3 and 4).

The paper deconvolves bulk RNA-Seq into epithelial / fibroblast / endothelial / haematopoietic
fractions with CIBERSORTx.  CIBERSORTx is closed software (web portal / licensed container), so
this module uses an open stand-in against a signature matrix named in config
(``rna_cdm.deconvolution.signature``):

* ``nu_svr`` (default; CIBERSORT's method, Newman et al. 2015): the mixture and signature are
  z-scored over the whole matrix, a linear-kernel ν-SVR (``sklearn.svm.NuSVR``) is fit for
  ν in {0.25, 0.5, 0.75}, the ν with the lowest RMSE of the reconstructed mixture is kept,
  negative coefficients are set to 0 and the rest normalised to sum 1;
* ``nnls``: non-negative least squares (``scipy.optimize.nnls``) on the linear mixture,
  normalised to sum 1.

Genes are weighted equally: each gene's signature row and mixture row are divided by the gene's
mean bulk expression (a weighted least-squares fit of the same model; otherwise the most highly
expressed genes decide the fit).

Signature columns are grouped into the four classes by ``rna_cdm.deconvolution.classes``; a
class mapped to no column (the toy cohort plants no endothelial cells) is reported as absent
(NaN, with a note), never as 0.  Columns mapped to no class (the toy's necrotic cells) take part
in the fit and in the denominator of the fractions.

Perturbation (Supplementary Figure 4): the expression attributable to one class in a sample is
the bulk split gene by gene in proportion to the fitted model,
``bulk[g] * sum_{c in class} S[g, c] f[c] / sum_c S[g, c] f[c]`` (genes outside the signature:
``bulk[g] * f[class]``), rescaled to the bulk's library size and then normalised exactly as the
real input (log2(x + 1), z-scored with the training split's scaler) before the β-VAE encodes it.
This approximates CIBERSORTx's high-resolution (cell-type-specific expression) mode.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crossmodal.fileio import save_figure, write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)

CLASSES = ["epithelial", "fibroblast", "endothelial", "haematopoietic"]
#: PanNuke class counted in the tiles that each deconvolved class should track (Methods)
COUNTED = {"epithelial": "neoplastic", "fibroblast": "connective", "endothelial": "connective",
           "haematopoietic": "inflammatory"}
#: toy truth columns (results/toy/truth/patients.tsv) summed into each class
TOY_TRUTH = {"epithelial": ["tumour", "normal_epithelial"], "fibroblast": ["connective"],
             "endothelial": [], "haematopoietic": ["lymphocyte"]}
CIBERSORTX_NOTE = ("open stand-in for CIBERSORTx (closed software): {method} against {signature}")


def _list(x) -> list[str]:
    if x is None:
        return []
    return [str(v) for v in x] if isinstance(x, (list, tuple)) else [str(x)]


# --------------------------------------------------------------------------------------
# signature and deconvolution
# --------------------------------------------------------------------------------------
def read_signature(path, classes: dict, gene_column: str = "gene") -> pd.DataFrame:
    """Genes x signature columns (every column any class maps to), linear scale, non-negative."""
    df = pd.read_csv(path, sep="\t", comment="#")
    if gene_column not in df.columns:
        raise ValueError(f"signature {path}: no gene column {gene_column!r} (columns: {', '.join(df.columns[:8])})")
    cols = [c for k in CLASSES for c in classes.get(k, [])]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"signature {path}: columns {missing} named in rna_cdm.deconvolution.classes are missing")
    if not cols:
        raise ValueError(f"signature {path}: rna_cdm.deconvolution.classes maps no class to a column")
    extra = [c for c in _list((classes.get("other") or [])) if c in df.columns]
    sig = df.drop_duplicates(gene_column).set_index(gene_column)[list(dict.fromkeys(cols + extra))].astype(float)
    if (sig.to_numpy() < 0).any() or not np.isfinite(sig.to_numpy()).all():
        raise ValueError(f"signature {path}: values must be finite and non-negative (linear expression)")
    return sig


def _weights(mix: np.ndarray) -> np.ndarray:
    m = mix.mean(axis=1)
    return np.where(m > 0, 1.0 / np.where(m > 0, m, 1.0), 0.0)


def deconvolve(bulk: pd.DataFrame, signature: pd.DataFrame, method: str = "nu_svr",
               nus=(0.25, 0.5, 0.75), what: str = "deconvolution") -> pd.DataFrame:
    """Fractions (samples x signature columns, rows sum to 1) of ``bulk`` (samples x genes,
    linear counts) against ``signature`` (genes x columns), on their common genes."""
    from scipy.optimize import nnls

    genes = signature.index.intersection(bulk.columns)
    if len(genes) < signature.shape[1]:
        raise ValueError(f"{what}: only {len(genes)} signature genes in the bulk matrix "
                         f"(need at least {signature.shape[1]}; are both keyed by gene symbol?)")
    S = signature.loc[genes].to_numpy(float)
    M = bulk[genes].to_numpy(float).T  # genes x samples
    w = _weights(M)[:, None]
    S, M = S * w, M * w
    out = np.zeros((M.shape[1], S.shape[1]))
    if method == "nnls":
        for j in range(M.shape[1]):
            out[j] = nnls(S, M[:, j])[0]
    elif method == "nu_svr":
        from sklearn.svm import NuSVR

        Sz = (S - S.mean()) / (S.std() or 1.0)
        for j in range(M.shape[1]):
            m = M[:, j]
            mz = (m - m.mean()) / (m.std() or 1.0)
            best = None
            for nu in nus:
                coef = NuSVR(kernel="linear", nu=float(nu), C=1.0).fit(Sz, mz).coef_.ravel()
                coef = np.clip(coef, 0, None)
                f = coef / coef.sum() if coef.sum() > 0 else coef
                rmse = float(np.sqrt(np.mean((Sz @ f - mz) ** 2))) if coef.sum() > 0 else np.inf
                if best is None or rmse < best[0]:
                    best = (rmse, coef)
            out[j] = best[1]
    else:
        raise ValueError(f"deconvolution method must be nnls or nu_svr, got {method!r}")
    tot = out.sum(axis=1, keepdims=True)
    frac = np.divide(out, tot, out=np.full_like(out, np.nan), where=tot > 0)
    return pd.DataFrame(frac, index=bulk.index, columns=signature.columns)


def class_fractions(fractions: pd.DataFrame, classes: dict) -> pd.DataFrame:
    """Sum signature-column fractions into the four classes (NaN for a class with no column)."""
    out = {}
    for k in CLASSES:
        cols = list(classes.get(k, []))
        out[k] = fractions[cols].sum(axis=1) if cols else pd.Series(np.nan, index=fractions.index)
    return pd.DataFrame(out)


def attributable_expression(bulk: pd.DataFrame, signature: pd.DataFrame, fractions: pd.DataFrame,
                            columns: list[str]) -> pd.DataFrame:
    """Expression of ``bulk`` (samples x genes, linear counts) attributable to the signature
    ``columns`` under the fitted model, rescaled to each sample's library size (module doc)."""
    genes = signature.index.intersection(bulk.columns)
    S = signature.loc[genes].to_numpy(float)
    F = fractions.loc[bulk.index, signature.columns].to_numpy(float)  # samples x columns
    sel = [list(signature.columns).index(c) for c in columns]
    total = F @ S.T  # samples x genes: model expression
    part = F[:, sel] @ S[:, sel].T
    share = pd.DataFrame(np.divide(part, total, out=np.zeros_like(part), where=total > 0),
                         index=bulk.index, columns=genes)
    out = bulk.astype(float).copy()
    f_class = F[:, sel].sum(axis=1)
    other = bulk.columns.difference(genes)
    out[genes] = bulk[genes].to_numpy(float) * share.to_numpy()
    if len(other):
        out[other] = bulk[other].to_numpy(float) * f_class[:, None]
    lib, new = bulk.sum(axis=1).to_numpy(float), out.sum(axis=1).to_numpy(float)
    return out.mul(np.divide(lib, new, out=np.zeros_like(lib), where=new > 0), axis=0)


def _read_counts(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", index_col=0)
    if df.empty:
        raise ValueError(f"{path}: empty expression matrix")
    return df


def _per_sample_pct(counts: pd.DataFrame) -> pd.DataFrame:
    from crossmodal.cells import CLASSES as PANNUKE

    s = counts.groupby("sample")[PANNUKE].sum()
    s = s[s.sum(axis=1) > 0]
    return s.div(s.sum(axis=1), axis=0) * 100


def _note(params) -> str:
    d = params["deconvolution"]
    return CIBERSORTX_NOTE.format(method=d["method"], signature=d["signature"]) + (
        f"; {d['signature_note']}" if d.get("signature_note") else "")


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
@step("deconvolve_rna_cdm")
def deconvolve_rna_cdm(inputs, outputs, params, *, threads=1, log=None):
    """Supplementary Figure 3: deconvolved class fractions of every sample of the dataset, and
    the Pearson r of each class with the counted cell percentage (its PanNuke class) in the
    RNA-CDM tiles generated from the same patients' expression; on the toy also vs the planted
    fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal import stats

    d = params["deconvolution"]
    classes = d["classes"]
    sig = read_signature(inputs["signature"], classes, d.get("gene_column", "gene"))
    bulk = _read_counts(inputs["counts"])
    frac = deconvolve(bulk, sig, d["method"], what=f"{inputs['counts']} vs signature {inputs['signature']}")
    cls = class_fractions(frac, classes)
    note = _note(params)
    table = pd.concat([cls, frac.add_prefix("signature_")], axis=1).rename_axis("sample").reset_index()
    table.insert(1, "method", note)
    write_table(outputs["fractions"], table, index=False)

    pct = _per_sample_pct(pd.read_csv(inputs["generated_counts"], sep="\t"))
    truth = None
    if _list(inputs.get("truth")):
        truth = pd.read_csv(_list(inputs["truth"])[0], sep="\t").set_index("sample")
    rows = []
    fig, axes = plt.subplots(1, len(CLASSES), figsize=(3.2 * len(CLASSES), 3.2), squeeze=False)
    for ax, k in zip(axes[0], CLASSES):
        target = COUNTED[k]
        both = pd.concat({"deconvolved": cls[k] * 100, "counted": pct[target]}, axis=1, join="inner").dropna()
        row = {"comparison": "deconvolved vs counted in generated tiles (Suppl. Fig. 3)", "class": k,
               "compared_with": f"counted {target} % (RNA-CDM tiles)", "n_patients": len(both),
               "pearson_r": np.nan, "p_value": np.nan, "paper": "significant (p ≤ 0.05)", "method": note}
        if cls[k].isna().all():
            row["note"] = "absent: no signature column maps to this class (rna_cdm.deconvolution.classes)"
            ax.text(0.5, 0.5, f"{k}: absent\n(no signature column)", ha="center", va="center", fontsize=9)
            ax.set_axis_off()
        elif len(both) >= 3:
            r = stats.correlation(both["deconvolved"], both["counted"], method="pearson", label=k)
            row.update(pearson_r=r["statistic"], p_value=r["p_value"], note="")
            ax.scatter(both["deconvolved"], both["counted"], s=14, alpha=0.8)
            ax.set_title(f"{k}: r = {r['statistic']:.2f} (p = {r['p_value']:.2g})", fontsize=8)
            ax.set_xlabel(f"deconvolved {k} %", fontsize=8)
            ax.set_ylabel(f"counted {target} % in tiles", fontsize=8)
        else:
            row["note"] = f"only {len(both)} patients with generated tiles"
            ax.set_axis_off()
        rows.append(row)
        if truth is not None and TOY_TRUTH[k]:
            t = truth.reindex(cls.index)[TOY_TRUTH[k]].sum(axis=1)
            ok = t.notna() & cls[k].notna()
            r = stats.correlation(t[ok], cls[k][ok], method="pearson", label=k)
            rows.append({"comparison": "deconvolved vs planted (toy check)", "class": k,
                         "compared_with": "planted " + " + ".join(TOY_TRUTH[k]), "n_patients": int(ok.sum()),
                         "pearson_r": r["statistic"], "p_value": r["p_value"], "paper": "-", "method": note,
                         "note": "toy truth"})
    fig.suptitle("Deconvolved bulk fractions vs cells counted in RNA-CDM tiles of the same patients "
                 f"({d['method']}; CIBERSORTx stand-in)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, outputs["figure"])
    plt.close(fig)
    write_table(outputs["correlations"], pd.DataFrame(rows), index=False)


def _encode(counts: pd.DataFrame, scaler_path, vae_path) -> np.ndarray:
    from crossmodal.expression import normalise
    from crossmodal.models import vae as vae_lib

    scaler = pd.read_csv(scaler_path, sep="\t")
    z, _ = normalise.apply_scaler(normalise.log_transform(counts), scaler)
    model, genes, _ = vae_lib.load(vae_path)
    return vae_lib.encode(model, vae_lib.align_genes(z, genes, str(scaler_path)))


def _counter(c: dict, mpp, dev):
    """Per-tile cell counter of the metrics stage's settings (classical or HoVer-Net)."""
    from crossmodal import cells

    if c["method"] == "hovernet":
        model = cells.load_hovernet(c["hovernet_weights"], dev)
        return lambda t: cells.count_tiles_hovernet(model, t[None], dev)[0]
    if not mpp:
        raise ValueError("perturb_rna_cdm: the classical counter needs the generated tiles' mpp")
    return lambda t: cells.count_tile(t, float(mpp), c.get("classical"))


@step("perturb_rna_cdm")
def perturb_rna_cdm(inputs, outputs, params, *, threads=1, log=None):
    """Supplementary Figure 4: tiles generated from bulk expression and from the expression
    attributable to fibroblasts / haematopoietic cells (same patients, same sampler noise),
    counted; connective and lymphocyte percentages per condition, patient and cancer type."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal import cells
    from crossmodal import stats
    from crossmodal.rna_cdm import cascade
    from crossmodal.rna_cdm.steps import _device, generation_plan

    torch.set_num_threads(max(int(threads), 1))
    lg = logging.getLogger(__name__)
    d, p = params["deconvolution"], params["perturbation"]
    cfg, seed = params["rna_cdm"], int(params["seed"])
    classes = d["classes"]
    sig = read_signature(inputs["signature"], classes, d.get("gene_column", "gene"))
    frac_tab = pd.read_csv(inputs["fractions"], sep="\t").set_index("sample")
    frac = frac_tab[[f"signature_{c}" for c in sig.columns]].set_axis(list(sig.columns), axis=1)
    bulk = _read_counts(inputs["counts"])
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    lat_index = pd.DataFrame(index=bulk.index.intersection(frac.index))
    plan = generation_plan(lat_index, splits, params["cohorts"], params.get("split", "test"), None)
    if p.get("patients_per_cohort"):
        plan = plan.groupby("cohort", group_keys=False).head(int(p["patients_per_cohort"]))
    bulk = bulk.loc[plan.index]
    conditions = {"bulk": bulk}
    for k in p["classes"]:
        cols = list(classes.get(k, []))
        if not cols:
            raise ValueError(f"rna_cdm.perturbation.classes: {k} maps to no signature column")
        conditions[k] = attributable_expression(bulk, sig, frac, cols)
    dev = _device(params)
    base, sr = cascade.load_model(inputs["base"], dev), cascade.load_model(inputs["sr"], dev)
    n = int(p["tiles_per_patient"])
    count = _counter(params["cells"], params.get("mpp"), dev)
    rows, latents = [], {}
    for cond, expr in conditions.items():
        z = latents[cond] = _encode(expr, inputs["scaler"], inputs["vae"])
        tiles = cascade.sample_cascade(base, sr, np.repeat(z, n, axis=0), cfg, seed=seed,
                                       batch_size=int(cfg["generate"]["batch_size"]), device=dev)
        for t_i, t in enumerate(tiles):
            s = plan.index[t_i // n]
            rows.append({"condition": cond, "sample": s, "cohort": plan.loc[s, "cohort"], "replicate": t_i % n,
                         **count(t)})
        lg.info("%s: %d tiles generated and counted", cond, len(tiles))
    tiles_df = pd.DataFrame(rows)
    tot = tiles_df[cells.CLASSES].sum(axis=1).replace(0, np.nan)
    for c in cells.CLASSES:
        tiles_df[f"pct_{c}"] = tiles_df[c] / tot * 100
    zb = latents["bulk"]
    spread = float(np.linalg.norm(zb - zb.mean(0), axis=1).mean()) or 1.0
    out_rows = []
    per_patient = tiles_df.groupby(["condition", "sample", "cohort"])[[f"pct_{c}" for c in cells.CLASSES]].mean()
    for k in p["classes"]:
        target = COUNTED[k]
        col = f"pct_{target}"
        a = per_patient.loc["bulk"][col]
        b = per_patient.loc[k][col].reindex(a.index)
        ok = a.notna() & b.notna()
        for scope in ["all"] + sorted(plan["cohort"].unique()):
            m = ok if scope == "all" else ok & (a.index.get_level_values("cohort") == scope)
            row = {"perturbation": k, "counted": target, "scope": scope, "n_patients": int(m.sum()),
                   "tiles_per_patient": n, "mean_pct_bulk": float(a[m].mean()) if m.any() else np.nan,
                   "mean_pct_perturbed": float(b[m].mean()) if m.any() else np.nan}
            row["difference"] = row["mean_pct_perturbed"] - row["mean_pct_bulk"]
            # how far the perturbed expression moved the conditioning: mean latent distance to the
            # same patient's bulk latent, in units of the bulk latents' mean distance to their centroid
            row["latent_shift"] = float(np.linalg.norm(latents[k] - zb, axis=1).mean()) / spread
            row["targeted_type_rises"] = bool(row["difference"] > 0) if m.any() else None
            if scope == "all" and m.sum() >= 2:
                t = stats.ttest(b[m], a[m], paired=True, label=k)
                row.update(paired_t=t["statistic"], p_value=t["p_value"])
            row["paper"] = ("higher in all five cancer types" if k == "fibroblast"
                            else "higher in LUAD, KIRP; same in COAD, CESC; lower in GBM")
            row["method"] = _note(params)
            out_rows.append(row)
    res = pd.DataFrame(out_rows)
    write_table(outputs["table"], res, index=False)
    write_table(outputs["tiles"], tiles_df, index=False)

    fig, axes = plt.subplots(1, len(p["classes"]), figsize=(4.5 * len(p["classes"]), 3.4), squeeze=False)
    cohorts = sorted(plan["cohort"].unique())
    for ax, k in zip(axes[0], p["classes"]):
        col = f"pct_{COUNTED[k]}"
        x = np.arange(len(cohorts))
        for off, cond, colour in ((-0.2, "bulk", "#777777"), (0.2, k, "#d62728")):
            v = per_patient.loc[cond][col].groupby(level="cohort").agg(["mean", "std"]).reindex(cohorts)
            ax.bar(x + off, v["mean"], 0.4, yerr=v["std"].fillna(0), color=colour, label=f"{cond} expression",
                   capsize=2)
        ax.set_xticks(x, [c.replace("TCGA-", "") for c in cohorts], fontsize=8)
        ax.set_ylabel(f"{COUNTED[k]} cells in generated tiles (%)", fontsize=8)
        ax.set_title(f"{k}-attributable vs bulk expression", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    save_figure(fig, outputs["figure"])
    plt.close(fig)
