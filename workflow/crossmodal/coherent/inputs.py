"""Readers for the Coherent Denoising inputs, toy or UCSC Xena, into samples x features frames,
and the slide embeddings pooled from tiles (the stand-in for Titan slide embeddings).

Layouts: ``xena`` = first column feature id, one column per sample (Xena and the toy omics);
``samples`` = first column ``sample``, one row per sample (the expression stage's counts).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from crossmodal.coherent.preprocess import CoherentInputError

log = logging.getLogger(__name__)


def read_matrix(path, layout: str, what: str) -> pd.DataFrame:
    """A samples x features float frame from ``path`` in ``layout`` (xena or samples)."""
    p = Path(path)
    if not p.is_file():
        raise CoherentInputError(f"{what}: input file {p} not found")
    try:
        df = pd.read_csv(p, sep="\t", index_col=0)
    except Exception as e:  # noqa: BLE001
        raise CoherentInputError(f"{what}: cannot read {p} as a TSV ({e})") from None
    if layout == "xena":
        df = df.T
    elif layout != "samples":
        raise CoherentInputError(f"{what}: unknown layout {layout!r} (xena or samples)")
    df.index = df.index.astype(str)
    df.index.name = "sample"
    try:
        df = df.apply(pd.to_numeric, errors="raise").astype(np.float64)
    except (ValueError, TypeError) as e:
        raise CoherentInputError(f"{what}: {p} holds non-numeric values ({str(e)[:200]})") from None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise CoherentInputError(f"{what}: {p} is empty ({df.shape[0]} samples x {df.shape[1]} features)")
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise CoherentInputError(f"{what}: {p} repeats samples {list(dup[:5])}")
    return df


_STAGE = re.compile(r"stage\s*(iv|iii|ii|i)", re.I)


def normalise_stage(v) -> str | float:
    """'Stage IIB' / 'II' / 'III' -> 'I'..'IV'; anything else (unknown, not reported) -> NaN."""
    s = str(v).strip()
    if s.upper() in ("I", "II", "III", "IV"):
        return s.upper()
    m = _STAGE.search(s)
    return m.group(1).upper() if m else np.nan


def read_labels(clinical, survival, splits, source: str, stage_column: str) -> pd.DataFrame:
    """One row per split sample: patient, cohort, split, stage (I-IV or NaN), time, event."""
    sp = pd.read_csv(splits, sep="\t", dtype=str)
    need = {"patient", "sample", "cohort", "split"}
    if not need <= set(sp.columns):
        raise CoherentInputError(f"splits {splits}: needs columns {sorted(need)}, has {list(sp.columns)}")
    cl = pd.read_csv(clinical, sep="\t", dtype=str, keep_default_na=False)
    if source == "toy":
        if not {"patient", "stage", "survival_time", "event"} <= set(cl.columns):
            raise CoherentInputError(f"clinical {clinical}: needs patient, stage, survival_time, event")
        cl = cl.set_index("patient")
        lab = sp.set_index("sample")[["patient", "cohort", "split"]].copy()
        lab["stage"] = [normalise_stage(cl["stage"].get(p, "")) for p in lab["patient"]]
        lab["time"] = pd.to_numeric(lab["patient"].map(cl["survival_time"]), errors="coerce")
        lab["event"] = pd.to_numeric(lab["patient"].map(cl["event"]), errors="coerce")
    else:
        if "sample" not in cl.columns or stage_column not in cl.columns:
            raise CoherentInputError(f"clinical {clinical}: needs columns sample and {stage_column!r}")
        cl = cl.drop_duplicates("sample").set_index("sample")
        sv = pd.read_csv(survival, sep="\t", dtype=str).drop_duplicates("sample").set_index("sample")
        if not {"OS", "OS.time"} <= set(sv.columns):
            raise CoherentInputError(f"survival {survival}: needs columns sample, OS, OS.time")
        lab = sp.set_index("sample")[["patient", "cohort", "split"]].copy()
        lab["stage"] = [normalise_stage(cl[stage_column].get(s, "")) for s in lab.index]
        lab["time"] = pd.to_numeric(sv["OS.time"].reindex(lab.index), errors="coerce")
        lab["event"] = pd.to_numeric(sv["OS"].reindex(lab.index), errors="coerce")
    lab.index.name = "sample"
    return lab


def slide_embeddings(lmdbs: list[str], encoder: str, *, max_tiles: int, batch_size: int = 64,
                     seed: int = 0) -> pd.DataFrame:
    """Mean-pooled ``cohort-ssl`` features of up to ``max_tiles`` tiles per slide (samples x dim)."""
    import torch

    from crossmodal.data import TileDataset
    from crossmodal.metrics.image import get_extractor

    ext = get_extractor("cohort-ssl", weights=encoder, device="cpu")
    rows, names = [], []
    for p in lmdbs:
        ds = TileDataset(p)
        if len(ds) == 0:
            log.warning("slide embeddings: %s holds no tiles; sample skipped", p)
            continue
        rng = np.random.default_rng([seed, len(ds)])
        idx = np.sort(rng.choice(len(ds), size=min(max_tiles, len(ds)), replace=False))
        feats = []
        for i in range(0, len(idx), batch_size):
            x = np.stack([ds[int(j)] for j in idx[i:i + batch_size]])
            f, _ = ext(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
            feats.append(f.float().numpy())
        rows.append(np.concatenate(feats).mean(0))
        names.append(ds.samples[0])
        ds.close()
    if not rows:
        raise CoherentInputError("slide embeddings: no tiles in any LMDB")
    df = pd.DataFrame(np.stack(rows), index=pd.Index(names, name="sample"),
                      columns=[f"f{i}" for i in range(len(rows[0]))])
    return df
