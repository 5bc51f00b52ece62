"""The clinical table (one row per patient), read and checked in one place.

Columns used downstream: ``patient`` (unique id), ``grade``, ``survival_time`` (days since
diagnosis, >= 0; empty = unknown), ``event`` (1 = death observed, 0 = censored; required where
``survival_time`` is given) and, when present, ``age`` (years; empty = unknown).  Any other
column is kept as text.  Every error names the file, and the patient and column where one is
at fault: before, ``"abc"`` as a survival time gave pandas' bare ``could not convert string to
float``, and a negative time or an event of 2 went into the survival bins unremarked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("patient", "grade", "survival_time", "event")


class ClinicalTableError(ValueError):
    """A clinical table that cannot be used; the message names the file (patient, column)."""


def _numbers(df: pd.DataFrame, col: str, path, error) -> pd.Series:
    """``df[col]`` as floats (NaN where empty / NA); a non-numeric or infinite value is named."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = (num.isna() & raw.notna()) | np.isinf(num)
    if bad.any():
        i = df.index[bad][0]
        raise error(f"clinical table {path}: patient {df.at[i, 'patient']}: {col} {raw[i]!r} is not a "
                    f"finite number ({int(bad.sum())} patient(s) affected)")
    return num


def read_clinical(path, *, required=REQUIRED, error: type[Exception] = ClinicalTableError) -> pd.DataFrame:
    """The clinical table at ``path`` (tab-separated), checked; ``error`` is the exception raised
    (a caller's own ValueError subclass, e.g. PathGen's ``PathGenDataError``).

    ``survival_time`` and ``age`` come back as floats, ``event`` as float 0 / 1 (NaN where the
    survival time is unknown too); empty or NA cells are missing values, as pandas reads them.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"clinical table {path}: not found")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise error(f"clinical table {path}: unreadable ({type(e).__name__}: {e})") from None
    need = set(required) - set(df.columns)
    if need:
        raise error(f"clinical table {path}: missing column(s) {', '.join(sorted(need))}")
    if "patient" in df.columns:
        if df["patient"].isna().any():
            rows = [int(i) + 2 for i in df.index[df["patient"].isna()]]  # +2: the header, 1-based
            raise error(f"clinical table {path}: empty patient id on line(s) {', '.join(map(str, rows[:10]))}")
        dup = df["patient"][df["patient"].duplicated()].unique()
        if len(dup):
            raise error(f"clinical table {path}: duplicated patient id(s) {', '.join(dup[:10])} "
                        "(one row per patient)")
    for col in ("survival_time", "age"):
        if col in df.columns:
            df[col] = _numbers(df, col, path, error)
    if "survival_time" in df.columns:
        neg = df.index[df["survival_time"] < 0]
        if len(neg):
            i = neg[0]
            raise error(f"clinical table {path}: patient {df.at[i, 'patient']}: survival_time "
                        f"{df.at[i, 'survival_time']:g} is negative ({len(neg)} patient(s) affected; correct the "
                        "cell, or empty it to exclude the patient from survival)")
    if "event" in df.columns:
        ev = _numbers(df, "event", path, error)
        bad = ev.notna() & ~ev.isin([0.0, 1.0])
        if "survival_time" in df.columns:
            bad |= ev.isna() & df["survival_time"].notna()
        if bad.any():
            i = df.index[bad][0]
            raise error(f"clinical table {path}: patient {df.at[i, 'patient']}: event "
                        f"{df['event'][i] if pd.notna(df['event'][i]) else '(empty)'!s} must be 0 (censored) or "
                        f"1 (death observed)" + (" where survival_time is given" if pd.isna(ev[i]) else "")
                        + f" ({int(bad.sum())} patient(s) affected)")
        df["event"] = ev
    return df
