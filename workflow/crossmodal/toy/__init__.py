"""The planted-signal toy cohort: a small cohort whose answer is known.

It is written in the file formats real data arrive in (GDC STAR-counts TSVs, a GTEx GCT, a
GEO series matrix, FASTQ, UCSC-Xena-style omics matrices, Aperio SVS slides), so the rest of
the pipeline cannot tell it from real data, and its ground truth lies under
``results/toy/truth/`` so every later model can be checked against it.

Public interface:

- :func:`plan` — the sample sheet, from the config alone (cheap; used at DAG-build time);
- :func:`make_cohort` — writes everything except the slides (step ``make_toy_cohort``);
- :func:`render_slide` / step ``make_toy_slide`` — one slide per job.
"""
from crossmodal.toy.plan import (  # noqa: F401
    CELL_TYPES,
    ROOT,
    cohort_outputs,
    plan,
    slide_outputs,
    toy_settings,
)
from crossmodal.toy.cohort import make_cohort  # noqa: F401
from crossmodal.toy.slides import render_slide  # noqa: F401
from crossmodal.toy import steps as _steps  # noqa: F401  (registers the steps)
