"""Patient-level, stratified, seeded splits written once (crossmodal.splits)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossmodal.splits import SplitError, make_splits, make_splits_step

VAE = {"train": 0.6, "val": 0.2, "test": 0.2, "stratify": "cohort", "complete_case_test": False, "datasets": None}
COH = {"train": 0.8, "val": 0.05, "test": 0.15, "stratify": "cohort", "complete_case_test": True, "datasets": ["tcga"]}


def sheet(n_per=20, cohorts=("TCGA-LUAD", "TCGA-GBM", "TCGA-KIRP"), multi=True) -> pd.DataFrame:
    rows = []
    for c in cohorts:
        for i in range(n_per):
            p = f"{c[5:]}-{i:03d}"
            rows.append(dict(patient=p, sample=f"{p}-01A", cohort=c, dataset="tcga",
                             slide=f"s/{p}.svs" if i % 4 else "", expression=f"e/{p}.tsv", expression_format="star_counts"))
            if multi and i % 3 == 0:  # a second sample of the same patient
                rows.append(dict(patient=p, sample=f"{p}-02A", cohort=c, dataset="tcga", slide="",
                                 expression=f"e/{p}-2.tsv", expression_format="star_counts"))
    for i in range(10):
        rows.append(dict(patient=f"GEO-{i}", sample=f"GSM{i}", cohort="TCGA-LUAD", dataset="external",
                         slide="", expression="geo.txt", expression_format="geo_series_matrix"))
    return pd.DataFrame(rows)


REF = {"external": "tcga"}


def test_by_patient_stratified_fractions():
    s = sheet()
    t = make_splits(s, VAE, seed=0, scheme="vae", reference=REF)
    assert list(t.columns) == ["patient", "sample", "cohort", "dataset", "split"]
    assert set(t.dataset) == {"tcga"}                      # the external cohort is never split
    assert len(t) == len(s[s.dataset == "tcga"])           # every sample of the dataset once
    assert (t.groupby("patient")["split"].nunique() == 1).all()   # no patient straddles splits
    per = t.drop_duplicates("patient").groupby(["cohort", "split"]).size().unstack()
    assert (per["train"] == 12).all() and (per["val"] == 4).all() and (per["test"] == 4).all()


def test_donor_with_several_tissues_stays_in_one_split():
    # GTEx: most donors gave several tissues (lung and brain cortex), each its own cohort value
    rows = []
    for i in range(40):
        tissues = ["GTEx-Lung", "GTEx-Brain_Cortex"] if i < 30 else (["GTEx-Lung"] if i < 35 else ["GTEx-Brain_Cortex"])
        for t in tissues:
            rows.append(dict(patient=f"GTEX-{i:03d}", sample=f"GTEX-{i:03d}-{t[5:9]}", cohort=t, dataset="gtex",
                             slide=f"s/{i}-{t}.svs", expression="gtex.gct", expression_format="gtex_gct"))
    s = pd.DataFrame(rows)
    t = make_splits(s, VAE, seed=0, scheme="vae", reference=None)
    assert len(t) == len(s)
    assert (t.groupby("patient")["split"].nunique() == 1).all()   # a donor's tissues share a split
    donors = t.drop_duplicates("patient").set_index("patient")["split"]
    both = donors[[f"GTEX-{i:03d}" for i in range(30)]].value_counts()
    assert both.to_dict() == {"train": 18, "val": 6, "test": 6}   # 60/20/20 within the two-tissue stratum
    # every sample keeps its own tissue in the cohort column
    assert set(t["cohort"]) == {"GTEx-Lung", "GTEx-Brain_Cortex"}


def test_deterministic_and_independent_of_row_order_but_not_of_seed():
    s = sheet()
    a = make_splits(s, VAE, seed=3, scheme="vae", reference=REF)
    b = make_splits(s.sample(frac=1, random_state=1), VAE, seed=3, scheme="vae", reference=REF)
    pd.testing.assert_frame_equal(a, b)
    c = make_splits(s, VAE, seed=4, scheme="vae", reference=REF)
    assert not a["split"].equals(c["split"])


def test_step_writes_byte_identical_files(tmp_path):
    s = sheet()
    params = dict(samples=s.to_dict(orient="records"), settings=VAE, scheme="vae", seed=0, reference=REF)
    p1, p2 = tmp_path / "a/vae.tsv", tmp_path / "b/vae.tsv"
    make_splits_step({}, {"splits": str(p1)}, params)
    params["samples"] = list(reversed(params["samples"]))
    make_splits_step({}, {"splits": str(p2)}, params)
    assert p1.read_bytes() == p2.read_bytes() and p1.stat().st_size > 0


def _omics(tmp_path, name, ids):
    p = tmp_path / f"{name}.tsv.gz"
    pd.DataFrame({"sample": ["f1", "f2"], **{i: [0.1, 0.2] for i in ids}}).to_csv(p, sep="\t", index=False)
    return str(p)


def test_complete_case_test_set(tmp_path):
    s = sheet()
    tc = s[s.dataset == "tcga"]
    first = tc.drop_duplicates("patient")["sample"].tolist()
    cna_ids = [x for k, x in enumerate(first) if k % 5]          # some patients lack CNA
    rppa_ids = [x for k, x in enumerate(first) if k % 7]         # some lack RPPA
    inputs = {"cna": _omics(tmp_path, "cna", cna_ids), "rppa": _omics(tmp_path, "rppa", rppa_ids)}
    out = tmp_path / "coherent.tsv"
    t = make_splits_step(inputs, {"splits": str(out)},
                         dict(samples=s.to_dict(orient="records"), settings=COH, scheme="coherent", seed=0, reference=REF))
    test_pts = set(t.loc[t.split == "test", "patient"])
    assert test_pts
    slide = set(tc.loc[tc.slide != "", "patient"])
    has_cna = set(tc.loc[tc["sample"].isin(cna_ids), "patient"])
    has_rppa = set(tc.loc[tc["sample"].isin(rppa_ids), "patient"])
    assert test_pts <= (slide & has_cna & has_rppa)
    incomplete = set(tc.patient) - (slide & has_cna & has_rppa)
    assert incomplete and incomplete <= set(t.loc[t.split != "test", "patient"])
    per = t.drop_duplicates("patient").groupby(["cohort", "split"]).size().unstack(fill_value=0)
    assert (per["test"] == 3).all() and (per["val"] == 1).all()    # 15% and 5% of 20


def test_coherent_scheme_splits_patients_without_rna_too():
    """Coherent Denoising splits every sample, RNA or not (8,305 + 443 + 1,350 = 10,098, Table 4
    counts samples without RNA-seq): with members 'any', a patient with only a slide or only a
    CNA / RPPA profile is split (never into the complete-case test set); with 'expression' not."""
    s = sheet(multi=False)
    tc = s[s.dataset == "tcga"]
    no_rna = tc.patient.iloc[::6].tolist()  # some patients lose their expression
    s.loc[s.patient.isin(no_rna), "expression"] = ""
    ids = set(tc["sample"])
    cna_ids, rppa_ids = ids, ids - {tc["sample"].iloc[1]}
    coh_any = dict(COH, members="any")
    t = make_splits(s, coh_any, seed=0, scheme="coherent", reference=REF, cna_ids=cna_ids, rppa_ids=rppa_ids)
    assert set(no_rna) <= set(t.patient)                       # split although they have no RNA
    assert not set(no_rna) & set(t.loc[t.split == "test", "patient"])  # not complete cases
    per = t.drop_duplicates("patient").groupby(["cohort", "split"]).size().unstack(fill_value=0)
    assert (per.sum(axis=1) == 20).all()                        # every patient of each cancer type
    only_rna = make_splits(s, COH, seed=0, scheme="coherent", reference=REF, cna_ids=cna_ids, rppa_ids=rppa_ids)
    assert not set(no_rna) & set(only_rna.patient)


def test_complete_case_needs_omics_and_bad_fractions_named():
    s = sheet()
    with pytest.raises(SplitError, match="complete_case_test needs the CNA and RPPA"):
        make_splits(s, COH, seed=0, scheme="coherent")
    with pytest.raises(SplitError, match=r"splits.schemes.vae: train \+ val \+ test = 1.1"):
        make_splits(s, {**VAE, "train": 0.7}, seed=0, scheme="vae", reference=REF)
    with pytest.raises(SplitError, match="stratify column 'grade'"):
        make_splits(s, {**VAE, "stratify": "grade"}, seed=0, scheme="vae", reference=REF)


def test_unconfigured_scheme_is_named():
    from crossmodal.expression.rules import split_inputs

    cfg = {"splits": {"schemes": {"vae": VAE, "coherent": COH}}}
    assert split_inputs(cfg, "vae") == {}
    with pytest.raises(ValueError, match=r"results/splits/pathgen.tsv.*'pathgen'.*coherent, vae"):
        split_inputs(cfg, "pathgen")


def test_toy_splits(toy_run):
    check_toy_splits(toy_run)


def check_toy_splits(wd: Path):
    vae = pd.read_csv(wd / "results/splits/vae.tsv", sep="\t")
    assert set(vae.dataset) == {"tcga", "gtex"}
    assert (vae.groupby("patient")["split"].nunique() == 1).all()
    assert set(vae.split) == {"train", "val", "test"}
    assert set(vae.cohort) == set(vae[vae.split == "test"].cohort)   # every cohort in the test set
    coh = pd.read_csv(wd / "results/splits/coherent.tsv", sep="\t")
    pts = pd.read_csv(wd / "results/toy/truth/patients.tsv", sep="\t").set_index("patient")
    test = coh.loc[coh.split == "test", "patient"].unique()
    assert len(test) > 0
    assert (pts.loc[test, "has_cna"] == 1).all() and (pts.loc[test, "has_rppa"] == 1).all()


def _slide_lmdb(path, sample, n):
    from crossmodal.data import TileWriter

    with TileWriter(path, {"sample": sample, "mpp": 0.5, "encoding": "raw"}) as w:
        for i in range(n):
            w.add(np.full((8, 8, 3), i, np.uint8), {"sample": sample})
    return str(path)


def test_select_lmdbs_reads_the_sample_from_the_header_and_filters_by_split_and_cohort(tmp_path):
    from crossmodal.data import TileDataset, per_slide_indices
    from crossmodal.splits import SplitError, select_lmdbs

    sp = pd.DataFrame({"sample": ["A", "B", "C"], "cohort": ["X", "X", "Y"], "split": ["train", "test", "train"]})
    # file names deliberately unrelated to the samples: the header decides
    paths = [_slide_lmdb(tmp_path / f"slide{i}.lmdb", s, n) for i, (s, n) in enumerate([("A", 5), ("B", 2), ("C", 9)])]
    assert select_lmdbs(paths, sp, ["train"]) == [paths[0], paths[2]]
    assert select_lmdbs(paths, sp, "train", cohorts=["X"]) == [paths[0]]
    with pytest.raises(SplitError, match=r"slide2.lmdb: sample C is Y, not X"):
        select_lmdbs(paths, sp, ["train"], cohorts=["X"], only_cohorts=True)
    with pytest.raises(SplitError, match=r"my step: no slides of cohorts \['Z'\] in splits \['train'\] among 3"):
        select_lmdbs(paths, sp, ["train"], cohorts=["Z"], what="my step")
    with pytest.raises(SplitError, match=r"slide0.lmdb: sample 'A' is not in the split table"):
        select_lmdbs(paths, sp[sp["sample"] != "A"], ["train"])
    # at most 3 tiles per slide, the same ones for the same seed
    ds = TileDataset(paths)
    idx = per_slide_indices(ds, 3, seed=0)
    assert np.bincount(ds.source_index[idx]).tolist() == [3, 2, 3]
    np.testing.assert_array_equal(idx, per_slide_indices(ds, 3, seed=0))
    assert not np.array_equal(idx, per_slide_indices(ds, 3, seed=1))
