"""Atomic file output: write to a temporary sibling, then rename; checked checkpoint input.

A job killed midway leaves at most a ``.tmp-*`` sibling, never a file that looks complete.
:func:`load_checkpoint` reads a model checkpoint and names the file when it cannot.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file or folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if path.exists():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_table(path, df, **kw) -> None:
    """Write a pandas DataFrame as TSV (gzip if the name ends in .gz), atomically."""
    path = Path(path)
    kw.setdefault("sep", "\t")
    comp = "gzip" if path.suffix == ".gz" else None
    with atomic_path(path) as tmp:
        df.to_csv(tmp, compression=comp, **kw)


def save_figure(fig, path, *, pdf: bool = True, dpi: int = 150) -> None:
    """Save a matplotlib figure as PNG (and a PDF beside it), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    if pdf:
        with atomic_path(path.with_suffix(".pdf")) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight")


class CheckpointError(ValueError):
    """A model checkpoint that cannot be read or is not the kind expected; the message names the file."""


def load_checkpoint(path, what: str, *, fmt: str | None = None, keys=(), hint: str = "", **kw):
    """``torch.load(path)`` onto the CPU, naming ``path`` and ``what`` it should hold on any failure.

    - missing: :class:`FileNotFoundError` ``"{what} {path}: not found"`` (+ ``hint``, e.g. which
      rule writes it);
    - unreadable (truncated, empty, not a torch file): :class:`CheckpointError` with torch's
      message - bare, that is e.g. ``EOFError: Ran out of input`` or "failed finding central
      directory", naming no file;
    - ``fmt`` given: the checkpoint must be a dict whose ``format`` is ``fmt``;
    - ``keys`` given: the checkpoint must be a dict holding every one of them (another model's
      file passed in its place).

    Extra keyword arguments go to ``torch.load`` (``weights_only`` defaults to False: these are
    the pipeline's own files, holding configs next to the tensors).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: not found" + (f" ({hint})" if hint else ""))
    kw.setdefault("map_location", "cpu")
    kw.setdefault("weights_only", False)
    try:
        ck = torch.load(path, **kw)
    except Exception as e:  # noqa: BLE001 - anything torch or pickle raise on a damaged file
        raise CheckpointError(f"{what} {path}: unreadable ({type(e).__name__}: {str(e)[:300]}); "
                              "a truncated or partly copied file?") from None
    if fmt is not None and (not isinstance(ck, dict) or ck.get("format") != fmt):
        got = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{what} {path}: not a {fmt} checkpoint (format {got!r})")
    missing = [k for k in keys if not isinstance(ck, dict) or k not in ck]
    if missing:
        held = ", ".join(map(repr, list(ck)[:8])) if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise CheckpointError(f"{what} {path}: not a {what} checkpoint (no {', '.join(map(repr, missing))}; "
                              f"it holds {held})")
    return ck


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
