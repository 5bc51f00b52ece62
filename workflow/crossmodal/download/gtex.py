"""GTEx v8: expression GCT, sample attributes, subject phenotypes, histology slides by sample id.

The fixed files are known without the network; the slide list is made from the sample
attributes (RNA-seq samples of the cohort's tissues -> their tissue sample ids, whose SVS the
histology service serves).  Parsing writes a GCT (v1.2) holding only the cohort's samples.
"""
from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def _url(s: dict, rel: str) -> str:
    return f"{s['base_url'].rstrip('/')}/{rel.lstrip('/')}"


def static_rows(d: dict, s: dict) -> list[dict]:
    keys = [d.get("expression", "expression_tpm"), "sample_attributes", "subject_phenotypes"]
    rows = []
    for k in keys:
        if k not in s["files"]:
            raise KeyError(f"gtex.yaml: files has no {k!r} ({', '.join(s['files'])})")
        rel = s["files"][k]
        rows.append({"file_id": k, "file_name": Path(rel).name, "url": _url(s, rel), "md5": "", "size": "",
                     "method": "GET", "payload": "", "case_id": "", "patient": "", "sample": "",
                     "project": "GTEx", "data_type": k})
    return rows


def tissue_label(tissue: str) -> str:
    return "GTEx-" + re.sub(r"[^A-Za-z0-9]+", "_", tissue).strip("_")


def tissue_sample_id(sampid: str) -> str:
    """GTEX-1117F-0226-SM-5GZZ7 -> GTEX-1117F-0226 (the histology slide's id)."""
    return "-".join(sampid.split("-")[:3])


def subject_id(sampid: str) -> str:
    return "-".join(sampid.split("-")[:2])


def select_samples(attributes: pd.DataFrame, d: dict, s: dict) -> pd.DataFrame:
    cols = s["columns"]
    for c in cols.values():
        if c not in attributes.columns:
            raise ValueError(f"GTEx sample attributes: column {c!r} missing (have {', '.join(attributes.columns[:8])}...)")
    a = attributes[attributes[cols["tissue"]].isin(d["tissues"])]
    if cols.get("use"):
        a = a[a[cols["use"]].astype(str) == "RNASEQ"]
    missing = sorted(set(d["tissues"]) - set(a[cols["tissue"]]))
    if missing:
        raise ValueError(f"GTEx sample attributes: no RNA-seq samples for tissue(s) {', '.join(missing)}")
    return a


def slide_rows(selected: pd.DataFrame, d: dict, s: dict) -> list[dict]:
    cols = s["columns"]
    rows, seen = [], set()
    for sampid, tissue in zip(selected[cols["sample"]], selected[cols["tissue"]]):
        t = tissue_sample_id(sampid)
        if t in seen:
            continue
        seen.add(t)
        rows.append({"file_id": t, "file_name": f"{t}.svs", "url": f"{s['histology_url'].rstrip('/')}/{t}",
                     "md5": "", "size": "", "method": "GET", "payload": "", "case_id": subject_id(sampid),
                     "patient": subject_id(sampid), "sample": sampid, "project": tissue_label(tissue),
                     "data_type": "slide"})
    return rows


def read_attributes(path) -> pd.DataFrame:
    """A GTEx annotation TSV. It is not CSV-quoted: free-text fields (SMPTHNTS, the pathology
    notes) hold bare double quotes (inches, quoted words), so a quote is data, not a delimiter -
    with quoting on, a note that starts with one swallows the following rows or fails at EOF."""
    import csv

    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


def _open(path):
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def read_gct_header(path) -> list[str]:
    with _open(path) as f:
        version = f.readline().strip()
        if not version.startswith("#1."):
            raise ValueError(f"{path}: not a GCT file (first line {version!r})")
        f.readline()
        return f.readline().rstrip("\n").split("\t")


def subset_gct(src, dest, samples: list[str]) -> list[str]:
    """Write a GCT v1.2 with the Name / Description columns and ``samples`` (those present)."""
    from crossmodal.fileio import atomic_path

    header = read_gct_header(src)
    keep = [c for c in samples if c in header]
    if not keep:
        raise ValueError(f"{src}: none of the {len(samples)} selected samples is a column")
    df = pd.read_csv(src, sep="\t", skiprows=2, usecols=header[:2] + keep)
    df = df[header[:2] + keep]
    with atomic_path(dest) as tmp:
        with open(tmp, "w") as f:
            f.write(f"#1.2\n{len(df)}\t{len(keep)}\n")
            df.to_csv(f, sep="\t", index=False)
    log.info("GTEx GCT: %d genes x %d samples -> %s", len(df), len(keep), dest)
    return keep


def build(manifest: pd.DataFrame, raw_path, d: dict, s: dict, outputs: dict) -> None:
    from crossmodal.fileio import write_table
    from crossmodal.samplesheet import COLUMNS

    by_id = {r["file_id"]: raw_path(r["file_id"], r["file_name"]) for r in manifest.to_dict(orient="records")}
    attrs = select_samples(read_attributes(by_id["sample_attributes"]), d, s)
    cols = s["columns"]
    kept = subset_gct(by_id[d.get("expression", "expression_tpm")], outputs["expression"], list(attrs[cols["sample"]]))
    attrs = attrs[attrs[cols["sample"]].isin(kept)]
    rows = []
    for sampid, tissue in zip(attrs[cols["sample"]], attrs[cols["tissue"]]):
        t = tissue_sample_id(sampid)
        rows.append({"patient": subject_id(sampid), "sample": sampid, "cohort": tissue_label(tissue),
                     "dataset": d.get("dataset", "gtex"), "slide": by_id.get(t, ""), "expression": outputs["expression"],
                     "expression_format": "gct", "mpp": ""})
    write_table(outputs["samples"], pd.DataFrame(rows, columns=COLUMNS), index=False)
    ph = read_attributes(by_id["subject_phenotypes"])
    subj = ph.columns[0]
    write_table(outputs["phenotypes"], ph[ph[subj].isin({subject_id(x) for x in kept})], index=False)
