# crossmodal: RNA-GAN, RNA-CDM, PathGen and Coherent Denoising on one DAG.
# Rules hold no logic: rule -> workflow/scripts/<step>.py -> crossmodal.<module>.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))


configfile: "config/config.yaml"


wildcard_constraints:
    sample="[A-Za-z0-9._-]+",
    preset="[A-Za-z0-9_]+",
    dataset="[A-Za-z0-9_]+",
    scheme="[A-Za-z0-9_]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/tiling.smk"
include: "workflow/rules/expression.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/vae.smk"
include: "workflow/rules/rna_gan.smk"
include: "workflow/rules/rna_cdm.smk"
include: "workflow/rules/pathgen.smk"
include: "workflow/rules/coherent.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cluster_check.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
