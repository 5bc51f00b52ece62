"""Steps of the expression stage (rules in ``workflow/rules/expression.smk``)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from crossmodal import splits as _splits  # noqa: F401  (registers the make_splits step)
from crossmodal.expression import kallisto
from crossmodal.expression.harmonise import harmonise, load_gene_ids, load_gene_list, read_sample_counts
from crossmodal.expression.normalise import apply_scaler, fit_scaler, log_transform
from crossmodal.fileio import write_json, write_table
from crossmodal.splits import load_splits
from crossmodal.steps import step

logger = logging.getLogger(__name__)


def read_matrix(path) -> pd.DataFrame:
    """A samples x genes matrix written by this stage (index ``sample``)."""
    return pd.read_csv(path, sep="\t", index_col="sample")


@step("build_kallisto_index")
def build_kallisto_index(inputs, outputs, params, *, threads=1, log=None):
    """kallisto index of the transcriptome FASTA (version pinned)."""
    kallisto.build_index(inputs["fasta"], outputs["index"], kmer=int(params["kmer"]),
                         version=str(params["version"]))


@step("quantify_kallisto")
def quantify_kallisto(inputs, outputs, params, *, threads=1, log=None):
    """kallisto quant --single of one sample's FASTQ -> abundance.tsv."""
    fq = inputs["fastq"]
    kallisto.quant_single(inputs["index"], fq if isinstance(fq, list) else [fq], outputs["abundance"],
                          fragment_length=params["fragment_length"], fragment_sd=params["fragment_sd"],
                          threads=threads, seed=int(params["seed"]), version=str(params["version"]),
                          run_info_out=outputs.get("run_info"))


@step("build_expression_matrix")
def build_expression_matrix(inputs, outputs, params, *, threads=1, log=None):
    """Read, validate and harmonise one dataset's expression -> counts.tsv.gz + qc.json."""
    sources = params["sources"]
    per_sample = read_sample_counts(sources, t2g=inputs.get("t2g"), nan_policy=params["nan_policy"],
                                    duplicates=params["duplicates"], star_column=params["star_column"],
                                    kallisto_value=params["kallisto_value"],
                                    id_to_symbol=load_gene_ids(inputs["genes"]) if inputs.get("genes") else None)
    genes = load_gene_list(inputs["genes"]) if inputs.get("genes") else None
    mat, qc = harmonise(per_sample, genes, min_sample_genes=float(params.get("min_sample_genes", 0.5)),
                        files={s["sample"]: str(s["file"]) for s in sources})
    qc.update(dataset=params.get("wildcards", {}).get("dataset"), protein_coding_list=inputs.get("genes"),
              formats=sorted({s["format"] for s in sources}), duplicates=params["duplicates"],
              nan_policy=params["nan_policy"])
    write_table(outputs["counts"], mat)
    write_json(outputs["qc"], qc)
    return mat


@step("normalise_expression")
def normalise_expression(inputs, outputs, params, *, threads=1, log=None):
    """log2(x+1) and z-scores with training-split statistics (or a reference dataset's scaler)."""
    counts = read_matrix(inputs["counts"])
    logx = log_transform(counts, params["pseudocount"])
    info: dict = {"dataset": params.get("wildcards", {}).get("dataset"),
                  "scheme": params.get("wildcards", {}).get("scheme")}
    if inputs.get("splits"):
        sp = load_splits(inputs["splits"])
        train = sp.index[sp["split"] == "train"]
        train = train[train.isin(logx.index)]
        if len(train) == 0:
            raise ValueError(f"{inputs['splits']}: no training sample of {inputs['counts']}")
        # identical profiles count once: the GDC sheet repeats a patient's one STAR file for each of
        # its slides (a sample row per slide), which would weight that patient per slide
        fit_rows = logx.loc[train]
        dup = fit_rows.duplicated()
        scaler = fit_scaler(fit_rows[~dup])
        info["scaler_source"] = (f"training split of {inputs['splits']} ({int((~dup).sum())} samples"
                                 + (f"; {int(dup.sum())} repeated profile(s) counted once" if dup.any() else "") + ")")
        info["splits_of_samples"] = sp["split"].reindex(logx.index).fillna("none").value_counts().to_dict()
    else:
        scaler = pd.read_csv(inputs["scaler"], sep="\t")
        info["scaler_source"] = f"reference scaler {inputs['scaler']}"
    z, qc = apply_scaler(logx, scaler, missing_value=float(params["missing_value"]),
                         missing_stage=params.get("missing_stage", "raw"), pseudocount=float(params["pseudocount"]))
    info.update(qc)
    logger.info("z-scored %d samples x %d genes (%s)", z.shape[0], z.shape[1], info["scaler_source"])
    write_table(outputs["scaler"], scaler, index=False)
    write_table(outputs["z"], z)
    write_json(outputs["qc"], info)
    return z


@step("plot_expression_summary")
def plot_expression_summary(inputs, outputs, params, *, threads=1, log=None):
    """Library sizes per cohort, PCA coloured by cohort, external missing-gene report."""
    from crossmodal.expression.plots import plot_summary

    plot_summary(inputs, outputs, params)
    return {k: str(Path(v)) for k, v in outputs.items()}
