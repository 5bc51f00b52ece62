"""``make_cohort``: write the toy cohort (all but the slides) and its ground truth."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from crossmodal.fileio import atomic_path, write_json, write_table, write_text
from crossmodal.toy import expression as fmt
from crossmodal.toy import fastq as fq
from crossmodal.toy import omics
from crossmodal.toy.model import (STAGE_CUTS, STAGE_EFFECT, STAGE_GENES, STAGE_NOISE, STAGE_RHO, build_genes,
                                  build_patients, expected_counts, nb_counts, rates, rng_for, simulate_counts)
from crossmodal.toy.plan import CELL_TYPES, FIXED_OUTPUTS, ROOT, plan, toy_settings

log = logging.getLogger(__name__)

CLINICAL_COLUMNS = ["patient", "cohort", "grade", "stage", "survival_time", "event", "age", "sex", "msi_like"]


def _write_gz_table(path, df: pd.DataFrame) -> None:
    """TSV.gz with no file name and a fixed mtime in the gzip header, so the same table
    gives the same bytes (pandas' gzip writes the temporary file's name and the time)."""
    import gzip

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
            gz.write(df.to_csv(sep="\t", index=False).encode())


def _slide_plan(sheet: pd.DataFrame, pts: pd.DataFrame, toy: dict, seed: int) -> pd.DataFrame:
    """Which slide has no tissue, which carry pen marks, blur or low contrast."""
    rng = rng_for(seed, "slide_plan")
    sl = sheet[sheet["slide"] != ""][["sample", "patient", "cohort", "slide"]].reset_index(drop=True)
    sl = sl.merge(pts[["patient"] + CELL_TYPES + ["msi_like"]], on="patient", how="left")
    n = len(sl)
    sl["has_tissue"] = 1
    sl["pen_mark"] = ""
    sl["blur"] = 0
    sl["low_contrast"] = 0
    if n == 0:
        return sl
    tcga = np.flatnonzero(sl["sample"].isin(sheet.loc[sheet.dataset == "tcga", "sample"]).to_numpy())
    empty = int(rng.choice(tcga if len(tcga) else np.arange(n)))
    sl.loc[empty, "has_tissue"] = 0
    others = np.array([i for i in range(n) if i != empty])
    for col, frac in [("pen_mark", toy["pen_mark_fraction"]), ("blur", toy["blur_fraction"]),
                      ("low_contrast", toy["low_contrast_fraction"])]:
        k = min(len(others), int(max(1, round(frac * n)))) if frac > 0 else 0
        pick = rng.choice(others, size=k, replace=False) if k else []
        for i in pick:
            sl.loc[i, col] = str(rng.choice(["blue", "green"])) if col == "pen_mark" else 1
    return sl


def _readme(toy: dict, seed: int, sl: pd.DataFrame, genes: pd.DataFrame) -> str:
    empty = sl.loc[sl["has_tissue"] == 0, "sample"].tolist()
    return f"""# Ground truth of the planted-signal toy cohort

Written by `crossmodal.toy.make_cohort` (seed {seed}). Every file here is what a model trained
on `results/toy/cohort/` should recover. Sizes and strengths come from the `toy` config section.

## Generative model

1. **Cell-type fractions** per patient over {", ".join(CELL_TYPES)}:
   Dirichlet(concentration {toy['dirichlet_concentration']} x the cohort's mean,
   `toy.fraction_means`); MSI-like patients have their lymphocyte mean raised 2.5x.
   -> `fractions.tsv`.
2. **Latent programs** per cancer patient: survival program score z ~ N(0, 1) and a binary
   `msi_like` label (prevalence {toy['msi_prevalence']}); healthy donors have neither.
   -> `patients.tsv`.
3. **Expression rate** of gene g in patient p:
   `rate = sum_c sig_c[g] * fraction_c[p] + prog_<cohort>[g] + survival_loading[g] * softplus(z[p]) + msi_loading[g] * msi_like[p]`,
   times `exp(stage_effect[g] * stage_program[p])` for the {STAGE_GENES} stage genes.
   `sig_<cell type>`: baseline x lognormal(0, 0.2), markers ({toy['marker_genes']} per cell type)
   x20 in their own cell type and x0.02 elsewhere. Program genes ({toy['program_genes']} per cohort,
   disjoint) get +{toy['program_strength']} x baseline in their cohort; {toy['survival_genes']} survival genes
   +{toy['survival_strength']} x baseline x softplus(z); 15 MSI genes +2 x baseline. -> `genes.tsv`.
4. **Counts** ~ NegativeBinomial(mean = rate x library scale ({toy['library_size']:g} reads on
   average) x size factor (lognormal(0, 0.25)), dispersion {toy['nb_dispersion']}); the external
   cohort is sequenced at {toy['external_depth']}x depth, lacks {toy['external_missing_fraction']:.0%} of the
   genes and has {toy['external_extra_genes']} genes of its own (`genes.tsv` column `in_external`).
   TCGA-style samples get STAR-counts TSVs (raw counts + TPM/FPKM columns); the GTEx-style GCT holds
   TPM (reads per kb, scaled to 10^6 per sample), like GTEx's `gene_tpm` file.
5. **Clinical**: grade 1-4 from 0.8 z + 0.4 (standardised tumour fraction) + N(0, 0.6);
   a progression latent `stage_program` = {STAGE_RHO} z + {(1 - STAGE_RHO ** 2) ** 0.5:.2f} N(0, 1) (`patients.tsv`)
   moves {STAGE_GENES // 2} stage genes up and {STAGE_GENES - STAGE_GENES // 2} down by exp(+/-{STAGE_EFFECT} x latent)
   and one RPPA protein with them; stage I-IV = latent + N(0, {STAGE_NOISE}) cut at {", ".join(map(str, STAGE_CUTS))};
   age ~ N(62, 11) + 3 z; survival time exponential with
   hazard {toy['survival']['baseline_hazard']} x exp({toy['survival']['log_hazard_ratio']} z) per day,
   censored by an exponential (hazard {toy['survival']['censoring_hazard']}) and at
   {toy['survival']['max_follow_up']:g} days. -> `cohort/clinical.tsv`, hazards in `patients.tsv`.
6. **Omics** (TCGA-style patients): CNA = absolute copy number with arm and focal events drawn
   independently of everything (hard to predict by design); RPPA = noisy weighted sums of
   log2 rates of 1-3 genes (`rppa_map.tsv`), so RNA is well predicted from RPPA. Some
   patients lack each modality (`patients.tsv` columns has_cna, has_rppa).
7. **FASTQ**: {toy['fastq_genes']} genes, 1-3 isoforms each (exon skipping), {toy['fastq_reads']}
   single-end {toy['read_length']}-bp reads per sample, fragment length
   {toy['fragment_length'][0]:g} +/- {toy['fragment_length'][1]:g}; true TPM in `fastq_abundance.tsv`.
8. **Slides** (`slides.tsv`; rule make_toy_slide): nuclei on a jittered grid in exactly the
   patient's fractions (positions and types in `nuclei/<sample>.tsv`), morphology by cell type
   (see `crossmodal/toy/slides.py`), pen marks, blurred and low-contrast regions as flagged.
   The slide without tissue: {", ".join(empty) or "none"}.

Gene table: {int((genes.gene_type == 'protein_coding').sum())} protein-coding genes and
{int((genes.gene_type != 'protein_coding').sum())} lncRNA genes.
"""


def make_cohort(out_dir=ROOT, cfg: dict | None = None) -> dict:
    """Write the toy cohort under ``out_dir`` (``cohort/`` and ``truth/``), all but the slides.

    ``cfg`` is the pipeline config (its ``seed`` and ``toy`` section are used).  Returns a
    manifest: every file written, by name, plus summary counts.  The sample sheet written
    (``cohort/samples.tsv``) is ``plan(cfg, root=str(out_dir))``.
    """
    cfg = cfg or {}
    toy, seed = toy_settings(cfg)
    root = str(out_dir).rstrip("/")
    out = Path(root)
    sheet = plan(cfg, root)
    log.info("toy cohort: %d samples (%s) -> %s", len(sheet),
             ", ".join(f"{k} {v}" for k, v in sheet["dataset"].value_counts().sort_index().items()), out)
    paths = {k: out / v for k, v in FIXED_OUTPUTS.items()}

    genes = build_genes(toy, seed)
    pts = build_patients(sheet, toy, seed)
    r = rates(genes, pts)
    mu = expected_counts(r, pts, toy)
    counts = simulate_counts(mu, toy, seed)
    col = {p: j for j, p in enumerate(pts["patient"])}
    log.info("simulated %d genes x %d patients (median library %.0f reads)",
             len(genes), len(pts), float(np.median(counts.sum(axis=0))))

    # expression files in their native formats
    rng_star = rng_for(seed, "star")
    tcga = sheet[sheet.dataset == "tcga"]
    for rec in tqdm(tcga.itertuples(), total=len(tcga), desc="STAR-counts files", leave=False):
        fmt.write_star_counts(rec.expression, genes, counts[:, col[rec.patient]], rng_star)
    gtex = sheet[sheet.dataset == "gtex"]
    if len(gtex):
        fmt.write_gct(paths["gct"], genes, counts[:, [col[p] for p in gtex.patient]], list(gtex["sample"]))
    else:
        write_text(paths["gct"], f"#1.2\n{len(genes)}\t0\nName\tDescription\n")
    ext = sheet[sheet.dataset == "external"]
    rng_ext = rng_for(seed, "external")
    pc_idx = np.flatnonzero(genes["gene_type"].eq("protein_coding").to_numpy())
    droppable = np.array([i for i in pc_idx if not genes.at[i, "marker_of"]])
    n_drop = int(round(toy["external_missing_fraction"] * len(pc_idx)))
    dropped = set(rng_ext.choice(droppable, size=min(n_drop, len(droppable)), replace=False).tolist())
    keep = [i for i in range(len(genes)) if i not in dropped]
    genes["in_external"] = [int(i not in dropped) for i in range(len(genes))]
    ext_cols = [col[p] for p in ext.patient]
    extra_n = toy["external_extra_genes"]
    # genes only the external panel measures, at the external cohort's depth
    if extra_n and ext_cols:
        depth = mu[:, ext_cols].sum(axis=0) / r[:, ext_cols].sum(axis=0)
        extra_mu = np.exp(rng_ext.normal(np.log(5.0), 1.0, (extra_n, 1))) * depth[None, :]
        extra = nb_counts(rng_ext, extra_mu, toy["nb_dispersion"])
    else:
        extra = np.zeros((extra_n, len(ext_cols)), dtype=np.int64)
    ext_symbols = [genes.at[i, "gene"] for i in keep] + [f"TOYX{i:04d}" for i in range(1, extra_n + 1)]
    ext_values = np.vstack([counts[keep][:, ext_cols], extra])
    fmt.write_series_matrix(paths["geo"], ext_symbols, ext_values, list(ext["sample"]),
                            [f"{c} tumour {k + 1}" for k, c in enumerate(ext["cohort"])], list(ext["cohort"]))

    # FASTQ with known abundances
    tx, seqs = fq.build_transcriptome(genes, toy, seed)
    fq.write_transcriptome(paths["transcriptome"], paths["t2g"], tx, seqs)
    ab_rows = []
    fqs = sheet[sheet.dataset == "fastq"]
    for rec in tqdm(fqs.itertuples(), total=len(fqs), desc="FASTQ", leave=False):
        rng_fq = rng_for(seed, "reads", rec.sample)
        tpm, reads = fq.abundances(tx, genes, r[:, col[rec.patient]], toy, rng_fq)
        fq.write_fastq_gz(rec.expression, fq.simulate_reads(seqs, tx, reads, toy, rng_fq, rec.sample))
        ab_rows.append(pd.DataFrame({"sample": rec.sample, "transcript_id": tx.transcript_id,
                                     "gene_id": tx.gene_id, "gene_name": tx.gene_name,
                                     "length": tx.length, "tpm": np.round(tpm, 4), "reads": reads}))
    ab = pd.concat(ab_rows) if ab_rows else pd.DataFrame(
        columns=["sample", "transcript_id", "gene_id", "gene_name", "length", "tpm", "reads"])
    write_table(paths["fastq_abundance"], ab, index=False)

    # clinical (cancer patients) and omics (TCGA-style patients)
    cancer = pts[pts.dataset != "gtex"]
    write_table(paths["clinical"], cancer[CLINICAL_COLUMNS], index=False)
    rng_miss = rng_for(seed, "missing")
    tp = pts[pts.dataset == "tcga"].reset_index(drop=True)
    has_cna = rng_miss.random(len(tp)) >= toy["cna_missing_fraction"]
    has_rppa = rng_miss.random(len(tp)) >= toy["rppa_missing_fraction"]
    pts["has_cna"] = pts["patient"].isin(tp.patient[has_cna]).astype(int)
    pts["has_rppa"] = pts["patient"].isin(tp.patient[has_rppa]).astype(int)
    _write_gz_table(paths["cna"], omics.copy_number(genes, list(tp["sample"][has_cna]), seed))
    pmap = omics.protein_map(genes, toy, seed)
    rcols = [col[p] for p in tp.patient[has_rppa]]
    _write_gz_table(paths["rppa"], omics.rppa(pmap, genes, r[:, rcols], list(tp["sample"][has_rppa]), toy, seed))
    write_table(paths["rppa_map"], pmap, index=False)
    write_table(paths["gene_groups"], genes.loc[genes.group != "", ["gene", "group"]], index=False)

    # ground truth
    sl = _slide_plan(sheet, pts, toy, seed)
    write_table(paths["slides"], sl, index=False, float_format="%.6f")
    write_table(paths["fractions"], pts[["patient", "sample", "cohort", "dataset"] + CELL_TYPES],
                index=False, float_format="%.6f")
    write_table(paths["patients"], pts, index=False, float_format="%.6g")
    write_table(paths["genes"], genes, index=False, float_format="%.6g")
    write_table(paths["samples"], sheet, index=False)
    write_text(paths["readme"], _readme(toy, seed, sl, genes))
    _figure(paths["figure"], pts, genes, counts)

    manifest = {
        "seed": seed,
        "n_patients": int(len(pts)),
        "n_samples": int(len(sheet)),
        "n_genes": int(len(genes)),
        "datasets": {k: int(v) for k, v in sheet["dataset"].value_counts().sort_index().items()},
        "no_tissue_slide": sl.loc[sl.has_tissue == 0, "sample"].tolist(),
        "files": {k: str(v) for k, v in paths.items()},
        "star_counts": [str(p) for p in tcga["expression"]],
        "fastq": [str(p) for p in fqs["expression"]],
    }
    write_json(paths["manifest"], manifest)
    log.info("toy cohort written: %d STAR files, %d GTEx samples, %d external, %d FASTQ; no-tissue slide %s",
             len(tcga), len(gtex), len(ext), len(fqs), manifest["no_tissue_slide"])
    return manifest


def _figure(path, pts: pd.DataFrame, genes: pd.DataFrame, counts: np.ndarray) -> None:
    """Overview of the planted signal: fractions by cohort, marker expression vs tumour
    fraction, survival by program tertile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sksurv.nonparametric import kaplan_meier_estimator

    from crossmodal.fileio import save_figure

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    mean = pts.groupby("cohort", sort=False)[CELL_TYPES].mean()
    bottom = np.zeros(len(mean))
    for ct in CELL_TYPES:
        ax[0].bar(range(len(mean)), mean[ct], bottom=bottom, label=ct)
        bottom += mean[ct].to_numpy()
    ax[0].set_xticks(range(len(mean)), mean.index, rotation=45, ha="right", fontsize=8)
    ax[0].set_ylabel("mean planted fraction")
    ax[0].legend(fontsize=7)
    ax[0].set_title("cell-type fractions by cohort")
    lib = counts.sum(axis=0)
    marker = genes["marker_of"].eq("tumour").to_numpy()
    score = np.log2(counts[marker].sum(axis=0) / lib * 1e6 + 1)
    ax[1].scatter(pts["tumour"], score, s=12, c=pts["dataset"].astype("category").cat.codes, cmap="tab10")
    rho = pd.Series(pts["tumour"].to_numpy()).corr(pd.Series(score), method="spearman")
    ax[1].set_xlabel("planted tumour fraction")
    ax[1].set_ylabel("tumour-marker log2 CPM")
    ax[1].set_title(f"expression follows fractions (Spearman {rho:.2f})")
    cancer = pts[pts.dataset != "gtex"]
    if len(cancer) >= 6:
        tert = pd.qcut(cancer["survival_program"], 3, labels=["low", "mid", "high"])
        for lab in ["low", "mid", "high"]:
            sub = cancer[tert == lab]
            t, s = kaplan_meier_estimator(sub["event"].astype(bool).to_numpy(), sub["survival_time"].to_numpy())
            ax[2].step(t, s, where="post", label=f"{lab} program (n={len(sub)})")
        ax[2].legend(fontsize=7)
    ax[2].set_xlabel("days")
    ax[2].set_ylabel("survival")
    ax[2].set_title("survival by planted program tertile")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
