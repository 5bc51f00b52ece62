"""Pipeline steps of the toy cohort: ``make_toy_cohort`` and ``make_toy_slide``."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from crossmodal.steps import step

log = logging.getLogger(__name__)


def _cfg(params: dict) -> dict:
    return {"seed": int(params.get("seed", 0)), "toy": dict(params.get("toy") or {})}


@step("make_toy_cohort")
def make_toy_cohort(inputs, outputs, params, *, threads=1, log=None):
    """Write the planted-signal toy cohort (expression, FASTQ, clinical, omics, truth); not the slides."""
    from crossmodal.toy.cohort import make_cohort

    root = Path(outputs["samples"]).parent.parent
    manifest = make_cohort(root, _cfg(params))
    written = set(manifest["files"].values()) | set(manifest["star_counts"]) | set(manifest["fastq"])
    missing = [str(p) for k, v in outputs.items() for p in ([v] if isinstance(v, str) else v)
               if str(p) not in written and not Path(p).exists()]
    if missing:
        raise RuntimeError(f"make_toy_cohort: outputs not written (config and plan disagree?): {missing[:5]}")
    return manifest


@step("make_toy_slide")
def make_toy_slide(inputs, outputs, params, *, threads=1, log=None):
    """Render one toy slide (Aperio SVS) from the slide plan in results/toy/truth/slides.tsv."""
    from crossmodal.fileio import write_table
    from crossmodal.slides import write_svs
    from crossmodal.toy.plan import toy_settings
    from crossmodal.toy.slides import render_slide

    cfg = _cfg(params)
    toy, seed = toy_settings(cfg)
    plan_path = inputs["slides"]
    sample = params.get("sample") or params.get("wildcards", {}).get("sample")
    if not sample:
        sample = Path(outputs["slide"]).name.removesuffix(".svs")
    tbl = pd.read_csv(plan_path, sep="\t", dtype={"pen_mark": str}, keep_default_na=False)
    row = tbl[tbl["sample"] == sample]
    if row.empty:
        raise ValueError(f"make_toy_slide: sample {sample!r} is not in the slide plan {plan_path}")
    info = row.iloc[0].to_dict()
    logging.getLogger(__name__).info("rendering %s (%s, tissue=%s, pen=%s, blur=%s, low_contrast=%s)",
                                     sample, info["cohort"], info["has_tissue"], info["pen_mark"] or "-",
                                     info["blur"], info["low_contrast"])
    rgb, nuclei = render_slide(info, toy, seed)
    write_svs(outputs["slide"], rgb, mpp=toy["slide_mpp"], app_mag=int(round(10 / toy["slide_mpp"])),
              quality=toy["jpeg_quality"])
    if "nuclei" in outputs:
        write_table(outputs["nuclei"], nuclei, index=False)
    return {"sample": sample, "nuclei": int(len(nuclei))}
