"""NCBI GEO: series matrix + supplementary files -> gene x sample matrix + characteristics.

The series matrix (``<GSE>_series_matrix.txt.gz``) gives sample ids, titles and
characteristics; for RNA-seq series its table is usually empty and the counts are in a
supplementary file.  Layouts (``resources/download/geo.yaml``): ``table`` (one file, first
column gene id, one column per sample named by GSM or by sample title) or ``per_sample_tar``
(``<GSE>_RAW.tar`` of one file per GSM: gene id, value).  The parsed matrix is written back as
a series matrix (``!Sample_*`` header lines + ``ID_REF`` table), the format the backbone's
``geo_series_matrix`` reader takes.
"""
from __future__ import annotations

import fnmatch
import gzip
import logging
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from crossmodal.download.http import Client, safe_extract

log = logging.getLogger(__name__)


def series_dir(base_url: str, gse: str) -> str:
    if not re.fullmatch(r"GSE\d+", gse):
        raise ValueError(f"GEO: {gse!r} is not a series accession (GSE<digits>)")
    num = gse[3:]
    stub = f"GSE{num[:-3]}nnn" if len(num) > 3 else "GSEnnn"
    return f"{base_url.rstrip('/')}/{stub}/{gse}"


def _row(gse, fid, name, url, kind):
    return {"file_id": fid, "file_name": name, "url": url, "md5": "", "size": "", "method": "GET",
            "payload": "", "case_id": "", "patient": "", "sample": "", "project": gse, "data_type": kind}


def static_rows(d: dict, s: dict) -> list[dict]:
    """The series matrices (single-platform name); supplementary files need the index."""
    return [_row(g, f"{g}-matrix", f"{g}_series_matrix.txt.gz",
                 f"{series_dir(s['base_url'], g)}/matrix/{g}_series_matrix.txt.gz", "series_matrix")
            for g in d["series"]]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            for k, v in attrs:
                if k == "href" and v and not v.startswith(("?", "/", "..")) and not v.endswith("/"):
                    self.links.append(v)


def list_dir(client: Client, url: str) -> list[str]:
    p = _Links()
    p.feed(client.request("GET", url.rstrip("/") + "/").text)
    return p.links


def query(params: dict, client: Client) -> list[dict]:
    d, s = params["definition"], params["settings"]
    rows = []
    for g in d["series"]:
        sd = series_dir(s["base_url"], g)
        spec = s.get("series", {}).get(g, {})
        mats = [n for n in list_dir(client, f"{sd}/matrix") if n.endswith("_series_matrix.txt.gz")]
        if not mats:
            raise ValueError(f"GEO {g}: no series matrix under {sd}/matrix/")
        for i, n in enumerate(sorted(mats)):
            rows.append(_row(g, f"{g}-matrix" + (f"-{i}" if i else ""), n, f"{sd}/matrix/{n}", "series_matrix"))
        pats = spec.get("supplementary", [])
        sup = [n for n in list_dir(client, f"{sd}/suppl") if any(fnmatch.fnmatch(n, p) for p in pats)] if pats else []
        for i, n in enumerate(sorted(sup)):
            rows.append(_row(g, f"{g}-suppl-{i}", n, f"{sd}/suppl/{n}", "supplementary"))
        log.info("GEO %s: %d matrix file(s), %d supplementary file(s)", g, len(mats), len(sup))
    return rows


# -- parsing -------------------------------------------------------------------------------------
# The series-matrix format is parsed once, by the backbone's reader
# (crossmodal.expression.readers.read_geo_series_matrix); here the raw file is only split into
# its header lines (kept verbatim for the output) and its table.
def _open_text(path):
    return gzip.open(path, "rt", errors="replace") if str(path).endswith(".gz") else open(path, errors="replace")


def split_series_matrix(path) -> tuple[list[str], list[str]]:
    """(``!`` header lines before the table, table lines incl. the ID_REF header), unparsed."""
    header, table, state = [], [], "header"
    with _open_text(path) as f:
        for line in f:
            low = line.strip().lower()
            if low == "!series_matrix_table_begin":
                state = "table"
            elif low == "!series_matrix_table_end":
                state = "done"
            elif state == "table" and line.strip():
                table.append(line.rstrip("\n"))
            elif state == "header" and line.startswith("!"):
                header.append(line.rstrip("\n"))
    if not any(h.startswith("!Sample_geo_accession") for h in header):
        raise ValueError(f"{path}: not a GEO series matrix (no !Sample_geo_accession line)")
    return header, table


def characteristics(header: list[str]) -> pd.DataFrame:
    """Sample characteristics (column ``sample`` = GSM, then one per ``!Sample_*`` field / key)
    of a series matrix whose table is empty (RNA-seq series), read by the backbone's reader
    from the header plus a one-row placeholder table."""
    from crossmodal.expression.readers import read_geo_series_matrix

    acc = next(h for h in header if h.startswith("!Sample_geo_accession"))
    gsms = [c.strip().strip('"') for c in acc.split("\t")[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "header_only_series_matrix.txt"
        write_series_matrix(f, header, pd.DataFrame([[0] * len(gsms)], index=["placeholder"], columns=gsms))
        _, meta = read_geo_series_matrix(f)
    return meta.reset_index()


def _read_table(path) -> pd.DataFrame:
    name = str(path).lower()
    sep = "," if name.endswith((".csv", ".csv.gz")) else "\t"
    if name.endswith((".xlsx", ".xls")):
        return pd.read_excel(path, index_col=0)
    return pd.read_csv(path, sep=sep, index_col=0, comment=None)


def expression_from_supplementary(files: list[str], layout: str, ch: pd.DataFrame) -> pd.DataFrame:
    """A gene x GSM matrix from the supplementary files of one series."""
    gsms = list(ch["sample"])
    title_to_gsm = {str(t): g for t, g in zip(ch.get("title", pd.Series(dtype=str)), ch["sample"])}
    if layout == "per_sample_tar":
        cols = {}
        for tar in files:
            with tempfile.TemporaryDirectory() as tmp:
                for member in safe_extract(tar, tmp):
                    m = re.match(r"(GSM\d+)", member.name)
                    if not m or m.group(1) not in gsms:
                        continue
                    t = _read_table(member)
                    num = t.select_dtypes("number")
                    if num.shape[1] == 0:
                        raise ValueError(f"{tar}: {member.name}: no numeric column")
                    col = num.iloc[:, -1]
                    if col.index.has_duplicates:
                        # e.g. GSE50760's per-sample FPKM files list a few gene symbols twice; the
                        # backbone sums a symbol's rows, so do it here (samples cannot be aligned
                        # on a duplicated index)
                        col = col.groupby(level=0, sort=False).sum(min_count=1)
                    cols[m.group(1)] = col
        if not cols:
            raise ValueError(f"{files}: no per-sample file named after a GSM of the series")
        return pd.DataFrame(cols)
    if layout == "table":
        for f in files:
            t = _read_table(f)
            rename = {c: (c if c in gsms else title_to_gsm.get(str(c))) for c in t.columns}
            keep = {c: g for c, g in rename.items() if g}
            if keep:
                dropped = [c for c in t.columns if c not in keep]
                if dropped:
                    log.warning("%s: %d column(s) not matched to a GSM dropped (e.g. %s)", f, len(dropped), dropped[:3])
                return t[list(keep)].rename(columns=keep)
        raise ValueError(f"GEO supplementary {files}: no column matches a GSM id or sample title "
                         f"(set the series' layout / patterns in resources/download/geo.yaml)")
    raise ValueError(f"GEO layout {layout!r}: expected table or per_sample_tar")


def write_series_matrix(path, header: list[str], matrix: pd.DataFrame) -> None:
    from crossmodal.fileio import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for h in header:
                f.write(h + "\n")
            f.write("!series_matrix_table_begin\n")
            matrix.index.name = "ID_REF"
            matrix.to_csv(f, sep="\t", quoting=0)
            f.write("!series_matrix_table_end\n")


def parse_series(gse: str, matrix_files: list[str], supp_files: list[str], layout: str,
                 out_matrix, out_characteristics) -> pd.DataFrame:
    """Write one series as a series matrix with its expression table + a characteristics TSV.

    A series matrix with a table (microarrays) is read by the backbone's reader; an empty one
    (RNA-seq) gets its table from the supplementary files.  The output is read back by the
    backbone's reader, so a file the pipeline cannot use is never left in place.
    """
    from crossmodal.expression.readers import read_geo_series_matrix
    from crossmodal.fileio import write_table

    if not matrix_files:
        raise ValueError(f"GEO {gse}: no series matrix in the manifest")
    header, table_lines = split_series_matrix(matrix_files[0])
    if len(table_lines) > 1:
        table, meta = read_geo_series_matrix(matrix_files[0])
        ch = meta.reset_index()
    else:
        ch = characteristics(header)
        if not supp_files:
            raise ValueError(f"GEO {gse}: the series matrix {matrix_files[0]} has no table and no supplementary "
                             f"file was selected (resources/download/geo.yaml series.{gse}.supplementary)")
        table = expression_from_supplementary(supp_files, layout, ch)
    table = table[[c for c in ch["sample"] if c in table.columns]]
    if table.shape[1] == 0:
        raise ValueError(f"GEO {gse}: no expression column matches the series' samples")
    write_series_matrix(out_matrix, header, table)
    try:
        read_geo_series_matrix(out_matrix)
    except ValueError:
        Path(out_matrix).unlink(missing_ok=True)
        raise
    write_table(out_characteristics, ch, index=False)
    log.info("GEO %s: %d features x %d samples", gse, *table.shape)
    return ch[ch["sample"].isin(table.columns)]
