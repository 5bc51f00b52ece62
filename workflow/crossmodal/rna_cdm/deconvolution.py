"""RNA-CDM deconvolution and perturbation experiments (Methods "HoverNet and deconvolution
experiments"; Supplementary Figures 3 and 4).

The paper deconvolves bulk RNA-Seq into epithelial / fibroblast / endothelial / haematopoietic
fractions with CIBERSORTx.  CIBERSORTx is closed software (web portal / licensed container), so
this module uses an open stand-in against a signature matrix named in config
(``rna_cdm.deconvolution.signature``):

* ``nu_svr`` (default; CIBERSORT's method, Newman et al. 2015): a linear-kernel ν-SVR
  (``sklearn.svm.NuSVR``, C = 1) is fit for ν in {0.25, 0.5, 0.75}, the ν with the lowest RMSE
  of the reconstructed mixture is kept, negative coefficients are set to 0 and the rest
  normalised to sum 1.  Two departures from CIBERSORT's code, both needed for the model
  ``mixture = signature @ fractions`` to hold: (i) no intercept - libsvm always fits one, so
  the fit runs on the data plus its mirror image ``(-x, -y)``, whose optimal intercept is 0 and
  whose weights are exactly those of the intercept-free ν-SVR; with an intercept, a signature
  whose rows all sum to the same value (the shipped marker signature: 1.0 + 3 x 0.05) makes the
  intercept collinear with the columns and the fractions unidentifiable (noise-free
  (.5, .2, .1, .2) came back as (.72, -.14, -.43, -.14) before clipping); (ii) mixture and signature are scaled to unit
  root-mean-square instead of z-scored, since centring adds an intercept of its own;
* ``nnls``: non-negative least squares (``scipy.optimize.nnls``) on the linear mixture,
  normalised to sum 1.

Both fit a weighted model: each gene's signature row and mixture row are divided by the gene's
mean bulk expression, so that every gene's relative error counts equally rather than the most
highly expressed genes deciding the fit.  The weighting does not remove the signature's
levels from the model: a signature row states how much of the gene each cell type expresses,
and a gene expressed at a different level than the signature says (relative to the other
genes) is model error.  The hand-made marker signature puts every marker at 1.0 in its own
class, so real differences between its markers' levels are such error; the ten markers per
class average it out (tests/test_rna_cdm.py recovers planted fractions with r > 0.9 from bulk
whose marker levels scatter 1.65-fold (log-normal sd 0.5) around the signature's).

Signature columns are grouped into the four classes by ``rna_cdm.deconvolution.classes``; a
class mapped to no column (the toy cohort plants no endothelial cells) is reported as absent
(NaN, with a note), never as 0.  Columns mapped to no class (the toy's necrotic cells) take part
in the fit and in the denominator of the fractions.

Perturbation (Supplementary Figure 4; CIBERSORTx's cell-type-specific expression):
:func:`cell_type_profiles` estimates every gene's expression in each signature column - per
gene, non-negative least squares of the library-normalised bulk of the *training* samples on
their deconvolved fractions (the linear mixture model of CIBERSORTx's group mode, so genes
outside the signature get a profile too).  The expression attributable to a class in a sample
is the sample's bulk split gene by gene in proportion to that model,
``bulk[g] * sum_{c in class} f[c] G[g, c] / sum_c f[c] G[g, c]``, rescaled to the bulk's library
size and then normalised exactly as the real input (log2(x + 1), z-scored with the training
split's scaler) before the β-VAE encodes it: genes the class expresses more than the other
cell types rise, the others fall.  A sample whose deconvolved fraction of the class is 0 has no
such expression; the perturbation leaves it out of that condition and says so in its table.
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
#: Results / Supplementary Figure 4: the counted type's change per cancer type ("all": every type)
PAPER_SUPPL4 = {"fibroblast": {"all": "higher"},
                "haematopoietic": {"TCGA-LUAD": "higher", "TCGA-KIRP": "higher", "TCGA-COAD": "same",
                                   "TCGA-CESC": "same", "TCGA-GBM": "lower"}}
PAPER_SUPPL4_TEXT = {"fibroblast": "higher in all five cancer types",
                     "haematopoietic": "higher in LUAD, KIRP; same in COAD, CESC; lower in GBM",
                     "epithelial": "-", "endothelial": "-"}
CIBERSORTX_NOTE = ("open stand-in for CIBERSORTx (closed software): {method} against {signature}")


def paper_direction(perturbation: str, scope: str) -> str:
    """The paper's direction (higher / same / lower, or "-") of the counted type for one
    perturbation in one scope (a cancer type or "all")."""
    d = PAPER_SUPPL4.get(perturbation, {})
    return d.get(scope) or (d.get("all") if scope != "all" else None) or "-"


def suppl4_holds(direction: str, difference: float, p_value: float, tost_p_value: float, alpha: float,
                 margin: float | None = None, bulk_pct: float | None = None, n: int | None = None) -> tuple:
    """``(holds, gate note)`` of a perturbation row: ``higher`` / ``lower`` need the mean
    difference of that sign with paired t p ≤ ``alpha``; ``same`` needs the equivalence test
    (TOST within ± ``margin`` points) at p ≤ ``alpha`` *and* a paired t-test that is not
    significant (p > ``alpha``) - a significant change is not "the same", whatever the margin -
    and is n/a when ``margin`` is at least the bulk level ``bulk_pct``: then even a fall to 0 %
    lies within the margin, so equivalence shows nothing.  Anything else is n/a.  With ``n``
    patients the per-type tests have n - 1 degrees of freedom; the note says so."""
    from crossmodal import reproduction as rp

    df = f"n = {n} patients, so the paired tests have df = {n - 1}" if n is not None else ""
    if direction == "higher":
        return rp.holds(difference > 0 and p_value <= alpha, difference, p_value), df
    if direction == "lower":
        return rp.holds(difference < 0 and p_value <= alpha, difference, p_value), df
    if direction == "same":
        gate = (f"'same' holds only when TOST within ± {margin:g} points passes (p ≤ {alpha:g}) and the paired "
                f"t-test is not significant (p > {alpha:g})" if margin is not None else
                f"'same' holds only when TOST passes (p ≤ {alpha:g}) and the paired t-test is not significant")
        note = rp.join_notes(gate, df)
        if margin is not None and bulk_pct is not None and np.isfinite(bulk_pct) and margin >= bulk_pct:
            return rp.NA, rp.join_notes(note, f"n/a: the margin (± {margin:g} points) is not below the bulk level "
                                              f"({bulk_pct:.2f} %), so even a fall to 0 % would count as the same")
        holds = rp.holds(tost_p_value <= alpha and p_value > alpha, tost_p_value, p_value)
        if holds is False and tost_p_value <= alpha:
            note = rp.join_notes(note, f"TOST passes but the paired t-test is significant (p = {p_value:.2g})")
        return holds, note
    return rp.NA, df


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


def _nu_svr(S: np.ndarray, m: np.ndarray, nus) -> np.ndarray:
    """Non-negative coefficients ``c`` of ``m ≈ S c`` by linear ν-SVR without intercept (module
    doc), on the scale of ``S`` and ``m``; the ν whose fit reconstructs ``m`` best is kept."""
    from sklearn.svm import NuSVR

    # scaled to unit root-mean-square, not centred: centring adds an intercept to the model
    s_sd, m_sd = float(np.sqrt(np.mean(S ** 2))) or 1.0, float(np.sqrt(np.mean(m ** 2))) or 1.0
    Sz, mz = S / s_sd, m / m_sd
    # mirrored copies (x, y) and (-x, -y): the optimal intercept is then 0 and the weights are those
    # of the same ν-SVR fitted without intercept (libsvm always fits one)
    X, y = np.vstack([Sz, -Sz]), np.concatenate([mz, -mz])
    best = None
    for nu in nus:
        coef = np.clip(NuSVR(kernel="linear", nu=float(nu), C=1.0).fit(X, y).coef_.ravel(), 0, None)
        rmse = float(np.sqrt(np.mean((Sz @ coef - mz) ** 2))) if coef.sum() > 0 else np.inf
        if best is None or rmse < best[0]:
            best = (rmse, coef)
    return best[1] * m_sd / s_sd


def _fit(S: np.ndarray, M: np.ndarray, method: str, nus) -> np.ndarray:
    """Coefficients (samples x columns) of every mixture column of ``M`` (genes x samples)."""
    from scipy.optimize import nnls

    if method == "nnls":
        return np.array([nnls(S, M[:, j])[0] for j in range(M.shape[1])]).reshape(M.shape[1], S.shape[1])
    if method == "nu_svr":
        return np.array([_nu_svr(S, M[:, j], nus) for j in range(M.shape[1])]).reshape(M.shape[1], S.shape[1])
    raise ValueError(f"deconvolution method must be nnls or nu_svr, got {method!r}")


def deconvolve(bulk: pd.DataFrame, signature: pd.DataFrame, method: str = "nu_svr",
               nus=(0.25, 0.5, 0.75), what: str = "deconvolution", weight_samples=None) -> pd.DataFrame:
    """Fractions (samples x signature columns, rows sum to 1) of ``bulk`` (samples x genes,
    linear counts) against ``signature`` (genes x columns), on their common genes (module doc).

    The per-gene weights (1 / mean bulk expression) are a statistic over samples: they come from
    the rows ``weight_samples`` (the training samples; default all rows), so that a test sample's
    fractions do not depend on the other test samples."""
    if method not in ("nnls", "nu_svr"):
        raise ValueError(f"deconvolution method must be nnls or nu_svr, got {method!r}")
    genes = signature.index.intersection(bulk.columns)
    if len(genes) < signature.shape[1]:
        raise ValueError(f"{what}: only {len(genes)} signature genes in the bulk matrix "
                         f"(need at least {signature.shape[1]}; are both keyed by gene symbol?)")
    S = signature.loc[genes].to_numpy(float)
    M = bulk[genes].to_numpy(float).T  # genes x samples
    ref = bulk if weight_samples is None else bulk.loc[bulk.index.intersection(list(weight_samples))]
    if not len(ref):
        raise ValueError(f"{what}: none of the {len(list(weight_samples))} weight samples is in the bulk matrix")
    w = _weights(ref[genes].to_numpy(float).T)[:, None]
    out = _fit(S * w, M * w, method, nus)
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


def _per_million(bulk: pd.DataFrame) -> pd.DataFrame:
    lib = bulk.sum(axis=1)
    bad = lib.index[~(lib > 0)]
    if len(bad):
        raise ValueError(f"sample(s) with no counts: {', '.join(map(str, bad[:5]))}")
    return bulk.astype(float).div(lib, axis=0) * 1e6


def cell_type_profiles(bulk: pd.DataFrame, fractions: pd.DataFrame, what: str = "cell-type profiles") -> pd.DataFrame:
    """Cell-type-specific expression of every gene (genes x fraction columns, counts per million):
    per gene, non-negative least squares of the samples' library-normalised bulk on their
    deconvolved fractions, ``cpm[s, g] ≈ sum_c F[s, c] G[g, c]`` (the linear mixture model of
    CIBERSORTx's group mode).  Fit it on the training samples only."""
    from scipy.optimize import nnls

    common = bulk.index.intersection(fractions.dropna().index)
    if len(common) <= fractions.shape[1]:
        raise ValueError(f"{what}: {len(common)} samples with expression and fractions; the per-gene fit of "
                         f"{fractions.shape[1]} cell-type columns needs more")
    F = fractions.loc[common].to_numpy(float)
    X = _per_million(bulk.loc[common]).to_numpy()  # samples x genes
    G, *_ = np.linalg.lstsq(F, X, rcond=None)  # columns x genes; NNLS only where it leaves the bound
    for g in np.flatnonzero((G < 0).any(axis=0)):
        G[:, g] = nnls(F, X[:, g])[0]
    return pd.DataFrame(G.T, index=bulk.columns, columns=fractions.columns)


def attributable_expression(bulk: pd.DataFrame, profiles: pd.DataFrame, fractions: pd.DataFrame,
                            columns: list[str], what: str = "attributable expression") -> pd.DataFrame:
    """Expression of ``bulk`` (samples x genes, linear counts) attributable to the fraction
    ``columns``: each gene's count split by the fitted model's share of those columns,
    ``bulk[g] * sum_{c in columns} F[c] G[g, c] / sum_c F[c] G[g, c]`` with ``G`` from
    :func:`cell_type_profiles`, rescaled to each sample's library size (module doc).  A sample
    whose deconvolved fraction of ``columns`` is 0 has no such expression: ValueError naming it."""
    F = fractions.loc[bulk.index, profiles.columns].to_numpy(float)  # samples x columns
    sel = [list(profiles.columns).index(c) for c in columns]
    f_class = F[:, sel].sum(axis=1)
    zero = bulk.index[~(f_class > 0)]
    if len(zero):
        raise ValueError(f"{what}: deconvolved fraction of {'+'.join(columns)} is 0 in sample(s) "
                         f"{', '.join(map(str, zero[:10]))}: no expression to attribute (leave them out)")
    G = profiles.reindex(bulk.columns).fillna(0.0).to_numpy(float)  # genes x columns
    total, part = F @ G.T, F[:, sel] @ G[:, sel].T  # samples x genes
    share = np.divide(part, total, out=np.zeros_like(part), where=total > 0)
    out = bulk.astype(float) * share
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
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    train = bulk.index.intersection(splits.loc[splits["split"] == "train", "sample"])
    frac = deconvolve(bulk, sig, d["method"], what=f"{inputs['counts']} vs signature {inputs['signature']}",
                      weight_samples=train)
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
    bulk_all = _read_counts(inputs["counts"])
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    # cell-type-specific expression of every gene, fitted on the training patients only
    train = bulk_all.index.intersection(frac.dropna().index).intersection(splits.loc[splits["split"] == "train", "sample"])
    profiles = cell_type_profiles(bulk_all.loc[train], frac.loc[train],
                                  what=f"{inputs['counts']}: training samples of {inputs['splits']}")
    lat_index = pd.DataFrame(index=bulk_all.index.intersection(frac.index))
    plan = generation_plan(lat_index, splits, params["cohorts"], params.get("split", "test"), None)
    if p.get("patients_per_cohort"):
        plan = plan.groupby("cohort", group_keys=False).head(int(p["patients_per_cohort"]))
    bulk = bulk_all.loc[plan.index]
    conditions, excluded = {"bulk": bulk}, {}
    for k in p["classes"]:
        cols = list(classes.get(k, []))
        if not cols:
            raise ValueError(f"rna_cdm.perturbation.classes: {k} maps to no signature column")
        f_k = frac.loc[bulk.index, cols].sum(axis=1)
        excluded[k] = list(f_k.index[~(f_k > 0)])
        if excluded[k]:
            lg.warning("%s: deconvolved %s fraction 0 in %d patient(s), left out of that condition: %s", inputs["fractions"],
                       k, len(excluded[k]), ", ".join(excluded[k]))
        keep = bulk.index[f_k > 0]
        if not len(keep):
            raise ValueError(f"{inputs['fractions']}: deconvolved {k} fraction is 0 in every selected patient; "
                             "no attributable expression to generate from")
        conditions[k] = attributable_expression(bulk.loc[keep], profiles, frac, cols,
                                                what=f"{k}-attributable expression of {inputs['counts']}")
    dev = _device(params)
    base, sr = cascade.load_model(inputs["base"], dev), cascade.load_model(inputs["sr"], dev)
    n = int(p["tiles_per_patient"])
    count = _counter(params["cells"], params.get("mpp"), dev)
    rows, latents = [], {}
    for cond, expr in conditions.items():
        z = _encode(expr, inputs["scaler"], inputs["vae"])
        latents[cond] = pd.DataFrame(z, index=expr.index)
        tiles = cascade.sample_cascade(base, sr, np.repeat(z, n, axis=0), cfg, seed=seed,
                                       batch_size=int(cfg["generate"]["batch_size"]), device=dev)
        for t_i, t in enumerate(tiles):
            s = expr.index[t_i // n]
            rows.append({"condition": cond, "sample": s, "cohort": plan.loc[s, "cohort"], "replicate": t_i % n,
                         **count(t)})
        lg.info("%s: %d tiles generated and counted", cond, len(tiles))
    tiles_df = pd.DataFrame(rows)
    tot = tiles_df[cells.CLASSES].sum(axis=1).replace(0, np.nan)
    for c in cells.CLASSES:
        tiles_df[f"pct_{c}"] = tiles_df[c] / tot * 100
    zb = latents["bulk"].to_numpy()
    spread = float(np.linalg.norm(zb - zb.mean(0), axis=1).mean()) or 1.0
    margin = float(p["equivalence_margin_pct"])
    out_rows = []
    per_patient = tiles_df.groupby(["condition", "sample", "cohort"])[[f"pct_{c}" for c in cells.CLASSES]].mean()
    for k in p["classes"]:
        target = COUNTED[k]
        col = f"pct_{target}"
        a = per_patient.loc["bulk"][col]
        b = per_patient.loc[k][col].reindex(a.index) if k in per_patient.index.get_level_values(0) else a * np.nan
        ok = a.notna() & b.notna()
        # how far the perturbed expression moved the conditioning: mean latent distance to the
        # same patient's bulk latent, in units of the bulk latents' mean distance to their centroid
        zk = latents[k]
        shift = float(np.linalg.norm(zk.to_numpy() - latents["bulk"].loc[zk.index].to_numpy(), axis=1).mean()) / spread
        for scope in ["all"] + sorted(plan["cohort"].unique()):
            m = ok if scope == "all" else ok & (a.index.get_level_values("cohort") == scope)
            in_scope = plan.index if scope == "all" else plan.index[plan["cohort"] == scope]
            gone = [x for x in excluded[k] if x in in_scope]
            row = {"perturbation": k, "counted": target, "scope": scope, "n_patients": int(m.sum()),
                   "n_excluded_zero_fraction": len(gone),
                   "tiles_per_patient": n, "mean_pct_bulk": float(a[m].mean()) if m.any() else np.nan,
                   "mean_pct_perturbed": float(b[m].mean()) if m.any() else np.nan}
            row["difference"] = row["mean_pct_perturbed"] - row["mean_pct_bulk"]
            row["latent_shift"] = shift
            row["targeted_type_rises"] = bool(row["difference"] > 0) if m.any() else None
            row["p_value"] = stats.ttest(b[m], a[m], paired=True, label=f"{k} {scope}")["p_value"]
            row["equivalence_margin_pct"] = margin
            row["tost_p_value"] = stats.tost(b[m], a[m], margin, label=f"{k} {scope}")["p_value"]
            row["paper_direction"] = paper_direction(k, scope)
            row["paper"] = PAPER_SUPPL4_TEXT[k]
            row["method"] = _note(params)
            row["note"] = (f"left out (deconvolved {k} fraction 0): {', '.join(gone)}" if gone else "")
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
            pp = per_patient.loc[cond][col]
            v = pp.groupby(level="cohort").mean().reindex(cohorts)
            ax.bar(x + off, v, 0.4, color=colour, alpha=0.6, label=f"{cond} expression (mean)")
            # one dot per patient instead of an sd over a handful of patients (n = 2 per type in the toy)
            pos = {c: i for i, c in enumerate(cohorts)}
            px = np.array([pos[c] for c in pp.index.get_level_values("cohort")], dtype=float) + off
            ax.scatter(px, pp.to_numpy(), s=10, color="black", zorder=3,
                       label="one patient" if cond == "bulk" else None)
        n_per = per_patient.loc["bulk"].groupby(level="cohort").size().reindex(cohorts).fillna(0).astype(int)
        ax.set_xticks(x, [f"{c.replace('TCGA-', '')}\n(n = {n_per[c]})" for c in cohorts], fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"{COUNTED[k]} cells in generated tiles (%)\nbars: mean over patients; dots: patients",
                      fontsize=8)
        ax.set_title(f"{k}-attributable vs bulk expression", fontsize=9)
    # one legend under the panels: inside an axes it covered the patients' dots of a cancer type
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, [lb.replace(f"{p['classes'][0]} expression", "perturbed expression") for lb in labels],
               loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, outputs["figure"])
    plt.close(fig)
