"""How fast each generator reaches its tile quality: the measurement behind RNA-GAN's "needs
fewer training epochs" (Summary; Results, Figure 5; Discussion: lung GAN 94 vs RNA-GAN 11
epochs, STAR Methods: lung 91 vs 11, brain cortex 39 vs 24).

The paper judged "tiles without major artifacts and good tissue structure" by eye.  We measure
it: after every epoch the training step generates the same fixed inputs' tiles - for the
patients whose real tiles are the FID reference (``features.real_splits``), a few each - into a
per-epoch LMDB (:class:`EpochTiles`), gathered into ``convergence.lmdb`` when training ends
(:func:`gather`).  The evaluation step (:func:`evaluate_gan_convergence`) scores every epoch's
tiles with the kernel inception distance (KID, unbiased at any sample size, unlike FID)
against the real reference tiles in the FID's feature space, smooths the curve over a few
epochs, and reports per tissue the epoch at which each generator first reaches the quality
that both GAN and RNA-GAN reach by the end of their training (:func:`epochs_to_quality`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from crossmodal.fileio import save_figure, write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)

VARIANT_LABELS = {"gan": "GAN", "rna_gan": "RNA-GAN", "control": "narrow-noise control"}


def epoch_plan(pts: pd.DataFrame, lat: pd.DataFrame, tissue: str, variant: str, tiles_per_epoch: int) -> list:
    """The per-epoch generation plan (``write_generated``'s (sample, meta, latent, n) entries):
    ``tiles_per_epoch`` tiles spread over the patients ``pts`` (index: sample; column patient) as
    evenly as the count allows (the first patients in sorted order take the remainder)."""
    if tiles_per_epoch < 1:
        raise ValueError(f"convergence: tiles_per_epoch must be >= 1, got {tiles_per_epoch}")
    samples = sorted(pts.index)
    counts = np.full(len(samples), tiles_per_epoch // len(samples))
    counts[: tiles_per_epoch % len(samples)] += 1
    return [(s, {"patient": pts.loc[s, "patient"], "cohort": tissue, "variant": variant},
             lat.loc[s].to_numpy(np.float32) if variant == "rna_gan" else None, int(c))
            for s, c in zip(samples, counts) if c > 0]


class EpochTiles:
    """``on_epoch`` callback of :func:`crossmodal.models.gan.fit`: writes the plan's tiles of
    epoch ``e`` to ``<folder>/epoch_<e>.lmdb`` (atomically; an epoch replayed after a resume
    replaces its file).  Every epoch uses the same seeds, so the curve follows one set of
    inputs through training."""

    def __init__(self, folder, plan: list, seed: int, header: dict):
        self.folder, self.plan, self.seed, self.header = Path(folder), plan, int(seed), dict(header)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{int(epoch):04d}.lmdb"

    def __call__(self, epoch: int, model) -> None:
        from crossmodal.rna_gan.generators import write_generated

        plan = [(s, {**meta, "epoch": int(epoch)}, z, n) for s, meta, z, n in self.plan]
        write_generated(self.path(epoch), model, plan, self.seed, {**self.header, "epoch": int(epoch)})


def gather(folder, epochs: int, out_lmdb, header: dict, per_epoch: int | None = None) -> int:
    """Every epoch's LMDB of ``folder`` (1..``epochs``) into one tile LMDB at ``out_lmdb``, each
    tile's metadata keeping its ``epoch``.  A missing epoch, or one holding other than
    ``per_epoch`` tiles (written under another ``tiles_per_epoch``), is an error naming it."""
    from crossmodal.data import TileDataset, TileWriter, close_all, read_header

    paths = [Path(folder) / f"epoch_{e:04d}.lmdb" for e in range(1, int(epochs) + 1)]
    missing = [str(p) for p in paths if not p.is_dir()]
    retrain = f"delete {Path(folder).parent} to retrain"
    if missing:
        raise FileNotFoundError(f"convergence tiles: {len(missing)} epoch(s) missing, e.g. {missing[0]} "
                                f"(training finished before per-epoch tiles were written? {retrain})")
    if per_epoch is not None:
        for p in paths:
            n = int(read_header(p)["count"])
            if n != int(per_epoch):
                raise ValueError(f"convergence tiles: {p} holds {n} tiles, the config asks for {per_epoch} per "
                                 f"epoch (rna_gan.convergence.tiles_per_epoch changed after training? {retrain})")
    n = 0
    ds = TileDataset([str(p) for p in paths])
    sizes = {int(h["tile_size"]) for h in ds.headers}
    try:
        with TileWriter(out_lmdb, {"mpp": None, "encoding": "png", **header, "epochs": int(epochs),
                                   "tile_size": sizes.pop() if len(sizes) == 1 else None}) as w:
            for i in range(len(ds)):
                meta, image, enc = ds.encoded(i)
                meta.pop("index", None)  # the writer numbers the gathered tiles afresh
                if enc == w.encoding and w.header["tile_size"] is not None:
                    w.add_encoded(image, meta)  # copied as stored: no second JPEG compression
                else:
                    w.add(ds[i], meta)
                n += 1
    finally:
        ds.close()
        close_all()
    return n


def smooth(values, window: int) -> np.ndarray:
    """Centred running mean over ``window`` epochs (shorter at the ends)."""
    s = pd.Series(np.asarray(values, float))
    return s.rolling(int(window), center=True, min_periods=1).mean().to_numpy()


def epochs_to_quality(curves: pd.DataFrame, window: int, pair=("gan", "rna_gan")) -> pd.DataFrame:
    """Per tissue: the quality level both generators of ``pair`` reach by the end of training -
    the higher of their final smoothed KIDs - and, per variant, the first epoch whose smoothed
    KID is at or below it (NaN: never, e.g. the control).

    ``curves``: rows tissue, variant, epoch, kid.  Returns rows tissue, variant, epochs_trained,
    final_kid (smoothed), best_kid (smoothed), threshold, epoch_reached."""
    rows = []
    for t, ct in curves.groupby("tissue", sort=False):
        sm = {v: cv.sort_values("epoch").assign(kid_smooth=lambda d: smooth(d["kid"], window))
              for v, cv in ct.groupby("variant", sort=False)}
        absent = [v for v in pair if v not in sm]
        if absent:
            raise ValueError(f"convergence {t}: no KID curve of {', '.join(absent)}")
        thr = max(float(sm[v]["kid_smooth"].iloc[-1]) for v in pair)
        for v, cv in sm.items():
            hit = cv["epoch"].to_numpy()[cv["kid_smooth"].to_numpy() <= thr]
            rows.append({"tissue": t, "variant": v, "epochs_trained": int(cv["epoch"].max()),
                         "final_kid": float(cv["kid_smooth"].iloc[-1]), "best_kid": float(cv["kid_smooth"].min()),
                         "threshold": thr, "epoch_reached": int(hit[0]) if len(hit) else np.nan})
    return pd.DataFrame(rows)


def plot(path, curves: pd.DataFrame, reached: pd.DataFrame, window: int, features: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    tissues = list(dict.fromkeys(curves["tissue"]))
    colours = {"gan": "tab:blue", "rna_gan": "tab:red", "control": "tab:grey"}
    fig, axes = plt.subplots(1, len(tissues), figsize=(5 * len(tissues), 3.8), squeeze=False)
    for ax, t in zip(axes[0], tissues):
        ct = curves[curves["tissue"] == t]
        rt = reached[reached["tissue"] == t].set_index("variant")
        thr = float(rt["threshold"].iloc[0])
        marked = {}
        for k, (v, cv) in enumerate(ct.groupby("variant", sort=False)):
            cv = cv.sort_values("epoch")
            c = colours.get(v)
            ax.plot(cv["epoch"], cv["kid"], "o", ms=2.5, alpha=0.35, color=c)
            ax.plot(cv["epoch"], smooth(cv["kid"], window), "-", color=c, label=VARIANT_LABELS.get(v, v))
            e = rt.loc[v, "epoch_reached"] if v in rt.index else np.nan
            if np.isfinite(e):  # generators reaching it at the same epoch: nested triangles, shifted apart
                j = marked.get(int(e), 0)
                marked[int(e)] = j + 1
                ax.plot([e + 0.25 * j], [thr], marker="v", ms=11 - 3 * j, mfc="none", mew=1.5, color=c, ls="none")
        ax.axhline(thr, color="k", ls="--", lw=0.8, label="both reach by the end")
        lab = ", ".join(f"{VARIANT_LABELS.get(v, v)} {'-' if not np.isfinite(r.epoch_reached) else int(r.epoch_reached)}"
                        for v, r in rt.iterrows())
        ax.set_title(f"{t}\nepoch reaching it: {lab}", fontsize=9)
        ax.set_xlabel("epoch")
        kid = ct["kid"].to_numpy(float)
        if (kid > 0).all():  # log axis with labelled minor ticks (a decade has one major label at most)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10))
            ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2, 3, 4, 5, 6, 7, 8, 9)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(ScalarFormatter() if kid.max() / kid.min() < 30 else NullFormatter())
            ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    axes[0, 0].set_ylabel(f"KID vs real tiles ({features} features)\n(lower = closer to real)")
    fig.suptitle(f"Tile quality per training epoch, lower KID is better (dots: KID per epoch; lines: {window}-epoch "
                 "running mean; triangles: first epoch at the dashed level)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@step("evaluate_gan_convergence")
def evaluate_gan_convergence(inputs, outputs, params, *, threads=1, log=None):
    """KID of every epoch's tiles of each tissue's GAN / RNA-GAN / control against the real
    tiles of the same reference patients as the FID (``features.real_splits``), in the FID's
    feature space; the epoch at which each reaches the quality both GAN and RNA-GAN end at."""
    import torch

    from crossmodal.data import TileDataset
    from crossmodal.metrics import image
    from crossmodal.rna_gan.evaluate import (_list, extract_features, load_tiles, resize_uint8, split_lmdbs,
                                             step_extractor)

    torch.set_num_threads(max(int(threads), 1))
    lg = logging.getLogger(__name__)
    tissues, variants = list(params["tissues"]), list(params["variants"])
    size, seed, window = int(params["image_size"]), int(params["seed"]), int(params["smooth_epochs"])
    extractor = step_extractor(inputs, params)
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    paths = _list(inputs["tiles"])
    if len(paths) != len(tissues) * len(variants):
        raise ValueError(f"expected {len(tissues) * len(variants)} convergence LMDBs (tissue x variant), got {len(paths)}")
    rows = []
    for i, t in enumerate(tissues):
        real_l = split_lmdbs(inputs["real"], splits, t, list(params["real_splits"]))
        if not real_l:
            raise ValueError(f"no real tile LMDB of a {t} patient in splits {params['real_splits']}")
        real, _ = load_tiles(real_l, size, seed=seed, max_total=int(params["max_tiles"]))
        fr = extract_features(real, extractor)
        for j, v in enumerate(variants):
            path = paths[i * len(variants) + j]
            ds = TileDataset(path)
            epoch = np.array([int(ds.meta(k)["epoch"]) for k in range(len(ds))])
            tiles = resize_uint8(np.stack([ds[k] for k in range(len(ds))]), size)
            ds.close()
            ff = extract_features(tiles, extractor)
            for e in sorted(set(epoch.tolist())):
                f = ff[epoch == e]
                kid, kid_sd = image.kid_from_features(fr, f, subsets=int(params["kid_subsets"]),
                                                      subset_size=len(f), seed=seed + e)
                rows.append({"tissue": t, "variant": v, "epoch": e, "kid": kid, "kid_sd": kid_sd,
                             "n_generated": int(len(f)), "n_real": int(len(fr)), "extractor": params["extractor"],
                             "comparable": extractor.label})
            last = rows[-1]
            lg.info("%s %s: %d epochs, KID at the last %.4g (%d tiles per epoch vs %d real)", t, v,
                    last["epoch"], last["kid"], last["n_generated"], last["n_real"])
    curves = pd.DataFrame(rows)
    reached = epochs_to_quality(curves, window)
    reached["smooth_epochs"] = window
    for r in reached.itertuples():
        lg.info("%s %s: reaches KID %.4g at epoch %s of %d", r.tissue, r.variant, r.threshold,
                "never" if not np.isfinite(r.epoch_reached) else int(r.epoch_reached), r.epochs_trained)
    write_table(outputs["curves"], curves, index=False)
    write_table(outputs["reached"], reached, index=False)
    plot(outputs["figure"], curves, reached, window, params["extractor"])
