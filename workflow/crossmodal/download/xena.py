"""UCSC Xena (GDC hub): per-cancer-type TCGA RNA-seq, RPPA, gene-level copy number, clinical
and survival files for the Coherent Denoising cohort, merged into one table per modality.

Each matrix is a gzipped TSV, first column the feature id, one column per sample barcode.
Merging keeps primary-tumour samples (barcode characters 14-15 in ``primary_sample_codes``,
Coherent Denoising Methods: "10,098 primary tumor samples") and takes the union of features.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)

MATRICES = ("rnaseq", "protein", "cna")


def manifest_rows(d: dict, s: dict) -> list[dict]:
    rows = []
    for p in d["projects"]:
        for mod in d["modalities"]:
            if mod not in s["files"]:
                raise KeyError(f"xena.yaml: no file pattern for modality {mod!r} ({', '.join(s['files'])})")
            name = s["files"][mod].format(project=p)
            rows.append({"file_id": f"{p}-{mod}", "file_name": name, "url": f"{s['base_url'].rstrip('/')}/{name}",
                         "md5": "", "size": "", "method": "GET", "payload": "", "case_id": "", "patient": "",
                         "sample": "", "project": p, "data_type": mod})
    return rows


def is_primary(barcode: str, codes) -> bool:
    return len(barcode) >= 15 and barcode.startswith("TCGA-") and barcode[13:15] in codes


def read_matrix(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", index_col=0)
    if df.shape[1] == 0:
        raise ValueError(f"{path}: a Xena matrix needs a feature-id column and sample columns")
    return df.astype(np.float32)


def merge_matrices(paths: list[str], codes, project_of: dict | None = None,
                   projects: list[str] | None = None) -> pd.DataFrame:
    """Outer join of per-project matrices on the feature id, primary tumours only.

    ``project_of`` (if given) is filled with sample -> project (``projects[i]`` of ``paths[i]``).
    """
    parts = []
    for i, p in enumerate(tqdm(paths, desc="xena matrices", unit="file")):
        m = read_matrix(p)
        keep = [c for c in m.columns if is_primary(str(c), codes)]
        parts.append(m[keep])
        if project_of is not None and projects:
            project_of.update({c: projects[i] for c in keep})
    out = pd.concat(parts, axis=1, join="outer") if parts else pd.DataFrame()
    out = out.loc[:, ~out.columns.duplicated()]
    out.index.name = parts[0].index.name if parts else "feature"
    return out


def read_rows(path, project: str, codes, sample_col: str = "sample") -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if sample_col not in df.columns:
        sample_col = df.columns[0]
    df = df.rename(columns={sample_col: "sample"})
    df = df[[is_primary(s, codes) for s in df["sample"]]]
    df.insert(1, "project", project)
    return df


def build(manifest: pd.DataFrame, raw_path, d: dict, s: dict, outputs: dict) -> None:
    from crossmodal.fileio import write_table

    codes = tuple(s.get("primary_sample_codes", ["01"]))
    by_mod: dict[str, list[tuple[str, str]]] = {}
    for r in manifest.to_dict(orient="records"):
        by_mod.setdefault(r["data_type"], []).append((r["project"], raw_path(r["file_id"], r["file_name"])))
    present: dict[str, set] = {}
    proj: dict[str, str] = {}
    for mod in MATRICES:
        files = [p for _, p in by_mod.get(mod, [])]
        m = merge_matrices(files, codes, proj, [q for q, _ in by_mod.get(mod, [])]) if files else pd.DataFrame(index=pd.Index([], name="feature"))
        write_table(outputs[mod], m, float_format="%.6g")
        present[mod] = set(m.columns)
        log.info("xena %s: %d features x %d primary-tumour samples", mod, *m.shape)
    for mod in ("clinical", "survival"):
        parts = [read_rows(p, project, codes) for project, p in by_mod.get(mod, [])]
        t = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["sample", "project"])
        write_table(outputs[mod], t, index=False)
        present[mod] = set(t["sample"])
        proj.update(dict(zip(t["sample"], t["project"])))
    samples = sorted(set().union(*present.values()))
    tab = pd.DataFrame({"sample": samples, "patient": [x[:12] for x in samples],
                        "project": [proj.get(x, "") for x in samples]})
    for mod in MATRICES:
        tab[f"has_{mod}"] = tab["sample"].isin(present[mod]).astype(int)
    write_table(outputs["modalities"], tab, index=False)
    log.info("xena: %d primary-tumour samples across %d projects", len(tab), len(d["projects"]))
