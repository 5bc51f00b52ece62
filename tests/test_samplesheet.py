"""The user's sample sheet: validated row by row, errors name the sheet, sample and column."""
import pandas as pd
import pytest

from crossmodal.samplesheet import SampleSheetError, check_files, read_sheet

COLS = "patient\tsample\tcohort\tdataset\tslide\texpression\texpression_format\tmpp\n"


def _sheet(tmp_path, rows):
    p = tmp_path / "samples.tsv"
    p.write_text(COLS + "".join("\t".join(r) + "\n" for r in rows))
    return p


def test_valid_sheet_reads_with_defaults(tmp_path):
    slide = tmp_path / "a.svs"
    slide.write_bytes(b"x")
    p = _sheet(tmp_path, [["P1", "S1", "TCGA-LUAD", "tcga", str(slide), "", "", "0.25"],
                          ["P1", "S2", "TCGA-LUAD", "tcga", "", "", "", ""]])
    df = read_sheet(p)
    assert list(df.index) == ["S1", "S2"]
    assert df.loc["S1", "mpp"] == 0.25 and pd.isna(df.loc["S2", "mpp"])
    check_files(df, str(p))


def test_missing_file_names_sample_and_column(tmp_path):
    p = _sheet(tmp_path, [["P1", "S1", "TCGA-LUAD", "tcga", "nope.svs", "", "", ""]])
    with pytest.raises(SampleSheetError, match=r"sample S1: slide file nope.svs does not exist"):
        check_files(read_sheet(p), str(p))


def test_duplicated_sample_id(tmp_path):
    p = _sheet(tmp_path, [["P1", "S1", "C", "tcga", "", "", "", ""], ["P2", "S1", "C", "tcga", "", "", "", ""]])
    with pytest.raises(SampleSheetError, match="duplicated sample id.*S1"):
        read_sheet(p)


def test_bad_format_and_bad_mpp_are_named(tmp_path):
    p = _sheet(tmp_path, [["P1", "S1", "C", "tcga", "", "x.tsv", "salmon", ""]])
    with pytest.raises(SampleSheetError, match=r"row 1 \(sample S1\): expression_format"):
        read_sheet(p)
    p = _sheet(tmp_path, [["P1", "S1", "C", "tcga", "", "", "", "fast"]])
    with pytest.raises(SampleSheetError, match="mpp 'fast' is not a number"):
        read_sheet(p)


@pytest.mark.parametrize("mpp", ["nan", "NaN", "inf", "-inf", "1e400"])
def test_non_finite_mpp_is_refused_naming_sheet_row_and_column(tmp_path, mpp):
    """NaN passes the schema's exclusiveMinimum (the tiler then silently used the slide's own
    mpp) and inf passes it too (a grid of millions of tiles)."""
    p = _sheet(tmp_path, [["P1", "S1", "C", "tcga", "", "", "", "0.5"], ["P2", "S2", "C", "tcga", "", "", "", mpp]])
    with pytest.raises(SampleSheetError, match=r"samples\.tsv: row 2 \(sample S2\): mpp -?(nan|inf) is not a finite number"):
        read_sheet(p)


def test_hash_inside_a_field_is_kept_and_only_full_line_comments_are_skipped(tmp_path):
    """pandas' comment='#' cut a row at any '#': a slide run#2/a.svs became 'run' and the
    row's expression, format and mpp were silently dropped."""
    d = tmp_path / "run#2"
    d.mkdir()
    (d / "#x.svs").write_bytes(b"x")
    (d / "e#1.tsv").write_text("x")
    slide, expr = str(d / "#x.svs"), str(d / "e#1.tsv")
    p = tmp_path / "samples.tsv"
    p.write_text("# a comment line\n" + COLS + "#P0\tS0\tC\ttcga\t\t\t\t\n"
                 + "\t".join(["P1", "S1", "C", "tcga", slide, expr, "star_counts", "0.5"]) + "\n")
    df = read_sheet(p)
    assert list(df.index) == ["S1"]
    assert df.loc["S1", "slide"] == slide and df.loc["S1", "expression"] == expr
    assert df.loc["S1", "expression_format"] == "star_counts" and df.loc["S1", "mpp"] == 0.5
    check_files(df, str(p))


def test_bom_and_crlf_are_read(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_bytes(("\ufeff" + COLS + "P1\tS1\tC\ttcga\t\t\t\t0.5\n").replace("\n", "\r\n").encode())
    df = read_sheet(p)
    assert list(df.columns[:2]) == ["patient", "sample"] and df.loc["S1", "mpp"] == 0.5


def test_unknown_column_is_named(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("patient\tsample\tcohort\tdataset\tslyde\nP\tS\tC\ttcga\tx\n")
    with pytest.raises(SampleSheetError, match="unknown key slyde"):
        read_sheet(p)


def test_expression_without_format(tmp_path):
    p = _sheet(tmp_path, [["P1", "S1", "C", "tcga", "", "x.tsv", "", ""]])
    with pytest.raises(SampleSheetError, match="expression_format is empty"):
        read_sheet(p)


def test_ragged_rows_are_refused_naming_the_line_and_trailing_tabs_are_harmless(tmp_path):
    """A short row used to pass with its last cells silently empty, and one trailing tab made
    pandas index by the first column and shift every value, blaming the wrong sample."""
    p = tmp_path / "s.tsv"
    p.write_text("# exported\n" + COLS + "P1\tS1\tC\ttcga\t\n")
    with pytest.raises(SampleSheetError, match=r"s\.tsv: line 3 has 5 tab-separated fields, the header 8"):
        read_sheet(p)
    p.write_text(COLS + "P1\tS1\tC\ttcga\t\t\t\t0.5\tsurplus\n")
    with pytest.raises(SampleSheetError, match=r"line 2 has 9 .*extra cell\(s\) \['surplus'\]"):
        read_sheet(p)
    p.write_text(COLS.replace("\n", "\t\n") + "P1\tS1\tC\ttcga\t\t\t\t0.5\t\n" + "P2\tS2\tC\ttcga\t\t\t\t\t\t\n"
                 + "\t\t\t\t\t\t\t\t\n")
    df = read_sheet(p)
    assert list(df.index) == ["S1", "S2"] and df.loc["S1", "patient"] == "P1" and df.loc["S1", "mpp"] == 0.5


@pytest.mark.parametrize("text, match", [("", "empty \\(no header line"), ("# only a comment\n\n", "empty"),
                                         ("patient\tsample\tpatient\nP\tS\tP\n", "repeats column\\(s\\) patient")])
def test_an_empty_or_headless_sheet_is_named(tmp_path, text, match):
    p = tmp_path / "s.tsv"
    p.write_text(text)
    with pytest.raises(SampleSheetError, match=rf"sample sheet .*s\.tsv: .*{match}"):
        read_sheet(p)


def test_a_header_only_sheet_plans_nothing_with_a_warning(tmp_path, caplog):
    """config/coherent.yaml starts from a header-only sheet (filled after its download step)."""
    p = tmp_path / "s.tsv"
    p.write_text(COLS)
    with caplog.at_level("WARNING"):
        assert len(read_sheet(p)) == 0
    assert "s.tsv: no samples" in caplog.text


def test_check_files_wants_files_and_splits_only_fastq_lists(tmp_path):
    """A directory passed the existence check (tiling failed later); ';' lists several files
    only for FASTQ, so a slide 'a.svs;a.svs' is one (missing) path, not two existing ones."""
    (tmp_path / "a.svs").write_bytes(b"x")
    fq = [tmp_path / f"r{i}.fastq.gz" for i in (1, 2)]
    for f in fq:
        f.write_bytes(b"x")
    ok = _sheet(tmp_path, [["P1", "S1", "C", "tcga", str(tmp_path / "a.svs"), ";".join(map(str, fq)), "fastq", ""]])
    check_files(read_sheet(ok))
    bad = _sheet(tmp_path, [["P1", "S1", "C", "tcga", str(tmp_path), "", "", ""],
                            ["P2", "S2", "C", "tcga", f"{tmp_path}/a.svs;{tmp_path}/a.svs", "", "", ""]])
    with pytest.raises(SampleSheetError, match=r"sample S1: slide .* is not a file; sample S2: slide file .*a\.svs;.*a\.svs does not exist"):
        check_files(read_sheet(bad))
