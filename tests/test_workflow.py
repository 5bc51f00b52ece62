"""Workflow-level checks: every config plans, the toy run completes and the report builds."""
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("configfile", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_plans(tmp_path, configfile):
    p = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=configfile)
    assert p.returncode == 0


def test_unknown_config_key_stops_the_run(tmp_path):
    p = run_snakemake(tmp_path, "-n", config={"tiling": {"tile_sise": 1}}, check=False)
    assert p.returncode != 0
    assert "unknown key tiling.tile_sise" in p.stderr + p.stdout


def test_toy_run_writes_runtime_summary(toy_run):
    t = pd.read_csv(toy_run / "results/report/runtimes.tsv", sep="\t")
    assert {"rule", "jobs", "total_s"} <= set(t.columns)
    assert len(t) >= 3, "expected benchmark files from several rules"


def test_report_builds(toy_run):
    run_snakemake(toy_run, "--report", "results/report.html", cores=1)
    html = (toy_run / "results/report.html")
    assert html.stat().st_size > 10_000


def test_rerun_is_noop(toy_run):
    p = run_snakemake(toy_run, "-n", "--quiet", "rules")
    assert "Nothing to be done" in p.stdout + p.stderr
