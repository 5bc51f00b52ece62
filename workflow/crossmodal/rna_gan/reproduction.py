"""results/rna_gan/reproduction.tsv: one row per claim of the RNA-GAN paper, the paper's value
and section, this run's value, the data it ran on and whether the direction of the claim holds
(the layout every paper shares, :mod:`crossmodal.reproduction`)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crossmodal import stats
from crossmodal.fileio import write_table
from crossmodal.reproduction import COLUMNS, Claims, fmt, holds, tally  # noqa: F401 (COLUMNS: the layout)
from crossmodal.steps import step

log = logging.getLogger(__name__)

# a tissue separation "holds" above this silhouette (issue 5's toy check: silhouette > 0.3 on the test split)
SILHOUETTE_MIN = 0.3

# a direction that is "above chance" must be so at this one-sided significance level
# (binomial test against chance for the centroid checks; label-permutation test for the tile silhouette)
ALPHA = 0.05

# the tile-silhouette claim (generated tiles *preserve* the real tiles' tissue differences) is
# testable only when the real tiles separate by tissue clearly: silhouette at least this, and
# above the permutation null at ALPHA
REAL_SEPARATION_MIN = 0.1

SOURCE_NAMES = {"gan": "GAN", "control": "control", "rna_gan": "RNA-GAN", "real": "real"}



def above_chance(share: float, n, chance: float) -> tuple[float, bool | str]:
    """One-sided binomial p-value of ``share`` of ``n`` trials against ``chance`` and whether it
    is below :data:`ALPHA` ("n/a" when the share or n is missing)."""
    from scipy.stats import binomtest

    if n is None or not np.isfinite(float(n)) or int(n) < 1 or not np.isfinite(float(share)):
        return float("nan"), "n/a"
    k = int(round(float(share) * int(n)))
    p = float(binomtest(k, int(n), chance, alternative="greater").pvalue)
    return p, bool(p < ALPHA)


def check_row(checks: pd.DataFrame, model: str, check: str, space: str = "expression") -> pd.Series | None:
    """The row of latent_checks.tsv for ``model`` / ``check`` scored in ``space`` (tables written
    before the ``space`` column: the only row); None when absent."""
    m = (checks["model"] == model) & (checks["check"] == check)
    if "space" in checks.columns:
        m &= checks["space"].astype(str) == space
    rows = checks[m]
    return None if rows.empty else rows.iloc[0]


def donor_level(ahead, p, min_p, n_donors, test: str) -> tuple:
    """``(verdict, note)`` of a classifier score above its chance level, judged with the donor
    as the unit (tiles of one donor are not independent): True when ahead with p <= ALPHA,
    False when not, n/a when the table has no test (written before it was added) or when even
    perfect separation could not reach ALPHA with these donors (``min_p``); False when not ahead
    whatever the test."""
    p = float(p) if p is not None and pd.notna(p) else float("nan")
    if not np.isfinite(p):
        if not ahead:
            return False, "not ahead of chance"
        return "n/a", "n/a: no donor-level test in the table (tile-level scores are not independent)"
    what = f"{test}, {int(n_donors)} donors, p = {fmt(p, 2)}"
    if min_p is not None and pd.notna(min_p) and float(min_p) > ALPHA:
        return "n/a", f"{what}; n/a: with these donors no result can reach p <= {ALPHA} (smallest p {fmt(min_p, 2)})"
    if ahead and p > ALPHA:
        return False, f"{what}; False: ahead of chance on the tiles, but not significantly over donors"
    return bool(ahead and p <= ALPHA), what


def control_note(f: pd.DataFrame, div: pd.DataFrame | None, real_div: pd.Series | None, t: str) -> str:
    """Why the noise-only control is not starved here (Figure 4C), with this run's numbers."""
    note = ("the generator's first layer (transposed convolution without bias) feeds a BatchNorm, as in "
            "the paper's TorchGAN DCGAN, so the generator is invariant to the scale of its input: the "
            "narrow-noise control is a GAN with truncated-normal noise (expected: FID control ~ GAN")
    if "gan" in f.columns:
        note += f"; here {fmt(f.loc[t, 'control'])} vs {fmt(f.loc[t, 'gan'])}"
    note += ")"
    if div is not None and {"rna_gan", "control"} <= set(div.columns):
        sd_r, sd_c = float(div.loc[t, "rna_gan"]), float(div.loc[t, "control"])
        nums = f"pixel sd within a donor: RNA-GAN {fmt(sd_r, 3)}, control {fmt(sd_c, 3)}"
        if real_div is not None and t in real_div.index:
            nums += f", real {fmt(real_div.loc[t], 3)}"
        if sd_r < 0.5 * sd_c:
            note += (f"; RNA-GAN's tiles of one donor are near copies ({nums}): the generator learns to ignore "
                     "the narrow noise (values in [-0.3, 0.3]) next to the donor's latent, the known failure of "
                     "noise + condition GAN inputs (pix2pix, Isola et al. 2017), so it draws about one tile per "
                     "donor and its FID pays for the missing diversity (on the toy also with the paper's 2048-d "
                     "latent, where the noise has half the variance of the donors' latent means: within-donor "
                     "pixel sd 1.1); rna_gan.gan.mode_seeking (beyond the paper, off here) restores the diversity")
        else:
            note += f"; {nums}"
    return note


def build(vae_metrics: pd.DataFrame, multi_metrics: pd.DataFrame, checks: pd.DataFrame, fid: pd.DataFrame,
          external: pd.DataFrame, simclr: pd.DataFrame | None, data: str, extractor_note: str,
          epochs: dict | None = None, silhouette: pd.DataFrame | None = None,
          convergence: pd.DataFrame | None = None) -> pd.DataFrame:
    """The claims table.  ``convergence``: optional epochs_to_quality.tsv (the epoch at which
    each generator first reaches the KID both GAN and RNA-GAN end at) for the 'fewer epochs'
    row; without it, ``epochs`` ({tissue: {variant: configured epochs}}) gives a row that only
    reports the configuration.  ``silhouette``: optional tile_silhouette.tsv (silhouette by
    tissue per source) for the 'generated tiles keep the tissues apart' row."""
    claims = Claims(data)
    add = claims.add

    mt = multi_metrics.set_index("split").loc["test"]
    add("β-VAE test RMSE (multi-tissue)", "0.631", "Results: A β-VAE model can build a representative latent space",
        fmt(mt["rmse"]), "n/a", "a value, not a direction; scale depends on the cohort and gene count")
    if "mae" in mt.index:
        add("β-VAE test mean absolute error percentage (multi-tissue)", "39%",
            "Results: A β-VAE model can build a representative latent space",
            f"not computed (test MAE {fmt(mt['mae'])} in z-score units)", "n/a",
            "the paper does not define the percentage; a percentage error of z-scored expression (values "
            "near 0) is not defined, so no equivalent is computed - the MAE is shown instead, not comparable")
    for key, name, m, paper, fig in ((("main", "two tissues", vae_metrics, "two separated clusters (Fig. 2A)",
                                        "Figure 2A"),
                                       ("multi_tissue", "multi-tissue", multi_metrics,
                                        "well-differentiated clusters (Fig. 2C)", "Figure 2C"))):
        te = m.set_index("split").loc["test"]
        sil = float(te["silhouette_cohort"])
        n_te = int(te["n"]) if "n" in te.index and np.isfinite(float(te["n"])) else None
        sil_in = float(te["silhouette_cohort_input"]) if "silhouette_cohort_input" in te.index else float("nan")
        # the latent_checks.tsv silhouette covers the donors the figure shows (rna_gan.figures.split):
        # the direction uses whichever of the two has more donors (the test split of a toy is a few)
        cr = check_row(checks, key, "silhouette_latent_by_tissue", "latent")
        big = (float(cr["value"]), int(cr["n"]), str(cr.get("donors", f"{int(cr['n'])} donors"))) \
            if cr is not None and np.isfinite(float(cr["value"])) and np.isfinite(float(cr["n"])) else None
        use_big = big is not None and (n_te is None or big[1] > n_te)
        used = big[0] if use_big else sil
        this = f"silhouette {fmt(used, 3)} (n = {big[1] if use_big else n_te})"
        if big is not None:
            this += (f"; test split {fmt(sil, 3)} (n = {n_te})" if use_big
                     else f"; figure donors {fmt(big[0], 3)} (n = {big[1]})")
        note = (f"silhouette by cohort of the β-VAE latent means; direction = silhouette > {SILHOUETTE_MIN} "
                f"(issue 5's threshold) on the larger sample: "
                + (f"the figure's donors ({big[2]}; vae/latent_checks.tsv)" if use_big
                   else f"the test split (n = {n_te}; vae/main or multi_tissue/test_metrics.tsv)")
                + f"; test split {fmt(sil, 3)} with n = {n_te} (input expression: {fmt(sil_in, 3)})")
        if "train" in set(m["split"]):
            tr = m.set_index("split").loc["train"]
            note += f", training split {fmt(float(tr['silhouette_cohort']), 3)} (n = {fmt(tr.get('n'))})"
        if big is not None and np.isfinite(sil) and (big[0] > SILHOUETTE_MIN) != (sil > SILHOUETTE_MIN):
            note += "; the two samples fall on different sides of the threshold: the verdict is fragile"
        if not np.isfinite(used):
            note += f"; undefined - {n_te} test samples"
        add(f"β-VAE latents separate the tissues ({name})", paper, f"Results; {fig}",
            this, holds(used > SILHOUETTE_MIN, used), note)
    # each decoded profile's tissue by a vote of its nearest real profiles in expression space
    # (crossmodal.rna_gan.latent.knn_tissue); a share is tested against chance (1 / number of
    # tissues) by a one-sided binomial test at ALPHA (a share just over chance of a few profiles is chance)
    for model, check, claim, paper, fig in (
            ("main", "generated_in_target_tissue", "centroid + random draw gives profiles of the chosen tissue",
             "fall in the tissue's cluster (Fig. 2A)", "Figure 2A"),
            ("main", "shifted_in_target_tissue", "centroid difference shifts profiles to the other tissue",
             "shifted profiles join the other cluster (Fig. 2B)", "Figure 2B"),
            ("multi_tissue", "generated_in_target_tissue",
             "multi-tissue β-VAE generates profiles of each chosen tissue",
             "generative capabilities across the multiple tissues (Fig. 2C: real profiles of several tissues "
             "and generated brain cortex profiles)", "Figure 2C")):
        row = check_row(checks, model, check, "expression")
        if row is None:
            continue
        share = float(row["value"])
        n = row["n"] if "n" in row.index else None
        chance = float(row["chance"]) if "chance" in row.index and np.isfinite(float(row["chance"])) else 0.5
        space = str(row["space"]) if "space" in row.index else "latent (re-encoded)"
        p, ok = above_chance(share, n, chance)
        ntis = int(round(1 / chance)) if chance > 0 else "?"
        this = f"{fmt(100 * share, 3)}% nearest real profiles of the target tissue"
        um = check_row(checks, model, check, "umap") if "space" in checks.columns else None
        if um is not None:
            this += f" (in the figure's UMAP: {fmt(100 * float(um['value']), 3)}%)"
        note = (f"direction = share above chance ({fmt(100 * chance, 3)}%, {ntis} tissues) by a one-sided binomial "
                f"test, p < {ALPHA} (here p = {fmt(p, 2)}, n = {fmt(n) if n is not None else '?'} profiles); "
                f"tissue of a decoded profile = vote of its nearest real profiles in {space} space")
        if "donors" in row.index and str(row["donors"]) not in ("", "nan"):
            note += f"; real profiles: {row['donors']}"
        if um is not None:
            note += ("; the UMAP share (same vote among the real points of the figure's 2-D embedding) is what the "
                     "figure shows")
        add(claim, paper, f"Results; {fig}", this, ok, note)
    add("pathologists prefer RNA-GAN tiles over GAN tiles and tell their tissue of origin",
        "lung: RNA-GAN preferred over GAN (p = 0.025); brain: no difference (p = 0.305); tissue of origin "
        "100% ± 0% for real and RNA-GAN vs 74.98% ± 20.40% for GAN tiles; artifacts in 56% (RNA-GAN) vs 70% (GAN)",
        "Results: Expert evaluation of synthetic tiles; Figure 6", "not measured", "n/a",
        "needs blinded human raters (six board-certified pathologists in the paper); no pipeline step can measure it")
    if "comparable" in fid.columns and len(fid):  # the metrics package's label of the extractor
        extractor_note = "; ".join(x for x in (extractor_note, str(fid["comparable"].iloc[0])) if x)
    f = fid.pivot(index="tissue", columns="variant", values="fid")
    div = (fid.pivot(index="tissue", columns="variant", values="within_patient_sd")
           if "within_patient_sd" in fid.columns else None)
    real_div = (fid.groupby("tissue")["real_within_patient_sd"].first()
                if "real_within_patient_sd" in fid.columns else None)
    for t in f.index:
        if {"gan", "rna_gan"} <= set(f.columns):
            add(f"FID RNA-GAN < GAN ({t})", "83.89 vs 87.85 (lung, FID 60k)", "Discussion",
                f"{fmt(f.loc[t, 'rna_gan'])} vs {fmt(f.loc[t, 'gan'])}",
                holds(f.loc[t, "rna_gan"] < f.loc[t, "gan"], f.loc[t, "rna_gan"], f.loc[t, "gan"]),
                extractor_note)
        if {"control", "rna_gan"} <= set(f.columns):
            add(f"noise-only control is worse than RNA-GAN ({t})", "no quality samples (Fig. 4C)",
                "Results; Figure 4C", f"FID control {fmt(f.loc[t, 'control'])} vs RNA-GAN {fmt(f.loc[t, 'rna_gan'])}",
                holds(f.loc[t, "control"] > f.loc[t, "rna_gan"], f.loc[t, "control"], f.loc[t, "rna_gan"]),
                "; ".join(x for x in (extractor_note, control_note(f, div, real_div, t)) if x))
    if silhouette is not None and len(silhouette):
        st = silhouette.set_index("source")
        sl = st["silhouette_by_tissue"].astype(float)
        if "rna_gan" not in sl.index or "real" not in sl.index:
            raise ValueError(f"tile silhouette table: needs sources real and rna_gan, has {', '.join(sl.index)}")
        r, real = float(sl["rna_gan"]), float(sl["real"])
        others = ", ".join(f"{SOURCE_NAMES.get(k, k)} {fmt(float(sl[k]), 3)}" for k in sl.index
                           if k not in ("rna_gan", "real"))
        note = ("silhouette by tissue of the tile features (not the UMAP) of each source's tiles of both tissues")
        if "p_permutation" in st.columns:
            pr, preal = float(st.loc["rna_gan", "p_permutation"]), float(st.loc["real", "p_permutation"])
            nperm = int(st.loc["rna_gan", "permutations"]) if "permutations" in st.columns else "?"
            real_separates = (np.isfinite(real) and np.isfinite(preal) and real >= REAL_SEPARATION_MIN
                              and preal < ALPHA)
            note += (f"; testable only when the real tiles separate by tissue (silhouette >= {REAL_SEPARATION_MIN} "
                     f"and above a tissue-label permutation null, one-sided p < {ALPHA}; here real {fmt(real, 3)}, "
                     f"p = {fmt(preal, 2)}, {nperm} permutations); then direction = RNA-GAN's silhouette above "
                     f"its own permutation null (here p = {fmt(pr, 2)}, null 95th percentile "
                     f"{fmt(float(st.loc['rna_gan', 'null_q95']), 2)})")
            if real_separates:
                ok = holds(pr < ALPHA, r, pr)
            else:
                ok = "n/a"
                note += ("; n/a: the real tiles do not separate clearly by tissue in these features, so there is no "
                         "tissue difference for the generated tiles to preserve - a generated silhouette above the "
                         "real one is not evidence of it")
        else:
            ok = "n/a"
            note += ("; no permutation null in the table (rna_gan.features.silhouette_permutations 0): the "
                     "direction is not judged - a silhouette above 0 alone is not evidence of separation")
        if np.isfinite(r) and np.isfinite(real) and r > real:
            note += ("; RNA-GAN's tiles separate by tissue more than the real tiles do: that is not a closer "
                     "match to the real tiles - it can come from less variety within a tissue (compare "
                     "within_patient_sd in fid.tsv)")
        note = "; ".join(x for x in (extractor_note, note) if x)
        add("generated tiles keep the tissues apart (silhouette by tissue, RNA-GAN vs real)",
            "the differences between the tissues were preserved (Fig. 4B); GAN tiles: two well-differentiated "
            "clusters (Fig. 3C)", "Results; Figures 3B/C, 4B; Discussion",
            f"RNA-GAN {fmt(r, 3)} vs real {fmt(real, 3)}" + (f" ({others})" if others else ""),
            ok, note)
    ev = (external.set_index("evaluation") if "evaluation" in external.columns
          else pd.DataFrame([external.iloc[0]], index=["external"]))
    for key, what in (("external", "external-cohort RNA-GAN tiles"),
                      ("heldout_donors", "RNA-GAN tiles of held-out donors")):
        if key not in ev.index:
            continue
        e = ev.loc[key]
        note = (f"direction = above chance ({fmt(100 * e['chance'], 3)}%); {e.get('arch', 'ResNet')} on "
                f"{e.get('n_train_tiles', '?')} real tiles")
        if float(e.get("majority_share", 0)) >= 1.0:
            note += (f"; the classifier calls every one of these tiles {e['majority_call']}, so the accuracy is "
                     "the chance level by construction, and the AUC only ranks tiles that all got that call")
        if key == "heldout_donors":
            note += ("; tiles generated from the expression of the test-split donors, whose real tiles "
                     "the classifier never saw (stand-in for the healthy GSE120795 cohort)")
            if "real_heldout" in ev.index:
                note += f"; on those donors' real tiles: {fmt(100 * ev.loc['real_heldout', 'accuracy'], 3)}%"
        elif data == "toy":
            note += ("; the toy's external cohort is cancer-like (TCGA-LUAD / TCGA-GBM profiles, z-scored "
                     "with TCGA statistics) fed to the GTEx-trained β-VAE and GANs, not healthy lung / brain "
                     "as GSE120795")
        ok, why = donor_level(e["accuracy"] > e["chance"], e.get("accuracy_p"), None, e.get("n_groups"),
                              "one-sided t-test of the donors' tile accuracies against chance")
        add(f"real-trained ResNet-18 classifies {what}: accuracy", "80.5%", "Results; Figure 4D",
            f"{fmt(100 * e['accuracy'], 3)}%", holds(ok, e["accuracy"], e["chance"]) if ok != "n/a" else ok,
            f"{note}; {why}")
        add("... F1", "79.7%", "Results; Figure 4D", f"{fmt(100 * e['f1'], 3)}%", "n/a")
        ok, why = donor_level(e["auc"] > 0.5, e.get("auc_p"), e.get("auc_min_p"), e.get("n_groups"),
                              "one-sided Mann-Whitney test of the donors' mean scores (the donor-level AUC)")
        add("... AUC", "0.805", "Results; Figure 4D", fmt(e["auc"], 3),
            holds(ok, e["auc"]) if ok != "n/a" else ok, why)
    paper_epochs = "lung 11 vs 91 (Discussion also 94); brain cortex 24 vs 39 (Discussion: 34)"
    if convergence is not None:
        for t, ct in convergence.groupby("tissue", sort=True):
            r = ct.set_index("variant")
            if not {"gan", "rna_gan"} <= set(r.index):
                continue
            a, b = r.loc["rna_gan", "epoch_reached"], r.loc["gan", "epoch_reached"]
            w = int(r["smooth_epochs"].iloc[0]) if "smooth_epochs" in r else 1
            add(f"RNA-GAN needs fewer training epochs than the GAN ({t})", paper_epochs,
                "Discussion; STAR Methods; Figure 5",
                f"epoch {fmt(a)} vs {fmt(b)} (trained {int(r.loc['rna_gan', 'epochs_trained'])} / "
                f"{int(r.loc['gan', 'epochs_trained'])}) to reach KID {fmt(r.loc['gan', 'threshold'], 3)}",
                holds(a < b, a, b),
                f"measured: first epoch whose KID ({extractor_note}; {w}-epoch running mean) of the same "
                "fixed inputs' tiles is at or below the higher of the two generators' final KIDs, i.e. the "
                "quality both reach (convergence.png); the paper judged 'tiles without major artifacts' by eye")
    elif epochs:
        for t in sorted(epochs):
            e = epochs[t]
            if {"gan", "rna_gan"} <= set(e):
                add(f"RNA-GAN needs fewer training epochs than the GAN ({t})", paper_epochs,
                    "Discussion; STAR Methods; Figure 5", f"not measured: configured {e['rna_gan']} vs {e['gan']} epochs",
                    "n/a", "the epochs are set in the config (rna_gan.gan.epochs / tissue_epochs), not found by a "
                    "convergence criterion; compare the tiles of both at the same epoch in fig5_same_epoch.png")
    if simclr is not None:
        m = simclr.groupby("init")[["accuracy", "f1"]].agg(["mean", "std"])
        if {"ssl", "scratch"} <= set(m.index):
            folds = (f"{simclr.loc[simclr['init'] == 'ssl', 'fold'].nunique()}-fold CV" if "fold" in simclr.columns
                     else f"{int((simclr['init'] == 'ssl').sum())}-fold CV")

            def ms(init, k):
                return f"{fmt(100 * m.loc[init, (k, 'mean')], 3)}% ± {fmt(100 * m.loc[init, (k, 'std')], 2)}%"

            def fold_gain(k):
                """SimCLR minus scratch, fold by fold (rows in order when there is no fold column)."""
                if "fold" in simclr.columns:
                    w = simclr.pivot_table(index="fold", columns="init", values=k)[["ssl", "scratch"]].dropna()
                    return (w["ssl"] - w["scratch"]).to_numpy(float)
                a, b = (simclr.loc[simclr["init"] == i, k].dropna().to_numpy(float) for i in ("ssl", "scratch"))
                return a[: min(len(a), len(b))] - b[: min(len(a), len(b))]

            for k, claim, paper in (("accuracy", f"SimCLR on synthetic tiles beats training from scratch (accuracy, "
                                                 f"{folds})", "85.50% ± 1.54% vs 76.71% ± 4.51% (5-fold CV)"),
                                    ("f1", "... F1", "85.49% ± 1.54% vs 76.67% ± 4.52%")):
                a, b = m.loc["ssl", (k, "mean")], m.loc["scratch", (k, "mean")]
                gain = fold_gain(k)
                p, npairs = stats.greater_than(gain, 0.0)["p_value"], len(gain)
                note = (f"mean ± sd over folds; direction = SimCLR ahead by a one-sided paired t-test over the "
                        f"{npairs} folds, p < {ALPHA} (here p = {fmt(p, 2)}); a higher mean alone is not enough")
                if np.isfinite(p):
                    ok = holds(a > b and p < ALPHA, a, b)
                    if a > b and p >= ALPHA:
                        note += "; False: the SimCLR mean is higher, but by less than the folds' spread"
                else:
                    ok = "n/a"
                    note += "; n/a: the paired test needs at least 2 folds"
                add(claim, paper, "Results; Figure S4", f"{ms('ssl', k)} vs {ms('scratch', k)}", ok, note)
    return claims.frame()


@step("build_rna_gan_reproduction")
def build_rna_gan_reproduction(inputs, outputs, params, *, threads=1, log=None):
    """Collect every RNA-GAN claim into results/rna_gan/reproduction.tsv."""
    def rd(k):
        v = inputs[k]
        return pd.read_csv(v[0] if isinstance(v, list) else v, sep="\t")

    simclr = rd("simclr") if inputs.get("simclr") else None  # [] when the SimCLR experiment is off
    table = build(rd("vae_metrics"), rd("multi_metrics"), rd("checks"), rd("fid"), rd("external"), simclr,
                  params["data"], params.get("extractor_note", ""), epochs=params.get("epochs"),
                  silhouette=rd("silhouette") if inputs.get("silhouette") else None,
                  convergence=rd("convergence") if inputs.get("convergence") else None)
    held, tested = tally(table)
    logging.getLogger(__name__).info("RNA-GAN reproduction: %d of %d directional claims hold (%s data)",
                                     held, tested, params["data"])
    write_table(outputs["table"], table, index=False)
