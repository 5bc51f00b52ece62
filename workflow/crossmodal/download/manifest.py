"""Cohort definitions, manifests and the download plan the Snakemake rules ask.

A *manifest* is a TSV with one row per file to fetch (:data:`COLUMNS`); each file lands in
``<raw_dir>/<cohort>/raw/<file_id>/<file_name>`` so names that collide across cases (two
cases' ``annotations.txt``) stay distinct.  :class:`Plan` answers, cheaply and without the
network, everything the rule files need: the enabled cohorts, their manifests (written by the
``query_manifest`` checkpoint, or a frozen copy under ``resources/download/manifests/``), the
raw files of a cohort, the parsed outputs, and — offline — every file a real run would fetch.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from crossmodal.config import ConfigError

log = logging.getLogger(__name__)

COLUMNS = ["file_id", "file_name", "url", "md5", "size", "method", "payload", "case_id", "patient",
           "sample", "project", "data_type"]
SOURCES = ("gdc", "gtex", "geo", "xena", "mcat")

# parsed outputs per source, relative to <out_dir>/<cohort>/
OUTPUTS = {
    "gdc": {"samples": "samples.tsv", "clinical": "clinical.tsv"},
    "gtex": {"samples": "samples.tsv", "expression": "expression.gct", "phenotypes": "phenotypes.tsv"},
    "geo": {"samples": "samples.tsv"},
    "xena": {"rnaseq": "rnaseq.tsv.gz", "protein": "protein.tsv.gz", "cna": "cna.tsv.gz",
             "clinical": "clinical.tsv", "survival": "survival.tsv", "modalities": "modalities.tsv"},
    "mcat": {"signatures": "signatures.tsv"},
}
GEO_OUTPUTS = {"matrix": "{series}_series_matrix.txt", "characteristics": "{series}_characteristics.tsv"}


class DownloadConfigError(ConfigError):
    pass


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS).fillna("")
    for c in COLUMNS:
        df[c] = df[c].astype(str)
    dup = df["file_id"][df["file_id"].duplicated()]
    if len(dup):
        raise DownloadConfigError(f"manifest: duplicated file_id(s) {', '.join(dup.unique()[:5])}")
    bad = df[df["file_id"].str.contains("/") | df["file_name"].str.contains("/") | (df["file_name"] == "")]
    if len(bad):
        raise DownloadConfigError(f"manifest: file_id / file_name must be non-empty without '/': {bad.iloc[0].to_dict()}")
    return df


def write_manifest(path, rows: list[dict]) -> pd.DataFrame:
    from crossmodal.fileio import write_table

    df = manifest_frame(rows)
    write_table(path, df, index=False)
    return df


def read_manifest(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DownloadConfigError(f"manifest {path}: file not found")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DownloadConfigError(f"manifest {path}: missing column(s) {', '.join(missing)}")
    return df


@lru_cache(maxsize=64)
def _manifest_index(path: str, mtime: float) -> dict:
    df = read_manifest(path)
    return {r["file_id"]: r for r in df.to_dict(orient="records")}


def manifest_index(path) -> dict:
    """file_id -> manifest row, cached per (path, mtime): the rules ask it once per job."""
    p = str(path)
    return _manifest_index(p, os.path.getmtime(p))


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise DownloadConfigError(f"download: {path}: file not found")
    import copy

    return copy.deepcopy(_load_yaml(str(path), path.stat().st_mtime))


@lru_cache(maxsize=32)
def _load_yaml(path: str, mtime: float) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


class Plan:
    """What the download rules need from the config, without touching the network."""

    def __init__(self, config: dict, root: str | os.PathLike = "."):
        self.config = config
        d = config["download"]
        self.root = Path(root)
        self.offline = bool(config.get("offline", False))
        self.raw_dir = d["raw_dir"].rstrip("/")
        self.out_dir = d["out_dir"].rstrip("/")
        self.resources_dir = Path(d["resources_dir"])
        self.cohorts: list[str] = list(d["cohorts"])
        self.definitions: dict = {}
        if self.cohorts:
            defs = load_yaml(self._res(d["definitions"]))
            unknown = [c for c in self.cohorts if c not in defs]
            if unknown:
                raise DownloadConfigError(
                    f"config: download.cohorts: unknown cohort(s) {', '.join(unknown)} "
                    f"(defined in {d['definitions']}: {', '.join(sorted(defs))})")
            for c in self.cohorts:
                src = defs[c].get("source")
                if src not in SOURCES:
                    raise DownloadConfigError(f"{d['definitions']}: cohort {c}: source {src!r} not one of {SOURCES}")
                self.definitions[c] = defs[c]

    def _abs(self, p) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def _res(self, p) -> Path:
        """A shipped resource: relative to the working directory if there, else the repository."""
        from crossmodal.paths import REPO_ROOT

        p = Path(p)
        if p.is_absolute() or (self.root / p).exists():
            return self._abs(p)
        return REPO_ROOT / p

    # -- names ----------------------------------------------------------------------------
    def source(self, cohort: str) -> str:
        return self.definitions[cohort]["source"]

    def of_source(self, source: str) -> list[str]:
        return [c for c in self.cohorts if self.source(c) == source]

    def constraint(self, source: str | None = None) -> str:
        """A wildcard regex matching the enabled cohorts (of one source)."""
        names = self.cohorts if source is None else self.of_source(source)
        return "|".join(sorted(names, key=len, reverse=True)) or "(?!)"

    def manifest_constraint(self) -> str:
        """Cohorts whose manifest rule may run: all online; offline only frozen copies."""
        if not self.offline:
            return self.constraint()
        names = [c for c in self.cohorts if self.cached_manifest(c)]
        return "|".join(sorted(names, key=len, reverse=True)) or "(?!)"

    def warn_offline(self) -> None:
        import sys

        print("offline=true: no download will be attempted. What a real run fetches:", file=sys.stderr)
        for line in self.offline_summary():
            print(f"  {line}", file=sys.stderr)

    # -- paths ----------------------------------------------------------------------------
    def manifest_path(self, cohort: str) -> str:
        return f"{self.raw_dir}/{cohort}/manifest.tsv"

    def cached_manifest(self, cohort: str) -> str | None:
        p = self._res(self.resources_dir / "manifests" / f"{cohort}.tsv")
        return str(p) if p.exists() and self.config["download"]["use_cached_manifests"] else None

    def raw_path(self, cohort: str, file_id: str, file_name: str) -> str:
        return f"{self.raw_dir}/{cohort}/raw/{file_id}/{file_name}"

    def outputs(self, cohort: str) -> dict[str, str]:
        return {k: f"{self.out_dir}/{cohort}/{v}" for k, v in OUTPUTS[self.source(cohort)].items()}

    def output_patterns(self, source: str) -> dict[str, str]:
        return {k: f"{self.out_dir}/{{cohort}}/{v}" for k, v in OUTPUTS[source].items()}

    def geo_outputs(self, cohort: str, series: str) -> dict[str, str]:
        return {k: f"{self.out_dir}/{cohort}/{v.format(series=series)}" for k, v in GEO_OUTPUTS.items()}

    def geo_output_patterns(self) -> dict[str, str]:
        return {k: f"{self.out_dir}/{{cohort}}/{v}" for k, v in GEO_OUTPUTS.items()}

    def geo_series_inputs(self, key: str):
        """Input function of build_geo_cohort: one parsed file per series of the cohort."""
        return lambda w: [self.geo_outputs(w.cohort, g)[key] for g in self.definitions[w.cohort]["series"]]

    def targets(self, cohort: str) -> list[str]:
        out = list(self.outputs(cohort).values())
        if self.source(cohort) == "geo":
            for g in self.definitions[cohort]["series"]:
                out += list(self.geo_outputs(cohort, g).values())
        return out

    def all_targets(self) -> list[str]:
        return [t for c in self.cohorts for t in self.targets(c)]

    def target_inputs(self, cohorts: list[str] | None = None):
        """Input of download_all / download_<cohort>: the parsed outputs.

        Offline, while any raw file is missing, it is instead the list of missing files (manifest
        included) of every cohort, so one missing-input error names them all at once.
        """
        cohorts = self.cohorts if cohorts is None else cohorts

        def fn(wildcards):
            if self.offline:
                missing = [f for c in cohorts for f in self.expected_files(c)
                           if not self._abs(f).exists() and not (f == self.manifest_path(c) and self.cached_manifest(c))]
                if missing:
                    return missing
            return [t for c in cohorts for t in self.targets(c)]

        return fn

    # -- parameters -------------------------------------------------------------------------
    def source_settings(self, source: str) -> dict:
        s = load_yaml(self._res(self.resources_dir / f"{source}.yaml"))
        over = self.config["download"]["base_urls"]
        if source in over:
            s["base_url"] = over[source]
        if source == "gtex" and "gtex_histology" in over:
            s["histology_url"] = over["gtex_histology"]
        if source == "gdc":
            tok = dict(s.get("token") or {})
            d = self.config["download"]
            if d.get("token_env"):
                tok["env"] = d["token_env"]
            if d.get("token_file"):
                tok["file"] = d["token_file"]
            s["token"] = tok
        return s

    def params(self, cohort: str) -> dict:
        """Everything a step needs for ``cohort`` (JSON-serialisable; no token values)."""
        src = self.source(cohort)
        return {"cohort": cohort, "definition": self.definitions[cohort], "source": src,
                "settings": self.source_settings(src), "http": dict(self.config["download"]["http"]),
                "raw_dir": self.raw_dir, "cached_manifest": self.cached_manifest(cohort),
                "seed": self.config.get("seed", 0)}

    def token(self, cohort: str) -> dict | None:
        """Where the token may be (env var name, file path) - never its value."""
        return self.source_settings("gdc")["token"] if self.source(cohort) == "gdc" else None

    def entry(self, cohort: str, file_id: str, manifest: str | None = None) -> dict:
        idx = manifest_index(self._abs(manifest or self.manifest_path(cohort)))
        if file_id not in idx:
            raise DownloadConfigError(f"{manifest or self.manifest_path(cohort)}: no file_id {file_id}")
        return idx[file_id]

    # -- file lists ---------------------------------------------------------------------------
    def raw_files_from(self, cohort: str, manifest: str, project: str | None = None) -> list[str]:
        df = read_manifest(self._abs(manifest))
        if project is not None:
            df = df[df["project"] == project]
        return [self.raw_path(cohort, i, n) for i, n in zip(df["file_id"], df["file_name"])]

    def raw_inputs(self, checkpoints, series: bool = False):
        """Input function for a cohort's parse rule: the manifest's raw files.

        Online it waits on the ``query_manifest`` checkpoint; offline it reads whatever manifest
        exists (written earlier, or the frozen copy) and otherwise names the manifest itself, so
        Snakemake's missing-input error lists every file a real run would fetch.
        """

        def fn(wildcards):
            c = wildcards.cohort
            project = wildcards.series if series else None
            if not self.offline:
                m = checkpoints.query_manifest.get(cohort=c).output.manifest
                return self.raw_files_from(c, m, project)
            return self.expected_files(c, project, with_manifest=False)


        return fn

    def expected_files(self, cohort: str, project: str | None = None, with_manifest: bool = True) -> list[str]:
        """Offline: the files a real run would fetch, from the best manifest there is
        (the cohort's own, else the frozen copy, else what is known without a query)."""
        m = self.manifest_path(cohort)
        files = [m] if with_manifest else []
        src = m if self._abs(m).exists() else self.cached_manifest(cohort)
        if src:
            files += self.raw_files_from(cohort, src, project)
        else:
            files += [self.raw_path(cohort, r["file_id"], r["file_name"]) for r in self.static_rows(cohort)
                      if project is None or r["project"] == project]
        return files

    def static_rows(self, cohort: str) -> list[dict]:
        """Manifest rows known without the network (all of Xena / MCAT, GTEx's and GEO's fixed
        files); GDC file lists, GTEx slides and GEO supplementary files need a query."""
        from crossmodal.download import geo, gtex, mcat, xena

        src = self.source(cohort)
        d, s = self.definitions[cohort], self.source_settings(src)
        if src == "xena":
            return xena.manifest_rows(d, s)
        if src == "mcat":
            return mcat.manifest_rows(d, s)
        if src == "gtex":
            return gtex.static_rows(d, s)
        if src == "geo":
            return geo.static_rows(d, s)
        return []

    def offline_summary(self) -> list[str]:
        """One line per cohort: how many files are known / missing, and what cannot be listed."""
        lines = []
        for c in self.cohorts:
            files = self.expected_files(c)
            missing = [f for f in files if not self._abs(f).exists()]
            have_manifest = self._abs(self.manifest_path(c)).exists() or self.cached_manifest(c)
            note = ""
            if not have_manifest:
                note = {"gdc": " (no manifest yet: the GDC file list needs an API query; only the manifest is listed)",
                        "gtex": " (no manifest yet: slides are listed after the sample attributes arrive)",
                        "geo": " (no manifest yet: supplementary files are listed from the GEO suppl/ index)"
                        }.get(self.source(c), "")
            lines.append(f"{c}: {len(files)} files expected, {len(missing)} missing{note}")
        return lines
