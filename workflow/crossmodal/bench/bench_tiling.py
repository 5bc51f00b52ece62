"""Our tiler vs the seed-style reference tiler on the same slide (issue 2, item 9a).

Reference (crossmodal.tiling.reference_tile_slide): per-tile ``read_region`` at level 0, PIL
resize, per-tile mask read.  Asserts identical kept-tile sets, prints tiles/s of both, the
ratio (goal >= 3x) and the raw decode floor: every level-0 JPEG tile read once.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from crossmodal.slides import write_svs
from crossmodal.tiling import kept_origins, reference_tile_slide, tile_slide

SIDE = 6144      # level-0 pixels (0.25 µm/px): 12 x 12 tiles of 256 px at 0.5 µm/px


def make_slide(path: Path, side: int = SIDE, seed: int = 0) -> Path:
    """A textured 'tissue' ellipse with nuclei on white glass, plus a blue pen stroke."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(242, 2, (side, side, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:side, 0:side]
    ell = ((xx - side / 2) / (side * 0.42)) ** 2 + ((yy - side / 2) / (side * 0.36)) ** 2 < 1
    blocks = rng.integers(-50, 50, (side // 32, side // 32, 3))
    tex = np.clip(np.array([225, 140, 185]) + np.kron(blocks, np.ones((32, 32, 1), int)), 0, 255)
    img[ell] = tex[ell]
    for cy, cx in rng.integers(8, side - 8, (side * side // 4000, 2)):
        if ell[cy, cx]:
            img[cy - 5:cy + 5, cx - 5:cx + 5] = (90, 40, 130)
    img[side // 3: side // 3 + 300, side // 4: 3 * side // 4] = (30, 60, 200)
    return write_svs(path, img)


def decode_floor(slide_path: Path) -> tuple[int, float]:
    """Read every level-0 256x256 JPEG tile once: (tiles, seconds)."""
    import openslide

    s = openslide.OpenSlide(str(slide_path))
    w, h = s.dimensions
    t0 = time.perf_counter()
    n = 0
    for y in range(0, h, 256):
        for x in range(0, w, 256):
            s.read_region((x, y), 0, (256, 256))
            n += 1
    dt = time.perf_counter() - t0
    s.close()
    return n, dt


def _best_of(fn, slide, out: Path, repeats: int = 3) -> tuple[dict, float, float]:
    """(QC dict, best wall seconds, best CPU seconds) over ``repeats`` runs: the machine this
    runs on is shared, so the minimum is the least disturbed measurement; CPU time is printed
    too because wall time on a loaded machine mostly measures the other processes."""
    import shutil

    walls, cpus = [], []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        qc = fn(slide, out)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return qc, min(walls), min(cpus)


def main() -> dict:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        slide = make_slide(d / "bench.svs")
        tile_slide(slide, d / "warm.lmdb")          # warm imports and page cache
        ours, t_ours, c_ours = _best_of(tile_slide, slide, d / "ours.lmdb")
        ref, t_ref, c_ref = _best_of(reference_tile_slide, slide, d / "ref.lmdb")
        same = kept_origins(d / "ours.lmdb") == kept_origins(d / "ref.lmdb")
        assert same and ours["dropped"] == ref["dropped"], "kept-tile sets differ"
        n0, dt0 = decode_floor(slide)
    out = {
        "slide": f"{SIDE}x{SIDE} px at 0.25 µm/px, {ours['n_grid']} grid tiles, {ours['kept']} kept",
        "ours_tiles_per_s": ours["kept"] / t_ours,
        "reference_tiles_per_s": ref["kept"] / t_ref,
        "ratio": t_ref / t_ours,
        "ratio_cpu": c_ref / c_ours,
        "floor_level0_tiles_per_s": n0 / dt0,
        # the floor in output tiles: every 0.5 µm/px tile needs 4 level-0 JPEG tiles
        "floor_output_tiles_per_s": n0 / dt0 / 4,
    }
    print(f"slide: {out['slide']}; dropped {ours['dropped']}")
    print(f"kept-tile sets identical: {same}")
    print(f"ours      : {ours['kept']} tiles in {t_ours:.2f} s = {out['ours_tiles_per_s']:.0f} tiles/s "
          f"({c_ours:.2f} s CPU; best of 3)")
    print(f"reference : {ref['kept']} tiles in {t_ref:.2f} s = {out['reference_tiles_per_s']:.0f} tiles/s "
          f"({c_ref:.2f} s CPU; best of 3)")
    print(f"ratio     : {out['ratio']:.1f}x wall, {out['ratio_cpu']:.1f}x CPU (goal >= 3x)")
    print(f"decode floor: {n0} level-0 256-px tiles in {dt0:.2f} s = {out['floor_level0_tiles_per_s']:.0f} tiles/s "
          f"(= {out['floor_output_tiles_per_s']:.0f} output tiles/s if read from level 0)")
    return out


if __name__ == "__main__":
    main()
