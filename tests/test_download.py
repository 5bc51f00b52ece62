"""Download clients against a loopback HTTP server (no internet): paging, retries, resume,
checksums, tokens, safe tar extraction, proxies, and the Snakemake rules end to end."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_snakemake
from crossmodal.download import gdc
from crossmodal.download.http import (ChecksumError, Client, DownloadError, HttpSettings, TokenRequiredError,
                                      TokenSource, UnsafeArchiveError, safe_extract)
from crossmodal.download.manifest import Plan, read_manifest

FIX = REPO / "tests" / "fixtures" / "download"


# -- the loopback server ------------------------------------------------------------------------
class Server:
    """Routes: path -> list of scripted replies; the last one repeats.  A reply is
    ("ok", body) | ("status", code, headers) | ("cut", body, n_bytes) | ("gdc", hits) | ("fn", f)."""

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path
                with srv.lock:
                    srv.requests.append({"method": self.command, "path": path, "headers": dict(self.headers),
                                         "body": body})
                    script = srv.routes.get(path.split("?")[0]) or srv.routes.get(path)
                    if script is None:
                        reply = ("status", 404, {})
                    else:
                        reply = script.pop(0) if len(script) > 1 else script[0]
                kind = reply[0]
                if kind == "fn":
                    reply = reply[1](self.command, path, body)
                    kind = reply[0]
                if kind == "status":
                    self.send_response(reply[1])
                    for k, v in reply[2].items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if kind == "gdc":
                    req = json.loads(body or b"{}")
                    hits, start, size = reply[1], int(req.get("from", 0)), int(req.get("size", 10))
                    page = hits[start:start + size]
                    doc = {"data": {"hits": page, "pagination": {
                        "count": len(page), "total": len(hits), "size": size, "from": start,
                        "page": start // size + 1, "pages": -(-len(hits) // size), "sort": ""}}, "warnings": {}}
                    data = json.dumps(doc).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                data = reply[1]
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if kind == "cut":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:reply[2]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                part = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(part)

            do_GET = do_POST = do_HEAD = _reply

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, path, *replies):
        self.routes[path] = list(replies)

    def hits(self, path):
        return [r for r in self.requests if r["path"].split("?")[0] == path]


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _client(delays=None, **kw) -> Client:
    kw.setdefault("retries", 3)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("progress", False)
    tok = kw.pop("token", TokenSource())
    return Client(HttpSettings(token=tok, **kw), sleep=(delays.append if delays is not None else (lambda s: None)))


BODY = bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8))
MD5 = hashlib.md5(BODY).hexdigest()


# -- HTTP policy --------------------------------------------------------------------------------
def test_gdc_search_pages_over_three_pages(server):
    hits = json.loads((FIX / "gdc_files_hits.json").read_text())
    server.route("/files", ("gdc", hits))
    got = gdc.search(_client(), server.url, "files", {"op": "and", "content": []}, ["file_id"], page_size=2)
    assert [h["file_id"] for h in got] == [h["file_id"] for h in hits]
    assert [json.loads(r["body"])["from"] for r in server.hits("/files")] == [0, 2, 4]


def test_md5_mismatch_is_retried_then_a_clear_error_and_no_file_left(server, tmp_path):
    server.route("/f", ("ok", BODY[:-1] + b"x"))
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match="md5.*bad file was removed"):
        _client(retries=2).fetch(f"{server.url}/f", dest, md5=MD5)
    assert len(server.hits("/f")) == 3
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()


def test_429_then_success_honours_retry_after(server, tmp_path):
    server.route("/f", ("status", 429, {"Retry-After": "7"}), ("ok", BODY))
    delays: list[float] = []
    out = _client(delays).fetch(f"{server.url}/f", tmp_path / "f.bin", md5=MD5)
    assert out.read_bytes() == BODY
    assert delays == [7.0]  # the server's Retry-After, not the backoff


def test_500_then_success_with_exponential_backoff(server, tmp_path):
    server.route("/f", ("status", 500, {}), ("status", 503, {}), ("ok", BODY))
    delays: list[float] = []
    _client(delays, backoff_base=0.5).fetch(f"{server.url}/f", tmp_path / "f.bin", md5=MD5)
    assert delays == [0.5, 1.0]
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_connection_cut_mid_body_is_resumed_with_range(server, tmp_path):
    server.route("/f", ("cut", BODY, 70_000), ("ok", BODY))
    dest = _client(chunk_size=1000).fetch(f"{server.url}/f", tmp_path / "f.bin", md5=MD5, size=len(BODY))
    assert hashlib.md5(dest.read_bytes()).hexdigest() == MD5
    reqs = server.hits("/f")
    assert "Range" not in reqs[0]["headers"]
    assert reqs[1]["headers"]["Range"] == "bytes=70000-"


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.route("/f", ("ok", BODY))
    (tmp_path / "f.bin.part").write_bytes(BODY[:1234])
    _client().fetch(f"{server.url}/f", tmp_path / "f.bin", md5=MD5)
    assert server.hits("/f")[0]["headers"]["Range"] == "bytes=1234-"
    assert (tmp_path / "f.bin").read_bytes() == BODY


@pytest.mark.parametrize("code", [401, 403])
def test_401_403_without_token_says_a_token_is_needed_and_where(server, tmp_path, code, monkeypatch):
    monkeypatch.delenv("GDC_TOKEN_TEST", raising=False)
    server.route("/data/x", ("status", code, {}))
    tok = TokenSource(env="GDC_TOKEN_TEST", file=str(tmp_path / "no-token"))
    with pytest.raises(TokenRequiredError) as e:
        _client(token=tok).fetch(f"{server.url}/data/x", tmp_path / "x")
    msg = str(e.value)
    assert "token is needed" in msg and "GDC_TOKEN_TEST" in msg and str(tmp_path / "no-token") in msg
    assert len(server.hits("/data/x")) == 1  # not retried
    assert not (tmp_path / "x").exists()


def test_token_from_file_is_sent_but_never_logged(server, tmp_path, caplog):
    secret = "s3cr3t-token-value"
    (tmp_path / "tok").write_text(secret + "\n")
    server.route("/f", ("status", 500, {}), ("ok", BODY))
    with caplog.at_level(logging.DEBUG):
        _client(token=TokenSource(env="", file=str(tmp_path / "tok"))).fetch(f"{server.url}/f", tmp_path / "f")
    assert all(r["headers"].get("X-Auth-Token") == secret for r in server.hits("/f"))
    assert secret not in caplog.text


def test_https_proxy_env_is_honoured(server, tmp_path, monkeypatch):
    """trust_env is on: a request for an outside host goes to the proxy named in the env."""
    c = _client(retries=0)
    assert c.session.trust_env is True
    server.route("http://data.example.invalid/f", ("ok", b"via proxy"))
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.delenv("NO_PROXY", raising=False)
    c.fetch("http://data.example.invalid/f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"via proxy"


def test_fetch_many_runs_concurrently_and_reports_failures(server, tmp_path):
    server.route("/a", ("ok", BODY))
    server.route("/b", ("ok", b"wrong"))
    items = [{"url": f"{server.url}/a", "dest": tmp_path / "a", "md5": MD5},
             {"url": f"{server.url}/b", "dest": tmp_path / "b", "md5": MD5}]
    with pytest.raises(DownloadError, match="1 of 2 downloads failed"):
        _client(retries=0, max_workers=2).fetch_many(items)
    assert (tmp_path / "a").read_bytes() == BODY and not (tmp_path / "b").exists()


def test_fetch_many_never_exceeds_the_concurrency_limit(server, tmp_path):
    import time

    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow(method, path, body):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return ("ok", BODY)

    for i in range(6):
        server.route(f"/c{i}", ("fn", slow))
    items = [{"url": f"{server.url}/c{i}", "dest": tmp_path / f"c{i}", "md5": MD5} for i in range(6)]
    out = _client(max_workers=2).fetch_many(items)
    assert len(out) == 6 and all(p.read_bytes() == BODY for p in out)
    assert state["peak"] == 2  # parallel, but never more than max_workers at once


# -- archives -------------------------------------------------------------------------------------
def _tar(members: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            ti = tarfile.TarInfo(m[0])
            if m[1] == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, m[2]
                tf.addfile(ti)
            else:
                ti.size = len(m[1])
                tf.addfile(ti, io.BytesIO(m[1]))
    return buf.getvalue()


@pytest.mark.parametrize("members", [
    [("ok.txt", b"x"), ("../evil.txt", b"x")],
    [("/abs/evil.txt", b"x")],
    [("link", "sym", "../../etc/passwd")],
    [("link", "sym", "/etc/passwd")],
], ids=["dotdot", "absolute", "link-outside", "link-absolute"])
def test_unsafe_tar_is_rejected_and_nothing_extracted(tmp_path, members):
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(_tar(members))
    dest = tmp_path / "out" / "x"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(arc, dest)
    assert not any(dest.rglob("*")) and not (tmp_path / "out" / "evil.txt").exists()


def test_gdc_bulk_tar_keeps_colliding_names_distinct(server, tmp_path):
    a, b = b"counts of case A\n", b"counts of case B\n"
    server.route("/data", ("ok", _tar([("id-a/counts.tsv", a), ("id-b/counts.tsv", b), ("MANIFEST.txt", b"m")])))
    rows = [{"file_id": "id-a", "file_name": "counts.tsv", "md5": hashlib.md5(a).hexdigest()},
            {"file_id": "id-b", "file_name": "counts.tsv", "md5": hashlib.md5(b).hexdigest()}]
    out = gdc.fetch_bulk(_client(), server.url, rows, tmp_path / "raw")
    assert [p.read_bytes() for p in out] == [a, b]
    assert json.loads(server.hits("/data")[0]["body"]) == {"ids": ["id-a", "id-b"]}
    assert not list((tmp_path / "raw").glob(".bulk-*"))


def test_gdc_bulk_of_one_file_uses_get_since_the_gdc_sends_the_file_not_a_tar(server, tmp_path):
    """GDC /data: "If a single UUID is provided, the API will return the associated file"."""
    body = b"gene_id\tunstranded\n"
    server.route("/data/id-a", ("ok", body))
    rows = [{"file_id": "id-a", "file_name": "counts.tsv", "md5": hashlib.md5(body).hexdigest()}]
    out = gdc.fetch_bulk(_client(), server.url, rows, tmp_path / "raw")
    assert [p.read_bytes() for p in out] == [body] and out[0] == tmp_path / "raw" / "id-a" / "counts.tsv"
    assert not server.hits("/data")


def test_gdc_query_cut_mid_body_is_retried(server):
    """A /files answer cut short (ChunkedEncodingError, not a ConnectionError) is retried."""
    hits = json.loads((FIX / "gdc_files_hits.json").read_text())
    page = json.dumps({"data": {"hits": hits, "pagination": {"count": 5, "total": 5, "size": 500, "from": 0,
                                                             "page": 1, "pages": 1, "sort": ""}}}).encode()
    server.route("/files", ("cut", page, 100), ("ok", page))
    delays: list[float] = []
    got = gdc.search(_client(delays), server.url, "files", {"op": "and", "content": []}, ["file_id"])
    assert len(got) == 5 and len(delays) == 1


def test_gdc_query_answered_with_html_names_the_url(server):
    server.route("/files", ("ok", b"<html>The GDC is down for maintenance</html>"))
    with pytest.raises(DownloadError, match=r"POST http://127.0.0.1:\d+/files: HTTP 200 but the body is not JSON"):
        gdc.search(_client(), server.url, "files", {"op": "and", "content": []}, ["file_id"])


# -- parsers --------------------------------------------------------------------------------------
def test_gtex_attributes_with_bare_quotes_in_notes_keep_every_row():
    """GTEx annotation files are not CSV-quoted; a pathology note that opens a double quote must
    not swallow the next rows (with quoting on, the Thyroid row merged into the Muscle one)."""
    from crossmodal.download import gtex

    a = gtex.read_attributes(FIX / "gtex_sample_attributes.txt")
    assert len(a) == 9 and list(a.columns[:2]) == ["SAMPID", "SMATSSCR"]
    row = a.set_index("SAMPID").loc["GTEX-1117F-0426-SM-5EGHI"]
    assert row["SMTSD"] == "Thyroid" and row["SMPTHNTS"].startswith('"nodular goiter')
    assert a.set_index("SAMPID").loc["GTEX-1117F-0626-SM-5EGHK", "SMPTHNTS"] == '2 pieces, 1" x 0.5"'


def test_geo_per_sample_tar_in_the_gse50760_layout(tmp_path):
    """GSE50760_RAW.tar: GSM<id>_AMC_<patient>.<tissue>_FPKM.txt.gz, columns ``genes`` and
    ``AMC_2.1_FPKM``; a few gene symbols occur twice, and files need not share the row order."""
    from crossmodal.download import geo

    files = {"GSM1228184": ("AMC_2.1", [("TSPAN6", 20.3), ("A2M", 95.2), ("SNORD3A", 1.0), ("SNORD3A", 2.5)]),
             "GSM1228185": ("AMC_3.1", [("A2M", 40.1), ("SNORD3A", 0.5), ("TSPAN6", 31.7), ("SNORD3A", 0.25)])}
    tar = tmp_path / "GSE50760_RAW.tar"
    with tarfile.open(tar, "w") as tf:
        for gsm, (title, rows) in files.items():
            text = f"genes\t{title}_FPKM\n" + "".join(f"{g}\t{v}\n" for g, v in rows)
            data = gzip.compress(text.encode())
            ti = tarfile.TarInfo(f"{gsm}_{title}_FPKM.txt.gz")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    ch = pd.DataFrame({"sample": list(files), "title": ["AMC_2.1", "AMC_3.1"]})
    m = geo.expression_from_supplementary([str(tar)], "per_sample_tar", ch)
    assert list(m.columns) == ["GSM1228184", "GSM1228185"]
    assert m.loc["SNORD3A"].tolist() == [3.5, 0.75] and m.loc["A2M"].tolist() == [95.2, 40.1]


def test_gdc_sample_sheet_pairs_slides_with_counts_and_keeps_colliding_names_apart(tmp_path):
    hits = json.loads((FIX / "gdc_files_hits.json").read_text())
    rows = gdc.file_rows(hits[:3], "star_counts", "http://x") + gdc.file_rows(hits[3:], "diagnostic_slide", "http://x")
    m = pd.DataFrame(rows)
    sheet = gdc.sample_sheet(m, lambda i, n: f"raw/{i}/{n}", "tcga").set_index("sample")
    # two cases' files share one file name; each sample keeps its own file
    e1, e2 = sheet.loc["TCGA-05-4244-01Z-00-DX1", "expression"], sheet.loc["TCGA-05-4249-01", "expression"]
    assert e1 != e2 and Path(e1).name == Path(e2).name
    assert sheet.loc["TCGA-AA-3517-01Z-00-DX1", "slide"].endswith(".svs")
    assert sheet.loc["TCGA-AA-3517-01Z-00-DX1", "expression_format"] == "star_counts"
    assert len(sheet) == 3


def test_gdc_clinical_table(tmp_path):
    cases = json.loads((FIX / "gdc_cases_hits.json").read_text())
    t = gdc.clinical_table(cases).set_index("patient")
    assert t.loc["TCGA-05-4249", "event"] == 1 and t.loc["TCGA-05-4249", "survival_time"] == 1523
    assert t.loc["TCGA-05-4244", "event"] == 0 and t.loc["TCGA-05-4244", "stage"] == "Stage IV"
    assert t.loc["TCGA-05-4244", "grade"] == ""  # "Not Reported" is missing, not a grade
    # "GX" (grade cannot be assessed) / "Not Applicable" are missing too, not a grade above G4
    for raw, want in (("GX", ""), ("Not Applicable", ""), ("unknown", ""), ("G4", "G4"), ("G2", "G2")):
        c = json.loads(json.dumps(cases[0]))
        c["diagnoses"] = [{**(c.get("diagnoses") or [{}])[0], "tumor_grade": raw}]
        assert gdc.clinical_table([c]).grade.iloc[0] == want, raw
    assert t.loc["TCGA-AA-3517", "sex"] == "female" and abs(t.loc["TCGA-AA-3517", "age"] - 54.27) < 0.01
    # TCGA-AA-3517 lists a prior primary first: age / stage / follow-up are the primary diagnosis's
    assert t.loc["TCGA-AA-3517", "stage"] == "Stage IIA" and t.loc["TCGA-AA-3517", "survival_time"] == 1790


def test_gdc_clinical_sex_is_read_from_sex_at_birth_and_gender_only_as_fallback():
    """The GDC data dictionary v3.4 replaced demographic.gender by sex_at_birth; the API
    returns only sex_at_birth now (the fixture's format), older dumps only gender."""
    cases = json.loads((FIX / "gdc_cases_hits.json").read_text())
    assert all("gender" not in c["demographic"] for c in cases)
    assert gdc.clinical_table(cases).sex.tolist() == ["male", "male", "female"]
    old = [{**cases[0], "demographic": {"gender": "female", "vital_status": "Alive"}}]
    assert gdc.clinical_table(old).sex.iloc[0] == "female"
    nr = [{**cases[0], "demographic": {"sex_at_birth": "Not Reported", "vital_status": "Alive"}}]
    assert gdc.clinical_table(nr).sex.iloc[0] == ""
    # the /cases request asks for sex_at_birth even where gdc.yaml lists only gender
    s = {"base_url": "http://x", "case_fields": ["submitter_id", "demographic.gender"]}
    fields = json.loads(gdc.cases_row(["TCGA-LUAD"], s)["payload"])["fields"].split(",")
    assert "demographic.sex_at_birth" in fields and "demographic.gender" in fields
    assert len(fields) == len(set(fields))


def test_gdc_clinical_unknown_vital_status_has_no_event():
    """vital_status "Not Reported" is not "alive": no event indicator rather than a censored case."""
    c = json.loads((FIX / "gdc_cases_hits.json").read_text())[0]
    c["demographic"] = {**c["demographic"], "vital_status": "Not Reported"}
    t = gdc.clinical_table([c])
    assert t.event.iloc[0] == "" and np.isnan(t.survival_time.iloc[0])  # a follow-up time alone is no observation


def test_gdc_clinical_negative_survival_time_is_unknown_and_logged(tmp_path, caplog):
    """A negative days_to_last_follow_up (a GDC data-entry error) is written as unknown, naming the
    case in the log, so the table passes crossmodal.clinical.read_clinical (which refuses negative
    times) and the patient is left out of survival rather than stopping the run."""
    from crossmodal.clinical import read_clinical

    c = json.loads((FIX / "gdc_cases_hits.json").read_text())[0]
    c["demographic"] = {**c["demographic"], "vital_status": "Alive"}
    c["diagnoses"] = [{**d, "days_to_last_follow_up": -12} for d in c["diagnoses"]]
    with caplog.at_level("WARNING"):
        t = gdc.clinical_table([c])
    assert np.isnan(t.survival_time.iloc[0]) and t.event.iloc[0] == 0
    assert c["submitter_id"] in caplog.text and "-12 d" in caplog.text
    t.to_csv(tmp_path / "clinical.tsv", sep="\t", index=False)
    assert np.isnan(read_clinical(tmp_path / "clinical.tsv").survival_time.iloc[0])


def test_geo_parse_uses_the_backbone_reader_and_names_bad_inputs(tmp_path):
    from crossmodal.download import geo
    from crossmodal.expression.readers import read_geo_series_matrix

    mat = FIX / "geo_series_matrix.txt"
    counts = pd.read_csv(FIX / "geo_suppl_counts.txt", sep="\t", index_col=0)  # columns = sample titles
    counts.to_csv(tmp_path / "suppl.tsv", sep="\t")
    ch = geo.parse_series("GSE50760", [str(mat)], [str(tmp_path / "suppl.tsv")], "table",
                          tmp_path / "m.txt", tmp_path / "c.tsv")
    assert list(ch["sample"]) == ["GSM1228184", "GSM1228185", "GSM1228186"]
    table, meta = read_geo_series_matrix(tmp_path / "m.txt")  # titles mapped to GSM ids
    assert table.loc["A2M"].tolist() == pytest.approx(counts.loc["A2M", ["AMC_2_N", "AMC_2_P", "AMC_2_M"]].tolist())
    assert "sum" not in table.columns  # a column matching no sample (a total) is dropped
    assert meta.loc["GSM1228185", "tissue"] == "primary colorectal cancer"

    bad = tmp_path / "not_a_matrix.txt"
    bad.write_text("gene\tx\nA\t1\n")
    with pytest.raises(ValueError, match="not_a_matrix.txt: not a GEO series matrix"):
        geo.parse_series("GSE1", [str(bad)], [], "table", tmp_path / "m2.txt", tmp_path / "c2.tsv")
    with pytest.raises(ValueError, match="no table and no supplementary.*geo.yaml"):
        geo.parse_series("GSE50760", [str(mat)], [], "table", tmp_path / "m3.txt", tmp_path / "c3.tsv")
    assert not (tmp_path / "m2.txt").exists() and not (tmp_path / "m3.txt").exists()


def test_plan_rejects_unknown_cohort_naming_it():
    from crossmodal.config import load_config
    from crossmodal.download.manifest import DownloadConfigError

    cfg = load_config({"download": {"cohorts": ["tcga_nope"]}})
    with pytest.raises(DownloadConfigError, match="unknown cohort.*tcga_nope"):
        Plan(cfg, root=REPO)


def test_every_shipped_cohort_lists_its_static_files_offline():
    from crossmodal.config import load_config

    import yaml
    names = list(yaml.safe_load((REPO / "resources/download/cohorts.yaml").read_text()))
    plan = Plan(load_config({"download": {"cohorts": names}, "offline": True}), root=REPO)
    files = {c: plan.expected_files(c) for c in names}
    assert len(files["coherent_xena"]) == 1 + 20 * 5  # manifest + 20 types x 5 files (Table 4)
    assert any(f.endswith("GSE120795_series_matrix.txt.gz") for f in files["geo_external"])
    assert files["rna_cdm_tcga"] == ["resources/downloads/rna_cdm_tcga/manifest.tsv"]


# -- Snakemake, end to end against the loopback server ---------------------------------------------
def _serve_everything(server: Server, tmp: Path) -> None:
    from crossmodal.slides import write_svs

    star = (FIX / "star_counts.tsv").read_bytes()
    svs_path = tmp / "slide.svs"
    rgb = np.full((600, 800, 3), 235, np.uint8)
    rgb[100:500, 100:700] = (180, 90, 160)
    write_svs(svs_path, rgb, mpp=0.25)
    svs = svs_path.read_bytes()
    md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
    hits = json.loads((FIX / "gdc_files_hits.json").read_text()
                      .replace("@MD5_STAR@", md5(star)).replace('"@SIZE_STAR@"', str(len(star)))
                      .replace("@MD5_SVS@", md5(svs)).replace('"@SIZE_SVS@"', str(len(svs))))
    cases = json.loads((FIX / "gdc_cases_hits.json").read_text())

    def files(method, path, body):
        req = json.loads(body)
        kinds = json.dumps(req["filters"])
        return ("gdc", [h for h in hits if ("Slide Image" in kinds) == (h["data_type"] == "Slide Image")])

    server.route("/gdc/files", ("fn", files))
    server.route("/gdc/cases", ("gdc", cases))
    for h in hits:
        body = svs if h["file_name"].endswith(".svs") else star
        # the first slide is cut mid-body once: the job resumes it
        first = ("cut", body, 5000) if h["file_id"].endswith("04") else ("ok", body)
        server.route(f"/gdc/data/{h['file_id']}", first, ("ok", body))
    gz = lambda p: gzip.compress((FIX / p).read_bytes())  # noqa: E731
    server.route("/gtex/bulk-gex/v8/rna-seq/GTEx_Analysis_2017-06-05_v8_RNASeQCv1.1.9_gene_tpm.gct.gz",
                 ("ok", gz("gtex_gene_tpm.gct")))
    server.route("/gtex/annotations/v8/metadata-files/GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt",
                 ("ok", (FIX / "gtex_sample_attributes.txt").read_bytes()))
    server.route("/gtex/annotations/v8/metadata-files/GTEx_Analysis_v8_Annotations_SubjectPhenotypesDS.txt",
                 ("ok", (FIX / "gtex_subject_phenotypes.txt").read_bytes()))
    for t in ("GTEX-1117F-0526", "GTEX-111CU-0326"):
        server.route(f"/histology/{t}", ("status", 503, {"Retry-After": "0"}), ("ok", svs))
    sd = "/geo/GSE50nnn/GSE50760"
    server.route(f"{sd}/matrix/", ("ok", b'<html><a href="/geo/">Parent</a> <a href="GSE50760_series_matrix.txt.gz">m</a></html>'))
    server.route(f"{sd}/suppl/", ("ok", b'<a href="GSE50760_RAW.tar">GSE50760_RAW.tar</a> <a href="filelist.txt">f</a>'))
    server.route(f"{sd}/matrix/GSE50760_series_matrix.txt.gz", ("ok", gz("geo_series_matrix.txt")))
    table = pd.read_csv(FIX / "geo_suppl_counts.txt", sep="\t", index_col=0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for gsm, title in zip(("GSM1228184", "GSM1228185", "GSM1228186"), table.columns):
            data = gzip.compress(table[[title]].rename(columns={title: "FPKM"}).to_csv(sep="\t").encode())
            ti = tarfile.TarInfo(f"{gsm}_{title}.txt.gz")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    server.route(f"{sd}/suppl/GSE50760_RAW.tar", ("ok", buf.getvalue()))
    for mod, f in (("star_counts", "xena_star_counts.tsv"), ("protein", "xena_protein.tsv"),
                   ("gene-level_absolute", "xena_cna.tsv"), ("clinical", "xena_clinical.tsv"),
                   ("survival", "xena_survival.tsv")):
        server.route(f"/xena/TCGA-LUAD.{mod}.tsv.gz", ("ok", gz(f)))
    server.route("/mcat/datasets_csv_sig/signatures.csv", ("ok", (FIX / "mcat_signatures.csv").read_bytes()))


def _workdir(tmp: Path) -> Path:
    """A working directory whose resources/ is its own folder (shipped resources linked in), so
    downloads land in <wd>/resources/downloads and never in the repository's."""
    wd = tmp / "wd"
    (wd / "resources").mkdir(parents=True)
    for p in (REPO / "resources").iterdir():
        if p.name != "downloads":
            (wd / "resources" / p.name).symlink_to(p, target_is_directory=p.is_dir())
    return wd


def _config(server: Server, wd: Path) -> dict:
    # the cohort stays the toy default: download rules do not depend on the sample sheet
    return {"download": {"cohorts": ["tcga_tiny", "gtex_tiny", "geo_tiny", "xena_tiny", "mcat_tiny"],
                         "definitions": str(FIX / "cohorts.yaml"),
                         "base_urls": {"gdc": f"{server.url}/gdc", "gtex": f"{server.url}/gtex",
                                       "gtex_histology": f"{server.url}/histology", "geo": f"{server.url}/geo",
                                       "xena": f"{server.url}/xena", "mcat": f"{server.url}/mcat"},
                         "http": {"retries": 3, "backoff_base": 0.01, "progress": False}}}


SECRET = "gdc-token-5ecret-value"


def test_snakemake_downloads_and_parses_every_source(server, tmp_path):
    import openslide

    from crossmodal.expression.harmonise import read_sample_counts
    from crossmodal.expression.readers import read_geo_series_matrix
    from crossmodal.samplesheet import check_files, read_sheet

    _serve_everything(server, tmp_path)
    wd = _workdir(tmp_path)
    cfg = _config(server, wd)
    (wd / "cfg.json").write_text(json.dumps(cfg))
    run_snakemake(wd, "--nolock", "download_all", configfile=wd / "cfg.json", cores=2,
                  env={"GDC_TOKEN": SECRET, "http_proxy": "", "https_proxy": ""})
    out = wd / "results/download"
    import os
    os.chdir(wd)  # sheet paths are relative to the working directory
    try:
        tcga = read_sheet(out / "tcga_tiny/samples.tsv")
        check_files(tcga)
        assert set(tcga["sample"]) == {"TCGA-05-4244-01Z-00-DX1", "TCGA-AA-3517-01Z-00-DX1", "TCGA-05-4249-01"}
        slide = openslide.OpenSlide(tcga.loc["TCGA-05-4244-01Z-00-DX1", "slide"])  # resumed after the cut
        assert slide.properties["openslide.vendor"] == "aperio"
        star = pd.read_csv(tcga.loc["TCGA-05-4249-01", "expression"], sep="\t", comment="#", index_col=0)
        assert star.loc["ENSG00000000003.15", "unstranded"] == 3452
        assert pd.read_csv(out / "tcga_tiny/clinical.tsv", sep="\t")["patient"].tolist() == \
            ["TCGA-05-4244", "TCGA-05-4249", "TCGA-AA-3517"]

        gtex = read_sheet(out / "gtex_tiny/samples.tsv")
        check_files(gtex)
        assert set(gtex["sample"]) == {"GTEX-1117F-0526-SM-5EGHJ", "GTEX-111CU-0326-SM-5GZXO"}  # not EXCLUDE
        assert set(gtex["cohort"]) == {"GTEx-Lung"} and all(gtex["slide"].str.endswith(".svs"))
        gct = pd.read_csv(out / "gtex_tiny/expression.gct", sep="\t", skiprows=2, index_col=0)
        assert set(gct.columns[1:]) == set(gtex["sample"])
        assert open(out / "gtex_tiny/expression.gct").readline().strip() == "#1.2"

        geo = read_sheet(out / "geo_tiny/samples.tsv")
        assert list(geo["sample"]) == ["GSM1228184", "GSM1228185", "GSM1228186"]
        assert set(geo["patient"]) == {"GSE50760-AMC_2"}  # N, P, M of one patient: one split group
        table, ch = read_geo_series_matrix(out / "geo_tiny/GSE50760_series_matrix.txt")
        assert table.loc["A2M", "GSM1228186"] == pytest.approx(210.3)
        assert list(ch["tissue"]) == ["normal colon", "primary colorectal cancer", "liver metastasis"]

        # the backbone's expression readers take every sheet the download wrote
        for sheet in (tcga, gtex, geo):
            src = [{"sample": r["sample"], "format": r["expression_format"], "file": r["expression"]}
                   for r in sheet.to_dict(orient="records") if r["expression"]]
            counts = read_sample_counts(src)
            assert set(counts) == set(sheet.loc[sheet["expression"] != "", "sample"])
            assert all(len(c) >= 3 for c in counts.values())
        assert read_sample_counts([{"sample": "TCGA-05-4249-01", "format": "star_counts",
                                    "file": tcga.loc["TCGA-05-4249-01", "expression"]}])["TCGA-05-4249-01"]["TSPAN6"] == 3452

        rna = pd.read_csv(out / "xena_tiny/rnaseq.tsv.gz", sep="\t", index_col=0)
        assert list(rna.columns) == ["TCGA-05-4244-01A", "TCGA-05-4249-01A"]  # 11A (normal) dropped
        mods = pd.read_csv(out / "xena_tiny/modalities.tsv", sep="\t")
        assert mods[["has_rnaseq", "has_protein", "has_cna"]].to_numpy().tolist() == [[1, 1, 1], [1, 1, 1]]

        sig = pd.read_csv(out / "mcat_tiny/signatures.tsv", sep="\t")
        assert sig.groupby("group").size().to_dict() == {   # the real header ("Transcription Factors")
            "tumour_suppressor": 3, "oncogene": 4, "protein_kinase": 3, "cell_differentiation": 4,
            "transcription_factor": 4, "cytokine_growth_factor": 3}
        # a gene in several columns is kept in each group (MCAT builds each group's vector alone)
        assert sorted(sig.group[sig.gene == "EGFR"]) == ["oncogene", "protein_kinase"]
        assert list(dict.fromkeys(sig["group"])) == ["tumour_suppressor", "oncogene", "protein_kinase",
                                                       "cell_differentiation", "transcription_factor",
                                                       "cytokine_growth_factor"]
    finally:
        os.chdir(REPO)
    assert not list(wd.rglob("*.part"))
    # the token was sent to the GDC, and is in no file the run wrote (results, logs, metadata)
    assert all(r["headers"].get("X-Auth-Token") == SECRET for r in server.requests if r["path"].startswith("/gdc/data/"))
    written = [p for p in wd.rglob("*") if p.is_file() and not p.is_symlink()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert (wd / "resources/downloads/tcga_tiny/manifest.tsv").is_file()
    # a rerun does nothing; offline a complete download needs no network
    (wd / "offline.json").write_text(json.dumps({**cfg, "offline": True}))
    p = run_snakemake(wd, "-n", "--nolock", "download_all", configfile=wd / "offline.json")
    assert "Nothing to be done" in p.stdout + p.stderr


def test_offline_lists_every_missing_file_without_network(server, tmp_path):
    wd = _workdir(tmp_path)
    cfg = {**_config(server, wd), "offline": True}
    (wd / "cfg.json").write_text(json.dumps(cfg))
    p = run_snakemake(wd, "--nolock", "download_all", configfile=wd / "cfg.json", check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "MissingInputException" in text
    assert server.requests == []  # the network was never touched
    for f in ("resources/downloads/tcga_tiny/manifest.tsv",
              "resources/downloads/xena_tiny/raw/TCGA-LUAD-cna/TCGA-LUAD.gene-level_absolute.tsv.gz",
              "resources/downloads/mcat_tiny/raw/signatures/signatures.csv",
              "resources/downloads/geo_tiny/raw/GSE50760-matrix/GSE50760_series_matrix.txt.gz"):
        assert f in text
    assert "xena_tiny: 6 files expected, 6 missing" in text


def test_gdc_primary_diagnosis_flag_is_read_as_boolean_or_keyword_string():
    """diagnosis_is_primary_disease is a keyword field in the GDC index: /cases returns a JSON
    boolean, other endpoints the string "true"; either picks the primary diagnosis."""
    c = json.loads((FIX / "gdc_cases_hits.json").read_text())
    case = next(x for x in c if x["submitter_id"] == "TCGA-AA-3517")
    prior, primary = case["diagnoses"]
    as_strings = [{**prior, "diagnosis_is_primary_disease": "false", "classification_of_tumor": "not reported"},
                  {**primary, "diagnosis_is_primary_disease": "true", "classification_of_tumor": "not reported"}]
    t = gdc.clinical_table([{**case, "diagnoses": as_strings}])
    assert t.stage.iloc[0] == "Stage IIA" and abs(t.age.iloc[0] - 19823 / 365.25) < 0.01
