"""The RNA-CDM β-VAE figure (Results "RNA-CDM can perform realistic RNA-to-image multi-cancer
synthesis", Figure 2): a UMAP of the test patients' expression and of its β-VAE reconstruction,
coloured by cancer type (the paper shows the reconstructed expression, "different clusters for
each cancer tissue"), and the silhouette by cancer type of the input, the reconstruction and the
latent means.  The UMAP helper is RNA-GAN's (:mod:`crossmodal.rna_gan.latent`)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crossmodal.fileio import save_figure, write_table
from crossmodal.models import vae as vae_lib
from crossmodal.steps import step

log = logging.getLogger(__name__)


def _list(x) -> list[str]:
    return [str(v) for v in x] if isinstance(x, (list, tuple)) else [str(x)]


@step("plot_rna_cdm_vae_umap")
def plot_rna_cdm_vae_umap(inputs, outputs, params, *, threads=1, log=None):
    """UMAP (fitted on input and reconstruction together, so the panels share axes) of the
    ``split`` samples of the VAE's cohorts (``all``: every sample, training ones included);
    writes the figure and a silhouette table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from crossmodal.embedding import umap_2d

    torch.set_num_threads(max(int(threads), 1))
    seed, split = int(params["seed"]), str(params.get("split", "test"))
    paths = _list(inputs["expression"])
    model, genes, _ = vae_lib.load(inputs["model"])
    expr = vae_lib.read_expression(paths)
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    sp = vae_lib.select_samples(expr, splits, params.get("cohorts"), f"plot_rna_cdm_vae_umap ({', '.join(paths)})")
    sp = (sp if split == "all" else sp[sp["split"] == split]).sort_index()
    cohort = sp["cohort"].to_numpy()
    if len(set(cohort)) < 2 or len(sp) < 4:
        raise ValueError(f"{inputs['splits']}: the {split} split has {len(sp)} samples of {len(set(cohort))} "
                         "cancer type(s) with expression; the UMAP needs at least 4 samples of 2 types")
    x = vae_lib.align_genes(expr.loc[sp.index], genes, "plot_rna_cdm_vae_umap")
    z = vae_lib.encode(model, x)
    recon = vae_lib.decode(model, z)
    emb = umap_2d(np.concatenate([x, recon]), int(params["umap_neighbors"]), seed)
    n = len(x)
    logging.getLogger(__name__).info("UMAP of %d %s samples (%d cancer types) and their reconstructions", n, split,
                                     len(set(cohort)))

    rows = [{"representation": name, "split": split, "n_samples": n, "n_cancer_types": len(set(cohort)),
             "silhouette_cancer_type": vae_lib.silhouette_by(v, cohort)}
            for name, v in (("input expression", x), ("reconstructed expression", recon), ("latent mean", z),
                            ("UMAP of input", emb[:n]), ("UMAP of reconstruction", emb[n:]))]
    table = pd.DataFrame(rows)
    table["data"] = params.get("data_note", "")
    write_table(outputs["table"], table, index=False)

    cmap = plt.get_cmap("tab10" if len(set(cohort)) <= 10 else "tab20")
    types = sorted(set(cohort))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for ax, part, title in ((axes[0], emb[:n], f"input expression ({split})"),
                            (axes[1], emb[n:], f"β-VAE reconstruction ({split}; paper Fig. 2)")):
        for j, t in enumerate(types):
            m = cohort == t
            ax.scatter(part[m, 0], part[m, 1], s=14, color=cmap(j % cmap.N), alpha=0.8, label=t.replace("TCGA-", ""))
        ax.set_xlabel("UMAP 1")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("UMAP 2")
    axes[1].legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    save_figure(fig, outputs["figure"])
    plt.close(fig)
