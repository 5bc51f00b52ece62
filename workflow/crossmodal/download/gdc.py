"""GDC API client: search /files and /cases with paging, manifests, bulk tar.gz, clinical.

Filters are built from ``resources/download/gdc.yaml`` (one filter per data kind) and the
cohort's project list; hits arrive as ``{"data": {"hits": [...], "pagination": {...}}}``.
Files are fetched one per Snakemake job from ``/data/{file_id}``; :func:`fetch_bulk` takes many
small files in one POST ``/data`` (a tar.gz) and unpacks it safely to ``<file_id>/<file_name>``.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from crossmodal.download.http import Client, DownloadError, safe_extract

log = logging.getLogger(__name__)

# GDC sample-type codes in barcodes (TCGA-XX-XXXX-<code><vial>)
PRIMARY_CODES = ("01", "03")


def _in(field: str, values) -> dict:
    values = values if isinstance(values, list) else [values]
    return {"op": "in", "content": {"field": field, "value": values}}


def build_filters(projects: list[str], kind: dict, sample_types: list[str] | None = None,
                  access: str = "open") -> dict:
    """A GDC filter: project in projects AND every key of ``kind`` AND open access."""
    content = [_in("cases.project.project_id", list(projects))]
    content += [_in(k if k.startswith(("files.", "cases.")) else f"files.{k}", v) for k, v in kind.items()]
    if sample_types:
        content.append(_in("cases.samples.sample_type", list(sample_types)))
    if access:
        content.append(_in("files.access", access))
    return {"op": "and", "content": content}


def search(client: Client, base_url: str, endpoint: str, filters: dict, fields: list[str],
           page_size: int = 500) -> list[dict]:
    """All hits of a GDC search, page by page (``from`` / ``size``; ``data.pagination``)."""
    url = f"{base_url.rstrip('/')}/{endpoint.strip('/')}"
    hits: list[dict] = []
    start, total, page = 0, None, 0
    while total is None or start < total:
        body = {"filters": filters, "fields": ",".join(fields), "format": "JSON",
                "size": page_size, "from": start}
        doc = client.post_json(url, body)
        try:
            data = doc["data"]
            batch, pag = data["hits"], data["pagination"]
            total = int(pag["total"])
        except (KeyError, TypeError) as e:
            raise DownloadError(f"{url}: unexpected response (no data.hits / data.pagination): {str(doc)[:300]}") from e
        page += 1
        log.info("%s: page %d/%s, %d hits (total %d)", endpoint, page, pag.get("pages", "?"), len(batch), total)
        if not batch:
            break
        hits.extend(batch)
        start += len(batch)
    if total is not None and len(hits) != total:
        raise DownloadError(f"{url}: got {len(hits)} hits but pagination.total says {total}")
    return hits


def _first(lst, key=None, default=""):
    if not lst:
        return default
    x = lst[0]
    return x.get(key, default) if key else x


def file_rows(hits: list[dict], kind_name: str, base_url: str) -> list[dict]:
    rows = []
    for h in hits:
        case = _first(h.get("cases") or [], default={}) or {}
        sample = _first(case.get("samples") or [], default={}) or {}
        rows.append({
            "file_id": h["file_id"], "file_name": h["file_name"],
            "url": f"{base_url.rstrip('/')}/data/{h['file_id']}",
            "md5": h.get("md5sum", ""), "size": h.get("file_size", ""), "method": "GET", "payload": "",
            "case_id": case.get("case_id", ""), "patient": case.get("submitter_id", ""),
            "sample": sample.get("submitter_id", ""),
            "project": (case.get("project") or {}).get("project_id", ""), "data_type": kind_name,
        })
    return rows


def query(params: dict, client: Client) -> list[dict]:
    """Manifest rows for one GDC cohort definition: its files, plus the /cases query."""
    d, s = params["definition"], params["settings"]
    base, size = s["base_url"], int(s.get("page_size", 500))
    rows: list[dict] = []
    for kind in d["data"]:
        if kind not in s["data_types"]:
            raise DownloadError(f"cohort {params['cohort']}: data kind {kind!r} not in gdc.yaml data_types "
                                f"({', '.join(s['data_types'])})")
        filt = build_filters(d["projects"], s["data_types"][kind], s.get("sample_types"))
        hits = search(client, base, "files", filt, s["file_fields"], size)
        rows += file_rows(hits, kind, base)
        log.info("cohort %s: %d %s files", params["cohort"], len(hits), kind)
    rows.append(cases_row(d["projects"], s))
    return rows


def cases_filters(projects) -> dict:
    return {"op": "and", "content": [_in("project.project_id", list(projects))]}


# Case fields asked for besides gdc.yaml's case_fields, so that clinical_table finds them on the
# current GDC data model (the API silently ignores a field it does not know):
# * demographic.sex_at_birth: the GDC data dictionary (v3.4, July 2025) replaced demographic.gender
#   by sex_at_birth, and the API no longer returns gender - asking only for gender gives every
#   case an empty sex;
# * the diagnosis flags that tell the primary diagnosis from a prior / other one (a case may
#   carry several diagnoses, in no guaranteed order).
EXTRA_CASE_FIELDS = ("demographic.sex_at_birth", "diagnoses.classification_of_tumor",
                     "diagnoses.diagnosis_is_primary_disease")


def case_fields(s: dict) -> list[str]:
    fields = list(s["case_fields"])
    return fields + [f for f in EXTRA_CASE_FIELDS if f not in fields]


def cases_row(projects, s: dict) -> dict:
    """The clinical records as one manifest entry: a POST /cases fetched like any file."""
    body = {"filters": cases_filters(projects), "fields": ",".join(case_fields(s)), "format": "JSON",
            "size": int(s.get("case_page_size", 20000)), "from": 0}
    return {"file_id": "cases", "file_name": "cases.json", "url": f"{s['base_url'].rstrip('/')}/cases",
            "md5": "", "size": "", "method": "POST", "payload": json.dumps(body, sort_keys=True),
            "case_id": "", "patient": "", "sample": "", "project": ",".join(projects), "data_type": "clinical"}


def read_cases(path) -> list[dict]:
    """Hits of a saved /cases response; refuses a truncated one (raise case_page_size)."""
    doc = json.loads(Path(path).read_text())
    try:
        hits, total = doc["data"]["hits"], int(doc["data"]["pagination"]["total"])
    except (KeyError, TypeError) as e:
        raise DownloadError(f"{path}: not a GDC /cases response (no data.hits / data.pagination)") from e
    if len(hits) < total:
        raise DownloadError(f"{path}: {len(hits)} of {total} cases; raise case_page_size in resources/download/gdc.yaml")
    return hits


def fetch_bulk(client: Client, base_url: str, rows: list[dict], dest_dir) -> list[Path]:
    """Many files in one POST /data (a tar.gz of ``<file_id>/<file_name>``), extracted safely.

    One file is fetched with GET /data/<id>: for a single id the GDC sends the file, not a tar.gz.

    Each member is checked against the manifest md5 before it is moved into ``dest_dir``;
    nothing lands in ``dest_dir`` unless the whole archive is safe.
    """
    from crossmodal.download.http import ChecksumError, md5_of

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if len(rows) == 1:  # the GDC /data endpoint returns a single id's file itself, not an archive
        r = rows[0]
        return [client.fetch(f"{base_url.rstrip('/')}/data/{r['file_id']}", dest_dir / r["file_id"] / r["file_name"],
                             md5=r.get("md5") or None, size=r.get("size") or None)]
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".bulk-") as tmp:
        tar = Path(tmp) / "bulk.tar.gz"
        client.fetch(f"{base_url.rstrip('/')}/data", tar, json={"ids": [r["file_id"] for r in rows]},
                     desc="gdc bulk")
        ex = Path(tmp) / "x"
        safe_extract(tar, ex)
        out = []
        for r in rows:
            src = ex / r["file_id"] / r["file_name"]
            if not src.exists():
                raise DownloadError(f"GDC bulk archive lacks {r['file_id']}/{r['file_name']}")
            if r.get("md5") and md5_of(src) != r["md5"]:
                raise ChecksumError(f"GDC bulk archive: {r['file_id']}/{r['file_name']}: md5 mismatch")
            dst = dest_dir / r["file_id"] / r["file_name"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), dst)
            out.append(dst)
    return out


# -- parsing ------------------------------------------------------------------------------------
def clinical_table(cases: list[dict]) -> pd.DataFrame:
    """One row per patient: patient, project, grade, stage, survival_time (days), event, age (years), sex."""
    recs, negative = [], []
    for c in cases:
        demo = c.get("demographic") or {}
        dxs = [d for d in (c.get("diagnoses") or []) if d]
        dx = _primary_diagnosis(dxs)
        vital = str(demo.get("vital_status") or "").strip().lower()
        dead = vital == "dead"
        if dead:
            t = demo.get("days_to_death")
        else:  # the last follow-up of any diagnosis record of the case
            fu = [d.get("days_to_last_follow_up") for d in dxs]
            fu = [v for v in fu if isinstance(v, (int, float)) and not isinstance(v, bool)]
            t = max(fu) if fu else None
        if vital not in ("alive", "dead"):
            t = None  # no event indicator: the follow-up time alone is not a survival observation
        elif t is not None and t < 0:  # a GDC data-entry error (a few cases per project)
            negative.append(f"{c.get('submitter_id', '')} ({t:g} d)")
            t = None
        age = dx.get("age_at_diagnosis")
        recs.append({
            "patient": c.get("submitter_id", ""), "project": (c.get("project") or {}).get("project_id", ""),
            "grade": _grade(dx.get("tumor_grade")), "stage": _na(dx.get("ajcc_pathologic_stage")),
            "survival_time": t if t is not None else float("nan"),
            # "Not Reported" / "Unknown" vital status: no event indicator (and no survival time), not a
            # censored patient
            "event": int(dead) if vital in ("alive", "dead") else "",
            "age": round(age / 365.25, 2) if isinstance(age, (int, float)) else float("nan"),
            "sex": _sex(demo),
        })
    if negative:
        log.warning("GDC clinical: negative survival time for %d case(s), written as unknown (excluded from "
                    "survival): %s", len(negative), ", ".join(negative[:20]))
    df = pd.DataFrame(recs, columns=["patient", "project", "grade", "stage", "survival_time", "event", "age", "sex"])
    return df.drop_duplicates("patient").sort_values("patient").reset_index(drop=True)


def _primary_diagnosis(dxs: list[dict]) -> dict:
    """The case's primary diagnosis: the one flagged primary (``diagnosis_is_primary_disease``
    or ``classification_of_tumor`` "primary"), else the first."""
    for d in dxs:
        cls = str(d.get("classification_of_tumor") or "").lower()
        # a keyword field in the GDC index: /cases gives a JSON boolean, other endpoints "true"
        if str(d.get("diagnosis_is_primary_disease")).lower() == "true" or cls == "primary":
            return d
    return dxs[0] if dxs else {}


def _sex(demo: dict) -> str:
    """``demographic.sex_at_birth`` (current GDC model), else the retired ``gender``; "" if unknown."""
    for k in ("sex_at_birth", "gender"):
        v = str(demo.get(k) or "").strip().lower()
        if v and v not in ("not reported", "unknown", "unspecified", "--"):
            return v
    return ""


def _na(v):
    return "" if v in (None, "Not Reported", "not reported", "Unknown", "unknown", "--") else v


# GDC tumor_grade values that say the grade is unknown: "GX" is "grade cannot be assessed" (AJCC),
# not a grade above G4
NOT_A_GRADE = frozenset({"", "gx", "unknown", "not reported", "not applicable", "not allowed to collect", "--"})


def _grade(v):
    """GDC ``tumor_grade`` -> the grade, or "" when it is missing or not assessable (GX, Not Applicable)."""
    return "" if v is None or str(v).strip().lower() in NOT_A_GRADE else v


def sample_sheet(manifest: pd.DataFrame, raw_path, dataset: str) -> pd.DataFrame:
    """Backbone sample sheet rows from a GDC manifest.

    With slides: one row per diagnostic slide (sample id = slide barcode), paired with the
    STAR-counts file of the same patient and sample type (barcode's first 15 characters).
    Without: one row per STAR-counts file's sample.  Several aliquots of one sample: the first
    file by id is used and the choice logged.
    """
    from crossmodal.samplesheet import COLUMNS

    m = manifest.copy()
    m["path"] = [raw_path(i, n) for i, n in zip(m["file_id"], m["file_name"])]
    m["key"] = m["sample"].str[:15]
    expr = m[m["data_type"] == "star_counts"].sort_values("file_id")
    dup = expr["key"].duplicated(keep="first")
    if dup.any():
        log.warning("%d STAR-counts files share a sample with another (extra aliquots); first by file id used",
                    int(dup.sum()))
    expr = expr[~dup].set_index("key")
    slides = m[m["data_type"] == "diagnostic_slide"]
    rows = []
    if len(slides):
        for r in slides.itertuples():
            sid = r.file_name.split(".")[0]
            e = expr.loc[r.key] if r.key in expr.index else None
            rows.append({"patient": r.patient, "sample": sid, "cohort": r.project, "dataset": dataset,
                         "slide": r.path, "expression": e["path"] if e is not None else "",
                         "expression_format": "star_counts" if e is not None else "", "mpp": ""})
        paired = {k for k in slides["key"]}
        rest = expr[~expr.index.isin(paired)]
    else:
        rest = expr
    for key, r in rest.iterrows():
        rows.append({"patient": r["patient"], "sample": key, "cohort": r["project"], "dataset": dataset,
                     "slide": "", "expression": r["path"], "expression_format": "star_counts", "mpp": ""})
    df = pd.DataFrame(rows, columns=COLUMNS)
    dup = df["sample"].duplicated(keep=False) & (df["slide"] != "")
    if dup.any():  # two slide files with one barcode (re-scans): keep both, distinct ids
        df.loc[dup, "sample"] = [f"{s}-{Path(p).parent.name[:8]}" for s, p in zip(df.loc[dup, "sample"], df.loc[dup, "slide"])]
    return df.sort_values(["cohort", "patient", "sample"]).reset_index(drop=True)

