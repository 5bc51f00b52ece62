"""Figure 2 of RNA-GAN: the β-VAE latent space (UMAPs of real, reconstructed, synthetic and
tissue-shifted expression; the multi-tissue model) and numeric checks of each operation."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crossmodal.embedding import umap_2d
from crossmodal.fileio import save_figure, write_table
from crossmodal.models import vae as vae_lib
from crossmodal.steps import step

log = logging.getLogger(__name__)

# decoded profiles are scored by a vote of this many nearest real profiles (latent_checks.tsv)
KNN = 5


def centroids(z: np.ndarray, labels) -> dict[str, np.ndarray]:
    labels = np.asarray(labels)
    return {c: z[labels == c].mean(0) for c in sorted(set(labels))}


def knn_tissue(query: np.ndarray, ref: np.ndarray, ref_tissue, k: int = 5) -> np.ndarray:
    """Tissue of each ``query`` row by a majority vote of its ``k`` nearest ``ref`` rows
    (Euclidean; a tie goes to the tied tissue of the nearest neighbour).  Used to score decoded
    profiles in expression space against real profiles, as the Figure 2 UMAPs show them."""
    ref_tissue = np.asarray(ref_tissue, dtype=object)
    if len(ref) == 0:
        raise ValueError("knn_tissue: no reference profiles")
    k = max(1, min(int(k), len(ref)))
    d = ((query[:, None, :].astype(np.float64) - ref[None].astype(np.float64)) ** 2).sum(-1)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    out = []
    for row in nn:
        labs = ref_tissue[row]
        names, counts = np.unique(labs, return_counts=True)
        tied = set(names[counts == counts.max()])
        out.append(next(lab for lab in labs if lab in tied))  # labs are ordered nearest first
    return np.asarray(out, dtype=object)


def donors_label(sp: pd.DataFrame, which: str) -> str:
    """Which donors a figure / check covers (``rna_gan.figures.split``), with the count per split."""
    shown = sp.loc[_held_out(sp, which)]
    per = ", ".join(f"{s} {n}" for s, n in shown["split"].value_counts().sort_index().items())
    what = "all donors, incl. the training donors whose latents define the centroids" if which == "all" \
        else "test-split donors"
    return f"{len(shown)} {what} ({per}; rna_gan.figures.split: {which})"


def synthetic_latents(cents: dict[str, np.ndarray], n: int, latent: int, seed: int):
    """Latent centroid of a tissue + random draws from the prior N(0, I) (RNA-GAN Results)."""
    rng = np.random.default_rng(seed)
    zs, labs = [], []
    for c, mu in cents.items():
        zs.append(mu + rng.standard_normal((n, latent)).astype(np.float32))
        labs += [c] * n
    return np.concatenate(zs), np.asarray(labs)


def _scatter(ax, emb, tissue, kind, kinds, title):
    import matplotlib.pyplot as plt

    markers = {"real": "o", "reconstructed": "x", "generated": "^", "shifted": "s"}
    cmap = plt.get_cmap("tab10")
    tissues = sorted(set(tissue))
    for ki in kinds:
        for j, t in enumerate(tissues):
            m = (kind == ki) & (tissue == t)
            if m.any():
                ax.scatter(emb[m, 0], emb[m, 1], s=18, marker=markers[ki], color=cmap(j % 10),
                           alpha=0.75, label=f"{t} ({ki})")
    ax.set_xlabel("UMAP 1"); ax.set_ylabel("UMAP 2"); ax.set_title(title, fontsize=10)
    # outside the axes: with many tissues (Figure 2C) a legend inside covers the points
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
              ncol=2 if len(tissues) * len(kinds) > 12 else 1)


def _held_out(sp: pd.DataFrame, which: str) -> pd.Index:
    return sp.index if which == "all" else sp.index[sp["split"] == "test"]


@step("plot_vae_latents")
def plot_vae_latents(inputs, outputs, params, *, threads=1, log=None):
    """Figure 2 panels: real vs reconstructed, generated from centroids, shifted between
    tissues (main model) and the multi-tissue model; plus a table of numeric checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    torch.set_num_threads(max(int(threads), 1))
    lg = logging.getLogger(__name__)
    seed, fig_cfg, tissues = int(params["seed"]), params["figures"], list(params["tissues"])[:2]
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str).set_index("sample")
    checks = []

    # ---- main model (two tissues) ----
    model, genes, _ = vae_lib.load(inputs["model"])
    expr = vae_lib.read_expression(_as_list(inputs["expression"]))
    sp = splits[splits.index.isin(expr.index) & splits["cohort"].isin(tissues)]
    x_all = vae_lib.align_genes(expr.loc[sp.index], genes, "plot_vae_latents")
    z_all = vae_lib.encode(model, x_all)
    train = (sp["split"] == "train").to_numpy()
    cents = centroids(z_all[train], sp["cohort"][train])  # centroids from training patients
    show = sp.index.isin(_held_out(sp, fig_cfg["split"]))
    x, z, tissue = x_all[show], z_all[show], sp["cohort"].to_numpy()[show]
    recon = vae_lib.decode(model, z)
    zg, tg = synthetic_latents(cents, int(fig_cfg["n_synthetic"]), model.latent, seed)
    gen = vae_lib.decode(model, zg)
    a, b = tissues
    shift_z = z.copy()
    shift_to = tissue.copy()
    for src, dst in ((a, b), (b, a)):
        m = tissue == src
        shift_z[m] = z[m] + (cents[dst] - cents[src])
        shift_to[m] = dst
    shifted = vae_lib.decode(model, shift_z)
    lg.info("UMAP of %d real, %d reconstructed, %d generated, %d shifted profiles",
            len(x), len(recon), len(gen), len(shifted))
    kinds = np.array(["real"] * len(x) + ["reconstructed"] * len(recon) + ["generated"] * len(gen)
                     + ["shifted"] * len(shifted))
    tis = np.concatenate([tissue, tissue, tg, shift_to])
    emb = umap_2d(np.concatenate([x, recon, gen, shifted]), int(fig_cfg["umap_neighbors"]), seed)

    def panel(out, kinds_shown, title):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        m = np.isin(kinds, kinds_shown)
        _scatter(ax, emb[m], tis[m], kinds[m], kinds_shown, title)
        save_figure(fig, out)
        plt.close(fig)

    real_n = len(x)
    panel(outputs["reconstructed"], ["real", "reconstructed"], "Real vs reconstructed expression (Fig. 2A)")
    panel(outputs["generated"], ["real", "generated"], "Generated from tissue centroids (Fig. 2A)")
    panel(outputs["shifted"], ["real", "shifted"], "Shifted between tissues by centroid difference (Fig. 2B)")

    # numeric checks where the figure draws them: each decoded profile's tissue by its
    # KNN nearest real profiles (the donors shown) in expression space, and in the figure's UMAP
    # (not by re-encoding it: the encoder largely returns the centroid + draw it was decoded from)
    donors = donors_label(sp, fig_cfg["split"])
    chance = 1.0 / len(set(tissue))
    start = {"reconstructed": real_n, "generated": real_n + len(recon), "shifted": real_n + len(recon) + len(gen)}
    for check, prof, target in (("reconstructed_in_own_tissue", recon, tissue),
                                ("generated_in_target_tissue", gen, tg),
                                ("shifted_in_target_tissue", shifted, shift_to)):
        kind = check.split("_")[0]
        e = emb[start[kind]: start[kind] + len(prof)]
        for space, call in (("expression", knn_tissue(prof, x, tissue, KNN)),
                            ("umap", knn_tissue(e, emb[:real_n], tissue, KNN))):
            checks.append({"model": "main", "check": check, "space": space,
                           "value": float((call == target).mean()), "n": len(prof), "chance": chance,
                           "donors": donors})
    checks.append({"model": "main", "check": "silhouette_latent_by_tissue", "space": "latent",
                   "value": vae_lib.silhouette_by(z, tissue), "n": len(z), "chance": float("nan"),
                   "donors": donors})

    # ---- multi-tissue model (Figure 2C) ----
    mm, mgenes, _ = vae_lib.load(inputs["model_multi"])
    mexpr = vae_lib.read_expression(_as_list(inputs["expression_multi"]))
    msp = splits[splits.index.isin(mexpr.index)]
    mcoh = params.get("multi_cohorts")
    if mcoh:
        msp = msp[msp["cohort"].isin(mcoh)]
    mx_all = vae_lib.align_genes(mexpr.loc[msp.index], mgenes, "plot_vae_latents (multi-tissue)")
    mz_all = vae_lib.encode(mm, mx_all)
    mtrain = (msp["split"] == "train").to_numpy()
    mcents = centroids(mz_all[mtrain], msp["cohort"][mtrain])
    mshow = msp.index.isin(_held_out(msp, fig_cfg["split"]))
    mx, mz, mt = mx_all[mshow], mz_all[mshow], msp["cohort"].to_numpy()[mshow]
    mrec = vae_lib.decode(mm, mz)
    mzg, mtg = synthetic_latents(mcents, int(fig_cfg["n_synthetic"]), mm.latent, seed + 1)
    mgen = vae_lib.decode(mm, mzg)
    mk = np.array(["real"] * len(mx) + ["reconstructed"] * len(mrec) + ["generated"] * len(mgen))
    memb = umap_2d(np.concatenate([mx, mrec, mgen]), int(fig_cfg["umap_neighbors"]), seed)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    _scatter(ax, memb, np.concatenate([mt, mt, mtg]), mk, ["real", "reconstructed", "generated"],
             f"Multi-tissue β-VAE ({len(mcents)} tissues, Fig. 2C)")
    save_figure(fig, outputs["multi_tissue"])
    plt.close(fig)
    mdonors = donors_label(msp, fig_cfg["split"])
    mchance = 1.0 / len(set(mt))
    mg_emb = memb[len(mx) + len(mrec):]
    checks += [
        {"model": "multi_tissue", "check": "silhouette_latent_by_tissue", "space": "latent",
         "value": vae_lib.silhouette_by(mz, mt), "n": len(mz), "chance": float("nan"), "donors": mdonors},
        {"model": "multi_tissue", "check": "generated_in_target_tissue", "space": "expression",
         "value": float((knn_tissue(mgen, mx, mt, KNN) == mtg).mean()), "n": len(mgen), "chance": mchance,
         "donors": mdonors},
        {"model": "multi_tissue", "check": "generated_in_target_tissue", "space": "umap",
         "value": float((knn_tissue(mg_emb, memb[:len(mx)], mt, KNN) == mtg).mean()), "n": len(mgen),
         "chance": mchance, "donors": mdonors},
    ]
    write_table(outputs["checks"], pd.DataFrame(checks), index=False)


def _as_list(v):
    return v if isinstance(v, list) else [v]
