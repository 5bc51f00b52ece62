"""The toy cohort's generative model (everything but the pixels).

One call, :func:`simulate`, draws every latent quantity from named random streams derived
from the config seed, so the same seed gives the same cohort and each part (genes,
patients, counts, omics, reads) draws from its own stream.
"""
from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd

from crossmodal.toy.genes import GROUP_NAMES, gene_symbols, real_group
from crossmodal.toy.plan import CELL_TYPES

log = logging.getLogger(__name__)

MARKER_BOOST = 20.0  # a marker's mean in its own cell type, in multiples of its baseline
MARKER_LEAK = 0.02  # ... and in every other cell type
N_CHROM = 22
# tumour progression (stage): a latent shared with the survival program, written into RNA
# (STAGE_GENES genes, half up and half down, log-linear) and, through RNA, into one RPPA
# protein (crossmodal.toy.omics); stage I-IV is the latent plus a little noise, cut.
STAGE_GENES = 40
STAGE_EFFECT = 0.8  # natural-log fold change of a stage gene's rate per SD of the latent
STAGE_RHO = 0.5  # correlation of the progression latent with the survival program
STAGE_NOISE = 0.2  # SD of the noise between the latent and the recorded stage
STAGE_CUTS = (-0.7, 0.0, 0.7)  # stage I | II | III | IV


def rng_for(seed: int, *names) -> np.random.Generator:
    """An independent generator for the stream called ``names`` (stable across runs)."""
    keys = [int(seed)] + [zlib.crc32(str(n).encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence(keys))


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def nb_counts(rng, mu: np.ndarray, phi: float) -> np.ndarray:
    """Negative-binomial counts with mean ``mu`` and variance ``mu + phi mu^2``."""
    n = 1.0 / phi
    p = n / (n + mu)
    return rng.negative_binomial(n, p)


def build_genes(toy: dict, seed: int) -> pd.DataFrame:
    """The gene table: ids, symbols, types, lengths, groups, chromosomes, signatures, programs."""
    rng = rng_for(seed, "genes")
    symbols, marker_of = gene_symbols(toy["n_genes"], toy["marker_genes"], CELL_TYPES)
    n_pc = len(symbols)
    lnc = [f"LINC{9000 + i:05d}" for i in range(1, toy["n_lncrna"] + 1)]
    symbols = symbols + lnc
    marker_of = marker_of + [""] * len(lnc)
    n = len(symbols)
    g = pd.DataFrame({
        "gene_id": [f"ENSG99{i:09d}.{1 + (i * 7) % 9}" for i in range(1, n + 1)],
        "gene": symbols,
        "gene_type": ["protein_coding"] * n_pc + ["lncRNA"] * len(lnc),
        "length_bp": np.round(np.exp(rng.normal(np.log(2500), 0.5, n))).astype(int) + 300,
        "chromosome": rng.integers(1, N_CHROM + 1, n),
        "marker_of": marker_of,
    })
    g["position"] = rng.permutation(n)  # order along the chromosome (for CNA segments)
    # six MCAT-like groups: real members keep theirs, every other protein-coding gene is dealt out
    groups = [real_group(s) for s in symbols[:n_pc]]
    rest = [i for i, grp in enumerate(groups) if grp is None]
    for k, i in enumerate(rng.permutation(rest)):
        groups[i] = GROUP_NAMES[k % len(GROUP_NAMES)]
    g["group"] = groups + [""] * len(lnc)
    baseline = np.exp(rng.normal(np.log(5.0), 1.2, n))
    baseline[n_pc:] *= 0.2  # non-coding genes are lowly expressed
    g["baseline"] = baseline
    for ct in CELL_TYPES:
        own = g["marker_of"].to_numpy() == ct
        other = (g["marker_of"].to_numpy() != "") & ~own
        sig = baseline * np.exp(rng.normal(0, 0.2, n))
        sig[own] = baseline[own] * MARKER_BOOST
        sig[other] = baseline[other] * MARKER_LEAK
        g[f"sig_{ct}"] = sig
    # programs: disjoint sets of non-marker protein-coding genes
    free = rng.permutation(np.flatnonzero((g["marker_of"] == "").to_numpy()[:n_pc]))
    cohorts = list(toy["cancer_types"]) + list(toy["tissues"])
    k = toy["program_genes"]
    need = k * len(cohorts) + toy["survival_genes"] + 15 + STAGE_GENES
    if need > len(free):
        raise ValueError(f"toy: n_genes={toy['n_genes']} leaves {len(free)} non-marker genes, "
                         f"fewer than the {need} the programs need (program_genes x cohorts + "
                         f"survival_genes + 15 MSI genes + {STAGE_GENES} stage genes)")
    pos = 0
    for c in cohorts:
        prog = np.zeros(n)
        idx = free[pos:pos + k]
        pos += k
        prog[idx] = toy["program_strength"] * baseline[idx]
        g[f"prog_{c}"] = prog
    surv = np.zeros(n)
    idx = free[pos:pos + toy["survival_genes"]]
    pos += toy["survival_genes"]
    surv[idx] = toy["survival_strength"] * baseline[idx]
    g["survival_loading"] = surv
    msi = np.zeros(n)
    idx = free[pos:pos + 15]
    msi[idx] = 2.0 * baseline[idx]
    g["msi_loading"] = msi
    pos += 15
    stage = np.zeros(n)
    idx = free[pos:pos + STAGE_GENES]
    stage[idx] = STAGE_EFFECT * np.where(np.arange(len(idx)) < len(idx) // 2, 1.0, -1.0)
    # log-scale effect per unit of the progression latent (not named *_loading: those are the
    # additive programs pathgen.planted_only keeps)
    g["stage_effect"] = stage
    return g


def build_patients(sheet: pd.DataFrame, toy: dict, seed: int) -> pd.DataFrame:
    """Per-patient latent truth: fractions, survival program, MSI label, size factor, clinical."""
    rng = rng_for(seed, "patients")
    pts = sheet.drop_duplicates("patient")[["patient", "sample", "cohort", "dataset"]].reset_index(drop=True)
    healthy = pts["dataset"].eq("gtex").to_numpy()
    n = len(pts)
    pts["survival_program"] = np.where(healthy, 0.0, rng.normal(0, 1, n))
    pts["msi_like"] = np.where(healthy, 0, (rng.random(n) < toy["msi_prevalence"]).astype(int))
    means = toy["fraction_means"]
    fr = np.zeros((n, len(CELL_TYPES)))
    for i, (c, m) in enumerate(zip(pts["cohort"], pts["msi_like"])):
        mean = np.asarray(means.get(c, means.get("default", [0.45, 0.15, 0.2, 0.05, 0.15])), float)
        if m:
            mean = mean.copy()
            mean[1] *= 2.5  # MSI-like tumours are lymphocyte-rich
        mean = mean / mean.sum()
        fr[i] = rng.dirichlet(toy["dirichlet_concentration"] * mean)
    for j, ct in enumerate(CELL_TYPES):
        pts[ct] = fr[:, j]
    pts["size_factor"] = np.exp(rng.normal(0, 0.25, n))
    # clinical, driven by the survival program
    z = pts["survival_program"].to_numpy()
    tz = (fr[:, 0] - fr[:, 0].mean()) / (fr[:, 0].std() + 1e-9)
    grade_latent = 0.8 * z + 0.4 * tz + rng.normal(0, 0.6, n)
    pts["grade"] = 1 + np.digitize(grade_latent, [-0.9, 0.0, 0.9])
    # stage: the progression latent (correlated with z, its own stream "stage", so every other
    # draw stays as it was) plus noise; this stream's old stage noise is still drawn (and
    # rescaled) so that age, sex and survival keep their values
    noise = rng.normal(0, 0.7, n) * (STAGE_NOISE / 0.7)
    own = rng_for(seed, "stage").normal(0, 1, n)
    prog = np.where(healthy, 0.0, STAGE_RHO * z + np.sqrt(1 - STAGE_RHO ** 2) * own)
    pts["stage_program"] = prog
    pts["stage"] = np.array(["I", "II", "III", "IV"])[np.digitize(prog + noise, STAGE_CUTS)]
    pts["age"] = np.clip(np.round(rng.normal(62, 11, n) + 3 * z), 20, 90).astype(int)
    female = rng.random(n) < 0.5
    female |= pts["cohort"].str.contains("CESC").to_numpy()  # cervical cancer: all female
    pts["sex"] = np.where(female, "female", "male")
    s = toy["survival"]
    hazard = s["baseline_hazard"] * np.exp(s["log_hazard_ratio"] * z)
    t_event = rng.exponential(1.0 / hazard)
    t_cens = rng.exponential(1.0 / s["censoring_hazard"], n) if s["censoring_hazard"] > 0 else np.full(n, np.inf)
    t_cens = np.minimum(t_cens, s["max_follow_up"])
    pts["hazard"] = hazard
    pts["survival_time"] = np.maximum(1, np.round(np.minimum(t_event, t_cens))).astype(int)
    pts["event"] = (t_event <= t_cens).astype(int)
    return pts


def rates(genes: pd.DataFrame, pts: pd.DataFrame) -> np.ndarray:
    """Noise-free expression rate (genes x patients): signatures x fractions + programs, stage
    genes scaled by exp(stage_effect x stage_program)."""
    sig = genes[[f"sig_{ct}" for ct in CELL_TYPES]].to_numpy()  # G x 5
    fr = pts[CELL_TYPES].to_numpy()  # P x 5
    r = sig @ fr.T
    for j, c in enumerate(pts["cohort"]):
        col = f"prog_{c}"
        if col in genes:
            r[:, j] += genes[col].to_numpy()
    u = softplus(pts["survival_program"].to_numpy())
    u[pts["dataset"].eq("gtex").to_numpy()] = 0.0
    r += np.outer(genes["survival_loading"].to_numpy(), u)
    r += np.outer(genes["msi_loading"].to_numpy(), pts["msi_like"].to_numpy())
    if "stage_effect" in genes and "stage_program" in pts:
        r *= np.exp(np.outer(genes["stage_effect"].to_numpy(), pts["stage_program"].to_numpy()))
    return r


def expected_counts(r: np.ndarray, pts: pd.DataFrame, toy: dict) -> np.ndarray:
    """Mean counts: rates scaled to ``library_size`` times each patient's size factor."""
    scale = toy["library_size"] / np.median(r.sum(axis=0))
    depth = np.where(pts["dataset"].eq("external").to_numpy(), toy["external_depth"], 1.0)
    return r * scale * (pts["size_factor"].to_numpy() * depth)[None, :]


def simulate_counts(mu: np.ndarray, toy: dict, seed: int) -> np.ndarray:
    return nb_counts(rng_for(seed, "counts"), mu, toy["nb_dispersion"])
