"""The shared reproduction-table format (crossmodal.reproduction) that all four papers write."""
import math

import pandas as pd
import pytest

from crossmodal import reproduction as R


def test_claims_frame_has_common_columns_then_extras_and_prefixes_the_note():
    c = R.Claims("toy", note="toy cohort")
    c.add("FID A < B", "83.89 vs 87.85", "Discussion", "40 vs 50", R.holds(40 < 50, 40, 50), "n = 10")
    c.add("RMSE", 0.2475, "Results", 0.84123456, paper_gbmlgg=0.7)
    t = c.frame()
    assert list(t.columns) == R.COLUMNS + ["paper_gbmlgg"]
    assert t.loc[0, "direction_holds"] is True and t.loc[1, "direction_holds"] == "n/a"
    assert t.loc[0, "note"] == "toy cohort; n = 10" and t.loc[1, "note"] == "toy cohort"
    assert t.loc[1, "paper_value"] == "0.2475" and t.loc[1, "this_run"] == "0.8412"
    assert set(t["data"]) == {"toy"}
    assert R.tally(t) == (1, 1)


def test_holds_is_na_when_a_side_is_missing():
    assert R.holds(True, 1.0, 2.0) is True
    assert R.holds(False, 1.0) is False
    assert R.holds(True, float("nan"), 2.0) == "n/a"
    assert R.holds(None) == "n/a"
    assert R.holds(True, None) == "n/a"
    assert R.fmt(math.nan) == "nan" and R.fmt(0.123456, 3) == "0.123"


def test_bad_rows_and_tables_are_refused_with_the_source_named(tmp_path):
    c = R.Claims("toy")
    with pytest.raises(ValueError, match="direction_holds"):
        c.add("x", 1, "Results", 2, holds="yes")
    with pytest.raises(ValueError, match="no paper section"):
        c.add("x", 1, "", 2)
    with pytest.raises(ValueError, match="shadow"):
        c.add("x", 1, "Results", 2, note_extra=1, data="real")
    with pytest.raises(ValueError, match="no claims"):
        c.frame()
    with pytest.raises(ValueError, match="data"):
        R.Claims("")
    # a row whose value comes from no data (e.g. schema defaults) names its own data, without the table's note
    d = R.Claims("toy", "toy cohort: not comparable")
    d.add("params", "1.8 B", "Methods", "1.13 B", note="from the schema defaults", row_data="schema defaults")
    d.add("fid", 23.4, "Results", 55.0, note="n = 40")
    f = d.frame()
    assert list(f["data"]) == ["schema defaults", "toy"]
    assert list(f["note"]) == ["from the schema defaults", "toy cohort: not comparable; n = 40"]
    # a table read back from a TSV (booleans as text) passes; an old-format table is named
    c.add("x", 1, "Results", 2, True)
    p = tmp_path / "reproduction.tsv"
    c.frame().to_csv(p, sep="\t", index=False)
    R.check(pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False), str(p))
    with pytest.raises(ValueError, match=r"old\.tsv: columns must start with claim"):
        R.check(pd.DataFrame({"quantity": ["a"], "paper": [1], "ours": [2]}), "old.tsv")


def test_summary_counts_each_papers_claims_and_names_the_failing_ones(tmp_path):
    from crossmodal.steps import run

    a = R.Claims("toy")
    a.add("FID A < B", "1 vs 2", "Discussion", "3 vs 2", R.holds(3 < 2, 3, 2))
    a.add("accuracy above chance", "80%", "Figure 4D", "90%", True)
    a.add("RMSE", 0.25, "Results", 0.8)
    b = R.Claims("TCGA (5 projects)")
    b.add("speed-up >= 25x", "goal", "Methods", "30x", True)
    paths = []
    for paper, c in (("rna_gan", a), ("rna_cdm", b)):
        p = tmp_path / paper / "reproduction.tsv"
        p.parent.mkdir()
        c.frame().to_csv(p, sep="\t", index=False)
        paths.append(str(p))
    out = tmp_path / "report"
    run("summarise_reproduction", {"tables": paths},
        {"table": str(out / "reproduction_summary.tsv"), "figure": str(out / "reproduction_summary.png")}, {})
    s = pd.read_csv(out / "reproduction_summary.tsv", sep="\t").set_index("paper")
    assert s.loc["rna_gan", ["claims", "directional", "holds", "fails"]].tolist() == [3, 2, 1, 1]
    assert s.loc["rna_gan", "failing_claims"] == "FID A < B" and s.loc["rna_cdm", "data"] == "TCGA (5 projects)"
    assert s.loc["rna_cdm", ["holds", "fails"]].tolist() == [1, 0]
    assert (out / "reproduction_summary.png").stat().st_size > 0 and (out / "reproduction_summary.pdf").exists()
    # a table in another layout is refused, naming the paper, and nothing is written
    pd.DataFrame({"item": ["x"], "paper": [1], "ours": [2]}).to_csv(paths[1], sep="\t", index=False)
    bad = tmp_path / "bad"
    with pytest.raises(ValueError, match="reproduction table of rna_cdm: columns"):
        run("summarise_reproduction", {"tables": paths},
            {"table": str(bad / "s.tsv"), "figure": str(bad / "s.png")}, {})
    assert not bad.exists() or not any(bad.iterdir())
