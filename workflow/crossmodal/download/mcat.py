"""MCAT gene-group signatures (PathGen Methods: 6 groups - tumour suppressors, oncogenes,
protein kinases, cell differentiation markers, transcription factors, cytokines and growth
factors), from MCAT's ``signatures.csv`` (one column per group), written long: group, gene."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def manifest_rows(d: dict, s: dict) -> list[dict]:
    return [{"file_id": "signatures", "file_name": Path(s["file"]).name,
             "url": f"{s['base_url'].rstrip('/')}/{s['file']}", "md5": s.get("md5", ""), "size": "",
             "method": "GET", "payload": "", "case_id": "", "patient": "", "sample": "", "project": "MCAT",
             "data_type": "signatures"}]


def parse(path, groups: dict[str, str]) -> pd.DataFrame:
    """Wide CSV (a column per group, ragged) -> long table ``group, gene`` in the yaml's order."""
    wide = pd.read_csv(path, dtype=str)
    missing = [c for c in groups if c not in wide.columns]
    if missing:
        raise ValueError(f"{path}: MCAT signatures lack column(s) {', '.join(missing)} "
                         f"(have {', '.join(wide.columns)}; mapping in resources/download/mcat.yaml)")
    rows = []
    for col, name in groups.items():
        genes = [g.strip() for g in wide[col].dropna() if g.strip()]
        rows += [{"group": name, "gene": g} for g in dict.fromkeys(genes)]
        log.info("MCAT %s: %d genes", name, len(dict.fromkeys(genes)))
    return pd.DataFrame(rows, columns=["group", "gene"])
