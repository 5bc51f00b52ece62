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


def write_svs(path, rgb: np.ndarray, *, mpp: float | None = 0.25, app_mag: int | None = 40,
              tile: int = 256, min_level_size: int = 512, quality: int = 85) -> Path:
    """Write ``rgb`` (H, W, 3 uint8) as an Aperio-style pyramidal SVS at ``path`` (atomic).

    ``mpp=None`` omits the MPP field (a slide without resolution metadata); ``app_mag=None``
    omits ``AppMag`` (no objective power either).
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
    mag_txt = f"|AppMag = {app_mag}" if app_mag is not None else ""
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
                     f"{mag_txt}{mpp_txt}|ScanScope ID = CROSSMODAL-TOY|Filename = {path.stem}")
            th = levels[-1]
            while max(th.shape[:2]) > 768:
                th = _downsample2(th)
            tw.write(th, metadata=None, **jpeg,
                     description=f"{head}{W}x{H} -> {th.shape[1]}x{th.shape[0]} - {mag_txt}{mpp_txt}")
            for lev in levels[1:]:
                tw.write(lev, tile=(tile, tile), metadata=None, **jpeg,
                         description=f"{head}{W}x{H} [0,0 {W}x{H}] ({tile}x{tile}) -> "
                         f"{lev.shape[1]}x{lev.shape[0]} JPEG/RGB Q={quality}{mag_txt}{mpp_txt}")
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


# --- reading -------------------------------------------------------------------------------

#: a single-level slide larger than this (pixels, either side) is refused as non-pyramidal:
#: tiling it would decode the whole full-resolution image for every low-resolution read
PYRAMID_MAX_FLAT_DIM = 4096


def _tiff_structure(path: Path) -> str | None:
    """Describe why a TIFF that OpenSlide refused is unusable, or None if it is no TIFF."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            pages = list(tf.pages)
            first = pages[0]
            tiled = bool(getattr(first, "is_tiled", False))
            shape = tuple(first.shape)
            # decode one byte range of the first page: a truncated file fails here
            if not tiled and len(pages) == 1:
                return (f"non-pyramidal TIFF (one strip-organised level of shape {shape}); "
                        "OpenSlide needs a tiled, multi-resolution slide - convert it, e.g. "
                        "`vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`")
            return f"corrupt or unsupported TIFF ({len(pages)} pages, first page {shape}, tiled={tiled})"
    except Exception as e:  # noqa: BLE001 - any parse failure means 'not a readable TIFF'
        return None if "not a TIFF" in str(e) else f"corrupt TIFF ({type(e).__name__}: {e})"


#: µm/px of a nominal 1x objective: mpp = NOMINAL_MPP_1X / objective power (20x -> 0.5,
#: 40x -> 0.25), the Aperio convention (20x scans ~0.50, 40x ~0.25 µm/px)
NOMINAL_MPP_1X = 10.0


def resolve_mpp_source(slide, path, mpp: float | None = None) -> tuple[float, str]:
    """``(level-0 µm/px, where it came from)``: the sample sheet's ``mpp`` if given
    (``sample_sheet``), else the slide's ``openslide.mpp-x`` / ``-y`` (``slide``), else the
    nominal value of the objective power, :data:`NOMINAL_MPP_1X` / power
    (``objective_power``; ``openslide.objective-power``, from ``aperio.AppMag`` on Aperio
    SVS, some of which lack ``MPP``; the RNA-GAN public tiler scales by ``AppMag`` alone).

    Raises :class:`SlideError` naming ``path`` when none is known.
    """
    if mpp is not None and not (isinstance(mpp, float) and np.isnan(mpp)) and mpp != "":
        mpp = float(mpp)
        if not mpp > 0:
            raise SlideError(f"slide {path}: mpp {mpp} from the sample sheet must be > 0")
        return mpp, "sample_sheet"
    props = slide.properties
    vals = []
    for key in ("openslide.mpp-x", "openslide.mpp-y"):
        try:
            vals.append(float(props[key]))
        except (KeyError, ValueError):
            pass
    if vals and all(v > 0 for v in vals):
        return float(np.mean(vals)), "slide"
    for key in ("openslide.objective-power", "aperio.AppMag"):
        try:
            power = float(props[key])
        except (KeyError, ValueError):
            continue
        if power > 0:
            return NOMINAL_MPP_1X / power, "objective_power"
    raise SlideError(f"slide {path}: no microns-per-pixel metadata (openslide.mpp-x and the "
                     "objective power are missing); give it in the sample sheet's `mpp` column")


def resolve_mpp(slide, path, mpp: float | None = None) -> float:
    """Microns per pixel at level 0 (see :func:`resolve_mpp_source`)."""
    return resolve_mpp_source(slide, path, mpp)[0]


def open_slide(path, mpp: float | None = None, *, require_mpp: bool = True):
    """Open ``path`` with OpenSlide, refusing unusable files with a :class:`SlideError`.

    Errors name the file: missing file, corrupt / unreadable file, non-pyramidal TIFF, and
    (with ``require_mpp``) a slide without MPP metadata when the sample sheet gives none.
    The returned ``openslide.OpenSlide`` carries ``.mpp`` (level-0 µm/px, or None),
    ``.mpp_source`` (see :func:`resolve_mpp_source`) and ``.path``.
    """
    import openslide

    path = Path(path)
    if not path.exists():
        raise SlideError(f"slide {path}: file not found")
    if not path.is_file() or path.stat().st_size == 0:
        raise SlideError(f"slide {path}: not a regular, non-empty file")
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as e:
        why = _tiff_structure(path) or f"corrupt or not a whole-slide image ({e})"
        raise SlideError(f"slide {path}: {why}") from None
    if slide.level_count == 1 and max(slide.dimensions) > PYRAMID_MAX_FLAT_DIM:
        slide.close()
        raise SlideError(f"slide {path}: non-pyramidal slide (one level of {slide.dimensions}); "
                         "convert it to a tiled multi-resolution TIFF")
    try:
        slide.read_region((0, 0), slide.level_count - 1, (1, 1))
    except openslide.OpenSlideError as e:
        raise SlideError(f"slide {path}: corrupt, cannot decode ({e})") from None
    slide.mpp = slide.mpp_source = None
    try:
        slide.mpp, slide.mpp_source = resolve_mpp_source(slide, path, mpp)
    except SlideError:
        if require_mpp:
            slide.close()
            raise
    slide.path = str(path)
    return slide
