"""Workflow-level checks: every config plans, the toy run completes and the report builds."""
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


def _stubs():
    """Paper configs read a user's sample sheet (cohort.samples); these write one shaped like the
    paper's cohort, of empty placeholder files, so the config can plan without the data."""
    import test_pathgen
    import test_rna_cdm
    import test_rna_gan

    return {"rna_gan.yaml": test_rna_gan._stub_real_cohort, "rna_cdm.yaml": test_rna_cdm._stub_real_cohort,
            "pathgen.yaml": test_pathgen.stub_real_cohort}


@pytest.mark.parametrize("configfile", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_plans(tmp_path, configfile):
    import yaml

    cfg = yaml.safe_load(configfile.read_text()) or {}
    sheet = (cfg.get("cohort") or {}).get("samples")
    if sheet and not (REPO / sheet).exists():
        assert configfile.name in _stubs(), f"{configfile.name}: add a stub sample sheet for {sheet}"
        _stubs()[configfile.name](tmp_path)
    p = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=configfile)
    assert p.returncode == 0
    assert "make_toy_slide" not in p.stdout or cfg.get("cohort", {}).get("source", "toy") == "toy"


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


def test_naming_a_figure_rebuilds_only_that_figure(toy_run):
    """The design card's `snakemake results/.../<figure>.png`: a lost figure comes back by naming
    it, through its plotting rule alone (no retraining, no re-tiling) and identical to the bytes the
    full run drew; the one job left stale afterwards is the runtime summary, whose input (the
    plotting rule's benchmark file) has changed."""
    import re

    fig = toy_run / "results/rna_cdm/figures/generated_tiles.png"
    before = fig.read_bytes()
    fig.unlink()
    fig.with_suffix(".pdf").unlink()
    p = run_snakemake(toy_run, "results/rna_cdm/figures/generated_tiles.png")
    ran = re.findall(r"\(Rule: (\w+)\)", p.stdout + p.stderr)
    assert ran == ["plot_rna_cdm_tiles"], ran
    assert fig.read_bytes() == before and fig.with_suffix(".pdf").stat().st_size > 1000
    rest = run_snakemake(toy_run)
    assert set(re.findall(r"\(Rule: (\w+)\)", rest.stdout + rest.stderr)) == {"summarise_runtimes", "all"}


def test_reproduction_table_renders_as_an_escaped_coloured_page(tmp_path):
    """The report shows TSVs only as downloads, so each paper's reproduction table is also a page:
    every row and cell of the TSV appears (escaped), the verdict column is coloured, and a table
    that cannot be read is refused naming the file, leaving no page behind."""
    from crossmodal import report
    from crossmodal.steps import run

    t = pd.DataFrame({"claim": ["FID RNA-GAN < GAN", "accuracy <b>bold</b>"], "paper_value": ["83.89 vs 87.85", "80.5%"],
                      "paper_section": ["Discussion", "Figure 4D"], "this_run": ["44.17 vs 27.38", "77.1%"],
                      "data": ["toy", "toy"], "direction_holds": ["False", "True"], "note": ["", ""]})
    src = tmp_path / "rna_gan" / "reproduction.tsv"
    src.parent.mkdir()
    t.to_csv(src, sep="\t", index=False)
    out = tmp_path / "rna_gan" / "reproduction.html"
    run("render_reproduction_table", {"table": str(src)}, {"html": str(out)}, {"wildcards": {"paper": "rna_gan"}})
    page = out.read_text()
    assert page.count("<tr") == 3 and "RNA-GAN (Carrillo-Perez" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "#f6d6d6" in page and "#d8f0d8" in page  # the False and True verdict colours
    assert "44.17 vs 27.38" in page
    empty = tmp_path / "pathgen" / "reproduction.tsv"
    empty.parent.mkdir()
    empty.write_text("")
    bad_out = tmp_path / "pathgen" / "reproduction.html"
    with pytest.raises(ValueError, match=r"pathgen/reproduction.tsv"):
        report.render_reproduction_table({"table": str(empty)}, {"html": str(bad_out)}, {"wildcards": {"paper": "pathgen"}})
    assert not bad_out.exists() and not list(bad_out.parent.glob(".tmp-*"))
    # a table in another layout (no paper section, no data, no verdict) is refused too
    t[["claim", "paper_value", "this_run"]].to_csv(empty, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"pathgen/reproduction.tsv: columns must start with claim"):
        report.render_reproduction_table({"table": str(empty)}, {"html": str(bad_out)}, {"wildcards": {"paper": "pathgen"}})
    assert not bad_out.exists()


def test_toy_run_renders_every_reproduction_table(toy_run):
    """All four papers' tables share one layout (crossmodal.reproduction): claim, paper value and
    section, this run, data, whether the direction holds, note - and each has checkable claims."""
    from crossmodal import reproduction

    for paper in ("rna_gan", "rna_cdm", "pathgen", "coherent"):
        page = (toy_run / "results" / paper / "reproduction.html").read_text()
        rows = pd.read_csv(toy_run / "results" / paper / "reproduction.tsv", sep="\t", dtype=str, keep_default_na=False)
        reproduction.check(rows, paper)
        # a row computed from the configuration alone (RNA-CDM's paper-size parameter count) says so
        assert set(rows["data"]) - {"schema defaults (no data)"} == {"toy"}, paper
        assert (rows["paper_section"].str.strip() != "").all(), paper
        assert reproduction.tally(rows)[1] >= 3, paper  # claims whose direction this run checks
        assert page.count("<tr") == len(rows) + 1, paper
    summary = pd.read_csv(toy_run / "results/report/reproduction_summary.tsv", sep="\t").set_index("paper")
    assert sorted(summary.index) == ["coherent", "pathgen", "rna_cdm", "rna_gan"]
    assert (summary["holds"] + summary["fails"] == summary["directional"]).all()


def test_every_gpu_rule_hands_its_step_the_device():
    """A rule that asks the cluster for a GPU must pass config["device"] to a step that uses it:
    PathGen's and Coherent Denoising's training requested GPUs and still trained on the CPU."""
    import inspect
    import re

    from crossmodal import steps

    checked = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint)\b)", smk.read_text()):
            if "gpu=gpu_request" not in block:
                continue
            name = re.match(r"\s*(?:rule|checkpoint)\s*(\w*)", block).group(1) or block.split('f"', 1)[-1][:40]
            assert 'device=config["device"]' in block, f"{smk.name}: rule {name} requests a GPU but passes no device"
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            assert script, f"{smk.name}: rule {name}: no script"
            text = (smk.parent / script.group(1)).read_text()
            for step_name in re.findall(r'run_from_snakemake\(\s*snakemake,\s*"(\w+)"', text):
                src = inspect.getsource(steps.get(step_name))
                # the step reads params["device"] itself, or builds its feature extractor from it
                assert "device" in src or "step_extractor(" in src, f"step {step_name} (rule {name}) ignores the device"
                checked.append(name)
    assert {"train_pathgen", "sample_pathgen", "train_mcat_gr", "train_coherent_diffusion", "generate_coherent",
            "train_rna_cdm_base", "train_rna_gan_generator"} <= set(checked)
