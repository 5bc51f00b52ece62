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


def centroids(z: np.ndarray, labels) -> dict[str, np.ndarray]:
    labels = np.asarray(labels)
    return {c: z[labels == c].mean(0) for c in sorted(set(labels))}


def nearest_centroid(z: np.ndarray, cents: dict[str, np.ndarray]) -> np.ndarray:
    names = list(cents)
    c = np.stack([cents[n] for n in names])
    d = ((z[:, None, :] - c[None]) ** 2).sum(-1)
    return np.asarray(names)[d.argmin(1)]


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
    ax.legend(fontsize=6, loc="best", frameon=False)


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

    panel(outputs["reconstructed"], ["real", "reconstructed"], "Real vs reconstructed expression (Fig. 2A)")
    panel(outputs["generated"], ["real", "generated"], "Generated from tissue centroids (Fig. 2A)")
    panel(outputs["shifted"], ["real", "shifted"], "Shifted between tissues by centroid difference (Fig. 2B)")

    # numeric checks in latent space: re-encode decoded profiles, nearest training centroid
    gen_acc = float((nearest_centroid(vae_lib.encode(model, gen), cents) == tg).mean())
    shift_acc = float((nearest_centroid(vae_lib.encode(model, shifted), cents) == shift_to).mean())
    recon_acc = float((nearest_centroid(vae_lib.encode(model, recon), cents) == tissue).mean())
    checks += [
        {"model": "main", "check": "reconstructed_in_own_tissue", "value": recon_acc, "n": len(recon)},
        {"model": "main", "check": "generated_in_target_tissue", "value": gen_acc, "n": len(gen)},
        {"model": "main", "check": "shifted_in_target_tissue", "value": shift_acc, "n": len(shifted)},
        {"model": "main", "check": "silhouette_latent_by_tissue", "value": vae_lib.silhouette_by(z, tissue), "n": len(z)},
    ]

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
    fig, ax = plt.subplots(figsize=(6, 5))
    _scatter(ax, memb, np.concatenate([mt, mt, mtg]), mk, ["real", "reconstructed", "generated"],
             f"Multi-tissue β-VAE ({len(mcents)} tissues, Fig. 2C)")
    save_figure(fig, outputs["multi_tissue"])
    plt.close(fig)
    checks += [
        {"model": "multi_tissue", "check": "silhouette_latent_by_tissue", "value": vae_lib.silhouette_by(mz, mt), "n": len(mz)},
        {"model": "multi_tissue", "check": "generated_in_target_tissue",
         "value": float((nearest_centroid(vae_lib.encode(mm, mgen), mcents) == mtg).mean()), "n": len(mgen)},
    ]
    write_table(outputs["checks"], pd.DataFrame(checks), index=False)


def _as_list(v):
    return v if isinstance(v, list) else [v]
