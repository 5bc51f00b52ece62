"""Random-access batches: tile LMDB vs a folder of PNG files of the same tiles (item 9b).

The LMDB is what the tiler writes (JPEG q90 records in one memory-mapped file); the folder
holds one PNG file per tile (the usual seed-style layout).  Prints tiles/s of both and the
ratio (goal >= 5x); also a PNG-encoded LMDB, which separates the storage layout's share
from the encoding's.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.data import TileDataset, TileWriter

N_TILES, BATCH, N_BATCHES = 1000, 64, 15


def _tiles(n: int, seed: int = 0):
    """Textured tissue-like tiles (so that PNG / JPEG sizes are realistic, not trivial)."""
    rng = np.random.default_rng(seed)
    base = np.array([225, 140, 185])
    for _ in range(n):
        blocks = rng.integers(-50, 50, (16, 16, 3))
        t = base + np.kron(blocks, np.ones((16, 16, 1), int)) + rng.normal(0, 6, (256, 256, 3))
        yield np.clip(t, 0, 255).astype(np.uint8)


def _time(fn, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - t0


def main() -> dict:
    rng = np.random.default_rng(0)
    batches = [rng.choice(N_TILES, BATCH, replace=False) for _ in range(N_BATCHES)]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        folder = d / "png"
        folder.mkdir()
        with TileWriter(d / "jpeg.lmdb", {"encoding": "jpeg", "jpeg_quality": 90}) as wj, \
                TileWriter(d / "png.lmdb", {"encoding": "png"}) as wp:
            for i, t in enumerate(_tiles(N_TILES)):
                wj.add(t, {"i": i})
                wp.add(t, {"i": i})
                Image.fromarray(t).save(folder / f"tile_{i:06d}.png")
        files = sorted(folder.iterdir())
        dj, dp = TileDataset(d / "jpeg.lmdb"), TileDataset(d / "png.lmdb")

        def png_folder(b):
            return np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in b])

        def lmdb_jpeg(b):
            return np.stack([dj[int(i)] for i in b])

        def lmdb_png(b):
            return np.stack([dp[int(i)] for i in b])

        for fn in (png_folder, lmdb_jpeg, lmdb_png):  # warm the page cache
            fn(batches[0])
        t_png, t_lj, t_lp = (_time(f, batches) for f in (png_folder, lmdb_jpeg, lmdb_png))
        size_png = sum(f.stat().st_size for f in files)
        size_lj = (d / "jpeg.lmdb" / "data.mdb").stat().st_size
    n = BATCH * N_BATCHES
    out = {"png_folder_tiles_per_s": n / t_png, "lmdb_jpeg_tiles_per_s": n / t_lj,
           "lmdb_png_tiles_per_s": n / t_lp, "ratio": t_png / t_lj, "ratio_same_encoding": t_png / t_lp}
    print(f"{N_BATCHES} random batches of {BATCH} from {N_TILES} 256x256 tiles (warm page cache)")
    print(f"PNG folder : {out['png_folder_tiles_per_s']:.0f} tiles/s ({size_png / 2**20:.0f} MiB on disk)")
    print(f"LMDB (JPEG): {out['lmdb_jpeg_tiles_per_s']:.0f} tiles/s ({size_lj / 2**20:.0f} MiB)")
    print(f"LMDB (PNG) : {out['lmdb_png_tiles_per_s']:.0f} tiles/s")
    print(f"ratio LMDB(JPEG) / PNG folder: {out['ratio']:.1f}x (goal >= 5x); "
          f"same encoding (LMDB PNG / PNG folder): {out['ratio_same_encoding']:.1f}x")
    return out


if __name__ == "__main__":
    main()
