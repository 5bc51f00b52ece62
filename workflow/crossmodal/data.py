"""Tile LMDBs: the hand-over between tiling / generators and every image model.

Format (version 2; version 1 is read too) - one LMDB environment *directory* per slide (or
per generated set),
e.g. ``results/tiles/<preset>/<sample>.lmdb/{data.mdb,lock.mdb}``:

* key ``b"__header__"`` -> UTF-8 JSON object: ``format`` ("crossmodal-tiles"), ``version`` (2),
  ``complete`` (true; written last, in the final transaction), ``count`` (number of tiles),
  ``tile_size`` (edge in px), ``mpp`` (µm/px of the stored tiles, or null for generated tiles
  without a physical scale), ``encoding`` ("raw" | "jpeg" | "png"), ``key_format`` ("%08d"),
  plus whatever the writer adds (``slide``, ``sample``, ``preset``, ``qc`` ...).
* keys ``b"%08d" % i`` for ``i in range(count)`` -> one tile record::

      <uint32 little-endian n><n bytes UTF-8 JSON metadata><encoded image bytes>

  The image is RGB (never BGR), ``tile_size`` x ``tile_size``, encoded as the header says:
  ``raw`` = the ``tile_size * tile_size * 3`` uint8 bytes in row-major (y, x, channel) order
  (no decode cost: the fastest for training loops, ~196 KB per 256 px tile), ``jpeg`` or
  ``png`` = a complete JPEG / PNG file.  Version 2 added ``raw``; the record layout is
  otherwise that of version 1, which readers still accept.
  The metadata holds at least ``index``; tiles cut from slides also carry ``slide`` (path),
  ``sample``, ``x``, ``y`` (level-0 pixel coordinates of the top-left corner), ``mpp``,
  ``tile_size``, ``level`` (pyramid level read) and ``size0`` (edge of the tile's box in
  level-0 pixels).

A writer builds the environment in a temporary sibling directory and renames it onto the
final path only after the header is committed, so a killed job never leaves an LMDB that
looks complete; readers refuse an LMDB whose header is missing or not complete.
"""
from __future__ import annotations

import io
import json
import logging
import os
import struct
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.fileio import atomic_path

log = logging.getLogger(__name__)

FORMAT = "crossmodal-tiles"
VERSION = 2
#: header versions this code reads (1 = jpeg/png only; 2 adds the raw encoding)
READABLE_VERSIONS = (1, 2)
ENCODINGS = ("raw", "jpeg", "png")
HEADER_KEY = b"__header__"
KEY_FORMAT = "%08d"
_LEN = struct.Struct("<I")
#: a writer's initial LMDB map (address space, not disk: the file grows only as written); it
#: doubles whenever a write or commit hits ``MapFullError``.  Kept small because clusters that
#: cap virtual memory (``ulimit -v``, SLURM ``VSizeFactor``) refuse a huge mmap outright
_MAP_SIZE = 1 << 30
#: a writer commits at least every this many bytes of records (they are kept until committed,
#: to be replayed after a map resize)
_COMMIT_BYTES = 64 << 20


class TileStoreError(ValueError):
    """An LMDB tile store that cannot be used; the message names the path."""


def tile_key(i: int) -> bytes:
    return (KEY_FORMAT % i).encode("ascii")


def encode_tile(rgb: np.ndarray, encoding: str = "png", quality: int = 90) -> bytes:
    if encoding == "raw":
        return np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    buf = io.BytesIO()
    if encoding == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif encoding == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown tile encoding {encoding!r} (raw, jpeg or png)")
    return buf.getvalue()


def decode_tile(data, encoding: str | None = None, tile_size: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an encoded tile; ``raw`` needs ``tile_size`` (square tiles).
    Without ``encoding`` the bytes must be a JPEG or PNG file (version-1 records)."""
    if encoding == "raw":
        if tile_size is None:
            raise ValueError("decode_tile: the raw encoding needs tile_size")
        n = int(tile_size) * int(tile_size) * 3
        if len(data) != n:
            raise ValueError(f"decode_tile: raw tile of {len(data)} bytes, expected {n} "
                             f"({tile_size}x{tile_size}x3)")
        return np.frombuffer(data, dtype=np.uint8).reshape(int(tile_size), int(tile_size), 3).copy()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def pack_record(meta: dict, image: bytes) -> bytes:
    m = json.dumps(meta, sort_keys=True, default=_json_default).encode("utf-8")
    return _LEN.pack(len(m)) + m + image


def unpack_record(value: bytes) -> tuple[dict, bytes]:
    (n,) = _LEN.unpack_from(value, 0)
    meta = json.loads(bytes(value[4:4 + n]).decode("utf-8"))
    return meta, bytes(value[4 + n:])


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --- writing -------------------------------------------------------------------------------


class TileWriter:
    """Write tiles to a new LMDB at ``out_lmdb`` atomically.

    ``header_meta`` goes into the header (``tile_size``, ``mpp``, ``encoding`` (raw, jpeg or
    png; default png),
    ``jpeg_quality``, provenance ...).  Use as a context manager::

        with TileWriter("results/x.lmdb", {"mpp": None, "encoding": "png"}) as w:
            w.add(rgb_uint8, {"sample": "S1"})

    Tiles are committed every ``commit_every`` additions (or 64 MiB) into a temporary directory
    next to ``out_lmdb``; the LMDB map starts at ``map_size`` bytes and doubles whenever it is
    full (``MapFullError``: the uncommitted records are replayed); on a clean exit the header (``complete: true``, ``count``) is written last and
    the directory renamed onto ``out_lmdb`` (replacing an older one).  On an exception nothing
    is left behind.  All tiles must have the same square shape.
    """

    def __init__(self, out_lmdb, header_meta: dict | None = None, *, commit_every: int = 256,
                 map_size: int = _MAP_SIZE):
        self.path = Path(out_lmdb)
        self.header = dict(header_meta or {})
        self.encoding = self.header.setdefault("encoding", "png")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"TileWriter {self.path}: unknown encoding {self.encoding!r}")
        self.quality = int(self.header.get("jpeg_quality", 90))
        self.commit_every = commit_every
        self.map_size = int(map_size)
        self.count = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0
        self._ctx = None
        self._env = None
        self._txn = None

    def __enter__(self) -> "TileWriter":
        import lmdb

        self._ctx = atomic_path(self.path, is_dir=True)
        tmp = self._ctx.__enter__()
        self._env = lmdb.open(str(tmp), map_size=self.map_size, subdir=True, lock=True,
                              sync=False, metasync=False, meminit=False)
        self._txn = self._env.begin(write=True)
        return self

    def add(self, rgb: np.ndarray, meta: dict | None = None) -> int:
        """Append one RGB uint8 (H, W, 3) tile with its metadata; returns its index."""
        if self._txn is None:
            raise RuntimeError(f"TileWriter {self.path}: add() outside the with-block")
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"TileWriter {self.path}: expected RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        size = self.header.get("tile_size")
        if size is None:
            self.header["tile_size"] = size = int(rgb.shape[0])
        if rgb.shape[:2] != (size, size):
            raise ValueError(f"TileWriter {self.path}: tile {self.count} has shape {rgb.shape[:2]}, "
                             f"header tile_size is {size}")
        i = self.count
        rec = {"index": i, **(meta or {})}
        self._put(tile_key(i), pack_record(rec, encode_tile(rgb, self.encoding, self.quality)))
        return i

    def add_encoded(self, image: bytes, meta: dict | None = None) -> int:
        """Append one tile already encoded in this writer's encoding (e.g. copied from another
        LMDB of the same encoding and tile size, :meth:`TileDataset.encoded`), without decoding
        and re-encoding it (a JPEG would lose quality again); returns its index."""
        if self._txn is None:
            raise RuntimeError(f"TileWriter {self.path}: add_encoded() outside the with-block")
        if self.encoding == "raw" or self.header.get("tile_size") is None:
            raise ValueError(f"TileWriter {self.path}: add_encoded needs a compressed encoding and a header "
                             f"tile_size (got {self.encoding}, {self.header.get('tile_size')})")
        i = self.count
        self._put(tile_key(i), pack_record({**(meta or {}), "index": i}, bytes(image)))
        return i

    # writes that survive a full map: records stay in _pending until committed, and a
    # MapFullError (from a put or a commit) aborts the transaction, doubles the map and
    # replays them
    def _put(self, key: bytes, value: bytes) -> None:
        import lmdb

        self._pending.append((key, value))
        self._pending_bytes += len(value)
        try:
            self._txn.put(key, value)
        except lmdb.MapFullError:
            self._grow()
        self.count += 1
        if self.count % self.commit_every == 0 or self._pending_bytes >= _COMMIT_BYTES:
            self._commit()
            self._txn = self._env.begin(write=True)

    def _commit(self) -> None:
        import lmdb

        while True:
            try:
                self._txn.commit()
                break
            except lmdb.MapFullError:
                self._grow()
        self._txn = None
        self._pending, self._pending_bytes = [], 0

    def _grow(self) -> None:
        import lmdb

        while True:
            try:
                self._txn.abort()
            except lmdb.Error:
                pass
            self.map_size *= 2
            log.info("TileWriter %s: LMDB map full, growing it to %.1f GiB", self.path, self.map_size / 2**30)
            self._env.set_mapsize(self.map_size)
            self._txn = self._env.begin(write=True)
            try:
                for k, v in self._pending:
                    self._txn.put(k, v)
                return
            except lmdb.MapFullError:
                continue

    def __exit__(self, exc_type, exc, tb):
        import lmdb

        try:
            if exc_type is None:
                hdr = {**self.header, "format": FORMAT, "version": VERSION, "count": self.count,
                       "key_format": KEY_FORMAT, "complete": True}
                raw = json.dumps(hdr, sort_keys=True, default=_json_default).encode()
                self._pending.append((HEADER_KEY, raw))
                try:
                    self._txn.put(HEADER_KEY, raw)
                except lmdb.MapFullError:
                    self._grow()
                self._commit()
                self._env.sync(True)
            elif self._txn is not None:
                self._txn.abort()
            self._txn = None
            self._env.close()
            self._env = None
        finally:
            # renames onto self.path on success, removes the temporary directory otherwise
            self._ctx.__exit__(exc_type, exc, tb)
        return False


# --- reading -------------------------------------------------------------------------------


def _open_env(path: Path):
    import lmdb

    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True,
                     max_readers=2048)


#: read-only environments, one per LMDB file and process: LMDB (and py-lmdb) forbid opening
#: the same environment twice in one process.  Keyed by the data file's identity, so an LMDB
#: replaced by a rerun is opened afresh.  After a fork (DataLoader workers) the inherited
#: handle is closed in the child - harmless to the parent, as these are lock-free
#: read-only environments - and reopened there.
_ENVS: dict[tuple, tuple[int, object]] = {}


def shared_env(path):
    """The read-only LMDB environment of ``path`` for this process (opened on first use)."""
    path = Path(path)
    st = os.stat(path / "data.mdb")
    key = (st.st_dev, st.st_ino)
    hit = _ENVS.get(key)
    if hit is not None:
        pid, env = hit
        if pid == os.getpid():
            return env
        try:
            env.close()
        except Exception:  # noqa: BLE001 - an inherited handle we only discard
            pass
    env = _open_env(path)
    try:
        _check_size(path, env, st.st_size)
    except BaseException:
        env.close()
        raise
    _ENVS[key] = (os.getpid(), env)
    return env


def _check_size(path: Path, env, size: int) -> None:
    """:class:`TileStoreError` when ``data.mdb`` ends before LMDB's last used page.

    A truncated data file (a half-copied or half-synced store) keeps its meta pages, so
    LMDB opens it, but the first read of a page past the end of the file faults on the
    memory map (SIGBUS: the process dies with no Python error and no file named).
    """
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if size < need:
        raise TileStoreError(f"tile LMDB {path}: data.mdb truncated ({size} of {need} bytes; "
                             f"a half-copied or half-written store?)")


def _drop_env(path) -> None:
    st = os.stat(Path(path) / "data.mdb")
    hit = _ENVS.pop((st.st_dev, st.st_ino), None)
    if hit is not None and hit[0] == os.getpid():
        hit[1].close()


def close_all() -> None:
    """Close every environment :func:`shared_env` opened in this process."""
    for key, (pid, env) in list(_ENVS.items()):
        if pid == os.getpid():
            env.close()
        del _ENVS[key]


def read_header(path) -> dict:
    """The header of a complete tile LMDB; :class:`TileStoreError` naming ``path`` otherwise."""
    import lmdb

    path = Path(path)
    if not (path / "data.mdb").exists():
        raise TileStoreError(f"tile LMDB {path}: not found (no {path / 'data.mdb'})")
    try:
        env = shared_env(path)
        with env.begin() as txn:
            raw = txn.get(HEADER_KEY)
    except lmdb.Error as e:
        raise TileStoreError(f"tile LMDB {path}: cannot open ({e})") from None
    if raw is None or not json.loads(raw.decode()).get("complete"):
        _drop_env(path)  # not kept open: an incomplete store is never read
    if raw is None:
        raise TileStoreError(f"tile LMDB {path}: no header entry - incomplete (a killed or failed write?)")
    hdr = json.loads(raw.decode())
    if hdr.get("format") != FORMAT or not hdr.get("complete"):
        raise TileStoreError(f"tile LMDB {path}: header not marked complete ({hdr.get('format')!r})")
    if hdr.get("version") not in READABLE_VERSIONS:
        raise TileStoreError(f"tile LMDB {path}: format version {hdr.get('version')}, this code reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    if hdr.get("encoding", "png") not in ENCODINGS or (hdr.get("version") == 1 and hdr.get("encoding") == "raw"):
        raise TileStoreError(f"tile LMDB {path}: unknown tile encoding {hdr.get('encoding')!r} "
                             f"for format version {hdr.get('version')}")
    return hdr


class TileDataset:
    """Tiles of one or many LMDBs as one map-style dataset (PyTorch ``Dataset`` protocol).

    ``ds[i]`` is an RGB uint8 array (H, W, 3), or ``transform(array)`` when a transform is
    given.  ``ds.meta(i)`` is the tile's metadata plus ``lmdb`` (source path) and ``sample``.
    ``ds.source_index[i]`` is the position in ``ds.paths`` of tile ``i``'s LMDB and
    ``ds.labels[i]`` its sample id (for per-sample conditioning).  LMDB environments are opened
    lazily in each process, so the dataset works under ``DataLoader(num_workers>0)``.
    """

    def __init__(self, lmdb_paths: str | os.PathLike | Sequence, transform: Callable | None = None):
        if isinstance(lmdb_paths, (str, os.PathLike)):
            lmdb_paths = [lmdb_paths]
        self.paths = [Path(p) for p in lmdb_paths]
        self.transform = transform
        self.headers = [read_header(p) for p in self.paths]
        counts = np.array([int(h["count"]) for h in self.headers], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self.source_index = np.repeat(np.arange(len(self.paths)), counts)
        self.samples = [str(h.get("sample", p.name[:-5] if p.name.endswith(".lmdb") else p.name))
                        for h, p in zip(self.headers, self.paths)]
        self.labels = np.array(self.samples, dtype=object)[self.source_index] if len(counts) else np.array([], object)
        self._envs: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_envs"] = {}
        state["_pid"] = None
        return state

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"tile index {i} out of range for {n} tiles")
        src = int(self.source_index[i])
        return src, int(i - self._offsets[src])

    def _env(self, i: int) -> tuple[object, int, int]:
        src, j = self._locate(int(i))
        if self._pid != os.getpid():  # first use in this process (e.g. a DataLoader worker)
            self._envs, self._pid = {}, os.getpid()
        env = self._envs.get(src)
        if env is None:
            env = self._envs[src] = shared_env(self.paths[src])
        return env, src, j

    def _get(self, txn, src: int, j: int):
        value = txn.get(tile_key(j))
        if value is None:
            raise TileStoreError(f"tile LMDB {self.paths[src]}: key {tile_key(j)!r} missing")
        return value

    def meta(self, i: int) -> dict:
        env, src, j = self._env(i)
        with env.begin(buffers=True) as txn:
            value = self._get(txn, src, j)
            (n,) = _LEN.unpack_from(value, 0)
            meta = json.loads(bytes(value[4:4 + n]).decode("utf-8"))
        return {**meta, "lmdb": str(self.paths[src]), "sample": meta.get("sample", self.samples[src])}

    def __getitem__(self, i: int):
        env, src, j = self._env(i)
        hdr = self.headers[src]
        enc = hdr.get("encoding", "png")
        with env.begin(buffers=True) as txn:
            value = self._get(txn, src, j)
            (n,) = _LEN.unpack_from(value, 0)
            if enc == "raw":  # one copy straight out of the memory map, no decode
                s = int(hdr["tile_size"])
                if len(value) - 4 - n != s * s * 3:
                    raise TileStoreError(f"tile LMDB {self.paths[src]}: raw tile {j} has "
                                         f"{len(value) - 4 - n} bytes, expected {s * s * 3}")
                rgb = np.frombuffer(value, dtype=np.uint8, count=s * s * 3, offset=4 + n).reshape(s, s, 3).copy()
            else:
                rgb = decode_tile(bytes(value[4 + n:]))
        return self.transform(rgb) if self.transform is not None else rgb

    def encoded(self, i: int) -> tuple[dict, bytes, str]:
        """Tile ``i`` as stored: (its own metadata, the encoded image bytes, the encoding)."""
        env, src, j = self._env(i)
        with env.begin(buffers=True) as txn:
            value = self._get(txn, src, j)
            (n,) = _LEN.unpack_from(value, 0)
            meta = json.loads(bytes(value[4:4 + n]).decode("utf-8"))
            image = bytes(value[4 + n:])
        return meta, image, self.headers[src].get("encoding", "png")

    def close(self) -> None:
        """Forget this dataset's handles (the process-wide ones stay, see :func:`close_all`)."""
        self._envs = {}


class TileView:
    """Tiles ``indices`` of ``ds`` (all of them by default), decoded only when indexed and,
    when ``size`` is given, resized to ``size`` px by ``resize(uint8 (k, H, W, 3), size)``.

    ``ds``: a dataset of single tiles (``ds[i]`` -> (H, W, 3), e.g. :class:`TileDataset`), or a
    uint8 (n, H, W, 3) array or another view (indexed with whole index arrays).
    ``view[i]`` is one uint8 tile (s, s, 3); ``view[array or slice]`` a uint8 batch
    (k, s, s, 3).  It lets a model stream more tiles than fit in memory (a paper-scale training
    set is ~400,000 tiles of 256 px, ~76 GB decoded), split them into training and validation
    without copying a tile, and lets a metric compare tile sets of different sizes (real 256 px
    tiles vs generated ones of the toy size)."""

    def __init__(self, ds, indices=None, size: int | None = None, resize: Callable | None = None):
        if size is not None and resize is None:
            raise ValueError("TileView: a size needs a resize function")
        self.ds, self.size, self.resize = ds, size, resize
        self.indices = np.arange(len(ds), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def _batch(self, ii: np.ndarray) -> np.ndarray:
        if not len(ii):
            s = self.size or 1
            return np.zeros((0, s, s, 3), np.uint8)
        if isinstance(self.ds, (np.ndarray, TileView)):
            tiles = self.ds[ii]
        else:
            tiles = np.stack([self.ds[int(i)] for i in ii])
        if self.size is None or tiles.shape[1:3] == (self.size, self.size):
            return tiles
        return self.resize(tiles, self.size)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._batch(self.indices[[key]])[0]
        return self._batch(np.atleast_1d(self.indices[key]))


def per_slide_indices(ds: "TileDataset", per_slide: int, seed: int) -> np.ndarray:
    """Indices into ``ds`` of at most ``per_slide`` tiles of each slide (source LMDB), drawn
    reproducibly from ``seed`` and sorted within each slide (RNA-CDM Methods: at most 4,000 tiles
    per slide; RNA-GAN: 600)."""
    rng = np.random.default_rng(seed)
    idx = []
    for src in range(len(ds.paths)):
        ii = np.flatnonzero(ds.source_index == src)
        if len(ii) > per_slide:
            ii = np.sort(rng.choice(ii, per_slide, replace=False))
        idx.append(ii)
    return np.concatenate(idx) if idx else np.array([], np.int64)
