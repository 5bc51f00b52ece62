"""Whole-slide image files: writing Aperio-style pyramidal TIFFs and opening slides safely.

``write_svs`` writes what a scanner writes: a JPEG-tiled BigTIFF with an Aperio
ImageDescription (``AppMag``, ``MPP``), level 0 plus a thumbnail IFD plus 2× downsampled
levels, and label/macro images, so that OpenSlide reports vendor ``aperio``.  The toy cohort
and the tests use it; nothing here is a stand-in for OpenSlide on the reading side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.fileio import atomic_path


class SlideError(ValueError):
    """A slide file that cannot be used; the message names the file."""


def _downsample2(img: np.ndarray) -> np.ndarray:
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    a = img[:h, :w].astype(np.uint16)
    return ((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4).astype(np.uint8)


def write_svs(path, rgb: np.ndarray, *, mpp: float | None = 0.25, app_mag: int = 40,
              tile: int = 256, min_level_size: int = 512, quality: int = 85) -> Path:
    """Write ``rgb`` (H, W, 3 uint8) as an Aperio-style pyramidal SVS at ``path`` (atomic).

    ``mpp=None`` omits the MPP field (a slide without resolution metadata).
    """
    import tifffile

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_svs: expected (H, W, 3) uint8, got {rgb.shape}")
    H, W = rgb.shape[:2]
    levels = [rgb]
    while min(levels[-1].shape[:2]) // 2 >= min_level_size:
        levels.append(_downsample2(levels[-1]))
    mpp_txt = f"|MPP = {mpp}" if mpp is not None else ""
    head = "Aperio Image Library v12.0.15\r\n"
    jpeg = dict(compression="jpeg", compressionargs={"level": quality}, photometric="rgb")
    res = {}
    if mpp is not None:
        res = dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    path = Path(path)
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            tw.write(levels[0], tile=(tile, tile), metadata=None, **jpeg, **res,
                     description=f"{head}{W}x{H} [0,0 {W}x{H}] ({tile}x{tile}) JPEG/RGB Q={quality}"
                     f"|AppMag = {app_mag}{mpp_txt}|ScanScope ID = CROSSMODAL-TOY|Filename = {path.stem}")
            th = levels[-1]
            while max(th.shape[:2]) > 768:
                th = _downsample2(th)
            tw.write(th, metadata=None, **jpeg,
                     description=f"{head}{W}x{H} -> {th.shape[1]}x{th.shape[0]} - |AppMag = {app_mag}{mpp_txt}")
            for lev in levels[1:]:
                tw.write(lev, tile=(tile, tile), metadata=None, **jpeg,
                         description=f"{head}{W}x{H} [0,0 {W}x{H}] ({tile}x{tile}) -> "
                         f"{lev.shape[1]}x{lev.shape[0]} JPEG/RGB Q={quality}|AppMag = {app_mag}{mpp_txt}")
            tw.write(np.full((128, 256, 3), 220, np.uint8), metadata=None, compression="lzw",
                     subfiletype=1, description=f"{head}label 256x128")
            tw.write(np.full((128, 384, 3), 160, np.uint8), metadata=None, compression="jpeg",
                     subfiletype=9, description=f"{head}macro 384x128")
    return path


def write_flat_tiff(path, rgb: np.ndarray) -> Path:
    """A single-level, strip-organised TIFF: a non-pyramidal image (for bad-input tests)."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(rgb, dtype=np.uint8), photometric="rgb")
    return Path(path)
