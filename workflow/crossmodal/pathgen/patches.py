"""Patch embeddings for PathGen (Methods 3.1, "Histopathology data").

Patches are the tiler's 224x224 patch LMDBs (:mod:`crossmodal.tiling`, preset ``patch224``;
read with :class:`crossmodal.data.TileDataset`) - one implementation of slide tiling for the
whole pipeline.  The paper "randomly chose[s] the magnification level of the WSI from the
available options to make the model magnification level agnostic": here the options are the
tiling presets listed in ``pathgen.patches.presets`` (one per magnification), one drawn per
slide from the seed (:func:`crossmodal.pathgen.targets.preset`); the preset, its
magnification level (1 = finest) and the pyramid level read are recorded.  Patches whose mean
intensity (RGB scaled to [0, 1]) exceeds ``max_intensity`` (0.8) are dropped as background.
Patches are embedded by a pluggable encoder:

* ``cohort-ssl`` (offline default of the toy run): the SimCLR encoder the pipeline trains on
  the cohort's tiles (:mod:`crossmodal.models.ssl`, rule train_ssl_encoder) - a **stand-in for
  UNI**; every number downstream of it says so.  With ``native_resolution`` (default) the
  fully convolutional ResNet sees each 224-px patch at its own pixel size instead of resized
  down to the SimCLR training size (64 px in the toy run, where the toy's nuclei shrink to 1-3
  px): measured on the toy's PathGen cases (ridge, 5-fold CV over 49 slides), the mean-pooled
  embedding then predicts the planted lymphocyte / necrotic / connective fractions with r 0.83 /
  0.48 / 0.27 instead of -0.01 / -0.21 / 0.16 (tumour 0.73 either way);
* ``uni``: UNI ViT-L/16 (1024-d) built with ``timm`` from a local weights file
  (``pathgen.patches.uni_weights``); nothing is downloaded; a missing file or a missing timm
  package is a clear error.

Output format: see :mod:`crossmodal.pathgen`.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from crossmodal.fileio import atomic_path

log = logging.getLogger(__name__)

FORMAT = "crossmodal-pathgen-embeddings"


def load_patch_encoder(name: str, path=None, device: str = "cpu", *, native_resolution: bool = False):
    """``(fn(uint8 NHWC numpy) -> float32 (n, d) numpy, label)``.

    ``native_resolution`` (cohort-ssl only): feed patches to the ResNet at their own pixel size
    (ImageNet-normalised as in training) instead of resizing them to the encoder's training size."""
    import torch

    if name == "cohort-ssl":
        from crossmodal.models.ssl import load_encoder

        ssl_enc, ck = load_encoder(path)
        ssl_enc = ssl_enc.to(device)
        label = f"cohort-ssl ResNet-{ck['arch']['depth']} SimCLR (stand-in for UNI)"
        if native_resolution:
            enc = lambda x: ssl_enc.backbone((x.float() / 255.0 - ssl_enc.mean) / ssl_enc.std)  # noqa: E731
            label = f"cohort-ssl ResNet-{ck['arch']['depth']} SimCLR, native patch resolution (stand-in for UNI)"
        else:
            enc = ssl_enc
    elif name == "uni":
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"pathgen.patches.uni_weights: UNI weights file {path!r} not found "
                                    "(download pytorch_model.bin of MahmoodLab/UNI yourself; nothing is fetched)")
        try:
            import timm
        except ImportError as e:
            raise ImportError("pathgen.patches.encoder 'uni' needs the timm package (pip install timm)") from e
        enc = timm.create_model("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
                                num_classes=0, dynamic_img_size=True)
        from crossmodal.fileio import load_checkpoint

        enc.load_state_dict(load_checkpoint(path, "pathgen.patches.uni_weights: UNI weights", weights_only=True),
                            strict=True)
        enc = enc.eval().to(device)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).to(device)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1).to(device)
        inner = enc
        enc = lambda x: inner((x.float() / 255.0 - mean) / std)  # noqa: E731
        label = "UNI ViT-L/16"
    else:
        raise ValueError(f"pathgen.patches.encoder: unknown encoder {name!r} (cohort-ssl or uni)")

    @torch.no_grad()
    def fn(patches: np.ndarray, batch: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(patches), batch):
            x = torch.from_numpy(patches[i:i + batch]).permute(0, 3, 1, 2).contiguous().to(device)
            out.append(enc(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return fn, label


def embed_lmdb(lmdb_path, sample: str, out_path, encode, label: str, *, preset: str, magnification: int,
               max_intensity: float = 0.8, max_patches=None, seed: int = 0, batch_size: int = 64) -> dict:
    """Read one slide's patch LMDB, drop bright patches, embed, write the ``.npz`` atomically."""
    from crossmodal.data import TileDataset

    ds = TileDataset(lmdb_path)
    hdr = ds.headers[0]
    n_cand = len(ds)
    keep, coords, levels, size0, dropped = [], [], [], [], 0
    for i in range(n_cand):
        rgb = ds[i]
        if rgb.mean() / 255.0 > max_intensity:
            dropped += 1
            continue
        m = ds.meta(i)
        keep.append(rgb)
        coords.append((int(m.get("x", -1)), int(m.get("y", -1))))
        levels.append(int(m.get("level", -1)))
        size0.append(float(m.get("size0", np.nan)))
    ds.close()
    idx = np.arange(len(keep))
    if max_patches and len(keep) > max_patches:
        rng = np.random.default_rng([int(seed), zlib.crc32(sample.encode())])
        idx = np.sort(rng.choice(len(keep), max_patches, replace=False))
    size = int(hdr.get("tile_size", 224))
    patches = np.stack([keep[i] for i in idx]) if len(idx) else np.zeros((0, size, size, 3), np.uint8)
    xy = np.asarray([coords[i] for i in idx], dtype=np.int64).reshape(-1, 2)
    box = float(np.nanmedian([size0[i] for i in idx])) if len(idx) and not np.isnan(size0).all() else np.nan
    level = int(np.bincount([levels[i] + 1 for i in idx]).argmax() - 1) if len(idx) else -1
    feats = encode(patches, batch_size) if len(patches) else np.zeros((0, 0), np.float32)
    if len(patches) == 0:
        log.warning("embed_patches: %s (%s): no patch with mean intensity <= %.2f - empty bag",
                    sample, lmdb_path, max_intensity)
    mpp = float(hdr.get("mpp") or np.nan)
    summary = {"sample": sample, "preset": preset, "magnification": int(magnification), "level": level,
               "mpp": mpp, "n": int(len(patches)), "n_candidates": int(n_cand), "n_dropped_bright": int(dropped)}
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=feats.astype(np.float32), coords=xy, level=level, magnification=int(magnification),
                 preset=preset, patch_size=size, size0=box, mpp=mpp, n_candidates=n_cand, n_dropped_bright=dropped,
                 sample=sample, encoder=label, format=FORMAT)
    log.info("embed_patches: %s (%s, level %d): %d of %d patches kept (%d bright), dim %d", sample, preset,
             level, len(patches), n_cand, dropped, feats.shape[1] if feats.ndim == 2 else 0)
    return summary


def read_embeddings(path) -> dict:
    """Load one slide's ``.npz`` (validated); ``features`` (n, d) float32, ``coords``, ``level``...
    A missing, unreadable (truncated, damaged) or foreign file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"patch embeddings {path}: not found (rule embed_patches writes it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - whatever numpy, zipfile or zlib raise on a damaged file
        raise ValueError(f"patch embeddings {path}: unreadable ({type(e).__name__}: {str(e)[:300]}); a truncated "
                         "or damaged file? (rule embed_patches writes it)") from None
    if "format" not in d or str(d["format"]) != FORMAT:
        raise ValueError(f"patch embeddings {path}: not a {FORMAT} file")
    out = {k: (d[k].item() if d[k].ndim == 0 else d[k]) for k in d}
    out["n"] = int(len(out["coords"]))
    return out
