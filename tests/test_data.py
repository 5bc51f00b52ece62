"""The tile LMDB hand-over: TileWriter, read_header, TileDataset (crossmodal.data)."""
from __future__ import annotations

import json

import lmdb
import numpy as np
import pytest

from crossmodal.data import (HEADER_KEY, TileDataset, TileStoreError, TileWriter, _open_env, read_header,
                             shared_env, tile_key, unpack_record)


def _tiles(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write(path, tiles, sample, encoding="png", **hdr):
    with TileWriter(path, {"sample": sample, "mpp": 0.5, "encoding": encoding, **hdr}) as w:
        for i, t in enumerate(tiles):
            w.add(t, {"sample": sample, "slide": f"{sample}.svs", "x": 64 * i, "y": 0,
                      "mpp": 0.5, "tile_size": t.shape[0]})
    return path


def test_png_roundtrip_is_exact_and_rgb(tmp_path):
    tiles = _tiles(5)
    tiles[0] = 0
    tiles[0, :, :, 0] = 255  # pure red: a BGR mix-up would read back blue
    p = _write(tmp_path / "a.lmdb", tiles, "A")
    ds = TileDataset(p)
    assert len(ds) == 5
    for i in range(5):
        assert ds[i].dtype == np.uint8 and ds[i].shape == (32, 32, 3)
        np.testing.assert_array_equal(ds[i], tiles[i])
    assert tuple(ds[0][0, 0]) == (255, 0, 0)
    m = ds.meta(3)
    assert (m["sample"], m["x"], m["y"], m["mpp"], m["tile_size"], m["index"]) == ("A", 192, 0, 0.5, 32, 3)
    hdr = read_header(p)
    assert hdr["count"] == 5 and hdr["complete"] is True and hdr["tile_size"] == 32
    assert hdr["version"] == 2 and hdr["encoding"] == "png" and hdr["key_format"] == "%08d"


def test_raw_encoding_is_exact_documented_and_writable(tmp_path):
    tiles = _tiles(4, size=24)
    tiles[1] = 0
    tiles[1, :, :, 0] = 255
    p = _write(tmp_path / "r.lmdb", tiles, "R", encoding="raw")
    ds = TileDataset(p)
    for i in range(4):
        got = ds[i]
        assert got.shape == (24, 24, 3) and got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, tiles[i])
    assert tuple(ds[1][5, 5]) == (255, 0, 0)
    assert ds.meta(2)["x"] == 128 and read_header(p)["encoding"] == "raw"
    # documented layout: row-major (y, x, channel) uint8 bytes after the metadata
    with shared_env(p).begin() as txn:
        meta, img = unpack_record(txn.get(tile_key(3)))
    assert meta["index"] == 3 and img == tiles[3].tobytes()


def _rewrite_header(path, **changes):
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        hdr = json.loads(txn.get(HEADER_KEY))
        hdr.update(changes)
        txn.put(HEADER_KEY, json.dumps(hdr).encode())
    env.close()


def test_version_1_stores_are_still_read_and_unknown_versions_named(tmp_path):
    from crossmodal.data import close_all

    tiles = _tiles(2)
    v1 = _write(tmp_path / "v1.lmdb", tiles, "V1")
    _rewrite_header(v1, version=1)  # what the version-1 writer produced (png / jpeg records)
    np.testing.assert_array_equal(TileDataset(v1)[1], tiles[1])
    close_all()
    raw1 = _write(tmp_path / "raw1.lmdb", tiles, "X", encoding="raw")
    _rewrite_header(raw1, version=1)
    with pytest.raises(TileStoreError, match="raw1.lmdb.*encoding 'raw'.*version 1"):
        TileDataset(raw1)
    v9 = _write(tmp_path / "v9.lmdb", tiles, "V9")
    _rewrite_header(v9, version=9)
    with pytest.raises(TileStoreError, match="v9.lmdb.*format version 9"):
        read_header(v9)
    close_all()


def test_raw_layout_is_documented_format(tmp_path):
    """Readers in other languages rely on the documented key / value layout."""
    p = _write(tmp_path / "a.lmdb", _tiles(2), "A")
    env = lmdb.open(str(p), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        assert set(keys) == {HEADER_KEY, b"00000000", b"00000001"} and tile_key(1) == b"00000001"
        meta, img = unpack_record(txn.get(b"00000001"))
        assert json.loads(txn.get(HEADER_KEY))["count"] == 2
    env.close()
    assert meta["index"] == 1 and img[:8] == b"\x89PNG\r\n\x1a\n"


def test_jpeg_tiles_close_to_input(tmp_path):
    smooth = np.zeros((1, 64, 64, 3), np.uint8)
    smooth[0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None]
    smooth[0, :, :, 2] = 40
    p = _write(tmp_path / "j.lmdb", smooth, "J", encoding="jpeg", jpeg_quality=90)
    got = TileDataset(p)[0].astype(int)
    assert np.abs(got - smooth[0]).mean() < 3


def test_encoded_tiles_copy_between_stores_without_recompression(tmp_path):
    """TileDataset.encoded + TileWriter.add_encoded: a JPEG tile moves to another LMDB byte for
    byte (a decode + encode would compress it twice); a raw store or unknown size is refused."""
    src = _write(tmp_path / "a.lmdb", _tiles(3), "A", encoding="jpeg", jpeg_quality=90)
    ds = TileDataset(src)
    with TileWriter(tmp_path / "b.lmdb", {"encoding": "jpeg", "tile_size": 32}) as w:
        for i in (2, 0):
            meta, image, enc = ds.encoded(i)
            assert enc == "jpeg" and meta["x"] == 64 * i
            w.add_encoded(image, meta)
    out = TileDataset(tmp_path / "b.lmdb")
    assert out.encoded(0)[1] == ds.encoded(2)[1] and np.array_equal(out[1], ds[0])
    assert [out.meta(i)["index"] for i in range(2)] == [0, 1]
    with pytest.raises(ValueError, match="compressed encoding"):
        with TileWriter(tmp_path / "c.lmdb", {"encoding": "raw", "tile_size": 32}) as w:
            w.add_encoded(ds.encoded(0)[1])
    assert not (tmp_path / "c.lmdb").exists()


def test_many_lmdbs_map_index_to_sample(tmp_path):
    a = _write(tmp_path / "a.lmdb", _tiles(3, seed=1), "A")
    b = _write(tmp_path / "b.lmdb", _tiles(4, seed=2), "B")
    e = _write(tmp_path / "e.lmdb", [], "E")  # an empty slide (no tissue) is allowed
    ds = TileDataset([a, e, b])
    assert len(ds) == 7
    assert list(ds.labels) == ["A"] * 3 + ["B"] * 4
    assert list(ds.source_index) == [0, 0, 0, 2, 2, 2, 2]
    np.testing.assert_array_equal(ds[3], _tiles(4, seed=2)[0])
    np.testing.assert_array_equal(ds[-1], _tiles(4, seed=2)[3])
    assert ds.meta(4)["sample"] == "B" and ds.meta(4)["lmdb"] == str(b)
    with pytest.raises(IndexError):
        ds[7]


def test_transform_is_applied(tmp_path):
    p = _write(tmp_path / "a.lmdb", _tiles(2), "A")
    ds = TileDataset([p], transform=lambda x: x.mean())
    assert ds[1] == pytest.approx(_tiles(2)[1].mean())


def test_dataloader_with_two_workers(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    tiles = _tiles(10, seed=3)
    p = _write(tmp_path / "a.lmdb", tiles, "A")
    q = _write(tmp_path / "b.lmdb", tiles[::-1].copy(), "B")
    ds = TileDataset([p, q], transform=lambda x: torch.from_numpy(x.copy()).permute(2, 0, 1))
    ds[0]  # an environment opened in the parent must not leak into the workers
    dl = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got = torch.cat(list(dl)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, np.concatenate([tiles, tiles[::-1]]))


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "x.lmdb"
    with pytest.raises(RuntimeError, match="boom"):
        with TileWriter(out, {"encoding": "png"}) as w:
            for t in _tiles(3):
                w.add(t, {})
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_lmdb_is_refused_naming_path(tmp_path):
    bad = tmp_path / "half.lmdb"
    env = lmdb.open(str(bad), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"00000000", b"x")
    env.close()
    with pytest.raises(TileStoreError, match="half.lmdb.*no header"):
        TileDataset([bad])
    with pytest.raises(TileStoreError, match="nothere.lmdb.*not found"):
        read_header(tmp_path / "nothere.lmdb")
    env = lmdb.open(str(bad), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(HEADER_KEY, json.dumps({"format": "crossmodal-tiles", "version": 1, "complete": False}).encode())
    env.close()
    with pytest.raises(TileStoreError, match="half.lmdb.*not marked complete"):
        read_header(bad)


def test_truncated_data_file_is_refused_naming_path(tmp_path):
    """A data.mdb cut short keeps its meta pages, so LMDB opens it; reading a tile past the
    end would kill the process with SIGBUS.  The store is refused when opened instead."""
    import os

    good = _write(tmp_path / "good.lmdb", _tiles(40, size=64), "s", encoding="raw")
    size = os.path.getsize(good / "data.mdb")
    for name, keep in (("half.lmdb", size // 2), ("8k.lmdb", 8192)):
        bad = tmp_path / name
        bad.mkdir()
        (bad / "data.mdb").write_bytes((good / "data.mdb").read_bytes()[:keep])
        with pytest.raises(TileStoreError, match=rf"{name}: data.mdb truncated \({keep} of {size} bytes"):
            TileDataset([bad])
        with pytest.raises(TileStoreError, match=f"{name}: data.mdb truncated"):
            read_header(bad)
    assert len(TileDataset([good])) == 40


def test_writer_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="tile_size is 32"):
        with TileWriter(tmp_path / "a.lmdb", {"tile_size": 32}) as w:
            w.add(_tiles(1, size=16)[0], {})
    with pytest.raises(ValueError, match="RGB uint8"):
        with TileWriter(tmp_path / "b.lmdb", {}) as w:
            w.add(np.zeros((8, 8), np.uint8), {})
    assert not (tmp_path / "a.lmdb").exists() and not (tmp_path / "b.lmdb").exists()


def test_full_map_grows_instead_of_failing(tmp_path, caplog):
    """A store larger than the writer's initial LMDB map (MapFullError) grows the map and
    keeps every tile, including the uncommitted ones replayed after the resize."""
    import logging

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (40, 128, 128, 3), dtype=np.uint8)   # 40 x 48 KiB raw
    with caplog.at_level(logging.INFO, logger="crossmodal.data"):
        with TileWriter(tmp_path / "g.lmdb", {"encoding": "raw", "mpp": None}, commit_every=16,
                        map_size=256 << 10) as w:
            for k, t in enumerate(tiles):
                w.add(t, {"k": k})
    assert w.map_size > 256 << 10
    assert any("map full, growing" in r.getMessage() for r in caplog.records)
    ds = TileDataset([tmp_path / "g.lmdb"])
    assert len(ds) == 40 and read_header(tmp_path / "g.lmdb")["count"] == 40
    for k in (0, 15, 16, 39):
        np.testing.assert_array_equal(ds[k], tiles[k])
        assert ds.meta(k)["k"] == k


def test_readers_map_only_what_the_store_holds(tmp_path):
    """Read-only environments map the data written, not the writer's map size: a process
    reading thousands of slide LMDBs must not reserve a writer-sized map for each."""
    import os

    with TileWriter(tmp_path / "r.lmdb", {"encoding": "png", "mpp": None}, map_size=1 << 34) as w:
        w.add(np.zeros((16, 16, 3), np.uint8))
    env = _open_env(tmp_path / "r.lmdb")
    try:
        assert env.info()["map_size"] < 1 << 24
        maps = [ln for ln in open(f"/proc/{os.getpid()}/maps") if str(tmp_path / "r.lmdb") in ln]
        assert maps and all(int(e, 16) - int(b, 16) < 1 << 24
                            for b, e in (ln.split()[0].split("-") for ln in maps))
    finally:
        env.close()
