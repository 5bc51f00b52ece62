"""Random-access batches: tile LMDB vs a folder of PNG files of the same tiles (item 9b).

The folder holds one PNG file per tile (the usual seed-style layout).  The LMDBs are what
the tiler writes: ``raw`` records (uncompressed RGB, format version 2: the toy config's
choice) and ``jpeg`` records (q90, the paper-scale default, ~8x smaller).  Prints tiles/s of
each and the ratios against the PNG folder (goal >= 5x).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.data import TileDataset, TileWriter, close_all

N_TILES, BATCH, N_BATCHES = 600, 64, 12


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
        with TileWriter(d / "raw.lmdb", {"encoding": "raw"}) as wr, \
                TileWriter(d / "jpeg.lmdb", {"encoding": "jpeg", "jpeg_quality": 90}) as wj:
            for i, t in enumerate(_tiles(N_TILES)):
                wr.add(t, {"i": i})
                wj.add(t, {"i": i})
                Image.fromarray(t).save(folder / f"tile_{i:06d}.png")
        files = sorted(folder.iterdir())
        dr, dj = TileDataset(d / "raw.lmdb"), TileDataset(d / "jpeg.lmdb")

        def png_folder(b):
            return np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in b])

        def lmdb_raw(b):
            return np.stack([dr[int(i)] for i in b])

        def lmdb_jpeg(b):
            return np.stack([dj[int(i)] for i in b])

        fns = (png_folder, lmdb_raw, lmdb_jpeg)
        for fn in fns:  # warm the page cache
            fn(batches[0])
        t_png, t_raw, t_jpeg = (_time(f, batches) for f in fns)
        size_png = sum(f.stat().st_size for f in files)
        size_raw = (d / "raw.lmdb" / "data.mdb").stat().st_size
        size_jpeg = (d / "jpeg.lmdb" / "data.mdb").stat().st_size
        close_all()
    n = BATCH * N_BATCHES
    out = {"png_folder_tiles_per_s": n / t_png, "lmdb_raw_tiles_per_s": n / t_raw,
           "lmdb_jpeg_tiles_per_s": n / t_jpeg, "ratio": t_png / t_raw, "ratio_jpeg": t_png / t_jpeg}
    print(f"{N_BATCHES} random batches of {BATCH} from {N_TILES} 256x256 tiles (warm page cache)")
    print(f"PNG folder  : {out['png_folder_tiles_per_s']:8.0f} tiles/s ({size_png / 2**20:.0f} MiB on disk)")
    print(f"LMDB (raw)  : {out['lmdb_raw_tiles_per_s']:8.0f} tiles/s ({size_raw / 2**20:.0f} MiB)")
    print(f"LMDB (JPEG) : {out['lmdb_jpeg_tiles_per_s']:8.0f} tiles/s ({size_jpeg / 2**20:.0f} MiB)")
    print(f"ratio LMDB(raw) / PNG folder: {out['ratio']:.1f}x (goal >= 5x); "
          f"LMDB(JPEG q90) / PNG folder: {out['ratio_jpeg']:.1f}x")
    return out


if __name__ == "__main__":
    main()
