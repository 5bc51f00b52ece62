"""The clinical table (crossmodal.clinical.read_clinical): errors name file, patient and column."""
import re

import numpy as np
import pytest

from crossmodal.clinical import ClinicalTableError, read_clinical

HEAD = "patient\tcohort\tgrade\tstage\tsurvival_time\tevent\tage\tsex\tmsi_like\n"
ROWS = {"P1": ["P1", "TCGA-LUAD", "3", "IV", "242", "0", "54", "female", "0"],
        "P2": ["P2", "TCGA-LUAD", "4", "IV", "189", "1", "43", "male", "0"],
        "P3": ["P3", "TCGA-LUAD", "", "", "", "", "", "", "0"]}   # nothing known: kept, missing values
COL = {c: i for i, c in enumerate(HEAD.strip().split("\t"))}


def _table(tmp_path, **edit):
    rows = {k: list(v) for k, v in ROWS.items()}
    for col, value in edit.items():
        rows["P1"][COL[col]] = value
    p = tmp_path / "clinical.tsv"
    p.write_text(HEAD + "".join("\t".join(r) + "\n" for r in rows.values()))
    return p


def test_good_table_reads_with_numbers_and_missing_values(tmp_path):
    df = read_clinical(_table(tmp_path))
    assert list(df.patient) == ["P1", "P2", "P3"]
    assert df.survival_time.tolist()[:2] == [242.0, 189.0] and df.event.tolist()[:2] == [0.0, 1.0]
    assert np.isnan(df.survival_time[2]) and np.isnan(df.event[2]) and np.isnan(df.age[2])
    assert df.grade.tolist()[:2] == ["3", "4"] and df.age[0] == 54.0


@pytest.mark.parametrize("col, value, message", [
    ("survival_time", "abc", "patient P1: survival_time 'abc' is not a finite number"),
    ("survival_time", "inf", "patient P1: survival_time 'inf' is not a finite number"),
    ("survival_time", "-100", "patient P1: survival_time -100 is negative"),
    ("event", "yes", "patient P1: event 'yes' is not a finite number"),
    ("event", "2", "patient P1: event 2 must be 0 (censored) or 1 (death observed)"),
    ("event", "", "patient P1: event (empty) must be 0 (censored) or 1 (death observed) where survival_time is given"),
    ("age", "old", "patient P1: age 'old' is not a finite number"),
])
def test_bad_values_name_file_patient_and_column(tmp_path, col, value, message):
    with pytest.raises(ClinicalTableError, match=r"clinical table .*clinical\.tsv: " + re.escape(message)):
        read_clinical(_table(tmp_path, **{col: value}))


def test_duplicated_patient_and_missing_column_are_named(tmp_path):
    p = _table(tmp_path, patient="P2")
    with pytest.raises(ClinicalTableError, match=r"clinical\.tsv: duplicated patient id\(s\) P2"):
        read_clinical(p)
    p.write_text("patient\tgrade\tevent\nP1\t3\t1\n")
    with pytest.raises(ClinicalTableError, match=r"clinical\.tsv: missing column\(s\) survival_time"):
        read_clinical(p)
    with pytest.raises(ClinicalTableError, match=r"nope\.tsv: not found"):
        read_clinical(tmp_path / "nope.tsv")


def test_prepare_pathgen_data_reads_the_clinical_table_through_it(tmp_path):
    """The audit's prepare_pathgen_data repro: event 2 and a negative survival time went into
    cases.tsv (censored = -1); now the step stops, naming the file and patient."""
    from crossmodal import steps
    from crossmodal.pathgen.cases import PathGenDataError

    (tmp_path / "counts.tsv").write_text("sample\tA\nS1\t1\n")
    outs = {k: str(tmp_path / "out" / f"{k}.tsv") for k in ("cases", "genes", "real", "qc")}
    for edit, message in [({"event": "2"}, "patient P1: event 2 must be 0"),
                          ({"survival_time": "-100"}, "patient P1: survival_time -100 is negative")]:
        clin = _table(tmp_path, **edit)
        with pytest.raises(PathGenDataError, match=re.escape(message)):
            steps.run("prepare_pathgen_data", {"counts": str(tmp_path / "counts.tsv"), "clinical": str(clin),
                                               "gene_groups": "unused", "splits": "unused", "embeddings": []},
                      outs, {"calibration_fraction": 0.1, "n_bins": 4, "pseudocount": 1.0, "seed": 0})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
