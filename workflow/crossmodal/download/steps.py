"""Pipeline steps of the download rules (``workflow/rules/download.smk``).

``query_manifest``  one cohort's file list (API query, or the frozen copy in resources/)
``fetch_file``      one file of a manifest: resumable, retrying, md5-verified
``build_cohort``    parse a cohort's raw files into the backbone's formats + a sample sheet
``parse_geo_series`` one GEO series -> series matrix with the expression table + characteristics
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from crossmodal.download import gdc, geo, gtex, mcat, xena
from crossmodal.download.http import Client, DownloadError, HttpSettings, copy_file
from crossmodal.download.manifest import read_manifest, write_manifest
from crossmodal.fileio import write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)


def _client(p: dict) -> Client:
    token = p["settings"].get("token") if p.get("source") == "gdc" else None
    return Client(HttpSettings.from_params(p.get("http"), token))


def _raw_path(p: dict):
    return lambda fid, name: f"{p['raw_dir']}/{p['cohort']}/raw/{fid}/{name}"


@step("query_manifest")
def query_manifest(inputs, outputs, params, *, threads=1, log=None):
    """Write a cohort's manifest (file id, name, url, md5, size, case, sample, project, kind)."""
    p = params["dl"]
    cohort, src = p["cohort"], p["source"]
    cached = p.get("cached_manifest")
    if cached:
        read_manifest(cached)  # refuse a broken frozen copy before it is used
        copy_file(cached, outputs["manifest"])
        logging.getLogger(__name__).info("cohort %s: manifest copied from %s", cohort, cached)
        return
    if params.get("offline"):
        raise DownloadError(f"cohort {cohort}: offline=true and no manifest; run once online (or add "
                            f"resources/download/manifests/{cohort}.tsv)")
    client = _client(p)
    d, s = p["definition"], p["settings"]
    if src == "gdc":
        rows = gdc.query(p, client)
    elif src == "gtex":
        rows = gtex.static_rows(d, s)
        attr = next(r for r in rows if r["file_id"] == "sample_attributes")
        path = _raw_path(p)(attr["file_id"], attr["file_name"])
        if not Path(path).exists():
            client.fetch(attr["url"], path)
        if d.get("slides", True):
            rows += gtex.slide_rows(gtex.select_samples(gtex.read_attributes(path), d, s), d, s)
    elif src == "geo":
        rows = geo.query(p, client)
    elif src == "xena":
        rows = xena.manifest_rows(d, s)
    elif src == "mcat":
        rows = mcat.manifest_rows(d, s)
    else:
        raise DownloadError(f"cohort {cohort}: unknown source {src}")
    df = write_manifest(outputs["manifest"], rows)
    logging.getLogger(__name__).info("cohort %s: manifest of %d files (%s)", cohort, len(df),
              ", ".join(f"{k}: {v}" for k, v in df["data_type"].value_counts().items()))


@step("fetch_file")
def fetch_file(inputs, outputs, params, *, threads=1, log=None):
    """Download one manifest entry to its raw path (resume, retry, md5)."""
    e = params["entry"]
    client = Client(HttpSettings.from_params(params.get("http"), params.get("token")))
    payload = json.loads(e["payload"]) if e.get("payload") else None
    client.fetch(e["url"], outputs["file"], md5=e.get("md5") or None, size=e.get("size") or None,
                 method=e.get("method") or "GET", json=payload)


@step("build_cohort")
def build_cohort(inputs, outputs, params, *, threads=1, log=None):
    """Parse a cohort's raw files into the backbone's formats and write its sample sheet."""
    p = params["dl"]
    src, d, s = p["source"], p["definition"], p["settings"]
    manifest = read_manifest(inputs["manifest"])
    raw = _raw_path(p)
    if src == "gdc":
        c = manifest[manifest["data_type"] == "clinical"].iloc[0]
        cases = gdc.read_cases(raw(c["file_id"], c["file_name"]))
        write_table(outputs["clinical"], gdc.clinical_table(cases), index=False)
        write_table(outputs["samples"], gdc.sample_sheet(manifest, raw, d.get("dataset", "tcga")), index=False)
    elif src == "gtex":
        gtex.build(manifest, raw, d, s, outputs)
    elif src == "xena":
        xena.build(manifest, raw, d, s, outputs)
    elif src == "mcat":
        r = manifest.iloc[0]
        write_table(outputs["signatures"], mcat.parse(raw(r["file_id"], r["file_name"]), s["groups"]), index=False)
    elif src == "geo":
        from crossmodal.samplesheet import COLUMNS

        rows = []
        for ch_path, mat in zip(inputs["characteristics"], inputs["matrices"]):
            ch = pd.read_csv(ch_path, sep="\t", dtype=str, keep_default_na=False)
            gse = Path(ch_path).name.split("_")[0]
            # samples of one patient (GSE50760: normal, tumour, metastasis) share a patient id
            pcol = next((c for c in ch.columns if str(c).lower() in ("patient id", "patient", "patient_id",
                                                                     "donor", "subject", "individual")), None)
            for g, pat in zip(ch["sample"], ch[pcol] if pcol else ch["sample"]):
                rows.append({"patient": re.sub(r"[^A-Za-z0-9._-]", "_", f"{gse}-{pat}") if pcol and pat else g, "sample": g, "cohort": f"GEO-{gse}", "dataset": d.get("dataset", "external"),
                             "slide": "", "expression": mat, "expression_format": "geo_series_matrix", "mpp": ""})
        write_table(outputs["samples"], pd.DataFrame(rows, columns=COLUMNS), index=False)
    else:
        raise DownloadError(f"unknown source {src}")
    # the sheet must be one the backbone accepts
    if "samples" in outputs:
        from crossmodal.samplesheet import read_sheet

        read_sheet(outputs["samples"])


@step("parse_geo_series")
def parse_geo_series(inputs, outputs, params, *, threads=1, log=None):
    """One GEO series: expression table (series matrix or supplementary) + characteristics."""
    p, gse = params["dl"], params["series"]
    manifest = read_manifest(inputs["manifest"])
    raw = _raw_path(p)
    m = manifest[manifest["project"] == gse]
    mats = [raw(i, n) for i, n, k in zip(m["file_id"], m["file_name"], m["data_type"]) if k == "series_matrix"]
    sup = [raw(i, n) for i, n, k in zip(m["file_id"], m["file_name"], m["data_type"]) if k == "supplementary"]
    layout = p["settings"].get("series", {}).get(gse, {}).get("layout", "table")
    geo.parse_series(gse, mats, sup, layout, outputs["matrix"], outputs["characteristics"])
