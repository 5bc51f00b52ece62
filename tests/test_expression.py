"""Expression readers, harmonisation and training-split z-scores (crossmodal.expression)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossmodal.expression import (
    ExpressionInputError,
    apply_scaler,
    fit_scaler,
    harmonise,
    log_transform,
    read_gct,
    read_geo_series_matrix,
    read_kallisto_abundance,
    read_star_counts,
)
from crossmodal.expression import steps as xsteps
from crossmodal.expression.harmonise import load_gene_list, read_sample_counts

STAR_HEAD = ("gene_id\tgene_name\tgene_type\tunstranded\tstranded_first\tstranded_second\t"
             "tpm_unstranded\tfpkm_unstranded\tfpkm_uq_unstranded")


def star_text(rows, comment=True):
    lines = ["# gene-model: GENCODE v36"] if comment else []
    lines.append(STAR_HEAD)
    for n in ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous"):
        lines.append(f"{n}\t\t\t1000\t900\t100\t\t\t")
    for gid, sym, gt, c in rows:
        lines.append(f"{gid}\t{sym}\t{gt}\t{c}\t1\t{c}\t1.0\t1.0\t1.0")
    return "\n".join(lines) + "\n"


GOOD_STAR = [("ENSG00000141510.17", "TP53", "protein_coding", 120),
             ("ENSG00000146648.18", "EGFR", "protein_coding", 40),
             ("ENSG00000228253.1", "MT-ATP8", "protein_coding", 7),
             ("ENSG00000230000.2", "LINC0001", "lncRNA", 3)]


def write(path: Path, text: str, gz=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def gct_text(genes, samples, values, dims=None):
    n, m = dims or (len(genes), len(samples))
    lines = ["#1.2", f"{n}\t{m}", "\t".join(["Name", "Description"] + samples)]
    for i, (gid, sym) in enumerate(genes):
        lines.append("\t".join([gid, sym] + [str(v) for v in values[i]]))
    return "\n".join(lines) + "\n"


def geo_text(symbols, samples, values):
    q = lambda xs: "\t".join(f'"{x}"' for x in xs)  # noqa: E731
    head = ['!Series_title\t"toy"', '!Series_geo_accession\t"GSE1"', "",
            f"!Sample_title\t{q(['t' + s for s in samples])}",
            f"!Sample_geo_accession\t{q(samples)}",
            f"!Sample_characteristics_ch1\t{q(['cancer type: TCGA-LUAD'] * len(samples))}",
            f"!Sample_characteristics_ch1\t{q(['tissue: tumour'] * len(samples))}",
            "!series_matrix_table_begin", "\t".join(['"ID_REF"'] + [f'"{s}"' for s in samples])]
    rows = ["\t".join([f'"{g}"'] + [str(v) for v in values[i]]) for i, g in enumerate(symbols)]
    return "\n".join(head + rows + ["!series_matrix_table_end"]) + "\n"


# --- readers on real layouts --------------------------------------------------------------

def test_star_counts_reader_symbols_counts_and_summary_rows(tmp_path):
    s = read_star_counts(write(tmp_path / "a.tsv", star_text(GOOD_STAR)))
    assert s.to_dict() == {"TP53": 120, "EGFR": 40, "MT-ATP8": 7, "LINC0001": 3}
    assert not any(g.startswith("N_") for g in s.index)
    # gzip is read transparently
    s2 = read_star_counts(write(tmp_path / "a.tsv.gz", star_text(GOOD_STAR), gz=True))
    pd.testing.assert_series_equal(s, s2)


def test_star_counts_duplicated_symbols_summed_or_error(tmp_path):
    rows = GOOD_STAR + [("ENSG00000999999.1_PAR_Y", "TP53", "protein_coding", 5)]
    p = write(tmp_path / "dup.tsv", star_text(rows))
    assert read_star_counts(p)["TP53"] == 125
    with pytest.raises(ExpressionInputError, match=r"dup\.tsv.*duplicated gene symbol.*TP53"):
        read_star_counts(p, duplicates="error")


@pytest.mark.parametrize("bad,match", [
    ("", r"1 gene\(s\) with missing \(NaN\) values.*EGFR"),
    ("NA", r"1 gene\(s\) with missing \(NaN\) values.*EGFR"),
    ("-4", r"negative count -4.*EGFR"),
    ("abc", r"non-numeric value 'abc'.*EGFR"),
    ("inf", r"non-finite value inf for gene EGFR in column unstranded"),
    ("1e400", r"non-finite value inf for gene EGFR in column unstranded"),
    ("-inf", r"non-finite value -inf for gene EGFR in column unstranded"),
])
def test_star_counts_bad_values_name_file_and_gene(tmp_path, bad, match):
    text = star_text(GOOD_STAR).replace("EGFR\tprotein_coding\t40\t", f"EGFR\tprotein_coding\t{bad}\t")
    p = write(tmp_path / "bad_sample.tsv", text)
    with pytest.raises(ExpressionInputError, match="bad_sample.tsv: " + match):
        read_star_counts(p)


def test_nan_policy_drop_gene(tmp_path):
    text = star_text(GOOD_STAR).replace("EGFR\tprotein_coding\t40\t", "EGFR\tprotein_coding\t\t")
    s = read_star_counts(write(tmp_path / "n.tsv", text), nan_policy="drop_gene")
    assert "EGFR" not in s.index and s["TP53"] == 120


def test_wrong_layouts_are_named(tmp_path):
    gct = write(tmp_path / "x.gct", gct_text([("ENSG1.1", "A")], ["S1"], [[1]]))
    with pytest.raises(ExpressionInputError, match=r"x\.gct: not a GDC STAR-counts TSV"):
        read_star_counts(gct)
    star = write(tmp_path / "s.tsv", star_text(GOOD_STAR))
    with pytest.raises(ExpressionInputError, match=r"s\.tsv: not a GCT file"):
        read_gct(star)
    with pytest.raises(ExpressionInputError, match=r"s\.tsv: not a GEO series matrix"):
        read_geo_series_matrix(star)
    with pytest.raises(ExpressionInputError, match=r"s\.tsv: not a kallisto abundance.tsv"):
        read_kallisto_abundance(star, pd.DataFrame(columns=["transcript_id", "gene_id", "gene_name"]))
    with pytest.raises(ExpressionInputError, match=r"nope\.tsv: file not found"):
        read_star_counts(tmp_path / "nope.tsv")


def test_infinite_values_are_refused_in_every_format(tmp_path):
    """inf (or a number too large for a float) is refused like NaN and negative counts,
    naming file, gene and column, whether pandas parsed the column as numbers or not, and
    whatever the NaN policy: it is never a missing value to drop.  (GCT columns are parsed
    by pandas, GEO cells as text.)"""
    genes = [("ENSG00000141510.17", "TP53"), ("ENSG00000146648.18", "EGFR")]
    for inf in ("inf", "1e400", "Infinity"):
        gct = write(tmp_path / "inf.gct", gct_text(genes, ["A", "B"], [[1, 2], [3, inf]]))  # all-numeric columns
        for policy in ("error", "drop_gene"):
            with pytest.raises(ExpressionInputError, match=r"inf\.gct: non-finite value inf for gene EGFR in column B"):
                read_gct(gct, nan_policy=policy)
        geo = write(tmp_path / "inf.txt", geo_text(["TP53", "EGFR"], ["GSM1", "GSM2"], [[5, inf], [7, 8]]))
        with pytest.raises(ExpressionInputError, match=r"inf\.txt: non-finite value inf for gene TP53 in column GSM2"):
            read_geo_series_matrix(geo)


def test_gct_reader_and_dimension_check(tmp_path):
    genes = [("ENSG00000141510.17", "TP53"), ("ENSG00000146648.18", "EGFR"), ("ENSG00000000001.1", "TP53")]
    p = write(tmp_path / "reads.gct", gct_text(genes, ["GTEX-1", "GTEX-2"], [[1, 2], [3, 4], [10, 20]]))
    m = read_gct(p)
    assert list(m.columns) == ["GTEX-1", "GTEX-2"]
    assert m.loc["TP53"].tolist() == [11, 22] and m.loc["EGFR"].tolist() == [3, 4]
    bad = write(tmp_path / "dims.gct", gct_text(genes, ["GTEX-1", "GTEX-2"], [[1, 2], [3, 4], [1, 1]], dims=(5, 2)))
    with pytest.raises(ExpressionInputError, match=r"dims\.gct: GCT declares 5 genes x 2 samples but holds 3 x 2"):
        read_gct(bad)


def test_gct_values_nan_tokens_and_bad_values_like_gtex(tmp_path):
    """GTEx v8 TPM GCT layout (gzip, versioned ids, decimal TPMs): parsed as floats; NA
    tokens follow nan_policy; a non-numeric value and a duplicated sample column are named."""
    genes = [("ENSG00000223972.5", "DDX11L1"), ("ENSG00000227232.5", "WASH7P"),
             ("ENSG00000243485.5", "MIR1302-2HG"), ("ENSG00000002586.18", "CD99")]
    vals = [[0, 0.1236], [4.064, 3.371], ["NA", 0.5], [312.3, 250.75]]
    p = write(tmp_path / "GTEx_gene_tpm.gct.gz", gct_text(genes, ["GTEX-1117F-0226-SM-5GZZ7", "GTEX-111CU-0226"], vals),
              gz=True)
    with pytest.raises(ExpressionInputError, match=r"gene_tpm\.gct\.gz: 1 gene\(s\) with missing \(NaN\) values, e\.g\. MIR1302-2HG"):
        read_gct(p)
    m = read_gct(p, nan_policy="drop_gene")
    assert m.dtypes.eq(float).all() and list(m.index) == ["DDX11L1", "WASH7P", "CD99"]
    assert m.loc["WASH7P", "GTEX-111CU-0226"] == pytest.approx(3.371)
    bad = write(tmp_path / "bad.gct", gct_text(genes, ["A", "B"], [[0, 1], [2, "x3"], [1, 1], [1, 1]]))
    with pytest.raises(ExpressionInputError, match=r"bad\.gct: non-numeric value 'x3' for gene WASH7P in column B"):
        read_gct(bad)
    neg = write(tmp_path / "neg.gct", gct_text(genes, ["A", "B"], [[0, 1], [2, -3], [1, 1], [1, 1]]))
    with pytest.raises(ExpressionInputError, match=r"neg\.gct: negative count -3\.0 for gene WASH7P"):
        read_gct(neg)
    dup = write(tmp_path / "dup.gct", gct_text(genes, ["A", "A"], [[0, 1]] * 4))
    with pytest.raises(ExpressionInputError, match=r"dup\.gct: duplicated sample column\(s\) A"):
        read_gct(dup)


def test_geo_series_matrix_reader_and_characteristics(tmp_path):
    p = write(tmp_path / "GSE1_series_matrix.txt.gz",
              geo_text(["TP53", "EGFR"], ["GSM1", "GSM2"], [[5, 6], [7, 8]]), gz=True)
    m, meta = read_geo_series_matrix(p)
    assert m.loc["EGFR", "GSM2"] == 8 and list(m.columns) == ["GSM1", "GSM2"]
    assert list(meta.index) == ["GSM1", "GSM2"]
    assert meta.loc["GSM1", "cancer type"] == "TCGA-LUAD" and meta.loc["GSM2", "tissue"] == "tumour"
    nulls = write(tmp_path / "null.txt", geo_text(["TP53", "EGFR"], ["GSM1", "GSM2"], [[5, "null"], [7, 8]]))
    with pytest.raises(ExpressionInputError, match=r"null\.txt: 1 gene\(s\) with missing \(NaN\) values, e\.g\. TP53"):
        read_geo_series_matrix(nulls)


def test_kallisto_abundance_aggregates_transcripts_to_genes(tmp_path):
    ab = write(tmp_path / "abundance.tsv", "target_id\tlength\teff_length\test_counts\ttpm\n"
               "ENST1.1\t1000\t800\t10.5\t100\nENST2.3\t500\t300\t4.5\t50\nENST3.1\t900\t700\t20\t850\n")
    t2g = write(tmp_path / "t2g.tsv", "transcript_id\tgene_id\tgene_name\n"
                "ENST1.1\tENSG1.2\tTP53\nENST2.3\tENSG1.2\tTP53\nENST3.1\tENSG2.1\tEGFR\n")
    both = read_kallisto_abundance(ab, t2g, value=None)
    assert both.loc["TP53", "est_counts"] == pytest.approx(15.0) and both.loc["TP53", "tpm"] == pytest.approx(150)
    assert read_kallisto_abundance(ab, t2g, value="tpm")["EGFR"] == pytest.approx(850)
    # GENCODE FASTA headers as kallisto reports them (index built from gencode.vXX.transcripts.fa)
    gab = write(tmp_path / "gencode_abundance.tsv", "target_id\tlength\teff_length\test_counts\ttpm\n"
                "ENST1.1|ENSG1.2|OTTHUMG1|OTTHUMT1|TP53-201|TP53|1000|protein_coding|\t1000\t800\t10.5\t100\n"
                "ENST2.3|ENSG1.2|-|-|TP53-202|TP53|500|nonsense_mediated_decay|\t500\t300\t4.5\t50\n"
                "ENST3.1|ENSG2.1|-|-|EGFR-201|EGFR|900|protein_coding|\t900\t700\t20\t850\n")
    pd.testing.assert_frame_equal(read_kallisto_abundance(gab, t2g, value=None), both)
    short = write(tmp_path / "t2g_short.tsv", "ENST1.1\tENSG1\tTP53\n")  # headerless, missing ENST2/3
    with pytest.raises(ExpressionInputError, match=r"abundance\.tsv: 2 transcript\(s\) not in the transcript-to-gene table"):
        read_kallisto_abundance(ab, short)


# --- harmonisation and the matrix step ------------------------------------------------------

def test_harmonise_common_genes_and_protein_coding_list(tmp_path):
    a = pd.Series({"TP53": 1.0, "EGFR": 2.0, "LINC0001": 3.0, "ONLY_A": 9.0})
    b = pd.Series({"TP53": 4.0, "EGFR": 5.0, "LINC0001": 6.0})
    lst = write(tmp_path / "genes.tsv", "gene_name\tgene_type\nTP53\tprotein_coding\nEGFR\tprotein_coding\n"
                "LINC0001\tlncRNA\nKRAS\tprotein_coding\n")
    genes = load_gene_list(lst)
    assert genes == ["EGFR", "KRAS", "TP53"]
    m, qc = harmonise({"s1": a, "s2": b}, genes)
    assert list(m.index) == ["s1", "s2"] and list(m.columns) == ["EGFR", "TP53"]
    assert qc["n_dropped_not_in_all_samples"] == 1 and qc["n_dropped_not_protein_coding"] == 1
    m2, _ = harmonise({"s1": a, "s2": b}, None)
    assert list(m2.columns) == ["EGFR", "LINC0001", "TP53"]


def test_missing_file_or_sample_column_names_the_sample(tmp_path):
    gct = write(tmp_path / "reads.gct", gct_text([("ENSG1.1", "TP53")], ["GTEX-1"], [[3]]))
    with pytest.raises(ExpressionInputError, match=r"sample GTEX-2: no column 'GTEX-2' in .*reads\.gct"):
        read_sample_counts([{"sample": "GTEX-1", "format": "gct", "file": str(gct)},
                            {"sample": "GTEX-2", "format": "gct", "file": str(gct)}])
    with pytest.raises(ExpressionInputError, match=r"sample TCGA-X: expression file .*gone\.tsv does not exist"):
        read_sample_counts([{"sample": "TCGA-X", "format": "star_counts", "file": str(tmp_path / "gone.tsv")}])


def test_build_expression_matrix_step(tmp_path):
    f1 = write(tmp_path / "in/a.tsv", star_text(GOOD_STAR))
    f2 = write(tmp_path / "in/b.tsv", star_text(GOOD_STAR[:3] + [("ENSG00000133703.12", "KRAS", "protein_coding", 9)]))
    out = {"counts": str(tmp_path / "out/counts.tsv.gz"), "qc": str(tmp_path / "out/qc.json")}
    params = dict(sources=[{"sample": "A", "format": "star_counts", "file": str(f1)},
                           {"sample": "B", "format": "star_counts", "file": str(f2)}],
                  nan_policy="error", duplicates="sum", star_column="unstranded", kallisto_value="est_counts")
    xsteps.build_expression_matrix({"files": [str(f1), str(f2)]}, out, params)
    m = xsteps.read_matrix(out["counts"])
    assert m.index.name == "sample" and list(m.index) == ["A", "B"]
    assert sorted(m.columns) == ["EGFR", "MT-ATP8", "TP53"]
    assert json.loads(Path(out["qc"]).read_text())["n_dropped_not_in_all_samples"] == 2
    # a bad input fails naming the file and leaves no output behind
    bad = write(tmp_path / "in/c.tsv", star_text(GOOD_STAR).replace("\t40\t", "\t-40\t"))
    out2 = {"counts": str(tmp_path / "out2/counts.tsv.gz"), "qc": str(tmp_path / "out2/qc.json")}
    params["sources"].append({"sample": "C", "format": "star_counts", "file": str(bad)})
    with pytest.raises(ExpressionInputError, match=r"c\.tsv: negative count"):
        xsteps.build_expression_matrix({}, out2, params)
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_one_sample_with_few_genes_is_named_instead_of_shrinking_every_sample(tmp_path):
    """The matrix keeps the genes in every sample, so a STAR file cut at a line boundary (its
    first genes only) shrank the whole dataset to those genes with an INFO line; now it is an
    error naming the sample and file, unless expression.min_sample_genes turns the check off."""
    genes = [(f"ENSG{i:011d}.1", f"G{i}", "protein_coding", 10 + i) for i in range(40)]
    files = {s: write(tmp_path / f"in/{s}.tsv", star_text(genes)) for s in ("A", "B", "C")}
    cut = write(tmp_path / "in/D.tsv", star_text(genes[:8]))
    params = dict(sources=[{"sample": s, "format": "star_counts", "file": str(p)} for s, p in files.items()]
                  + [{"sample": "D", "format": "star_counts", "file": str(cut)}],
                  nan_policy="error", duplicates="sum", star_column="unstranded", kallisto_value="est_counts",
                  min_sample_genes=0.5)
    out = {"counts": str(tmp_path / "out/counts.tsv.gz"), "qc": str(tmp_path / "out/qc.json")}
    with pytest.raises(ExpressionInputError, match=r"1 sample\(s\) hold fewer than 0.5 x the median sample's 40 "
                                                   r"genes - D: 8 genes \(.*in/D\.tsv\)"):
        xsteps.build_expression_matrix({}, out, params)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    xsteps.build_expression_matrix({}, out, {**params, "min_sample_genes": 0})  # the user's explicit choice
    assert xsteps.read_matrix(out["counts"]).shape == (4, 8)
    qc = json.loads(Path(out["qc"]).read_text())["genes_per_sample"]
    assert qc == {"min": 8, "median": 40.0, "max": 40, "fewest": "D"}


# --- normalisation ----------------------------------------------------------------------------

def _cohort(rng, n=30, genes=("G1", "G2", "G3", "G4")):
    return pd.DataFrame(rng.negative_binomial(5, 0.05, size=(n, len(genes))),
                        index=[f"S{i:02d}" for i in range(n)], columns=list(genes)).astype(float)


def test_scaler_uses_training_split_only():
    rng = np.random.default_rng(0)
    counts = _cohort(rng)
    train = counts.index[:18]
    scaler = fit_scaler(log_transform(counts.loc[train]))
    assert (scaler["n_train"] == 18).all()
    # changing the held-out samples' values does not move the scaler
    changed = counts.copy()
    changed.loc[counts.index[18:]] *= 1000
    scaler2 = fit_scaler(log_transform(changed.loc[train]))
    pd.testing.assert_frame_equal(scaler, scaler2)
    # ... while changing a training sample does
    changed.loc[train[0]] *= 1000
    assert not np.allclose(fit_scaler(log_transform(changed.loc[train]))["mean"], scaler["mean"])
    z, qc = apply_scaler(log_transform(counts), scaler)
    assert np.allclose(z.loc[train].mean(), 0, atol=1e-9)
    assert np.allclose(z.loc[train].std(ddof=0), 1, atol=1e-9)
    assert not np.allclose(z.loc[counts.index[18:]].mean(), 0, atol=1e-3)
    assert qc["n_genes_missing"] == 0


def test_external_missing_genes_zero_after_zscore_and_reported():
    rng = np.random.default_rng(1)
    ref = _cohort(rng, genes=("G1", "G2", "G3", "G4"))
    scaler = fit_scaler(log_transform(ref))
    ext = _cohort(rng, n=5, genes=("G1", "G3", "EXTRA")) + 50
    z, qc = apply_scaler(log_transform(ext), scaler, missing_value=0.0)
    assert list(z.columns) == ["G1", "G2", "G3", "G4"]
    assert (z[["G2", "G4"]] == 0).all().all()
    assert not (z["G1"] == 0).all()
    s = scaler.set_index("gene")
    expect = (np.log2(ext["G1"] + 1) - s.at["G1", "mean"]) / s.at["G1", "sd"]
    assert np.allclose(z["G1"], expect)
    assert qc["missing_genes"] == ["G2", "G4"] and qc["n_genes_dropped_not_in_scaler"] == 1


def test_external_missing_genes_as_zero_counts_as_the_papers_did():
    """RNA-CDM Methods: missing genes "set to 0. Then, data was log-transformed and normalized":
    the count is 0, so the z-score is (log2(1) - mean) / sd - strongly negative for an expressed
    gene - while measured genes are untouched; the stage is recorded in the QC."""
    rng = np.random.default_rng(1)
    ref = _cohort(rng, genes=("G1", "G2", "G3", "G4"))
    scaler = fit_scaler(log_transform(ref))
    ext = _cohort(rng, n=5, genes=("G1", "G3", "EXTRA")) + 50
    zr, qc = apply_scaler(log_transform(ext), scaler, missing_value=0.0, missing_stage="raw")
    zz, _ = apply_scaler(log_transform(ext), scaler, missing_value=0.0, missing_stage="z")
    s = scaler.set_index("gene")
    for g in ("G2", "G4"):
        assert np.allclose(zr[g], (0.0 - s.at[g, "mean"]) / s.at[g, "sd"]) and (zr[g] < -1).all()
    pd.testing.assert_frame_equal(zr[["G1", "G3"]], zz[["G1", "G3"]])
    assert qc["missing_stage"] == "raw"
    with pytest.raises(ValueError, match="missing_stage"):
        apply_scaler(log_transform(ext), scaler, missing_stage="log")



def test_missing_genes_figure_names_the_stage_the_qc_records(tmp_path, monkeypatch):
    """The missing-genes legend follows the ``missing_stage`` that normalise_expression used
    (the default ``raw`` sets the count to 0 before log and z-score, not the z-score)."""
    from crossmodal.expression import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(
        [t.get_text() for t in fig.axes[0].get_legend().get_texts()]))
    qc = {"scaler_source": "reference scaler tcga/scaler_vae.tsv", "n_genes": 10, "n_genes_missing": 2,
          "n_genes_dropped_not_in_scaler": 1, "missing_value": 0.0}
    plots.plot_missing({"external": {**qc, "missing_stage": "raw"}}, tmp_path / "raw.png")
    plots.plot_missing({"external": {**qc, "missing_stage": "z"},
                        "other": {**qc, "missing_stage": "raw"}}, tmp_path / "both.png")
    assert drawn[0] == ["present", "missing -> count 0 before log + z-score", "only in cohort (dropped)"]
    assert "missing -> z-score 0" in drawn[1] and "missing -> count 0 before log + z-score" in drawn[1]
    assert not any("after z-score" in t for t in drawn[0])

def test_normalise_step_fits_on_train_rows_of_the_split(tmp_path):
    rng = np.random.default_rng(2)
    counts = _cohort(rng, n=10)
    cpath = tmp_path / "counts.tsv.gz"
    counts.rename_axis("sample").to_csv(cpath, sep="\t")
    sp = pd.DataFrame({"patient": counts.index, "sample": counts.index, "cohort": "c", "dataset": "d",
                       "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2})
    sp.to_csv(tmp_path / "split.tsv", sep="\t", index=False)
    out = {k: str(tmp_path / f"o/{k}") for k in ("z", "scaler", "qc")}
    out["z"] += ".tsv.gz"
    xsteps.normalise_expression({"counts": str(cpath), "splits": str(tmp_path / "split.tsv")}, out,
                                {"pseudocount": 1, "missing_value": 0})
    sc = pd.read_csv(out["scaler"], sep="\t")
    assert list(sc.columns) == ["gene", "mean", "sd", "n_train"] and (sc["n_train"] == 6).all()
    assert np.allclose(sc["mean"], np.log2(counts.iloc[:6] + 1).mean().to_numpy())
    # a patient's one expression file repeated for each of its slides (the GDC sheet's sample rows)
    # counts once in the fitted statistics
    counts2 = pd.concat([counts, counts.iloc[[0, 0]].set_axis(["s0-slide2", "s0-slide3"])])
    counts2.rename_axis("sample").to_csv(cpath, sep="\t")
    extra = pd.DataFrame({"patient": [counts.index[0]] * 2, "sample": ["s0-slide2", "s0-slide3"], "cohort": "c",
                          "dataset": "d", "split": "train"})
    pd.concat([sp, extra]).to_csv(tmp_path / "split.tsv", sep="\t", index=False)
    xsteps.normalise_expression({"counts": str(cpath), "splits": str(tmp_path / "split.tsv")}, out,
                                {"pseudocount": 1, "missing_value": 0})
    sc2 = pd.read_csv(out["scaler"], sep="\t")
    pd.testing.assert_frame_equal(sc2, sc)
    assert "2 repeated profile(s) counted once" in json.loads(Path(out["qc"]).read_text())["scaler_source"]


# --- end to end on the toy run -----------------------------------------------------------------

def test_toy_expression_outputs(toy_run):
    check_toy_expression(toy_run)


def check_toy_expression(wd: Path):
    root = wd / "results/expression"
    tcga = xsteps.read_matrix(root / "tcga/counts.tsv.gz")
    gtex = xsteps.read_matrix(root / "gtex/counts.tsv.gz")
    truth = pd.read_csv(wd / "results/toy/truth/genes.tsv", sep="\t")
    pc = set(truth.loc[truth.gene_type == "protein_coding", "gene"])
    assert set(tcga.columns) <= pc and set(gtex.columns) <= pc        # lncRNAs removed
    assert not any(c.startswith("LINC") for c in tcga.columns)
    assert (tcga.to_numpy() >= 0).all() and tcga.shape[0] >= 10
    # every kallisto sample was quantified and aggregated to the t2g genes
    fq = xsteps.read_matrix(root / "fastq/counts.tsv.gz")
    t2g = pd.read_csv(wd / "results/toy/cohort/fastq/t2g.tsv", sep="\t")
    assert set(fq.columns) == set(t2g.gene_name) and (fq.sum(axis=1) > 0).all()
    # z-scores: training statistics; the external cohort lacks genes, set to a count of 0 before
    # the log and z-score (RNA-CDM Methods) and reported
    sp = pd.read_csv(wd / "results/splits/vae.tsv", sep="\t", index_col="sample")
    z = xsteps.read_matrix(root / "tcga/z_vae.tsv.gz")
    train = sp.index[(sp.split == "train") & (sp.dataset == "tcga")]
    assert np.allclose(z.loc[train].mean(), 0, atol=1e-6)
    zx = xsteps.read_matrix(root / "external/z_vae.tsv.gz")
    qc = json.loads((root / "external/z_vae.qc.json").read_text())
    assert list(zx.columns) == list(z.columns)
    sc = pd.read_csv(root / "external/scaler_vae.tsv", sep="\t").set_index("gene")
    miss = qc["missing_genes"]
    assert qc["n_genes_missing"] > 0 and qc["missing_stage"] == "raw"
    assert np.allclose(zx[miss], np.broadcast_to(((0.0 - sc.loc[miss, "mean"]) / sc.loc[miss, "sd"]).to_numpy(),
                                                 zx[miss].shape))
    for f in ("library_sizes", "pca", "missing_genes"):
        assert (root / f"summary/{f}.png").stat().st_size > 0 and (root / f"summary/{f}.pdf").exists()


def test_geo_table_of_ensembl_ids_is_put_on_the_gene_lists_symbols(tmp_path):
    """GEO RNA-seq supplementary counts may be indexed by Ensembl ids (e.g. GSE120795's
    raw-count table): mapped to symbols through the gene list's gene_id, versions stripped,
    ids off the list dropped, a symbol's ids summed; without a mapping, an error naming the file."""
    from crossmodal.expression.harmonise import load_gene_ids

    genes = write(tmp_path / "genes.tsv", "gene_name\tgene_id\tgene_type\nTP53\tENSG00000141510\tprotein_coding\n"
                  "EGFR\tENSG00000146648\tprotein_coding\nEGFR\tENSG00000999999\tprotein_coding\n")
    ids = ["ENSG00000141510.17", "ENSG00000146648.20", "ENSG00000999999.1", "ENSG00000000001.1"]
    p = write(tmp_path / "GSE9_series_matrix.txt", geo_text(ids, ["GSM1", "GSM2"], [[5, 6], [7, 8], [1, 1], [9, 9]]))
    src = [{"sample": g, "format": "geo_series_matrix", "file": str(p)} for g in ("GSM1", "GSM2")]
    got = read_sample_counts(src, id_to_symbol=load_gene_ids(genes))
    assert got["GSM2"].to_dict() == {"TP53": 6.0, "EGFR": 9.0}
    # two ids on one symbol follow expression.duplicates, as a reader's duplicated symbols do
    with pytest.raises(ExpressionInputError, match=r"GSE9_series_matrix\.txt: duplicated gene symbol\(s\) EGFR"):
        read_sample_counts(src, id_to_symbol=load_gene_ids(genes), duplicates="error")
    with pytest.raises(ExpressionInputError, match=r"GSE9_series_matrix\.txt: genes are Ensembl ids \(e\.g\. ENSG00000141510\.17\)"):
        read_sample_counts(src)
    # a table of symbols is left as it is, mapping or not
    sym = write(tmp_path / "GSE8_series_matrix.txt", geo_text(["TP53", "EGFR"], ["GSM1"], [[5], [7]]))
    got = read_sample_counts([{"sample": "GSM1", "format": "geo_series_matrix", "file": str(sym)}],
                             id_to_symbol=load_gene_ids(genes))
    assert got["GSM1"].to_dict() == {"TP53": 5.0, "EGFR": 7.0}
