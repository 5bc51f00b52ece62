"""WSI tiling to LMDB (crossmodal.tiling) on real pyramidal TIFFs read by OpenSlide.

The unit tests write their own small slides with crossmodal.slides.write_svs; the last tests
run the rules through Snakemake (a user's sample sheet) and check the default toy run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from crossmodal import steps
from crossmodal.config import ConfigError
from crossmodal.data import TileDataset, TileStoreError, read_header
from crossmodal.slides import SlideError, write_flat_tiff, write_svs
from crossmodal.tiling import kept_origins, reference_tile_slide, tile_slide

REPO = Path(__file__).resolve().parents[1]
TISSUE = (0, 0, 2048, 2048)        # level-0 boxes (x0, y0, x1, y1) of the planted regions
PEN = (1536, 0, 2048, 1024)
FLAT = (2048, 0, 2560, 1024)


def make_slide_rgb(seed: int = 0) -> np.ndarray:
    """3072 x 2048 px at 0.25 µm/px: textured tissue (left), a blue pen stroke over part of
    it, a flat (low-contrast) stained patch, white glass elsewhere.  With 256-px tiles at
    0.5 µm/px (512 level-0 px) the grid is 6 x 4."""
    rng = np.random.default_rng(seed)
    h, w = 2048, 3072
    img = np.clip(rng.normal(242, 2, (h, w, 3)), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = TISSUE
    tissue = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    tissue[:] = (225, 140, 185)
    # coarse colour texture (varies channel by channel, so a channel swap or a shift shows)
    blocks = rng.integers(-60, 60, ((y1 - y0) // 32, (x1 - x0) // 32, 3))
    tissue = np.clip(tissue + np.kron(blocks, np.ones((32, 32, 1), int)), 0, 255).astype(np.uint8)
    # purple "nuclei"
    for cy, cx in rng.integers(8, 2040, (3000, 2)):
        tissue[cy - 6:cy + 6, cx - 6:cx + 6] = (90, 40, 130)
    img[y0:y1, x0:x1] = tissue
    x0, y0, x1, y1 = PEN
    img[y0:y1, x0:x1] = (30, 60, 200)
    x0, y0, x1, y1 = FLAT
    img[y0:y1, x0:x1] = (215, 150, 185)
    return img


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    return write_svs(tmp_path_factory.mktemp("slides") / "S1.svs", make_slide_rgb())


def garble_level(src: Path, dst: Path, level: int) -> Path:
    """A copy of ``src`` (written by ``write_svs``) whose pyramid ``level`` has corrupt JPEG
    tiles: an end-of-image marker in the middle of each tile's data, which libjpeg reports as
    "Corrupt JPEG data: premature end of data segment" and OpenSlide raises as an error.  The
    level's first tile stays intact (opening a slide decodes one pixel of the coarsest level)."""
    shutil.copyfile(src, dst)
    with tifffile.TiffFile(dst) as tf, openslide.OpenSlide(str(dst)) as s:
        page = [p for p in tf.pages if p.is_tiled][level]     # the pyramid levels, finest first
        assert (page.shape[1], page.shape[0]) == s.level_dimensions[level]
        spans = list(zip(page.dataoffsets, page.databytecounts))[1:]
    with open(dst, "r+b") as f:
        for offset, n in spans:
            f.seek(offset + n // 2)
            f.write(b"\xff\xd9")
    return dst


def _inside(x, y, size, box):
    return box[0] <= x and x + size <= box[2] and box[1] <= y and y + size <= box[3]


def test_kept_tiles_and_drop_reasons(slide, tmp_path):
    qc = tile_slide(slide, tmp_path / "t.lmdb", sample="S1")
    assert (qc["n_grid"], qc["size0"], qc["level"], qc["downsample"]) == (24, 512, 1, 2.0)
    assert qc["mpp"] == pytest.approx(0.25) and qc["resize"] is False
    origins = kept_origins(tmp_path / "t.lmdb")
    # every tissue tile without pen is kept; pen, flat and glass tiles are dropped for their reason
    expected = {(x, y) for x in range(0, 2048, 512) for y in range(0, 2048, 512)
                if not _inside(x, y, 512, PEN)}
    assert set(origins) == expected
    assert qc["kept"] == 14
    assert qc["dropped"] == {"background": 6, "pen": 2, "low_contrast": 2, "max_tiles": 0, "blur": 0}
    hdr = read_header(tmp_path / "t.lmdb")
    assert (hdr["count"], hdr["tile_size"], hdr["mpp"], hdr["sample"]) == (14, 256, 0.5, "S1")


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_stored_tile_equals_openslide_read_region(slide, tmp_path, fmt):
    tile_slide(slide, tmp_path / "t.lmdb", sample="S1", format=fmt)
    ds = TileDataset(tmp_path / "t.lmdb")
    assert ds.headers[0]["encoding"] == fmt
    osl = openslide.OpenSlide(str(slide))
    for i in range(0, len(ds), 3):
        m = ds.meta(i)
        assert (m["slide"], m["sample"], m["mpp"], m["tile_size"]) == (str(slide), "S1", 0.5, 256)
        ref = np.asarray(osl.read_region((m["x"], m["y"]), 0, (512, 512)).convert("RGB")
                         .resize((256, 256), Image.Resampling.BOX)).astype(int)
        got = ds[i].astype(int)
        assert got.shape == (256, 256, 3)
        err = np.abs(got - ref).mean()
        assert err < 4, f"tile {i} at {m['x']},{m['y']}: mean abs error {err:.1f}"
        # the tolerance is far below what a channel swap or a one-tile shift would give
        assert np.abs(got[..., ::-1] - ref).mean() > 5 * err + 5
        shifted = np.asarray(osl.read_region((m["x"] + 64, m["y"]), 0, (512, 512)).convert("RGB")
                             .resize((256, 256), Image.Resampling.BOX)).astype(int)
        assert np.abs(got - shifted).mean() > 3 * err + 3
    osl.close()


@pytest.mark.parametrize("kw", [{}, {"max_tiles": 5, "seed": 3}, {"tile_size": 224, "mask_max_dim": 1024}],
                         ids=["default", "sampled", "patch224"])
def test_kept_set_identical_to_reference_tiler(slide, tmp_path, kw):
    ours = tile_slide(slide, tmp_path / "ours.lmdb", **kw)
    ref = reference_tile_slide(slide, tmp_path / "ref.lmdb", **kw)
    assert kept_origins(tmp_path / "ours.lmdb") == kept_origins(tmp_path / "ref.lmdb")
    assert ours["dropped"] == ref["dropped"] and ours["kept"] == ref["kept"] > 0
    # same places, nearly the same pixels (read level + resize vs level 0 + PIL resize)
    a, b = TileDataset(tmp_path / "ours.lmdb"), TileDataset(tmp_path / "ref.lmdb")
    assert a[0].shape == (kw.get("tile_size", 256),) * 2 + (3,)
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() < 6


def test_max_tiles_sampling_is_reproducible(slide, tmp_path):
    sets = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        qc = tile_slide(slide, tmp_path / f"{name}.lmdb", max_tiles=6, seed=seed)
        assert qc["kept"] == 6 and qc["dropped"]["max_tiles"] == 8
        sets[name] = kept_origins(tmp_path / f"{name}.lmdb")
    assert sets["a"] == sets["b"] and sets["a"] != sets["c"]


def test_blur_filter_when_enabled(slide, tmp_path):
    qc = tile_slide(slide, tmp_path / "t.lmdb", min_sharpness=1e9)
    assert qc["kept"] == 0 and qc["dropped"]["blur"] == 14


def test_patch224_and_a_magnification_between_levels(slide, tmp_path):
    qc = tile_slide(slide, tmp_path / "p.lmdb", tile_size=224)
    assert (qc["size0"], qc["level"], qc["resize"]) == (448, 1, False)
    assert TileDataset(tmp_path / "p.lmdb")[0].shape == (224, 224, 3)
    # 0.6 µm/px lies between level 1 (0.5) and level 2 (1.0): read level 1, resize 307 -> 256 px
    qc = tile_slide(slide, tmp_path / "q.lmdb", target_mpp=0.6)
    assert (qc["size0"], qc["level"], qc["resize"]) == (614, 1, True)
    ds = TileDataset(tmp_path / "q.lmdb")
    m = ds.meta(0)
    osl = openslide.OpenSlide(str(slide))
    ref = np.asarray(osl.read_region((m["x"], m["y"]), 0, (614, 614)).convert("RGB")
                     .resize((256, 256), Image.Resampling.BOX)).astype(int)
    osl.close()
    assert ds[0].shape == (256, 256, 3) and np.abs(ds[0].astype(int) - ref).mean() < 6


# --- bad input -------------------------------------------------------------------------------


def test_missing_file_named(tmp_path):
    with pytest.raises(SlideError, match=r"nothere\.svs: file not found"):
        tile_slide(tmp_path / "nothere.svs", tmp_path / "x.lmdb")
    assert not (tmp_path / "x.lmdb").exists()


def test_corrupt_file_named(slide, tmp_path):
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(slide.read_bytes()[:20000])
    with pytest.raises(SlideError, match=r"truncated\.svs: corrupt"):
        tile_slide(bad, tmp_path / "x.lmdb")
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide" * 100)
    with pytest.raises(SlideError, match=r"junk\.svs: corrupt or not a whole-slide image"):
        tile_slide(junk, tmp_path / "y.lmdb")
    assert not (tmp_path / "x.lmdb").exists() and not (tmp_path / "y.lmdb").exists()


def test_non_pyramidal_tiff_named(tmp_path):
    flat = write_flat_tiff(tmp_path / "flat.tif", make_slide_rgb()[:1024, :1024])
    with pytest.raises(SlideError, match=r"flat\.tif: non-pyramidal TIFF"):
        tile_slide(flat, tmp_path / "x.lmdb")


def test_missing_mpp_is_an_error_unless_given(tmp_path):
    # neither MPP nor AppMag (objective power): only the sample sheet can say
    path = write_svs(tmp_path / "nompp.svs", make_slide_rgb()[:1024, :2048], mpp=None, app_mag=None)
    with pytest.raises(SlideError, match=r"nompp\.svs: no microns-per-pixel metadata.*sample sheet"):
        tile_slide(path, tmp_path / "x.lmdb")
    qc = tile_slide(path, tmp_path / "y.lmdb", mpp=0.25)
    assert qc["mpp"] == 0.25 and qc["kept"] > 0 and qc["size0"] == 512
    assert qc["mpp_source"] == "sample_sheet"


@pytest.mark.parametrize("app_mag, mpp0, size0", [(40, 0.25, 512), (20, 0.5, 256)])
def test_missing_mpp_falls_back_to_the_objective_power_with_a_warning(tmp_path, app_mag, mpp0, size0):
    """Aperio SVS without ``MPP`` but with ``AppMag`` (seen in TCGA): nominal 10 / AppMag µm/px,
    as the RNA-GAN public tiler assumes, and a warning in the QC."""
    path = write_svs(tmp_path / "nompp.svs", make_slide_rgb()[:1024, :2048], mpp=None, app_mag=app_mag)
    with openslide.OpenSlide(str(path)) as s:
        assert "openslide.mpp-x" not in s.properties
        assert s.properties["openslide.objective-power"] == str(app_mag)
    qc = tile_slide(path, tmp_path / "x.lmdb")
    assert (qc["mpp"], qc["mpp_source"], qc["size0"]) == (pytest.approx(mpp0), "objective_power", size0)
    assert qc["objective_power"] == str(app_mag)
    assert any("nominal value of objective power" in w for w in qc["warnings"])
    assert read_header(tmp_path / "x.lmdb")["slide_mpp_source"] == "objective_power"
    # the sample sheet still wins
    qc = tile_slide(path, tmp_path / "y.lmdb", mpp=0.2)
    assert (qc["mpp"], qc["mpp_source"]) == (0.2, "sample_sheet")


@pytest.mark.parametrize("tiler, kw, level", [
    (tile_slide, {}, 1),                                # the decision level (also the read level)
    (tile_slide, {"mask_max_dim": 1024}, 1),            # decisions on level 2; tiles read from 1
    (reference_tile_slide, {}, 1),                      # the decision level
    (reference_tile_slide, {"mask_max_dim": 1024}, 0),  # tiles read from level 0
], ids=["decision-level", "read-level", "reference-decision-level", "reference-level-0"])
def test_corrupt_pixel_data_names_the_slide(slide, tmp_path, tiler, kw, level):
    bad = garble_level(slide, tmp_path / "bad.svs", level)
    with pytest.raises(SlideError, match=rf"^slide {re.escape(str(bad))}: cannot read level {level}, \d+ x \d+ px "
                                         r"at level-0 \(\d+, \d+\): Corrupt JPEG data"):
        tiler(bad, tmp_path / "t.lmdb", **kw)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.svs"]


def test_corrupt_thumbnail_level_names_the_slide(slide, tmp_path):
    from crossmodal.tiling import render_thumbnail

    # a 256-px thumbnail of the 3072 x 2048 slide is read from level 2 (downsample 4)
    bad = garble_level(slide, tmp_path / "bad.svs", 2)
    qc = tile_slide(bad, tmp_path / "t.lmdb")        # decisions and tiles come from level 1
    with pytest.raises(SlideError, match=rf"^slide {re.escape(str(bad))}: cannot read a 256-px thumbnail: Corrupt JPEG data"):
        render_thumbnail(bad, qc, kept_origins(tmp_path / "t.lmdb"), tmp_path / "thumb.png", max_dim=256)
    assert not list(tmp_path.glob("*thumb*"))


def test_transparent_pixels_are_background_not_black(slide, tmp_path):
    """OpenSlide returns RGBA (0, 0, 0, 0) outside the scanned area (beyond a level's edge,
    unscanned Aperio tiles); they must read as the slide's background (white), not as black
    (which the pen rule takes for ink and which would end up in stored tiles)."""
    from crossmodal.tiling import _read_rgb

    with openslide.OpenSlide(str(slide)) as s:
        w0, h0 = s.dimensions
        raw = np.asarray(s.read_region((w0 - 64, 0), 0, (128, 16)))
        assert (raw[:, 64:] == 0).all()                      # what OpenSlide gives out there
        rgb = _read_rgb(s, (w0 - 64, 0), 0, (128, 16))
        assert rgb.shape == (16, 128, 3) and rgb.dtype == np.uint8
        assert (rgb[:, 64:] == 255).all()
        np.testing.assert_array_equal(rgb[:, :64], raw[:, :64, :3])
        ds = s.level_downsamples[1]
        lev = _read_rgb(s, (0, h0 - 32), 1, (int(w0 / ds) + 8, 32))
        assert (lev[:, -8:] == 255).all() and (lev[-int(16 / ds):, :] == 255).all()


def test_slide_without_tissue_gives_empty_lmdb_and_warning(tmp_path):
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(243, 2, (1536, 1536, 3)), 0, 255).astype(np.uint8)
    path = write_svs(tmp_path / "glass.svs", glass)
    qc = tile_slide(path, tmp_path / "g.lmdb")
    assert qc["kept"] == 0 and qc["dropped"]["background"] == qc["n_grid"] == 9
    assert any("no tissue" in w for w in qc["warnings"])
    assert read_header(tmp_path / "g.lmdb")["count"] == 0 and len(TileDataset(tmp_path / "g.lmdb")) == 0


def test_exception_midway_leaves_no_lmdb(slide, tmp_path, monkeypatch):
    import crossmodal.data as data

    real, calls = data.encode_tile, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) > 4:
            raise OSError("disk full (injected)")
        return real(*a, **k)

    monkeypatch.setattr(data, "encode_tile", failing)
    with pytest.raises(OSError, match="injected"):
        tile_slide(slide, tmp_path / "t.lmdb")
    assert list(tmp_path.iterdir()) == []


def test_sigkill_midway_leaves_nothing_complete(slide, tmp_path):
    out = tmp_path / "k.lmdb"
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO / 'workflow')!r})
import crossmodal.data as data
real, n = data.TileWriter.add, [0]
def add(self, *a, **k):
    n[0] += 1
    if n[0] == 6:
        self._txn.commit()   # tiles already on disk, header not yet written
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *a, **k)
data.TileWriter.add = add
from crossmodal.tiling import tile_slide
tile_slide({str(slide)!r}, {str(out)!r})
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr
    assert not out.exists()
    leftovers = list(tmp_path.glob(".tmp-k.lmdb-*"))
    assert leftovers, "expected the killed writer's temporary directory"
    for d in leftovers:
        assert (d / "data.mdb").exists()
        with pytest.raises(TileStoreError, match="no header"):
            TileDataset([d])


# --- steps and rules -------------------------------------------------------------------------


def test_tile_slide_step_writes_qc_and_thumbnail(slide, tmp_path):
    out = {"lmdb": str(tmp_path / "S1.lmdb"), "qc": str(tmp_path / "S1.qc.json"),
           "thumb": str(tmp_path / "S1.thumb.png")}
    steps.run("tile_slide", {"slide": str(slide)}, out,
              {"preset": {"tile_size": 256, "max_tiles": 10}, "seed": 0, "mpp": float("nan"),
               "wildcards": {"sample": "S1", "preset": "tile256"}})
    qc = json.loads(Path(out["qc"]).read_text())
    assert qc["kept"] == 10 and qc["sample"] == "S1" and qc["preset"] == "tile256"
    assert read_header(out["lmdb"])["preset"] == "tile256"
    img = Image.open(out["thumb"])
    assert img.size[0] > 200 and (tmp_path / "S1.thumb.pdf").exists()
    steps.run("summarise_tiling", {"qc": [out["qc"]]},
              {"table": str(tmp_path / "qc.tsv"), "figure": str(tmp_path / "qc.png")},
              {"wildcards": {"preset": "tile256"}})
    import pandas as pd

    t = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert t.loc[0, "kept"] == 10 and t.loc[0, "dropped_max_tiles"] == 4 and t.loc[0, "dropped_pen"] == 2


def test_tile_slide_step_is_all_or_nothing(slide, tmp_path):
    """The thumbnail reads the slide again after the tiling; when that read fails (corrupt JPEG
    tiles in the level a 256-px thumbnail comes from) the step - run through the steps API, as
    the command line does, without Snakemake's clean-up of a failed job - leaves neither the
    LMDB nor the QC JSON at its output paths, and a rerun leaves an earlier complete set intact."""
    bad = garble_level(slide, tmp_path / "bad.svs", 2)
    out = tmp_path / "out"
    outputs = {"lmdb": str(out / "S1.lmdb"), "qc": str(out / "S1.qc.json"), "thumb": str(out / "S1.thumb.png")}
    params = {"preset": {"max_tiles": 10}, "wildcards": {"sample": "S1", "preset": "tile256"}}
    with pytest.raises(SlideError, match=rf"^slide {re.escape(str(bad))}: cannot read a 256-px thumbnail"):
        steps.run("tile_slide", {"slide": str(bad)}, outputs, {**params, "thumbnail_size": 256})
    assert list(out.glob("*")) == []
    # a 1024-px thumbnail comes from level 1, which is intact: the same step writes every output
    steps.run("tile_slide", {"slide": str(bad)}, outputs, {**params, "thumbnail_size": 1024})
    names = ["S1.lmdb", "S1.qc.json", "S1.thumb.pdf", "S1.thumb.png"]
    assert sorted(p.name for p in out.glob("*")) == names
    before = {n: (out / n).stat().st_mtime_ns for n in names}
    with pytest.raises(SlideError, match="thumbnail"):
        steps.run("tile_slide", {"slide": str(bad)}, outputs, {**params, "thumbnail_size": 256})
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*")} == before
    assert read_header(out / "S1.lmdb")["count"] == 10


@pytest.mark.parametrize("preset, match", [
    ({"tile_size": "256"}, r"tile_slide preset: tile_size: '256' is not of type 'integer'"),
    ({"max_background": 5}, r"tile_slide preset: max_background: 5 is greater than the maximum of 1"),
    ({"max_background": float("nan")}, r"tile_slide preset: max_background: nan is not a finite number"),
    ({"tile_sise": 256}, r"tile_slide preset: unknown key tile_sise \(allowed here: .*tile_size"),
], ids=["string", "out-of-range", "nan", "unknown"])
def test_step_preset_is_validated_against_the_schema(slide, tmp_path, preset, match):
    """A preset given through the steps API or the command line has not been through the
    config's validation: it is checked against the schema's preset definition, and the error
    names the key before anything is written (a string tile size used to fail in the grid
    arithmetic; max_background 5 ran with the background filter off)."""
    out = {"lmdb": str(tmp_path / "S1.lmdb"), "qc": str(tmp_path / "S1.qc.json")}
    with pytest.raises(ConfigError, match=match):
        steps.run("tile_slide", {"slide": str(slide)}, out, {"preset": preset})
    assert list(tmp_path.glob("*")) == []


def test_step_preset_takes_integral_floats_for_integers(slide, tmp_path):
    # JSON Schema counts 5.0 as an integer; numpy's sampling (max_tiles) refused it
    out = {"lmdb": str(tmp_path / "S1.lmdb"), "qc": str(tmp_path / "S1.qc.json")}
    qc = steps.run("tile_slide", {"slide": str(slide)}, out,
                   json.loads('{"preset": {"max_tiles": 5.0, "tile_size": 256.0}}'))
    assert qc["kept"] == 5 and qc["dropped"]["max_tiles"] == 9
    assert type(read_header(out["lmdb"])["tile_size"]) is int


def test_cli_names_a_missing_output_before_tiling(slide, tmp_path):
    """``python -m crossmodal tile_slide`` without ``--output qc=...`` used to fail with a bare
    KeyError after writing the LMDB."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", "crossmodal", "tile_slide", "-i", f"slide={slide}",
                        "--output", "lmdb=cli/s.lmdb"], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode != 0
    assert "step tile_slide: missing output qc (required outputs: lmdb, qc; given: lmdb)" in p.stderr
    assert list(tmp_path.glob("*")) == []


def test_summarise_tiling_names_a_damaged_or_missing_qc(slide, tmp_path):
    """A truncated QC JSON used to fail with a bare JSONDecodeError naming no file."""
    text = json.dumps(tile_slide(slide, tmp_path / "S1.lmdb", max_tiles=2), indent=2)
    good, cut, other = tmp_path / "S1.qc.json", tmp_path / "S2.qc.json", tmp_path / "S3.qc.json"
    good.write_text(text)
    cut.write_text(text[:len(text) // 2])          # a half-written or half-copied file
    other.write_text("[1, 2]")
    out = {"table": str(tmp_path / "r/qc.tsv"), "figure": str(tmp_path / "r/qc.png")}
    for bad, match in [(cut, "not valid JSON"), (other, "not a tiling QC file"),
                       (tmp_path / "S4.qc.json", "not found")]:
        with pytest.raises(ValueError if bad.exists() else FileNotFoundError,
                           match=rf"^tiling QC {re.escape(str(bad))}: {match}.*rule tile_slide writes it"):
            steps.run("summarise_tiling", {"qc": [str(good), str(bad)]}, out, {})
    assert not (tmp_path / "r").exists()
    steps.run("summarise_tiling", {"qc": [str(good)]}, out, {})
    assert (tmp_path / "r/qc.tsv").exists()


def test_rules_on_a_users_sample_sheet(tmp_path):
    """tile_slide + summarise_tiling through Snakemake on a user's sheet (own slides; mpp from
    the sheet for a slide without metadata).  Only common.smk + tiling.smk are included, so
    the test does not depend on the other stages' rules."""
    import os

    import pandas as pd
    import yaml

    rgb = make_slide_rgb(1)[:1024]
    write_svs(tmp_path / "A.svs", rgb)
    write_svs(tmp_path / "B.svs", rgb, mpp=None, app_mag=None)
    (tmp_path / "samples.tsv").write_text(
        "patient\tsample\tcohort\tdataset\tslide\texpression\texpression_format\tmpp\n"
        "P1\tA\tTCGA-LUAD\ttcga\tA.svs\t\t\t\n"
        "P2\tB\tTCGA-LUAD\ttcga\tB.svs\t\t\t0.25\n")
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["cohort"] = {"source": "sheet", "samples": "samples.tsv"}
    cfg["tiling"]["presets"]["tile256"]["max_tiles"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    rules = REPO / "workflow/rules"
    (tmp_path / "Snakefile").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'workflow')!r})\n"
        f"configfile: 'config.yaml'\n"
        f"include: {str(rules / 'common.smk')!r}\ninclude: {str(rules / 'tiling.smk')!r}\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    p = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--snakefile", "Snakefile",
                        "--cores", "1", "results/tiles/tile256/qc.tsv", "results/tiles/tile256/A.thumb.png"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    t = pd.read_csv(tmp_path / "results/tiles/tile256/qc.tsv", sep="\t").set_index("sample")
    assert list(t.index) == ["A", "B"] and (t["kept"] == 3).all()
    assert t.loc["B", "mpp"] == 0.25
    ds = TileDataset([tmp_path / "results/tiles/tile256/A.lmdb", tmp_path / "results/tiles/tile256/B.lmdb"])
    assert len(ds) == 6 and list(ds.labels) == ["A"] * 3 + ["B"] * 3
    assert (tmp_path / "logs/tile_slide/tile256/A.log").exists()
    assert (tmp_path / "benchmarks/tile_slide/tile256/B.tsv").exists()


def test_toy_run_tiles_every_slide(toy_run):
    import pandas as pd

    for preset, size in [("tile256", 256), ("patch224", 224)]:
        t = pd.read_csv(toy_run / f"results/tiles/{preset}/qc.tsv", sep="\t")
        assert len(t) >= 40
        assert (toy_run / f"results/tiles/{preset}/qc.png").exists()
        empty = t[t["kept"] == 0]
        # the toy cohort has exactly one slide without tissue: empty LMDB + warning, no crash
        assert len(empty) == 1 and "no tissue" in empty["warnings"].iloc[0]
        full = t[t["kept"] > 0]
        ds = TileDataset([toy_run / f"results/tiles/{preset}/{s}.lmdb" for s in full["sample"]])
        assert len(ds) == full["kept"].sum() and ds[len(ds) - 1].shape == (size, size, 3)
    assert (toy_run / f"results/tiles/tile256/{t['sample'].iloc[0]}.thumb.png").exists()
