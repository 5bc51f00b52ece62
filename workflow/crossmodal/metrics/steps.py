"""Pipeline steps of the evaluation toolkit (rules in ``workflow/rules/metrics.smk``).

* ``train_ssl_encoder`` - SimCLR (:mod:`crossmodal.models.ssl`) on the real tiles of the
  training-split patients; then k-means on the training features (the class posteriors the
  ``cohort-ssl`` extractor gives IS, a labelled stand-in) -> ``results/metrics/ssl/<scheme>/encoder.pt``.
* ``compute_real_fid`` - FID / KID / IS between the real tiles of the training patients and
  those of the held-out (val + test) patients, once per configured extractor; the baseline
  every generator's FID is read against -> ``results/metrics/real_vs_real.tsv``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from crossmodal.fileio import write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)

#: quoted next to our real-vs-real numbers (the papers give no real-vs-real baseline)
PAPER_REFERENCE = ("no real-vs-real value in the papers; their generators, FID-Inception: RNA-CDM FID50k 23.36, "
                   "IS50k 3.19, KID50k 0.015 (Results); RNA-GAN FID 83.89, GAN 87.85 (Results)")


def _list(x) -> list[str]:
    if x is None:
        return []
    return [str(v) for v in x] if isinstance(x, (list, tuple)) else [str(x)]


def lmdbs_by_split(lmdbs, splits_tsv, splits: set[str]) -> list[str]:
    """The tile LMDBs (``.../<sample>.lmdb``) of samples whose split is in ``splits``."""
    import pandas as pd
    from pathlib import Path

    sp = pd.read_csv(splits_tsv, sep="\t", dtype=str)
    missing = {"sample", "split"} - set(sp.columns)
    if missing:
        raise ValueError(f"{splits_tsv}: missing columns {sorted(missing)}")
    split_of = dict(zip(sp["sample"], sp["split"]))
    out = []
    for p in _list(lmdbs):
        s = Path(p).name[:-5] if p.endswith(".lmdb") else Path(p).name
        if split_of.get(s) in splits:
            out.append(p)
    return out


def _nonempty(paths):
    from crossmodal.data import read_header

    return [p for p in paths if int(read_header(p)["count"]) > 0]


@step("train_ssl_encoder")
def train_ssl_encoder(inputs, outputs, params, *, threads=1, log=None):
    """SimCLR encoder on the real tiles of the training patients of ``inputs["splits"]`` (the
    cohort-ssl extractor; one per split scheme that asks for it)."""
    import torch
    from sklearn.cluster import KMeans

    from crossmodal.data import TileDataset
    from crossmodal.models import ssl

    torch.set_num_threads(max(int(threads), 1))
    hp = dict(params["ssl"])
    seed = int(params["seed"])
    paths = _nonempty(lmdbs_by_split(inputs["tiles"], inputs["splits"], {"train"}))
    if not paths:
        raise ValueError(f"train_ssl_encoder: no tiles of a training-split patient among {len(_list(inputs['tiles']))} LMDBs")
    ds = TileDataset(paths)
    if hp.get("max_tiles") and hp["max_tiles"] < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), int(hp["max_tiles"]), replace=False))
        data = _Subset(ds, idx)
    else:
        data = ds
    log_ = logging.getLogger(__name__)
    log_.info("SimCLR on %d tiles of %d training slides", len(data), len(paths))
    train_hp = {k: hp[k] for k in ("depth", "image_size", "proj_dim", "temperature", "epochs", "batch_size",
                                   "lr", "momentum", "weight_decay", "crop_scale", "jitter")}
    enc, head, losses = ssl.train_simclr(data, params["checkpoints"], outputs["done"], train_hp, seed=seed,
                                         device=params.get("device", "auto"),
                                         checkpoint_every=int(hp["checkpoint_every"]))
    # features of the training tiles -> k-means clusters for the IS stand-in
    feats = []
    with torch.inference_mode():
        for i in range(0, len(data), 128):
            x = torch.from_numpy(np.stack([np.asarray(data[j]) for j in range(i, min(i + 128, len(data)))]))
            feats.append(enc.cpu()(x.permute(0, 3, 1, 2)).numpy())
    f = np.concatenate(feats)
    k = int(min(hp["is_clusters"], len(f)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(f)
    sigma2 = float(km.inertia_ / len(f) / f.shape[1])  # isotropic per-dimension variance
    ssl.save_encoder(outputs["encoder"], enc, head,
                     clusters={"centroids": km.cluster_centers_, "sigma2": max(sigma2, 1e-12)},
                     meta={"hp": train_hp, "n_tiles": len(data), "slides": len(paths),
                           "final_loss": losses[-1] if losses else None, "source": f"cohort real tiles, train split of {Path(inputs['splits']).name}"})
    import pandas as pd

    write_table(outputs["losses"], pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses}), index=False)


class _Subset:
    def __init__(self, ds, idx):
        self.ds, self.idx = ds, idx

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[int(self.idx[i])]


@step("compute_real_fid")
def compute_real_fid(inputs, outputs, params, *, threads=1, log=None):
    """Real-vs-real FID / KID / IS (training vs held-out patients), labelled with the extractor."""
    import pandas as pd
    import torch

    from crossmodal.metrics import image

    torch.set_num_threads(max(int(threads), 1))
    f = params["fid"]
    seed = int(params["seed"])
    a = _nonempty(lmdbs_by_split(inputs["tiles"], inputs["splits"], {"train"}))
    b = _nonempty(lmdbs_by_split(inputs["tiles"], inputs["splits"], {"val", "test"}))
    if not a or not b:
        raise ValueError(f"compute_real_fid: needs tiles of both training ({len(a)} slides) and held-out "
                         f"({len(b)} slides) patients")
    encoder = _list(inputs.get("encoder"))  # Snakemake passes the optional input as a list
    weights = {"cohort-ssl": encoder[0] if encoder else None, "inception-fid": params.get("inception_weights")}
    rows = []
    for name in params["extractors"]:
        ext = image.get_extractor(name, weights=weights.get(name), device=params.get("device", "auto"))
        kw = dict(batch_size=int(f["batch_size"]), max_images=f["max_images"], kid_pool=int(f["kid_pool"]),
                  is_splits=int(f["is_splits"]), seed=seed)
        sa = image.extract_stats(a, ext, desc=f"{name} train", **kw)
        sb = image.extract_stats(b, ext, desc=f"{name} held-out", **kw)
        row = image.compare(sa, sb, ext, kid_subsets=int(f["kid_subsets"]),
                            kid_subset_size=int(f["kid_subset_size"]), seed=seed)
        rows.append({"comparison": "real (train patients) vs real (val+test patients)",
                     "set_a": f"{len(a)} slides", "set_b": f"{len(b)} slides", **row,
                     "paper": PAPER_REFERENCE})
        logging.getLogger(__name__).info("%s: FID %.3f KID %.4g ± %.2g (%s)", name, row["fid"],
                                         row["kid_mean"], row["kid_std"], ext.label)
    write_table(outputs["table"], pd.DataFrame(rows), index=False)
