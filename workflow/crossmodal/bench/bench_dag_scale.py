"""Scale benchmark of the download DAG: plan ``snakemake -n download_all`` over manifests of
realistic size and print the wall time (goal < 30 s).

Synthetic manifests (not real file ids) with the papers' sizes: the 5 RNA-CDM projects
(RNA-CDM Table 2) with about 1,600 diagnostic slides plus one STAR-counts file per sample, and
the 20 Xena cancer types of Coherent Denoising Table 4 (100 files holding 10,098 samples; a
Xena file is per project, so the sample count does not change the number of jobs).  The
manifests are written where the ``query_manifest`` checkpoint would, so no network is used.

    python -m crossmodal.bench.bench_dag_scale [--slides 1600] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from crossmodal.download import xena
from crossmodal.download.manifest import write_manifest
from crossmodal.paths import REPO_ROOT

PROJECTS = {"TCGA-LUAD": 520, "TCGA-KIRP": 298, "TCGA-COAD": 289, "TCGA-CESC": 277, "TCGA-GBM": 212}
XENA_TABLE4 = {"BRCA": 1224, "KIRC": 610, "UCEC": 584, "LUAD": 581, "HNSC": 574, "LUSC": 555, "PRAD": 551,
               "OV": 530, "LGG": 530, "GBM": 523, "COAD": 503, "STAD": 478, "SKCM": 475, "THCA": 460,
               "BLCA": 432, "LIHC": 429, "KIRP": 324, "CESC": 312, "SARC": 267, "TGCT": 156}


def gdc_rows(n_slides: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    total = sum(PROJECTS.values())
    rows = []
    for proj, n in PROJECTS.items():
        k = round(n_slides * n / total)
        for i in range(k):
            patient = f"TCGA-{proj[-2:]}-{i:04d}"
            for kind, name in (("star_counts", "rna_seq.augmented_star_gene_counts.tsv"),
                               ("diagnostic_slide", f"{patient}-01Z-00-DX1.svs")):
                fid = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))))
                rows.append({"file_id": fid, "file_name": name, "url": f"https://api.gdc.cancer.gov/data/{fid}",
                             "md5": "0" * 32, "size": "1000", "method": "GET", "payload": "", "case_id": "",
                             "patient": patient, "sample": f"{patient}-01A", "project": proj, "data_type": kind})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=1600)
    ap.add_argument("--keep", default=None, help="working directory to keep (default: a temp dir)")
    a = ap.parse_args([] if argv is None else argv)  # python -m crossmodal.bench passes no argv
    wd = Path(a.keep or tempfile.mkdtemp(prefix="bench_dag_"))
    wd.mkdir(parents=True, exist_ok=True)
    rows = gdc_rows(a.slides)
    write_manifest(wd / "resources/downloads/rna_cdm_tcga/manifest.tsv", rows)
    xdef = {"projects": [f"TCGA-{p}" for p in XENA_TABLE4], "modalities": ["rnaseq", "protein", "cna", "clinical", "survival"]}
    import yaml

    xs = yaml.safe_load((REPO_ROOT / "resources/download/xena.yaml").read_text())
    write_manifest(wd / "resources/downloads/coherent_xena/manifest.tsv", xena.manifest_rows(xdef, xs))
    cfg = {"download": {"cohorts": ["rna_cdm_tcga", "coherent_xena"], "use_cached_manifests": False}}
    (wd / "cfg.json").write_text(json.dumps(cfg))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO_ROOT / "Snakefile"),
           "--directory", str(wd),
           # the toy default config + the download cohorts (the default configfile path is relative
           # to the working directory, which has no config/)
           "--configfile", str(REPO_ROOT / "config/config.yaml"), str(wd / "cfg.json"), "--cores", "1", "-n", "--quiet",
           "rules", "--nolock", "download_all"]
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if p.returncode:
        print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
        return 1
    n_jobs = len(rows) + 100
    print(f"bench_dag_scale: {a.slides} slides + {a.slides} STAR files (5 RNA-CDM projects) + 100 Xena files "
          f"({sum(XENA_TABLE4.values())} samples): {n_jobs} download jobs planned")
    print(f"bench_dag_scale: snakemake -n download_all wall {wall:.1f} s (goal < 30 s; ratio {wall / 30:.2f} of goal); "
          f"CPU {cpu:.1f} s (wall exceeds CPU on a busy machine)")
    print(p.stdout.strip()[-1500:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
