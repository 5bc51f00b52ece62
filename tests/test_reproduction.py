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
    # a table read back from a TSV (booleans as text) passes; an old-format table is named
    c.add("x", 1, "Results", 2, True)
    p = tmp_path / "reproduction.tsv"
    c.frame().to_csv(p, sep="\t", index=False)
    R.check(pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False), str(p))
    with pytest.raises(ValueError, match=r"old\.tsv: columns must start with claim"):
        R.check(pd.DataFrame({"quantity": ["a"], "paper": [1], "ours": [2]}), "old.tsv")
