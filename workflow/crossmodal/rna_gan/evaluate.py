"""RNA-GAN evaluation: FID of generated vs real tiles per tissue (Results "GAN 87.85 vs RNA-GAN
83.89"), one joint UMAP of the Inception (or stand-in) features of real and generated tiles of
both tissues with the silhouette by tissue of each source (Figures 3B/C, 4B), the real-trained ResNet-18 on tiles
generated from the external cohort (Figure 4D; 80.5% / 79.7% / 0.805), tiles of both
generators at the same epoch (Figure 5) and SimCLR pretraining on synthetic tiles (Figure S4)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from crossmodal.data import TileView
from crossmodal.fileio import save_figure, write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)


def _list(v):
    return v if isinstance(v, list) else [v]


def tile_samples(ds) -> np.ndarray:
    """The sample (patient) of every tile of a TileDataset without decoding an image: the
    LMDB header's ``sample`` where it has one (a slide's tile LMDB), else each tile's metadata
    (a generated LMDB holds the tiles of many patients)."""
    out = np.empty(len(ds), dtype=object)
    for src, h in enumerate(ds.headers):
        ii = np.flatnonzero(ds.source_index == src)
        if "sample" in h:
            out[ii] = str(h["sample"])
        else:
            out[ii] = [str(ds.meta(int(i))["sample"]) for i in ii]
    return out


def spread_pick(groups, n: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``n`` items, spread as evenly over ``groups`` (one label per
    item, e.g. the patient) as their sizes allow: every group gets the same quota, a group
    with fewer items gives its share to the others, the remainder goes to groups drawn at
    random; items within a group are drawn at random.  A pure function of ``seed``."""
    groups = np.asarray(groups, dtype=object)
    if n is None or n >= len(groups):
        return np.arange(len(groups))
    if n < 0:
        raise ValueError(f"spread_pick: n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = list(pd.unique(groups))
    members = [rng.permutation(np.flatnonzero(groups == g)) for g in labels]
    sizes = np.array([len(m) for m in members])
    quota = np.zeros(len(labels), dtype=int)
    order = rng.permutation(len(labels))  # which groups take the remainder
    left = n
    while left > 0:
        room = [i for i in order if quota[i] < sizes[i]]
        share = left // len(room)
        if share == 0:
            for i in room[:left]:
                quota[i] += 1
            break
        for i in room:
            add = min(share, sizes[i] - quota[i])
            quota[i] += add
            left -= add
    return np.sort(np.concatenate([m[:q] for m, q in zip(members, quota)]).astype(np.int64))


def select_tiles(lmdbs, max_per_source: int | None = None, seed: int = 0, max_total: int | None = None):
    """(TileDataset of ``lmdbs``, chosen tile indices, sample of each) - the choice of
    :func:`load_tiles`, from the metadata only (nothing decoded); None for no LMDB."""
    from crossmodal.data import TileDataset

    lmdbs = _list(lmdbs)
    if not lmdbs:
        return None, np.zeros(0, np.int64), np.array([], dtype=object)
    ds = TileDataset(lmdbs)
    rng = np.random.default_rng(seed)
    idx = []
    for src in range(len(lmdbs)):
        ii = np.flatnonzero(ds.source_index == src)
        if max_per_source is not None and len(ii) > max_per_source:
            ii = np.sort(rng.choice(ii, max_per_source, replace=False))
        idx.append(ii)
    idx = np.concatenate(idx)
    if max_total is not None and len(idx) > max_total:
        idx = idx[spread_pick(tile_samples(ds)[idx], int(max_total), seed)]
    samples = np.array([ds.meta(int(i))["sample"] for i in idx], dtype=object)
    return ds, idx.astype(np.int64), samples


def load_tiles(lmdbs, size: int | None = None, max_per_source: int | None = None, seed: int = 0,
               max_total: int | None = None):
    """Tiles of ``lmdbs`` as uint8 (n, s, s, 3), resized to ``size``; returns (tiles, sample of
    each tile).  ``max_per_source``: at most that many random tiles per LMDB; ``max_total``: at
    most that many in all, spread evenly over the patients (:func:`spread_pick`, seeded).  The
    subset is chosen from the metadata first and only the chosen tiles are decoded."""
    ds, idx, samples = select_tiles(lmdbs, max_per_source, seed, max_total)
    if ds is None:
        return np.zeros((0, size or 1, size or 1, 3), np.uint8), samples
    tiles = np.stack([ds[int(i)] for i in idx]) if len(idx) else np.zeros((0, 1, 1, 3), np.uint8)
    if size is not None:
        tiles = resize_uint8(tiles, size)
    return tiles, samples


# a tile set larger than this (decoded, at the size it is used) is streamed from its LMDB
# instead of held in memory (an engineering limit, not a hyperparameter: the tiles and the
# results are the same either way)
IN_MEMORY_MAX_BYTES = 4 * 1024 ** 3


def tile_set(ds, idx, size: int, max_bytes: int = IN_MEMORY_MAX_BYTES):
    """The tiles ``idx`` of ``ds`` at ``size`` px: decoded into memory when they take at most
    ``max_bytes``, else a :class:`crossmodal.data.TileView` that decodes each batch on demand."""
    lazy = TileView(ds, idx, size, resize_uint8)
    if len(idx) * size * size * 3 > max_bytes:
        logging.getLogger(__name__).info("%d tiles of %d px (%.1f GB) are streamed from %s, not held in memory",
                                         len(idx), size, len(idx) * size * size * 3 / 1024 ** 3, ds.paths[0])
        return lazy
    return lazy[:]


def resize_uint8(tiles: np.ndarray, size: int) -> np.ndarray:
    """Antialiased resize of uint8 (n, H, W, 3) tiles to size x size (in chunks)."""
    from crossmodal.models.gan import resize, to_float, to_uint8

    if not len(tiles) or tiles.shape[1] == size:
        return tiles
    return np.concatenate([to_uint8(resize(to_float(tiles[i:i + 256]), size)) for i in range(0, len(tiles), 256)])


def split_lmdbs(lmdbs, splits: pd.DataFrame, cohort: str | None, which: list[str]) -> list[str]:
    """The LMDBs (named <sample>.lmdb) whose sample is in ``cohort`` and one of ``which`` splits."""
    from pathlib import Path

    sp = splits.set_index("sample")
    out = []
    for p in _list(lmdbs):
        s = Path(p).name[:-5] if p.endswith(".lmdb") else Path(p).name
        if s in sp.index and (cohort is None or sp.loc[s, "cohort"] == cohort) and sp.loc[s, "split"] in which:
            out.append(p)
    return out


def extract_features(tiles: np.ndarray, extractor, batch_size: int = 64) -> np.ndarray:
    """Features of uint8 (n, H, W, 3) tiles through a :class:`crossmodal.metrics.image.Extractor`."""
    out = []
    for i in range(0, len(tiles), batch_size):
        x = torch.as_tensor(np.ascontiguousarray(tiles[i:i + batch_size])).permute(0, 3, 1, 2)
        f, _ = extractor(x)
        out.append(f.detach().cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros((0, extractor.dim))


def within_patient_sd(tiles: np.ndarray, samples: np.ndarray) -> float:
    """Mean over patients (with >= 2 tiles) of the per-pixel standard deviation between that
    patient's uint8 tiles, in grey levels: how much the tiles of one patient differ (0 = copies)."""
    samples = np.asarray(samples, dtype=object)
    sds = [tiles[samples == s].astype(np.float32).std(0).mean() for s in pd.unique(samples)
           if (samples == s).sum() >= 2]
    return float(np.mean(sds)) if sds else float("nan")


def fid(a: np.ndarray, b: np.ndarray) -> float:
    from crossmodal.metrics import image

    return float(image.fid_from_features(a, b))


SOURCE_TITLES = {"real": "real tiles (Fig. 3B)", "gan": "GAN (Fig. 3C)", "rna_gan": "RNA-GAN (Fig. 4B)",
                 "control": "narrow-noise control (Fig. 4C)"}


def silhouettes_permuted(x: np.ndarray, lab, n_perm: int = 0, seed: int = 0,
                         block: int = 1024) -> tuple[float, np.ndarray]:
    """Silhouette (Euclidean) of ``x`` by ``lab`` and of ``n_perm`` seeded permutations of the
    labels (the null of no tissue structure).  Returns (observed, null values).  The distances
    are computed in row blocks and reused for every labelling (one matrix product per block),
    so memory stays O(block * n) and the permutations cost about as much as the score."""
    x = np.asarray(x, dtype=np.float64)
    _, codes = np.unique(np.asarray(lab, dtype=str), return_inverse=True)
    n, k = len(codes), int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    labellings = [codes] + [rng.permutation(codes) for _ in range(int(n_perm))]
    m = len(labellings)
    onehot = np.zeros((n, m * k), dtype=np.float64)
    for j, c in enumerate(labellings):
        onehot[np.arange(n), j * k + c] = 1.0
    counts = np.bincount(codes, minlength=k).astype(np.float64)  # a permutation keeps them
    sq = (x * x).sum(1)
    total = np.zeros(m)
    for i0 in range(0, n, block):
        xb = x[i0:i0 + block]
        d = np.sqrt(np.maximum(sq[i0:i0 + block, None] + sq[None, :] - 2.0 * xb @ x.T, 0.0))
        d[np.arange(len(xb)), np.arange(i0, i0 + len(xb))] = 0.0
        sums = (d @ onehot).reshape(len(xb), m, k)  # summed distance to each cluster, per labelling
        own = np.stack([c[i0:i0 + len(xb)] for c in labellings], axis=1)  # (rows, m)
        own_n = counts[own]
        a = np.take_along_axis(sums, own[..., None], axis=2)[..., 0] / np.maximum(own_n - 1, 1)
        mean_other = sums / counts[None, None, :]
        np.put_along_axis(mean_other, own[..., None], np.inf, axis=2)
        b = mean_other.min(axis=2)
        sil = np.where(own_n > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)  # sklearn: 0 for a singleton
        total += sil.sum(axis=0)
    vals = total / n
    return float(vals[0]), vals[1:]


def tissue_silhouettes(feats: dict, tissues: list[str], sources: list[str], *, max_tiles: int | None = None,
                       seed: int = 0, permutations: int = 0) -> pd.DataFrame:
    """Silhouette by tissue of each source's tile features (``feats[(tissue, source)]``: (n, d)
    extractor features; Euclidean, on the features, not on a UMAP): how far apart the tissues lie
    among that source's tiles (real; each generator).  ``max_tiles``: score a seeded subset of
    at most that many tiles per source, spread evenly over the tissues (the score is O(n²));
    nan where a tissue has fewer than 2 tiles.  ``permutations`` > 0 adds a label-permutation
    test: the silhouette of the same tiles under that many random tissue labellings (the null
    of no tissue difference), its mean and 95th percentile, and the one-sided p-value
    (1 + #null >= observed) / (1 + permutations)."""
    rows = []
    for k, src in enumerate(sources):
        missing = [t for t in tissues if (t, src) not in feats]
        if missing:
            raise ValueError(f"silhouette by tissue: no {src} features of {', '.join(missing)}")
        x = np.concatenate([feats[(t, src)] for t in tissues])
        lab = np.concatenate([[t] * len(feats[(t, src)]) for t in tissues]).astype(object)
        counts = {t: int((lab == t).sum()) for t in tissues}
        if max_tiles is not None and len(x) > max_tiles:
            keep = spread_pick(lab, int(max_tiles), seed + k)
            x, lab = x[keep], lab[keep]
        ok = len(tissues) >= 2 and all((lab == t).sum() >= 2 for t in tissues)
        row = {"source": src}
        if ok:
            sil, null = silhouettes_permuted(x, lab, int(permutations), seed + 1000 + k)
        else:
            sil, null = float("nan"), np.zeros(0)
        row["silhouette_by_tissue"] = sil
        if permutations:
            fin = len(null) > 0
            row.update({"null_mean": float(null.mean()) if fin else float("nan"),
                        "null_q95": float(np.quantile(null, 0.95)) if fin else float("nan"),
                        "p_permutation": float((1 + (null >= sil - 1e-12).sum()) / (1 + len(null))) if fin else float("nan"),
                        "permutations": int(permutations)})
        row.update({"n_scored": int(len(x)), "n_tiles": ",".join(f"{t}:{counts[t]}" for t in tissues)})
        rows.append(row)
    return pd.DataFrame(rows)


def joint_tile_umap(feats: dict, tissues: list[str], sources: list[str], seed: int, n_neighbors: int = 15):
    """One UMAP (seeded) fitted on the features of every source and tissue together, so that the
    panels of real and generated tiles share coordinates.  Returns (embedding (n, 2), tissue of
    each row, source of each row)."""
    from crossmodal.embedding import umap_2d

    keys = [(t, src) for src in sources for t in tissues]
    x = np.concatenate([feats[k] for k in keys])
    tissue = np.concatenate([[k[0]] * len(feats[k]) for k in keys]).astype(object)
    source = np.concatenate([[k[1]] * len(feats[k]) for k in keys]).astype(object)
    if len(x) < 4:
        raise ValueError(f"tile UMAP: {len(x)} tiles in all, too few to embed")
    return umap_2d(x, n_neighbors, seed), tissue, source


def plot_tile_umap(path, emb: np.ndarray, tissue: np.ndarray, source: np.ndarray, tissues: list[str],
                   sources: list[str], sil: pd.DataFrame | None = None, features: str = "") -> None:
    """One panel per source (real, GAN, RNA-GAN, control) of the joint embedding, the source's
    tiles coloured by tissue over every tile in grey (shared axes); silhouette by tissue in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    s_of = sil.set_index("source")["silhouette_by_tissue"] if sil is not None else {}
    fig, axes = plt.subplots(1, len(sources), figsize=(4 * len(sources), 4.2), squeeze=False,
                             sharex=True, sharey=True)
    for ax, src in zip(axes[0], sources):
        ax.scatter(emb[:, 0], emb[:, 1], s=3, color="#dddddd", rasterized=True)
        for i, t in enumerate(tissues):
            m = (source == src) & (tissue == t)
            ax.scatter(emb[m, 0], emb[m, 1], s=6, alpha=0.7, color=colours(i), label=f"{t} ({int(m.sum())})",
                       rasterized=True)
        title = SOURCE_TITLES.get(src, src)
        if src in s_of:
            title += f"\nsilhouette by tissue {s_of[src]:.3g}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("UMAP 1")
        ax.legend(fontsize=7, markerscale=2, frameon=False)
    axes[0, 0].set_ylabel("UMAP 2")
    fig.suptitle(f"One UMAP of the {features} features of real and generated tiles of both tissues; "
                 "one panel per source, coloured by tissue", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def step_extractor(inputs, params):
    """The feature extractor of an evaluation step: params["extractor"] with the weights file of
    input ``extractor_weights`` (none for a built-in), on params["device"]."""
    from crossmodal.metrics import image

    weights = inputs.get("extractor_weights") or None
    if isinstance(weights, list):
        weights = weights[0] if weights else None
    return image.get_extractor(params["extractor"], weights=weights, device=params.get("device", "auto"))


@step("evaluate_tile_generators")
def evaluate_tile_generators(inputs, outputs, params, *, threads=1, log=None):
    """FID of each tissue's GAN / RNA-GAN / control tiles (generated for its patients of the
    configured splits, rule generate_rna_gan_tiles) against the real tiles of the same patients;
    the silhouette by tissue of each source's features (``silhouette``); one UMAP of every
    source's features of both tissues, one panel per source coloured by tissue (Figures 3B/C, 4B)."""
    torch.set_num_threads(max(int(threads), 1))
    lg = logging.getLogger(__name__)
    tissues, variants = list(params["tissues"]), list(params["variants"])
    size, ext, seed = int(params["image_size"]), params["extractor"], int(params["seed"])
    max_tiles = int(params["max_tiles"])
    extractor = step_extractor(inputs, params)
    note = extractor.label
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    gen_paths = _list(inputs["generated"])
    if len(gen_paths) != len(tissues) * len(variants):
        raise ValueError(f"expected {len(tissues) * len(variants)} generated LMDBs (tissue x variant), got {len(gen_paths)}")
    rows, feats = [], {}
    for i, t in enumerate(tissues):
        real_splits = list(params.get("real_splits", ["test"]))
        real_l = split_lmdbs(inputs["real"], splits, t, real_splits)
        if not real_l:
            raise ValueError(f"no real tile LMDB of a {t} patient in splits {real_splits} among "
                             f"{len(_list(inputs['real']))} given")
        # at most max_tiles, spread over the reference patients (only those are decoded)
        real, real_s = load_tiles(real_l, size, seed=seed, max_total=max_tiles)
        fr = extract_features(real, extractor)
        feats[(t, "real")] = fr
        real_sd = within_patient_sd(real, real_s)
        del real  # only its features are needed from here (paper scale: up to max_tiles 256 px tiles, ~12 GB)
        for j, v in enumerate(variants):
            fake, fake_s = load_tiles(gen_paths[i * len(variants) + j], size, seed=seed, max_total=max_tiles)
            ff = extract_features(fake, extractor)
            feats[(t, v)] = ff
            # diversity of one patient's tiles (GAN / control: the tiles drawn under that patient's
            # name from noise), next to the real tiles' (a generator ignoring its noise gives ~0)
            rows.append({"tissue": t, "variant": v, "fid": fid(fr, ff), "n_real": len(fr), "n_generated": len(ff),
                         "within_patient_sd": within_patient_sd(fake, fake_s), "real_within_patient_sd": real_sd,
                         "extractor": ext, "comparable": note, "image_size": size})
            lg.info("%s %s: FID %.2f (%d real, %d generated tiles, %s features); pixel sd within a patient "
                    "%.1f (real %.1f)", t, v, rows[-1]["fid"], len(fr), len(ff), ext,
                    rows[-1]["within_patient_sd"], real_sd)
    write_table(outputs["fid"], pd.DataFrame(rows), index=False)

    sources = ["real"] + variants
    sil = tissue_silhouettes(feats, tissues, sources, max_tiles=params.get("silhouette_max_tiles"), seed=seed,
                             permutations=int(params.get("silhouette_permutations", 0)))
    sil["extractor"], sil["comparable"] = ext, note
    for r in sil.itertuples():
        lg.info("%s tiles: silhouette by tissue %.3f (%s features, %d tiles scored)", r.source,
                r.silhouette_by_tissue, ext, r.n_scored)
    write_table(outputs["silhouette"], sil, index=False)
    emb, tis, src = joint_tile_umap(feats, tissues, sources, seed)
    plot_tile_umap(outputs["umap"], emb, tis, src, tissues, sources, sil, ext)


def fig5_epochs(configured: dict, reached: pd.DataFrame | None = None) -> dict[str, tuple[int, str]]:
    """Per tissue, the epoch of Figure 5's same-epoch rows and why: RNA-GAN's last epoch when it
    trains for fewer epochs than the GAN (the paper's comparison); when both train equally long
    that is also the GAN's last epoch and would repeat the own-final-epoch rows, so the epoch at
    which the first of the two reaches the KID both end at (``reached``: epochs_to_quality.tsv),
    or, when that is the last epoch too or unknown, the middle of training.
    ``configured``: {tissue: {variant: epochs}}."""
    out = {}
    for t, e in configured.items():
        g, r = int(e["gan"]), int(e["rna_gan"])
        if r != g:
            out[t] = (r, "RNA-GAN's last epoch, as in the paper")
            continue
        hit = []
        if reached is not None and len(reached):
            rt = reached[(reached["tissue"] == t) & reached["variant"].isin(["gan", "rna_gan"])]
            hit = [int(v) for v in rt["epoch_reached"] if np.isfinite(float(v)) and int(v) < r]
        if hit:
            out[t] = (min(hit), "both trained equally long: the first epoch at which GAN or RNA-GAN reaches the "
                                "KID both end at (epochs_to_quality.tsv)")
        else:
            out[t] = (max(1, r // 2), "both trained equally long: the middle of training")
    return out


def tile_rows(snapshots: dict, tissues, variants, same_epoch: dict,
              same_epoch_variants=("gan", "rna_gan")) -> list[dict]:
    """The rows of the generated-tiles figure, from per-epoch snapshots (epochs, n, H, W, 3) per
    (tissue, variant): Figure 5 - every variant of ``same_epoch_variants`` at ``same_epoch[tissue]``
    (see :func:`fig5_epochs`), clipped to what was trained; then every variant at
    its own final epoch (Figure 4C: the noise-only control after all of its training)."""
    rows = []
    for t in tissues:
        for v in variants:
            if v in same_epoch_variants:
                s = snapshots[(t, v)]
                if len(s) == 0:
                    raise ValueError(f"{t} {v}: no per-epoch snapshots (was the generator trained?)")
                e = min(int(same_epoch[t]), len(s))
                rows.append({"panel": "same epoch (Fig. 5)", "tissue": t, "variant": v, "epoch": e,
                             "trained_epochs": len(s), "tiles": s[e - 1]})
        for v in variants:
            s = snapshots[(t, v)]
            if len(s) == 0:
                raise ValueError(f"{t} {v}: no per-epoch snapshots (was the generator trained?)")
            rows.append({"panel": "own final epoch" + (" (Fig. 4C)" if v == "control" else ""), "tissue": t,
                         "variant": v, "epoch": len(s), "trained_epochs": len(s), "tiles": s[-1]})
    return rows


@step("plot_generated_tiles")
def plot_generated_tiles(inputs, outputs, params, *, threads=1, log=None):
    """Figure 5 (GAN and RNA-GAN tiles after the same number of epochs per tissue, from
    :func:`fig5_epochs`: RNA-GAN's last when it trains for fewer epochs than the GAN, as in the
    paper; with equal lengths the first epoch at which either reaches the KID both end at
    (``reached``), else the middle of training) and every generator at its own final epoch, among
    them the narrow-noise control (Figure 4C); each row is labelled with tissue, generator and
    epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tissues, variants = list(params["tissues"]), list(params["variants"])
    paths = dict(zip([(t, v) for t in tissues for v in variants], _list(inputs["snapshots"])))
    snaps = {k: np.load(p)["snapshots"] for k, p in paths.items()}
    epochs, why = dict(params["epochs"]), {}
    if epochs and all(isinstance(v, dict) for v in epochs.values()):  # {tissue: {variant: configured epochs}}
        reached = pd.read_csv(inputs["reached"], sep="\t") if inputs.get("reached") else None
        chosen = fig5_epochs(epochs, reached)
        epochs = {t: e for t, (e, _) in chosen.items()}
        why = {t: w for t, (_, w) in chosen.items()}
    rows = tile_rows(snaps, tissues, variants, epochs)
    ncol = 8
    fig, axes = plt.subplots(len(rows), 1, figsize=(ncol * 1.1, 1.5 * len(rows)), squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        grid = np.concatenate(list(r["tiles"][:ncol]), axis=1)
        ax.imshow(grid); ax.set_xticks([]); ax.set_yticks([])
        ax.set_ylabel(f"{r['tissue']}\n{r['variant']}\nepoch {r['epoch']} of {r['trained_epochs']}",
                      fontsize=7, rotation=0, ha="right", va="center")
        title = r["panel"]
        if r["panel"].startswith("same epoch") and why.get(r["tissue"]):
            title += f" - {why[r['tissue']]}"
        ax.set_title(title, fontsize=7, loc="left")
    fig.suptitle("Generated tiles: GAN and RNA-GAN at the same epoch (Fig. 5); each generator at its own "
                 "final epoch, incl. the noise-only control (Fig. 4C)", fontsize=9)
    save_figure(fig, outputs["figure"])
    plt.close(fig)


def external_tile_grid(ds, tissues: list[str], per_tissue: int, seed: int) -> dict:
    """Tissue -> (tiles uint8 (k, H, W, 3), sample of each) of at most ``per_tissue`` tiles of
    the external LMDB ``ds`` (TileDataset; tile metadata ``tissue`` and ``sample``), spread
    over the tissue's samples (seeded); only the chosen tiles are decoded."""
    meta = [ds.meta(i) for i in range(len(ds))]
    out = {}
    for t in tissues:
        ii = np.array([i for i, m in enumerate(meta) if m.get("tissue") == t], dtype=np.int64)
        if not len(ii):
            raise ValueError(f"{ds.paths[0]}: no external tile of tissue {t} (tissues present: "
                             f"{', '.join(sorted({str(m.get('tissue')) for m in meta}))})")
        pick = ii[spread_pick(np.array([meta[i]["sample"] for i in ii], dtype=object), per_tissue, seed)]
        out[t] = (np.stack([ds[int(i)] for i in pick]), np.array([meta[i]["sample"] for i in pick], dtype=object))
    return out


@step("plot_external_tiles")
def plot_external_tiles(inputs, outputs, params, *, threads=1, log=None):
    """Figure 4D: a grid of RNA-GAN tiles generated from the external cohort's expression
    (rule generate_rna_gan_external_tiles), one row block per tissue, tiles spread over the
    cohort's samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.data import TileDataset

    tissues, ncol = list(params["tissues"]), int(params.get("columns", 8))
    per = ncol * int(params.get("rows_per_tissue", 2))
    ds = TileDataset(inputs["tiles"])
    grids = external_tile_grid(ds, tissues, per, int(params["seed"]))
    cohorts = {t: c for c, t in (params.get("cohorts") or {}).items()}
    fig, axes = plt.subplots(len(tissues), 1, figsize=(ncol * 1.1, 1.3 * per / ncol * len(tissues) + 0.6),
                             squeeze=False)
    for ax, t in zip(axes[:, 0], tissues):
        tiles, samples = grids[t]
        k = len(tiles)
        rows = -(-k // ncol)
        pad = np.full((rows * ncol - k, *tiles.shape[1:]), 255, np.uint8)
        full = np.concatenate([tiles, pad])
        grid = np.concatenate([np.concatenate(list(full[r * ncol:(r + 1) * ncol]), axis=1) for r in range(rows)])
        ax.imshow(grid); ax.set_xticks([]); ax.set_yticks([])
        ax.set_title(f"{t} RNA-GAN from {cohorts.get(t, 'external')} expression: {k} tiles of "
                     f"{len(set(samples))} samples", fontsize=8, loc="left")
    fig.suptitle("RNA-GAN tiles generated from the external cohort (Fig. 4D)", fontsize=9)
    save_figure(fig, outputs["figure"])
    plt.close(fig)


@step("classify_external_tiles")
def classify_external_tiles(inputs, outputs, params, *, threads=1, log=None):
    """A ResNet trained from scratch on real tiles (tissue labels; 20% validation for early
    stopping) of the patients in ``classifier.real_splits`` classifies (1) the RNA-GAN tiles
    generated from the external cohort (Figure 4D) and (2) the RNA-GAN tiles generated from the
    expression of the held-out (test-split) donors, whose real tiles it never saw (input
    ``heldout``: each tissue's generated/<tissue>/rna_gan.lmdb), and (3) those held-out donors'
    real tiles (``real_heldout``, the ceiling at this tile size).  One row per evaluation."""
    from crossmodal.data import TileDataset
    from crossmodal.models import classifier as clf

    torch.set_num_threads(max(int(threads), 1))
    lg = logging.getLogger(__name__)
    c, seed, tissues = params["classifier"], int(params["seed"]), list(params["tissues"])
    train_splits = list(c.get("real_splits", ["train", "val"]))
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    size, per_slide = int(c["image_size"]), int(c["max_tiles_per_slide"])
    sel = []
    for k, t in enumerate(tissues):
        l = split_lmdbs(inputs["real"], splits, t, train_splits)
        if not l:
            raise ValueError(f"no real tile LMDB of a {t} patient in splits {train_splits} (config "
                             f"rna_gan.classifier.real_splits) among {len(_list(inputs['real']))} given")
        sel.append(l)
    # one TileDataset over every training LMDB; tiles are decoded per batch when the set is
    # large (paper scale) instead of all at once
    lm = [p for l in sel for p in l]
    ds, idx, samples = select_tiles(lm, per_slide, seed)
    src_tissue = np.concatenate([np.full(len(l), k) for k, l in enumerate(sel)])
    y = src_tissue[ds.source_index[idx]]
    x = tile_set(ds, idx, size)
    # the validation tiles for early stopping are whole samples (no slide on both sides)
    groups = samples
    s = clf.TrainSettings(epochs=int(c["epochs"]), lr=float(c["lr"]), weight_decay=float(c["weight_decay"]),
                          batch_size=int(c["batch_size"]), val_fraction=float(c["val_fraction"]),
                          patience=int(c["patience"]),
                          image_size=int(c["image_size"]), device=params.get("device", "cpu"))
    # seeded initial weights (clf.train seeds only after the network is built)
    model, hist = clf.train(clf.make_resnet(c["arch"], len(tissues), seed=seed), x, y, s, seed=seed, groups=groups)
    common = {"arch": c["arch"], "n_train_tiles": int(len(y)), "train_splits": ",".join(train_splits),
              "chance": 1 / len(tissues), "epochs_run": len(hist)}

    def label(ds, i, key):
        t = ds.meta(i).get(key)
        if t not in tissues:
            raise ValueError(f"{ds.meta(i)['lmdb']}: tile {i} has {key} {t!r}, not one of {', '.join(tissues)}")
        return tissues.index(t)

    def scored(y_true, p, donors) -> dict:
        """Tile-level scores, their donor-level significance and the classifier's majority call."""
        calls = np.bincount(p.argmax(1), minlength=len(tissues))
        return {**clf.scores(y_true, p), **clf.grouped_tests(y_true, p, donors, 1 / len(tissues)),
                "_majority": int(calls.argmax()), "_share": float(calls.max() / max(len(p), 1))}

    rows = []
    ds = TileDataset(inputs["external"])
    ext = np.stack([ds[i] for i in range(len(ds))])
    ty = np.array([label(ds, i, "tissue") for i in range(len(ds))])
    rows.append({"evaluation": "external", "tiles": "RNA-GAN tiles from the external cohort's expression",
                 **scored(ty, clf.predict_proba(model, ext, s.image_size), [ds.meta(i)["sample"] for i in range(len(ds))]),
                 **common})
    # the same classifier on the held-out donors' real tiles: how well the tissues can be told
    # apart at all at this tile size (the ceiling for the generated tiles)
    rx, ry = [], []
    for k, t in enumerate(tissues):
        l = [p for p in split_lmdbs(inputs["real"], splits, t, ["test"]) if p not in
             split_lmdbs(inputs["real"], splits, t, train_splits)]
        if l:
            rx += l; ry.append(np.full(len(l), k))
    if rx:
        rds, ridx, rsamples = select_tiles(rx, per_slide, seed)
        rows.append({"evaluation": "real_heldout", "tiles": "real tiles of the test-split donors",
                     **scored(np.concatenate(ry)[rds.source_index[ridx]],
                              clf.predict_proba(model, tile_set(rds, ridx, size), s.image_size), rsamples),
                     **common})
    held = _list(inputs.get("heldout") or [])
    if held:
        test = set(splits.loc[splits["split"] == "test", "sample"])
        hx, hy, hd = [], [], []
        for p in held:
            d = TileDataset(p)
            ii = [i for i in range(len(d)) if d.meta(i).get("sample") in test]
            if ii:
                hy.append(np.array([label(d, i, "cohort") for i in ii]))
                hd += [d.meta(i)["sample"] for i in ii]
                hx.append(clf.predict_proba(model, TileView(d, ii), s.image_size))
        if not hx:
            raise ValueError(f"{', '.join(held)}: no tiles generated for a test-split donor; the held-out "
                             f"evaluation needs 'test' in config rna_gan.features.real_splits")
        rows.append({"evaluation": "heldout_donors",
                     "tiles": "RNA-GAN tiles from the expression of the test-split donors (real tiles unseen)",
                     **scored(np.concatenate(hy), np.concatenate(hx), hd), **common})
    for r in rows:
        # the classifier's most frequent call and its share: 1.0 = every tile given one class,
        # so the accuracy is the chance level by construction whatever the AUC
        r["majority_call"] = tissues[r.pop("_majority")]
        r["majority_share"] = r.pop("_share")
        lg.info("real-trained %s on %d %s tiles of %d donors: accuracy %.3f (p %.3g) F1 %.3f AUC %.3f (p %.3g) "
                "(chance %.3f)", c["arch"], r["n"], r["evaluation"], r["n_groups"], r["accuracy"], r["accuracy_p"],
                r["f1"], r["auc"], r["auc_p"], r["chance"])
    write_table(outputs["metrics"], pd.DataFrame(rows), index=False)
