"""Cell-type counting in H&E tiles: PanNuke's five classes (RNA-CDM Table 1, Fig. 3).

Classes (PanNuke order; RNA-CDM Table 1 column names in brackets): neoplastic [Tumor],
inflammatory [Lymphocytes], connective [Connective], dead [Dead], non-neoplastic epithelial
[Normal].

Two counters:

* ``hovernet`` - HoVer-Net (Graham et al. 2019) "fast" mode with a type branch of 6 outputs
  (background + 5 PanNuke classes), the architecture of the public
  ``hovernet_fast_pannuke_type_tf2pytorch.tar`` checkpoint that RNA-CDM used (Methods,
  "HoverNet and deconvolution experiments").  :func:`load_hovernet` loads such a checkpoint
  from a local path (``metrics.cells.hovernet_weights``); nothing is downloaded.  Loading is
  tested with a randomly initialised state dict saved and reloaded; the real checkpoint is
  untested here (no internet), so a key mismatch with it is reported, naming the file.
  Post-processing (nuclear-pixel map + horizontal/vertical distance maps -> marker-controlled
  watershed; per-instance type = majority vote of the type map) follows HoVer-Net's paper.
* ``classical`` (offline default, a stand-in: numbers from it are labelled so) -
  colour deconvolution to haematoxylin (``skimage.color.rgb2hed``, Ruifrok & Johnston),
  Gaussian smoothing and a fixed optical-density threshold, a marker-controlled watershed on the
  distance transform (h-maxima markers) to split touching nuclei (only in components larger than
  ``split_min_area_um2``, bigger than any single nucleus), per-nucleus size / shape /
  intensity features (``regionprops``) and a documented rule-based assignment:

  1. **dead**: fragments smaller than ``fragment_max_area_um2`` or karyolytic (mean
     haematoxylin below ``pale_max_h``); fragments within ``fragment_merge_um`` of each other
     are one dead cell (karyorrhexis breaks one nucleus into several pieces);
  2. **connective**: spindle-shaped, major/minor axis ratio >= ``spindle_min_ratio``;
  3. **inflammatory**: hyperchromatic (mean H >= ``dark_min_h``) and small
     (< ``lymphocyte_max_area_um2``; lymphocyte nuclei are 6-8 um across);
  4. **neoplastic**: hyperchromatic and larger, or enlarged (>= ``neoplastic_min_area_um2``);
  5. **non-neoplastic epithelial**: the remaining medium, normochromatic nuclei.

  The thresholds are round histology values (micrometres, so any mpp works) and the H levels
  are in ``rgb2hed`` units; they were chosen once by looking at the nucleus statistics of one
  rendered toy slide (seed 0, not a cohort slide) and are never fit to a cohort's planted
  fractions.

Public names: ``CLASSES``, ``TABLE1_NAMES``, ``TOY_TRUTH``, ``PAPER_TABLE1``,
``segment_nuclei``, ``classify_nuclei``, ``count_tile``, ``build_hovernet``, ``load_hovernet``,
``hovernet_instances``, ``count_tiles_hovernet``, ``percentages``, ``table1``,
``distribution_long``, ``distribution_figure`` (RNA-CDM Fig. 3A); steps
``count_cells`` and ``plot_cell_table``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from crossmodal.steps import step

log = logging.getLogger(__name__)

CLASSES = ["neoplastic", "inflammatory", "connective", "dead", "non_neoplastic_epithelial"]
TABLE1_NAMES = {"neoplastic": "Tumor", "inflammatory": "Lymphocytes", "connective": "Connective",
                "dead": "Dead", "non_neoplastic_epithelial": "Normal"}
#: toy truth column (results/toy/truth/fractions.tsv) of each PanNuke class
TOY_TRUTH = {"neoplastic": "tumour", "inflammatory": "lymphocyte", "connective": "connective",
             "dead": "necrotic", "non_neoplastic_epithelial": "normal_epithelial"}

#: RNA-CDM Table 1 (HoVer-Net on real / RNA-CDM tiles, mean ± sd % per type), quoted next to ours
PAPER_TABLE1 = {
    ("TCGA-COAD", "Real"): ["47.44 ± 43.12", "7.69 ± 20.43", "10.48 ± 24.58", "4.21 ± 14.66", "3.94 ± 14.51"],
    ("TCGA-COAD", "Synthetic"): ["61.78 ± 42.43", "6.11 ± 17.88", "2.69 ± 13.27", "1.33 ± 7.36", "6.87 ± 17.89"],
    ("TCGA-GBM", "Real"): ["22.57 ± 25.83", "17.66 ± 20.25", "18.54 ± 21.74", "26.20 ± 26.20", "12.50 ± 21.34"],
    ("TCGA-GBM", "Synthetic"): ["9.18 ± 16.15", "35.09 ± 24.89", "17.11 ± 20.33", "22.89 ± 24.57", "11.99 ± 19.76"],
    ("TCGA-LUAD", "Real"): ["37.40 ± 32.49", "8.12 ± 11.72", "15.36 ± 19.22", "33.15 ± 28.07", "3.65 ± 9.78"],
    ("TCGA-LUAD", "Synthetic"): ["27.74 ± 28.62", "12.93 ± 15.15", "11.00 ± 15.19", "41.30 ± 28.98", "3.31 ± 9.86"],
    ("TCGA-KIRP", "Real"): ["48.14 ± 33.02", "7.39 ± 12.11", "12.57 ± 21.83", "19.20 ± 21.75", "10.37 ± 18.35"],
    ("TCGA-KIRP", "Synthetic"): ["40.85 ± 32.25", "12.92 ± 17.84", "8.17 ± 17.38", "20.59 ± 23.95", "12.34 ± 21.84"],
    ("TCGA-CESC", "Real"): ["45.52 ± 43.65", "13.61 ± 27.54", "5.34 ± 17.52", "4.59 ± 15.31", "2.85 ± 10.87"],
    ("TCGA-CESC", "Synthetic"): ["45.82 ± 42.78", "15.48 ± 28.17", "1.52 ± 10.29", "1.70 ± 7.74", "7.89 ± 19.97"],
}

CLASSICAL_DEFAULTS = {
    "h_threshold": 0.015, "smooth_um": 0.35, "min_area_um2": 1.0, "max_area_um2": 250.0,
    "split_h_um": 2.0, "split_min_area_um2": 120.0, "fragment_max_area_um2": 20.0, "pale_max_h": 0.03, "fragment_merge_um": 8.0,
    "spindle_min_ratio": 2.0, "dark_min_h": 0.06, "lymphocyte_max_area_um2": 50.0,
    "neoplastic_min_area_um2": 70.0,
}


# --------------------------------------------------------------------------------------
# classical pipeline
# --------------------------------------------------------------------------------------
def segment_nuclei(rgb: np.ndarray, mpp: float, params: dict | None = None):
    """``(labels, features DataFrame)`` of the nuclei in an RGB uint8 tile at ``mpp`` um/px.

    Features: label, y, x (px), area_um2, ratio (major/minor axis), solidity, mean_h.
    """
    import pandas as pd
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology, segmentation
    from skimage.color import rgb2hed

    p = {**CLASSICAL_DEFAULTS, **(params or {})}
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"segment_nuclei: expected an RGB (H, W, 3) tile, got shape {rgb.shape}")
    if mpp is None or not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"segment_nuclei: needs the tile's microns per pixel, got {mpp!r}")
    px_area = mpp * mpp
    h = filters.gaussian(rgb2hed(rgb)[..., 0], sigma=p["smooth_um"] / mpp)
    mask = h > p["h_threshold"]
    mask = ndi.binary_fill_holes(mask)
    lab = measure.label(mask)
    # watershed split of touching nuclei, only inside components too large for one nucleus
    nxt = int(lab.max()) + 1
    for r in measure.regionprops(lab):
        if r.area * px_area <= p["split_min_area_um2"]:
            continue
        sl = r.slice
        comp = lab[sl] == r.label
        dist = ndi.distance_transform_edt(comp)
        markers = measure.label(morphology.h_maxima(dist, max(p["split_h_um"] / mpp, 0.5)) & comp)
        if markers.max() < 2:
            continue
        ws = segmentation.watershed(-dist, markers, mask=comp)
        sub = lab[sl]
        sub[comp] = np.where(ws[comp] == 1, r.label, ws[comp] - 2 + nxt)
        nxt += int(markers.max()) - 1
    cols = ("label", "area", "axis_major_length", "axis_minor_length", "solidity", "intensity_mean", "centroid")
    t = pd.DataFrame(measure.regionprops_table(lab, intensity_image=h, properties=cols))
    if t.empty:
        return lab, pd.DataFrame(columns=["label", "y", "x", "area_um2", "ratio", "solidity", "mean_h"])
    out = pd.DataFrame({"label": t["label"], "y": t["centroid-0"], "x": t["centroid-1"],
                        "area_um2": t["area"] * px_area,
                        "ratio": t["axis_major_length"] / np.maximum(t["axis_minor_length"], 1.0),
                        "solidity": t["solidity"], "mean_h": t["intensity_mean"]})
    keep = (out.area_um2 >= p["min_area_um2"]) & (out.area_um2 <= p["max_area_um2"])
    return lab, out[keep].reset_index(drop=True)


def classify_nuclei(feats, mpp: float, params: dict | None = None) -> np.ndarray:
    """Class index (into :data:`CLASSES`) per nucleus by the rules in the module docstring;
    dead fragments merged into cells get -1 except one representative per merged cell."""
    from scipy.cluster.hierarchy import fcluster, linkage

    p = {**CLASSICAL_DEFAULTS, **(params or {})}
    n = len(feats)
    cls = np.full(n, CLASSES.index("non_neoplastic_epithelial"))
    if n == 0:
        return cls
    a, r, hmean = feats.area_um2.to_numpy(), feats.ratio.to_numpy(), feats.mean_h.to_numpy()
    dark = hmean >= p["dark_min_h"]
    dead = (a < p["fragment_max_area_um2"]) | (hmean < p["pale_max_h"])
    spindle = ~dead & (r >= p["spindle_min_ratio"])
    rest = ~dead & ~spindle
    inflam = rest & dark & (a < p["lymphocyte_max_area_um2"])
    neo = rest & ~inflam & (dark | (a >= p["neoplastic_min_area_um2"]))
    cls[neo] = CLASSES.index("neoplastic")
    cls[inflam] = CLASSES.index("inflammatory")
    cls[spindle] = CLASSES.index("connective")
    cls[dead] = CLASSES.index("dead")
    idx = np.flatnonzero(dead)
    if len(idx) > 1:  # karyorrhexis: fragments of one nucleus -> one dead cell
        xy = feats[["y", "x"]].to_numpy()[idx] * mpp
        groups = fcluster(linkage(xy, method="single"), t=p["fragment_merge_um"], criterion="distance")
        first = {}
        for i, g in zip(idx, groups):
            if g in first:
                cls[i] = -1
            else:
                first[g] = i
    return cls


def count_tile(rgb: np.ndarray, mpp: float, params: dict | None = None) -> dict:
    """Cells per PanNuke class in one tile (classical pipeline)."""
    _, feats = segment_nuclei(rgb, mpp, params)
    cls = classify_nuclei(feats, mpp, params)
    return {c: int((cls == k).sum()) for k, c in enumerate(CLASSES)}


# --------------------------------------------------------------------------------------
# HoVer-Net (PanNuke, fast mode)
# --------------------------------------------------------------------------------------
def _hovernet_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class TFSamePad(nn.Module):
        def __init__(self, ksize, stride):
            super().__init__()
            self.ksize, self.stride = ksize, stride

        def forward(self, x):
            if x.shape[2] % self.stride == 0:
                pad = max(self.ksize - self.stride, 0)
            else:
                pad = max(self.ksize - (x.shape[2] % self.stride), 0)
            a = pad // 2
            return F.pad(x, (a, pad - a, a, pad - a), "constant", 0)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-5)

    class ResidualBlock(nn.Module):
        def __init__(self, in_ch, ksize, ch, count, stride=1):
            super().__init__()
            self.units = nn.ModuleList()
            unit_in = in_ch
            for i in range(count):
                s = stride if i == 0 else 1
                layers = [("preact/bn", bn(unit_in)), ("preact/relu", nn.ReLU(inplace=True)),
                          ("conv1", nn.Conv2d(unit_in, ch[0], ksize[0], bias=False)),
                          ("conv1/bn", bn(ch[0])), ("conv1/relu", nn.ReLU(inplace=True)),
                          ("conv2/pad", TFSamePad(ksize[1], s)),
                          ("conv2", nn.Conv2d(ch[0], ch[1], ksize[1], stride=s, bias=False)),
                          ("conv2/bn", bn(ch[1])), ("conv2/relu", nn.ReLU(inplace=True)),
                          ("conv3", nn.Conv2d(ch[1], ch[2], ksize[2], bias=False))]
                self.units.append(nn.Sequential(OrderedDict(layers if i else layers[2:])))
                unit_in = ch[2]
            self.shortcut = (nn.Conv2d(in_ch, ch[2], 1, stride=stride, bias=False)
                             if in_ch != ch[2] or stride != 1 else None)
            self.blk_bna = nn.Sequential(OrderedDict([("bn", bn(unit_in)), ("relu", nn.ReLU(inplace=True))]))

        def forward(self, x):
            shortcut = x if self.shortcut is None else self.shortcut(x)
            for u in self.units:
                x = u(x) + shortcut
                shortcut = x
            return self.blk_bna(x)

    def crop(x, h, w):
        ch, cw = x.shape[2] - h, x.shape[3] - w
        return x[:, :, ch // 2: ch // 2 + h, cw // 2: cw // 2 + w]

    class DenseBlock(nn.Module):
        def __init__(self, in_ch, ksize, ch, count, split=1):
            super().__init__()
            self.units = nn.ModuleList()
            unit_in = in_ch
            for _ in range(count):
                self.units.append(nn.Sequential(OrderedDict([
                    ("preact_bna/bn", bn(unit_in)), ("preact_bna/relu", nn.ReLU(inplace=True)),
                    ("conv1", nn.Conv2d(unit_in, ch[0], ksize[0], bias=False)),
                    ("conv1/bn", bn(ch[0])), ("conv1/relu", nn.ReLU(inplace=True)),
                    ("conv2", nn.Conv2d(ch[0], ch[1], ksize[1], groups=split, bias=False))])))
                unit_in += ch[1]
            self.blk_bna = nn.Sequential(OrderedDict([("bn", bn(unit_in)), ("relu", nn.ReLU(inplace=True))]))

        def forward(self, x):
            for u in self.units:
                new = u(x)
                x = torch.cat([crop(x, new.shape[2], new.shape[3]), new], dim=1)
            return self.blk_bna(x)

    def branch(out_ch, k=3):
        u3 = nn.Sequential(OrderedDict([("conva", nn.Conv2d(1024, 256, k, bias=False)),
                                        ("dense", DenseBlock(256, [1, k], [128, 32], 8, split=4)),
                                        ("convf", nn.Conv2d(512, 512, 1, bias=False))]))
        u2 = nn.Sequential(OrderedDict([("conva", nn.Conv2d(512, 128, k, bias=False)),
                                        ("dense", DenseBlock(128, [1, k], [128, 32], 4, split=4)),
                                        ("convf", nn.Conv2d(256, 256, 1, bias=False))]))
        u1 = nn.Sequential(OrderedDict([("conva/pad", TFSamePad(k, 1)),
                                        ("conva", nn.Conv2d(256, 64, k, bias=False))]))
        u0 = nn.Sequential(OrderedDict([("bn", bn(64)), ("relu", nn.ReLU(inplace=True)),
                                        ("conv", nn.Conv2d(64, out_ch, 1, bias=True))]))
        return nn.Sequential(OrderedDict([("u3", u3), ("u2", u2), ("u1", u1), ("u0", u0)]))

    class HoVerNet(nn.Module):
        """HoVer-Net, fast mode (256 px input -> 164 px output), PanNuke type branch."""

        def __init__(self, nr_types: int = 6):
            super().__init__()
            self.conv0 = nn.Sequential(OrderedDict([
                ("pad", TFSamePad(7, 1)), ("/", nn.Conv2d(3, 64, 7, bias=False)),
                ("bn", bn(64)), ("relu", nn.ReLU(inplace=True))]))
            self.d0 = ResidualBlock(64, [1, 3, 1], [64, 64, 256], 3, stride=1)
            self.d1 = ResidualBlock(256, [1, 3, 1], [128, 128, 512], 4, stride=2)
            self.d2 = ResidualBlock(512, [1, 3, 1], [256, 256, 1024], 6, stride=2)
            self.d3 = ResidualBlock(1024, [1, 3, 1], [512, 512, 2048], 3, stride=2)
            self.conv_bot = nn.Conv2d(2048, 1024, 1, bias=False)
            self.decoder = nn.ModuleDict(OrderedDict([("tp", branch(nr_types)), ("np", branch(2)), ("hv", branch(2))]))

        def forward(self, imgs):
            x = imgs / 255.0
            d0 = self.d0(self.conv0(x))
            d1 = self.d1(d0)
            d2 = self.d2(d1)
            d3 = self.conv_bot(self.d3(d2))
            d0 = crop(d0, d0.shape[2] - 92, d0.shape[3] - 92)
            d1 = crop(d1, d1.shape[2] - 36, d1.shape[3] - 36)
            out = OrderedDict()
            for name, b in self.decoder.items():
                u3 = b[0](F.interpolate(d3, scale_factor=2, mode="nearest") + d2)
                u2 = b[1](F.interpolate(u3, scale_factor=2, mode="nearest") + d1)
                u1 = b[2](F.interpolate(u2, scale_factor=2, mode="nearest") + d0)
                out[name] = b[3](u1)
            return out

    return HoVerNet


def build_hovernet(nr_types: int = 6):
    return _hovernet_classes()(nr_types)


def load_hovernet(path, device: str = "cpu"):
    """HoVer-Net with the PanNuke checkpoint at ``path`` (``{"desc": state_dict}`` as published,
    or a bare state dict; a ``module.`` prefix from DataParallel is removed)."""
    path = Path(path) if path else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"HoVer-Net: checkpoint {path} not found. Nothing is downloaded: put the PanNuke checkpoint "
            f"hovernet_fast_pannuke_type_tf2pytorch.tar (HoVer-Net repository, vqdang/hover_net, "
            f"'pretrained weights') there (config metrics.cells.hovernet_weights), or use method classical.")
    from crossmodal.fileio import load_checkpoint

    ck = load_checkpoint(path, "HoVer-Net checkpoint")
    state = ck.get("desc", ck) if isinstance(ck, dict) else ck
    if not isinstance(state, dict):
        raise ValueError(f"HoVer-Net: {path} holds no state dict")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    model = build_hovernet()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"HoVer-Net: checkpoint {path} does not fit the PanNuke fast-mode "
                         f"architecture: {str(e)[:400]}") from None
    return model.eval().to(device)


def hovernet_instances(out: dict, *, np_threshold: float = 0.5):
    """Instance labels and PanNuke class per instance from one image's HoVer-Net outputs
    (``np`` (2, H, W), ``hv`` (2, H, W), ``tp`` (6, H, W) tensors).

    HoVer-Net's post-processing (vqdang/hover_net ``process_np_hv``): nuclear-pixel mask
    (p >= 0.5, objects < 10 px dropped); signed x / y derivatives of the min-max normalised
    horizontal / vertical maps (their 21-px Sobel kernel approximated by a Gaussian derivative,
    sigma 2.2 px), ``overall = max(1 - norm(d/dx h), 1 - norm(d/dy v))`` inside the mask; markers
    = mask minus ``overall >= 0.4``, hole-filled, opened with a 5-px disk, objects < 10 px dropped;
    marker-controlled watershed of the smoothed ``-(1 - overall)``.  Type of an instance = the
    majority of its type-map pixels (background excluded)."""
    from scipy import ndimage as ndi
    from skimage import measure, morphology, segmentation

    prob = out["np"].softmax(0)[1].cpu().numpy()
    hv = out["hv"].cpu().numpy().astype(np.float64)
    tp = out["tp"].argmax(0).cpu().numpy()
    blb = measure.label(prob >= np_threshold)
    blb = morphology.remove_small_objects(blb, max_size=9) if blb.max() else blb
    blb = (blb > 0).astype(np.float64)

    def norm(a):
        return (a - a.min()) / max(a.max() - a.min(), 1e-8)

    dx = ndi.gaussian_filter(norm(hv[0]), 2.2, order=(0, 1))
    dy = ndi.gaussian_filter(norm(hv[1]), 2.2, order=(1, 0))
    overall = np.maximum(1 - norm(dx), 1 - norm(dy))
    overall = np.clip(overall - (1 - blb), 0, None)
    dist = -ndi.gaussian_filter((1.0 - overall) * blb, 0.8)
    marker = np.clip(blb - (overall >= 0.4), 0, None) > 0
    marker = ndi.binary_fill_holes(marker)
    marker = ndi.binary_opening(marker, structure=morphology.disk(2))
    marker = measure.label(marker)
    marker = morphology.remove_small_objects(marker, max_size=9) if marker.max() else marker
    inst = segmentation.watershed(dist, marker, mask=blb > 0)
    types = {}
    for r in measure.regionprops(inst):
        vals = tp[r.coords[:, 0], r.coords[:, 1]]
        vals = vals[vals > 0]
        if len(vals):
            types[r.label] = int(np.bincount(vals).argmax()) - 1  # 0 is background
    return inst, types


def count_tiles_hovernet(model, tiles_uint8: np.ndarray, device="cpu") -> list[dict]:
    """Cells per class in each tile (B, 256, 256, 3) with HoVer-Net."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(tiles_uint8)).permute(0, 3, 1, 2).float().to(device)
    with torch.inference_mode():
        out = model(x)
    res = []
    for i in range(x.shape[0]):
        _, types = hovernet_instances({k: v[i] for k, v in out.items()})
        t = np.array(list(types.values()), int)
        res.append({c: int((t == k).sum()) for k, c in enumerate(CLASSES)})
    return res


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------
def percentages(counts):
    """Per-tile percentages of each class (rows with no cells get NaN)."""
    import pandas as pd

    c = counts[CLASSES].astype(float)
    tot = c.sum(axis=1).replace(0, np.nan)
    rest = counts.drop(columns=CLASSES + [f"pct_{k}" for k in CLASSES], errors="ignore")
    return pd.concat([rest, c.div(tot, axis=0) * 100], axis=1)


def table1(tile_pct, group: str = "cohort", kind: str = "tile_type", *, paper: bool = False):
    """RNA-CDM Table 1 layout: mean ± sd % of each type per (group, tile type) over tiles.

    ``paper=True`` adds ``paper <type>`` columns quoting RNA-CDM Table 1 for the same cohort and
    tile type (empty where the paper has no such row, e.g. toy GTEx cohorts)."""
    import pandas as pd

    rows = []
    for (g, k), d in tile_pct.dropna(subset=CLASSES, how="all").groupby([group, kind], sort=True):
        row = {group: g, "Tile type": k, "n_tiles": len(d)}
        for c in CLASSES:
            row[TABLE1_NAMES[c]] = f"{d[c].mean():.2f} ± {d[c].std(ddof=1) if len(d) > 1 else 0:.2f}"
        if paper:
            ref = PAPER_TABLE1.get((str(g), str(k)), [""] * len(CLASSES))
            for c, v in zip(CLASSES, ref):
                row[f"paper {TABLE1_NAMES[c]}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def distribution_long(tile_pct, group: str = "cohort", kind: str = "tile_type"):
    """Per-tile percentages in long form (``group``, ``kind``, ``cell_type`` - the Table 1 name -,
    ``pct``) for the RNA-CDM Figure 3A panels; tiles without any counted nucleus are left out."""
    import pandas as pd

    missing = [c for c in [group, kind, *CLASSES] if c not in tile_pct.columns]
    if missing:
        raise ValueError(f"cell distributions: per-tile table lacks column(s) {missing}")
    d = tile_pct.dropna(subset=CLASSES, how="all")
    long = d.melt(id_vars=[group, kind], value_vars=CLASSES, var_name="cell_type", value_name="pct")
    long["cell_type"] = pd.Categorical(long["cell_type"].map(TABLE1_NAMES),
                                       categories=[TABLE1_NAMES[c] for c in CLASSES])
    return long.sort_values([group, kind, "cell_type"], kind="stable").reset_index(drop=True)


def distribution_figure(long, title: str, group: str = "cohort", kind: str = "tile_type"):
    """RNA-CDM Figure 3A: one panel per cancer type, per cell type the per-tile percentage of
    real and synthetic tiles side by side (boxes: quartiles, whiskers 1.5 IQR, white dot: mean)."""
    import matplotlib.pyplot as plt

    groups = sorted(long[group].unique())
    if not groups:
        raise ValueError("cell distributions: no tile with counted nuclei to plot")
    kinds = [k for k in ("Real", "Synthetic") if k in set(long[kind])] or sorted(long[kind].unique())
    colours = {"Real": "#4c72b0", "Synthetic": "#dd8452"}
    types = list(long["cell_type"].cat.categories)
    ncol = min(len(groups), 3)
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False, sharey=True)
    width = 0.8 / len(kinds)
    for ax, g in zip(axes.flat, groups):
        dg = long[long[group] == g]
        for j, k in enumerate(kinds):
            dk = dg[dg[kind] == k]
            vals = [dk.loc[dk["cell_type"] == t, "pct"].dropna().to_numpy() for t in types]
            pos = [i + (j - (len(kinds) - 1) / 2) * width for i in range(len(types))]
            n = int(dk.groupby("cell_type", observed=False).size().max()) if len(dk) else 0
            ok = [(p_, v) for p_, v in zip(pos, vals) if len(v)]
            if ok:
                bp = ax.boxplot([v for _, v in ok], positions=[p_ for p_, _ in ok], widths=width * 0.9,
                                patch_artist=True, showfliers=False, showmeans=True, medianprops={"color": "black"},
                                meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black",
                                           "markersize": 3})
                for b in bp["boxes"]:
                    b.set_facecolor(colours.get(k, "grey"))
                    b.set_alpha(0.8)
            ax.plot([], [], "s", c=colours.get(k, "grey"), label=f"{k} (n = {n} tiles)")
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels(types, fontsize=8, rotation=20)
        ax.set_title(str(g), fontsize=9)
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes[:, 0]:
        ax.set_ylabel("% of nuclei in the tile", fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
def tile_counter(c: dict, device: str = "auto", threads: int = 1):
    """``count(rgb, mpp) -> {class: cells}`` with the configured method (``metrics.cells``):
    the classical pipeline (needs the tile's microns per pixel) or HoVer-Net (weights loaded once)."""
    if c["method"] == "classical":
        return lambda rgb, mpp: count_tile(rgb, float(mpp), c["classical"])
    import torch

    from crossmodal.metrics.image import resolve_device

    dev = resolve_device(device)
    torch.set_num_threads(max(int(threads), 1))
    model = load_hovernet(c["hovernet_weights"], dev)
    return lambda rgb, mpp: count_tiles_hovernet(model, rgb[None], dev)[0]


@step("count_cells")
def count_cells(inputs, outputs, params, *, threads=1, log=None):
    """Cells per PanNuke class in each tile of one slide's tile LMDB -> per-tile TSV (counts and
    ``pct_<class>`` percentages)."""
    import pandas as pd
    from tqdm import tqdm

    from crossmodal.data import TileDataset
    from crossmodal.fileio import write_table

    c = params["cells"]
    ds = TileDataset([inputs["lmdb"]])
    n = len(ds)
    idx = np.arange(n)
    cap = c.get("max_tiles_per_slide")
    if cap and cap < n:
        idx = np.sort(np.random.default_rng(int(params["seed"])).choice(n, int(cap), replace=False))
    method = c["method"]
    count = tile_counter(c, params.get("device", "auto"), threads)
    log_ = logging.getLogger(__name__)
    log_.info("counting cells (%s) in %d of %d tiles of %s", method, len(idx), n, inputs["lmdb"])
    rows = []
    for i in tqdm(idx, desc="count_cells", mininterval=5):
        meta = ds.meta(int(i))
        rgb = ds[int(i)]
        mpp = meta.get("mpp") or ds.headers[0].get("mpp")
        if method == "classical" and not mpp:
            raise ValueError(f"count_cells: {inputs['lmdb']} records no mpp (microns per pixel) for tile {int(i)} "
                             f"nor in its header; the classical counter measures nuclei in microns")
        counts = count(rgb, mpp)
        rows.append({"sample": meta["sample"], "tile": int(i), "x": meta.get("x"), "y": meta.get("y"),
                     "method": method, **counts})
    df = pd.DataFrame(rows, columns=["sample", "tile", "x", "y", "method"] + CLASSES)
    tot = df[CLASSES].sum(axis=1).replace(0, np.nan)
    for c in CLASSES:  # per-tile percentages (empty when a tile has no nuclei)
        df[f"pct_{c}"] = (df[c] / tot * 100).round(3)
    write_table(outputs["counts"], df, index=False)


def _cohort_of(cohorts: dict, counts):
    unknown = sorted(set(counts["sample"]) - set(cohorts))
    if unknown:
        raise ValueError(f"plot_cell_table: samples {unknown[:5]} have no cohort in the sample table")
    return counts.assign(cohort=counts["sample"].map(cohorts))


@step("plot_cell_table")
def plot_cell_table(inputs, outputs, params, *, threads=1, log=None):
    """RNA-CDM Table 1 layout for the real tiles (+ synthetic when given) and, with a planted
    truth, the per-type correlation between counted and planted fractions across patients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from crossmodal import stats
    from crossmodal.fileio import save_figure, write_table

    method = params["cells"]["method"]
    frames = []
    for kind, key in (("Real", "counts"), ("Synthetic", "synthetic_counts")):
        for p in _list(inputs.get(key)):
            d = pd.read_csv(p, sep="\t")
            d["tile_type"] = kind
            frames.append(d)
    if not frames:
        raise ValueError("plot_cell_table: no cell-count tables given")
    counts = _cohort_of(params["cohorts"], pd.concat(frames, ignore_index=True))
    pct = percentages(counts)
    t1 = table1(pct, group="cohort", kind="tile_type", paper=True)
    label = ("HoVer-Net (PanNuke)" if method == "hovernet"
             else "classical nuclei pipeline - a stand-in for HoVer-Net, not comparable to the paper's")
    t1.insert(1, "counter", label)
    if inputs.get("truth"):
        t1.insert(2, "data", "toy cohort (planted fractions) - not comparable to the paper's TCGA tiles")
    write_table(outputs["table"], t1, index=False)
    if outputs.get("distribution"):  # RNA-CDM Figure 3A (only the RNA-CDM rule asks for it)
        data = " - toy cohort, not comparable to the paper" if inputs.get("truth") else ""
        fig = distribution_figure(distribution_long(pct),
                                  f"Cell-type percentages per tile, real vs synthetic ({label}{data})")
        save_figure(fig, outputs["distribution"])
        plt.close(fig)

    # counted vs planted fractions, per patient (all of its counted tiles pooled)
    corr_rows = []
    real = counts[counts.tile_type == "Real"]
    per_sample = real.groupby("sample")[CLASSES].sum()
    per_sample = per_sample[per_sample.sum(axis=1) > 0]
    frac = per_sample.div(per_sample.sum(axis=1), axis=0)
    truth = None
    truth_paths = _list(inputs.get("truth"))  # Snakemake passes the optional input as a list
    if truth_paths:
        truth = pd.read_csv(truth_paths[0], sep="\t").set_index("sample")
    fig, axes = plt.subplots(1, len(CLASSES), figsize=(3.2 * len(CLASSES), 3.2), squeeze=False)
    for ax, c in zip(axes[0], CLASSES):
        if truth is None:
            ax.set_axis_off()
            continue
        col = TOY_TRUTH[c]
        both = pd.concat({"counted": frac[c], "planted": truth[col]}, axis=1, join="inner").dropna()
        if len(both) >= 3:
            r = stats.correlation(both["planted"], both["counted"], method="pearson", label=c)
            rs = stats.correlation(both["planted"], both["counted"], method="spearman", label=c)
            corr_rows.append({"cell_type": TABLE1_NAMES[c], "pannuke_class": c, "planted": col,
                              "n_patients": len(both), "pearson_r": r["statistic"], "pearson_p": r["p_value"],
                              "spearman_rho": rs["statistic"], "spearman_p": rs["p_value"], "counter": label})
            ax.set_title(f"{TABLE1_NAMES[c]}: r = {r['statistic']:.2f}", fontsize=9)
        ax.scatter(both["planted"] * 100, both["counted"] * 100, s=12, alpha=0.7)
        lim = [0, max(1.0, float(both.max().max()) * 100 * 1.05)] if len(both) else [0, 100]
        ax.plot(lim, lim, ls=":", c="grey", lw=0.8)
        ax.set_xlabel(f"planted {col} %", fontsize=8)
        ax.set_ylabel(f"counted {c} %", fontsize=8)
    fig.suptitle(f"Cells counted in REAL tiles vs planted cell-type fractions per patient ({label})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, outputs["figure"])
    plt.close(fig)
    cols = ["cell_type", "pannuke_class", "planted", "n_patients", "pearson_r", "pearson_p",
            "spearman_rho", "spearman_p", "counter"]
    write_table(outputs["correlations"], pd.DataFrame(corr_rows, columns=cols), index=False)


def _list(x):
    if x is None:
        return []
    return [str(v) for v in x] if isinstance(x, (list, tuple)) else [str(x)]
