"""Rendering toy H&E slides whose nuclei encode the planted cell-type fractions.

Stain model: Beer-Lambert optical density ``OD = c_H * h + c_E * e`` with the commonly used
H&E reference stain vectors (Macenko et al. 2009), ``RGB = 255 exp(-OD)`` — so standard
colour deconvolution (e.g. ``skimage.color.rgb2hed``) separates nuclei from stroma.

Tissue is a few smooth blobs on a white background; stroma is eosin with fibrous texture;
nuclei sit on a jittered grid (spacing ``nucleus_spacing_um``, so they never touch) and their
cell types follow the patient's fractions exactly (largest-remainder rounding). Morphology
(radii in microns at any mpp):

==================  ==========================================  ============
cell type           shape                                       haematoxylin
==================  ==========================================  ============
tumour              large irregular polygon, r 4.5-5.8 um       dark (1.6)
lymphocyte          small round disk, r 2.8-3.3 um              darkest (2.0)
connective          elongated ellipse, 5.5-7 x 1.3-1.8 um       medium (1.3)
necrotic            3-5 pale fragments, r 0.8-1.5 um            pale (0.55)
normal_epithelial   medium oval, r 3.8-4.5 um                   medium (1.0)
==================  ==========================================  ============

Artifacts: saturated blue/green pen strokes (the tiler's pen filter drops the tiles they
cross), a Gaussian-blurred (out-of-focus) square of a third of the slide's edge (dropped only
when ``tiling.min_sharpness`` > 0), a washed-out, nearly flat pink square of half the slide's
edge (the tiles inside it are dropped as low-contrast). The no-tissue slide is background only.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import draw

from crossmodal.toy.model import rng_for
from crossmodal.toy.plan import CELL_TYPES

log = logging.getLogger(__name__)

STAIN_H = np.array([0.5626, 0.7201, 0.4062])
STAIN_E = np.array([0.2159, 0.8012, 0.5581])
H_LEVEL = {"tumour": 1.6, "lymphocyte": 2.0, "connective": 1.3, "necrotic": 0.55, "normal_epithelial": 1.0}
PEN_INK = {"blue": np.array([25, 45, 190]), "green": np.array([20, 150, 60])}


def _upsample(field: np.ndarray, n: int) -> np.ndarray:
    """Bilinear resize of a small 2-D field to (n, n) float32 (PIL: fast, maintained)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32), mode="F")
    return np.array(img.resize((n, n), Image.Resampling.BILINEAR), dtype=np.float32)


def _smooth_field(rng, n: int, coarse: int, sigma: float) -> np.ndarray:
    """Smooth random field with unit spread at (n, n), from noise on a coarse grid."""
    small = ndimage.gaussian_filter(rng.normal(0, 1, (coarse, coarse)), sigma)
    small /= small.std() + 1e-9
    return _upsample(small, n)


def tissue_mask(rng, n: int, fraction: float) -> np.ndarray:
    """Boolean mask of a few smooth tissue blobs covering about ``fraction`` of the slide."""
    c = 64
    yy, xx = np.mgrid[0:c, 0:c] / c
    field = np.zeros((c, c))
    for _ in range(int(rng.integers(2, 4))):
        cy, cx = rng.uniform(0.25, 0.75, 2)
        s = rng.uniform(0.15, 0.3)
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    field += 0.25 * ndimage.gaussian_filter(rng.normal(0, 1, (c, c)), 2.0) / 0.1
    # keep a clear white margin like a real glass slide
    edge = np.minimum.reduce([yy, xx, 1 - yy, 1 - xx])
    field[edge < 0.06] = field.min()
    thr = np.quantile(field, 1 - fraction)
    return _upsample(field, n) > thr


def _place_nuclei(rng, mask: np.ndarray, fractions: np.ndarray, spacing: float) -> pd.DataFrame:
    n = mask.shape[0]
    centres = np.arange(spacing / 2, n - spacing / 2, spacing)
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    cy, cx = cy.ravel(), cx.ravel()
    keep = mask[cy.astype(int), cx.astype(int)]
    cy, cx = cy[keep], cx[keep]
    total = len(cy)
    raw = fractions / fractions.sum() * total
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts))[: total - counts.sum()]:
        counts[k] += 1
    types = np.repeat(np.arange(len(CELL_TYPES)), counts)
    types = types[rng.permutation(total)]
    jit = spacing * 0.07
    cy = cy + rng.uniform(-jit, jit, total)
    cx = cx + rng.uniform(-jit, jit, total)
    return pd.DataFrame({"x": np.round(cx).astype(int), "y": np.round(cy).astype(int),
                         "cell_type": [CELL_TYPES[t] for t in types]})


def _draw_nucleus(rng, h, e, shape, x, y, cell_type, um):
    """Add one nucleus (haematoxylin) and, for tumour cells, a rim of cytoplasm (eosin)."""
    level = H_LEVEL[cell_type] * rng.uniform(0.9, 1.1)
    if cell_type == "tumour":
        r = rng.uniform(4.5, 5.8) * um
        ang = np.sort(rng.uniform(0, 2 * np.pi, 11))
        rad = r * rng.uniform(0.8, 1.15, len(ang))
        rr, cc = draw.disk((y, x), 1.5 * r, shape=shape)
        e[rr, cc] += 0.25
        rr, cc = draw.polygon(y + rad * np.sin(ang), x + rad * np.cos(ang), shape=shape)
    elif cell_type == "lymphocyte":
        rr, cc = draw.disk((y, x), rng.uniform(2.8, 3.3) * um, shape=shape)
    elif cell_type == "connective":
        rr, cc = draw.ellipse(y, x, rng.uniform(1.3, 1.8) * um, rng.uniform(5.5, 7.0) * um,
                              shape=shape, rotation=rng.uniform(0, np.pi))
    elif cell_type == "necrotic":
        parts = [draw.disk((y + dy, x + dx), rng.uniform(0.8, 1.5) * um, shape=shape)
                 for dy, dx in rng.uniform(-3.2, 3.2, (int(rng.integers(3, 6)), 2)) * um]
        rr = np.concatenate([p[0] for p in parts])
        cc = np.concatenate([p[1] for p in parts])
    else:  # normal_epithelial
        a = rng.uniform(3.8, 4.5) * um
        rr, cc = draw.ellipse(y, x, a * 0.8, a, shape=shape, rotation=rng.uniform(0, np.pi))
    h[rr, cc] = level * (1 + 0.08 * rng.standard_normal(len(rr)))


def _od_to_rgb(h: np.ndarray, e: np.ndarray) -> np.ndarray:
    rgb = np.empty(h.shape + (3,), np.float32)
    for k in range(3):
        rgb[..., k] = np.exp(-(h * np.float32(STAIN_H[k]) + e * np.float32(STAIN_E[k])))
    rgb *= np.float32(255.0)
    return rgb


def render_slide(info: dict, toy: dict, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """``(rgb uint8 (N, N, 3), nuclei table x/y/cell_type in level-0 pixels)`` for one slide.

    ``info`` is a row of ``truth/slides.tsv``: sample, has_tissue, pen_mark, blur,
    low_contrast and the five fractions.
    """
    n = int(toy["slide_size"])
    mpp = float(toy["slide_mpp"])
    um = 1.0 / mpp
    rng = rng_for(seed, "slide", info["sample"])
    shape = (n, n)
    h = np.zeros(shape, np.float32)
    e = np.zeros(shape, np.float32)
    nuclei = pd.DataFrame(columns=["x", "y", "cell_type"])
    if int(info["has_tissue"]):
        mask = tissue_mask(rng, n, toy["tissue_fraction"])
        fibre = _smooth_field(rng, n, max(8, n // 16), 0.8)
        fibre *= np.float32(0.12)
        fibre += np.float32(0.45)
        np.maximum(fibre, np.float32(0.15), out=fibre)
        e = np.where(mask, fibre, np.float32(0.0))
        h = np.where(mask, np.float32(0.06), np.float32(0.0))
        fr = np.array([float(info[ct]) for ct in CELL_TYPES])
        nuclei = _place_nuclei(rng, mask, fr, toy["nucleus_spacing_um"] * um)
        for x, y, ct in nuclei.itertuples(index=False):
            _draw_nucleus(rng, h, e, shape, x, y, ct, um)
    od_noise = np.abs(rng.standard_normal(shape, dtype=np.float32)) * np.float32(0.015)
    e += od_noise
    od_noise *= np.float32(0.3)
    h += od_noise
    rgb = _od_to_rgb(h, e)
    np.minimum(rgb, np.float32(245.0), out=rgb)  # glass is not pure white
    rgb += np.float32(0.5)  # round; 0 < rgb <= 245.5, so no clipping is needed
    rgb = rgb.astype(np.uint8)
    side = n // 3
    if int(info.get("blur", 0)):
        from PIL import Image, ImageFilter

        y0, x0 = rng.integers(n // 8, n - side - n // 8, 2)
        reg = Image.fromarray(rgb[y0:y0 + side, x0:x0 + side])
        rgb[y0:y0 + side, x0:x0 + side] = np.asarray(reg.filter(ImageFilter.GaussianBlur(3 * um)))
    if int(info.get("low_contrast", 0)):
        # a washed-out, nearly flat pink square (faded / overexposed stain) of half the slide's
        # edge, so that it always covers whole 20x tiles of up to n / 4 level-0 px
        lc = n // 2
        y0, x0 = rng.integers(n // 8, n - lc - n // 8 + 1, 2)
        reg = rgb[y0:y0 + lc, x0:x0 + lc].astype(np.float32)
        rgb[y0:y0 + lc, x0:x0 + lc] = (0.06 * reg + 0.94 * np.array([222.0, 168.0, 202.0])).astype(np.uint8)
    pen = str(info.get("pen_mark", "") or "")
    if pen in PEN_INK:
        # the stroke is drawn on a 4x coarser grid and resized: a smooth, thick ink line
        c = n // 4
        pm = np.zeros((c, c), np.float32)
        t = np.linspace(0, 1, 300)
        # a stroke across the slide: from the left third to the right third via a random bend
        p0 = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.1, 0.3)]) * c
        p1 = rng.uniform(0.1, 0.9, 2) * c
        p2 = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.7, 0.9)]) * c
        curve = ((1 - t) ** 2)[:, None] * p0 + (2 * (1 - t) * t)[:, None] * p1 + (t ** 2)[:, None] * p2
        for yy, xx in curve:
            rr, cc = draw.disk((yy, xx), c / 45, shape=pm.shape)
            pm[rr, cc] = 1.0
        pm = _upsample(pm, n) > 0.5
        ink = PEN_INK[pen] / 255.0
        rgb[pm] = (rgb[pm] * (0.1 + 0.9 * ink)).astype(np.uint8)
    return rgb, nuclei
