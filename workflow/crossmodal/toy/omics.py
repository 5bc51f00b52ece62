"""Extra omics for Coherent Denoising, in UCSC-Xena layout (first column ``sample`` = feature
id, one column per sample): gene-level absolute copy number and RPPA-like protein levels.

- CNA: arm- and focal-level gains and losses drawn independently of everything else, so
  copy number is hard to predict from any other modality (as in Coherent Denoising, where
  CNA is the hardest target);
- RPPA: each protein is a noisy weighted sum of the log2 expression rates of 1-3 genes, the
  first proteins covering the marker genes and the planted programs (one protein on two
  stage genes), so RNA is well predicted from RPPA and stage is visible in both.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal.toy.model import rng_for
from crossmodal.toy.plan import CELL_TYPES


def copy_number(genes: pd.DataFrame, samples: list[str], seed: int) -> pd.DataFrame:
    """Absolute gene-level copy number (genes x samples), ~2 with arm/focal events."""
    rng = rng_for(seed, "cna")
    pc = genes[genes["gene_type"] == "protein_coding"]
    chrom = pc["chromosome"].to_numpy()
    pos = pc["position"].to_numpy()
    # arm: first or second half of each chromosome's genes by position
    arm = np.zeros(len(pc), int)
    for c in np.unique(chrom):
        idx = np.flatnonzero(chrom == c)
        order = idx[np.argsort(pos[idx])]
        arm[order[len(order) // 2:]] = 1
    segs, seg_of = np.unique(chrom * 2 + arm, return_inverse=True)
    out = np.full((len(pc), len(samples)), 2.0)
    for j in range(len(samples)):
        change = rng.choice([-1, 0, 0, 0, 0, 1, 2], size=len(segs))
        out[:, j] = 2.0 + change[seg_of]
        for _ in range(rng.poisson(2)):  # focal events
            g = rng.integers(len(pc))
            out[(chrom == chrom[g]) & (np.abs(pos - pos[g]) < 15), j] += rng.choice([-1, 2, 4])
    out = np.clip(out + rng.normal(0, 0.1, out.shape), 0.0, None)
    df = pd.DataFrame(np.round(out, 3), columns=samples)
    df.insert(0, "sample", pc["gene"].to_numpy())
    return df


def protein_map(genes: pd.DataFrame, toy: dict, seed: int) -> pd.DataFrame:
    """Which genes (and weights) make each RPPA protein."""
    rng = rng_for(seed, "rppa_map")
    pc = genes[genes["gene_type"] == "protein_coding"].reset_index(drop=True)
    anchors: list[list[str]] = []
    for ct in CELL_TYPES:
        anchors.append(list(pc.loc[pc["marker_of"] == ct, "gene"].iloc[:2]))
    for col in [c for c in pc.columns if c.startswith("prog_")] + ["survival_loading", "msi_loading"]:
        anchors.append(list(pc.loc[pc[col] > 0, "gene"].iloc[:2]))
    if "stage_effect" in pc:  # one protein on two up-regulated stage genes
        anchors.append(list(pc.loc[pc["stage_effect"] > 0, "gene"].iloc[:2]))
    rows = []
    used: set[str] = set()
    for k in range(toy["n_proteins"]):
        if k < len(anchors):
            members = anchors[k]
        else:
            members = list(rng.choice(pc["gene"], size=int(rng.integers(1, 4)), replace=False))
        name = "_".join(members) + "-R-V"
        if name in used:
            name = f"{name[:-4]}_{k}-R-V"
        used.add(name)
        w = np.round(rng.uniform(0.5, 1.5, len(members)) / len(members), 4)
        rows.append(dict(protein=name, genes=";".join(members), weights=";".join(map(str, w))))
    return pd.DataFrame(rows)


def rppa(pmap: pd.DataFrame, genes: pd.DataFrame, rate: np.ndarray, samples: list[str],
         toy: dict, seed: int) -> pd.DataFrame:
    """RPPA-like levels (proteins x samples): weighted log2 rates of their genes + noise."""
    rng = rng_for(seed, "rppa")
    idx = {g: i for i, g in enumerate(genes["gene"])}
    logr = np.log2(rate + 1.0)
    out = np.zeros((len(pmap), rate.shape[1]))
    for k, rec in enumerate(pmap.itertuples()):
        for g, w in zip(rec.genes.split(";"), rec.weights.split(";")):
            out[k] += float(w) * logr[idx[g]]
    out += rng.normal(0, toy["rppa_noise"], out.shape)
    df = pd.DataFrame(np.round(out, 4), columns=samples)
    df.insert(0, "sample", pmap["protein"].to_numpy())
    return df
