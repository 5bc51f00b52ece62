"""Run-level report pieces: per-rule wall times from Snakemake benchmark files."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from crossmodal.fileio import save_figure, write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)


def collect_benchmarks(root: str | Path = "benchmarks") -> pd.DataFrame:
    """One row per benchmark file: rule, job (wildcards), seconds, max RSS (MB)."""
    rows = []
    root = Path(root)
    for f in sorted(root.rglob("*.tsv")):
        try:
            df = pd.read_csv(f, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            log.warning("skipping unreadable benchmark file %s: %s", f, e)
            continue
        if df.empty or "s" not in df:
            continue
        rel = f.relative_to(root)
        rows.append({
            "rule": rel.parts[0],
            "job": str(Path(*rel.parts[1:]).with_suffix("")),
            "seconds": float(df["s"].iloc[-1]),
            "max_rss_mb": float(df["max_rss"].iloc[-1]) if "max_rss" in df and pd.notna(df["max_rss"].iloc[-1]) else float("nan"),
        })
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    if jobs.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total_s", "max_s", "max_rss_mb"])
    g = jobs.groupby("rule")
    out = pd.DataFrame({
        "jobs": g.size(),
        "total_s": g["seconds"].sum().round(2),
        "max_s": g["seconds"].max().round(2),
        "max_rss_mb": g["max_rss_mb"].max().round(1),
    }).reset_index().sort_values("total_s", ascending=False)
    return out


@step("summarise_runtimes")
def summarise_runtimes(inputs, outputs, params, *, threads=1, log=None):
    """Per-rule wall times of the run from benchmarks/ (table + bar chart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = collect_benchmarks(params.get("benchmarks", "benchmarks"))
    table = per_rule(jobs)
    total = float(table["total_s"].sum()) if len(table) else 0.0
    logging.getLogger(__name__).info("%d jobs, %.1f s of job wall time in total", len(jobs), total)
    write_table(outputs["table"], table, index=False)
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(table), 3) + 1))
    ax.barh(table["rule"][::-1], table["total_s"][::-1], color="#4c72b0")
    ax.set_xlabel("summed job wall time (s)")
    ax.set_title(f"Per-rule wall time ({len(jobs)} jobs, {total:.0f} s in total)")
    save_figure(fig, outputs["figure"])
    plt.close(fig)


# the paper each reproduction table belongs to (the {paper} folder under results/)
PAPER_TITLES = {
    "rna_gan": "RNA-GAN (Carrillo-Perez et al., Cell Reports Methods 2023)",
    "rna_cdm": "RNA-CDM (Carrillo-Perez et al., cascaded diffusion)",
    "pathgen": "PathGen (Dey et al.)",
    "coherent": "Coherent Denoising (Marchesi et al., PLoS Comput Biol 2026)",
}


def reproduction_html(table: pd.DataFrame, title: str) -> str:
    """A self-contained HTML page showing a reproduction table as it is (every cell escaped).

    A column named ``direction_holds`` is coloured (True green, False red) so a reader sees at a
    glance which of the paper's claims this run reproduces."""
    def colour(v):
        s = str(v)
        return {"True": "background:#d8f0d8", "False": "background:#f6d6d6"}.get(s, "")

    styler = table.style.hide(axis="index").format(na_rep="", escape="html")
    if "direction_holds" in table:
        styler = styler.map(colour, subset=["direction_holds"])
    body = styler.set_table_attributes('class="reproduction"').to_html()
    css = ("body{font-family:sans-serif;font-size:13px;margin:1em}table.reproduction{border-collapse:collapse}"
           "table.reproduction td,table.reproduction th{border:1px solid #bbb;padding:3px 6px;vertical-align:top;"
           "text-align:left}table.reproduction th{background:#eee}")
    import html

    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body><h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n")


@step("render_reproduction_table")
def render_reproduction_table(inputs, outputs, params, *, threads=1, log=None):
    """``results/<paper>/reproduction.html``: the reproduction TSV rendered for the report."""
    from crossmodal.fileio import write_text

    paper = params["wildcards"]["paper"]
    path = Path(inputs["table"])
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ValueError(f"render_reproduction_table: {path}: not a readable TSV ({e})") from e
    from crossmodal.reproduction import check

    check(table, f"render_reproduction_table: {path}")
    title = f"Reproduction table - {PAPER_TITLES.get(paper, paper)}"
    write_text(outputs["html"], reproduction_html(table, title))
    logging.getLogger(__name__).info("%s: %d claims rendered", outputs["html"], len(table))


@step("summarise_reproduction")
def summarise_reproduction(inputs, outputs, params, *, threads=1, log=None):
    """``results/report/reproduction_summary.{tsv,png}``: per paper, how many claims of its
    reproduction table hold, fail, or have no checkable direction."""
    from crossmodal.reproduction import plot_summary, summarise

    tables = {}
    for p in inputs["tables"]:
        paper = Path(p).parent.name
        try:
            tables[paper] = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            raise ValueError(f"summarise_reproduction: {p}: not a readable TSV ({e})") from e
    summary = summarise(tables)
    write_table(outputs["table"], summary, index=False)
    plot_summary(summary, outputs["figure"])
    for r in summary.itertuples():
        logging.getLogger(__name__).info("%s (%s): %d of %d directional claims hold, %d value-only", r.paper, r.data,
                                         r.holds, r.directional, r.claims - r.directional)
