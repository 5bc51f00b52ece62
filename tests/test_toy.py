"""The planted-signal toy cohort: formats, determinism and the planted answer."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from crossmodal.config import SCHEMA_DIR, ConfigError
from crossmodal.samplesheet import COLUMNS
from crossmodal.toy import CELL_TYPES, make_cohort, plan, toy_settings
from crossmodal.toy.expression import STAR_HEADER

# small but large enough for the planted statistics to be clear
SMALL = {"seed": 7, "toy": {
    "cancer_types": ["TCGA-LUAD", "TCGA-KIRP", "TCGA-GBM"], "tissues": ["GTEx-Lung"],
    "patients_per_cancer": 25, "patients_per_tissue": 4, "external_per_cancer": 2,
    "fastq_samples": 2, "n_genes": 300, "marker_genes": 10, "program_genes": 10,
    "survival_genes": 10, "n_proteins": 12, "fastq_genes": 15, "fastq_reads": 3000,
    "slide_size": 1024}}
TINY = {"seed": 1, "toy": {
    "cancer_types": ["TCGA-LUAD", "TCGA-GBM"], "tissues": ["GTEx-Lung"],
    "patients_per_cancer": 3, "patients_per_tissue": 2, "external_per_cancer": 1,
    "fastq_samples": 1, "n_genes": 200, "marker_genes": 5, "program_genes": 5,
    "survival_genes": 5, "n_proteins": 6, "fastq_genes": 5, "fastq_reads": 500,
    "slide_size": 768}}


def _build(base: Path, cfg: dict) -> Path:
    """make_cohort with the working directory layout Snakemake uses (paths relative to base)."""
    import os

    cwd = os.getcwd()
    os.chdir(base)
    try:
        make_cohort("results/toy", cfg)
    finally:
        os.chdir(cwd)
    return base


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("toy_small"), SMALL)


def _read(base, rel, **kw):
    return pd.read_csv(base / rel, sep="\t", **kw)


def _logcpm(base: Path) -> pd.DataFrame:
    """log2 CPM (genes x samples) from the STAR-counts files of the TCGA-style samples."""
    sheet = _read(base, "results/toy/cohort/samples.tsv")
    cols = {}
    for rec in sheet[sheet.dataset == "tcga"].itertuples():
        t = pd.read_csv(base / rec.expression, sep="\t", comment="#")
        t = t[~t.gene_id.str.startswith("N_")].set_index("gene_name")["unstranded"]
        cols[rec.patient] = np.log2(t / t.sum() * 1e6 + 1)
    return pd.DataFrame(cols)


# --- plan -------------------------------------------------------------------------------------

def test_default_plan_has_the_promised_cohort():
    p = plan({"seed": 0})
    assert list(p.columns) == COLUMNS
    assert p["patient"].nunique() >= 60
    tcga = p[p.dataset == "tcga"]
    assert set(tcga.cohort) == {"TCGA-LUAD", "TCGA-KIRP", "TCGA-CESC", "TCGA-COAD", "TCGA-GBM"}
    assert set(p.loc[p.dataset == "gtex", "cohort"]) == {"GTEx-Lung", "GTEx-Brain_Cortex"}
    assert (p.loc[p.dataset == "fastq", "expression_format"] == "fastq").sum() >= 4
    assert "TOY-LUAD-0001-01A" in set(tcga["sample"])
    assert tcga["expression"].str.match(
        r"results/toy/cohort/expression/star_counts/.+\.rna_seq\.augmented_star_gene_counts\.tsv").all()
    assert tcga["slide"].str.match(r"results/toy/cohort/slides/.+\.svs").all()
    assert (p.loc[p.dataset.isin(["external", "fastq"]), "slide"] == "").all()
    assert p["mpp"].isna().all()
    assert p["sample"].is_unique
    # ids satisfy the sample-sheet schema's patterns
    props = yaml.safe_load((SCHEMA_DIR / "samples.schema.yaml").read_text())["properties"]
    for col in ("patient", "sample", "cohort", "dataset"):
        assert p[col].str.fullmatch(props[col]["pattern"].strip("^$")).all(), col


def test_plan_sizes_follow_config():
    p = plan(TINY)
    assert (p.dataset == "tcga").sum() == 6 and (p.dataset == "gtex").sum() == 2
    assert (p.dataset == "external").sum() == 2 and (p.dataset == "fastq").sum() == 1


def test_misspelt_toy_key_is_named():
    with pytest.raises(ConfigError, match="patients_per_cancr"):
        toy_settings({"toy": {"patients_per_cancr": 3}})


def test_too_few_genes_for_the_programs_is_a_clear_error(tmp_path):
    cfg = {"seed": 0, "toy": dict(TINY["toy"], n_genes=200, program_genes=60)}
    with pytest.raises(ValueError, match="n_genes=200"):
        make_cohort(tmp_path / "toy", cfg)
    assert not (tmp_path / "toy" / "cohort" / "samples.tsv").exists()


# --- what make_cohort writes --------------------------------------------------------------------

def test_written_sheet_is_the_plan_and_every_file_exists(small):
    written = _read(small, "results/toy/cohort/samples.tsv", dtype=str, keep_default_na=False)
    expected = plan(SMALL).fillna("").astype(str)
    pd.testing.assert_frame_equal(written, expected)
    for path in set(expected["expression"]):
        assert (small / path).exists(), path
    for rel in ["clinical.tsv", "omics/cna.tsv.gz", "omics/rppa.tsv.gz", "gene_groups.tsv",
                "fastq/transcriptome.fa", "fastq/t2g.tsv"]:
        assert (small / "results/toy/cohort" / rel).exists(), rel
    for rel in ["fractions.tsv", "genes.tsv", "patients.tsv", "slides.tsv", "README.md",
                "fastq_abundance.tsv", "overview.png", "overview.pdf"]:
        assert (small / "results/toy/truth" / rel).exists(), rel
    assert not list(small.rglob(".tmp-*")), "temporary files left behind"


def test_make_cohort_returns_a_manifest_of_what_it_wrote(small):
    import json

    m = json.loads((small / "results/toy/truth/manifest.json").read_text())
    assert m["n_patients"] == plan(SMALL)["patient"].nunique() and m["seed"] == 7
    assert m["datasets"] == {"external": 6, "fastq": 2, "gtex": 4, "tcga": 75}
    for path in list(m["files"].values()) + m["star_counts"] + m["fastq"]:
        assert (small / path).exists(), path
    slides = _read(small, "results/toy/truth/slides.tsv")
    assert m["no_tissue_slide"] == slides.loc[slides.has_tissue == 0, "sample"].tolist()


def test_same_seed_gives_byte_identical_text(tmp_path):
    for d in "abc":
        (tmp_path / d).mkdir()
    a, b = _build(tmp_path / "a", TINY), _build(tmp_path / "b", TINY)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix not in {".png", ".pdf"})
    assert len(files) > 10
    digest = lambda root, f: hashlib.sha256((root / f).read_bytes()).hexdigest()  # noqa: E731
    assert [digest(a, f) for f in files] == [digest(b, f) for f in files]
    c = _build(tmp_path / "c", dict(TINY, seed=2))
    star = sorted((a / "results/toy/cohort/expression/star_counts").glob("*.tsv"))[0].relative_to(a)
    assert digest(a, star) != digest(c, star)


def test_star_counts_files_have_the_gdc_layout(small):
    path = sorted((small / "results/toy/cohort/expression/star_counts").glob("*.tsv"))[0]
    assert path.read_text().splitlines()[0] == "# gene-model: GENCODE v36"
    t = pd.read_csv(path, sep="\t", comment="#")
    assert list(t.columns) == STAR_HEADER
    assert list(t.gene_id[:4]) == ["N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous"]
    genes = t.iloc[4:]
    assert genes.gene_id.str.match(r"ENSG\d{11}\.\d+$").all()
    assert genes.gene_name.str.fullmatch(r"[A-Z][A-Z0-9]*").all()
    assert set(genes.gene_type) == {"protein_coding", "lncRNA"}
    assert (genes.unstranded >= 0).all() and genes.unstranded.dtype.kind == "i"
    assert genes.tpm_unstranded.sum() == pytest.approx(1e6, rel=1e-3)
    assert len(genes) == 300 + 10


def test_gct_has_the_gtex_layout_and_holds_tpm(small):
    path = small / "results/toy/cohort/expression/gtex/gene_tpm.gct"
    lines = path.read_text().splitlines()
    assert lines[0] == "#1.2"
    n_rows, n_cols = map(int, lines[1].split("\t"))
    g = pd.read_csv(path, sep="\t", skiprows=2)
    gtex = plan(SMALL).query("dataset == 'gtex'")["sample"].tolist()
    assert list(g.columns) == ["Name", "Description"] + gtex
    assert g.shape == (n_rows, n_cols + 2)
    # TPM, like GTEx's gene_tpm GCT: every sample sums to a million, whatever its library size
    assert g[gtex].sum().to_numpy() == pytest.approx(1e6, rel=1e-4)


def test_series_matrix_has_the_geo_layout_and_another_gene_panel(small):
    path = small / "results/toy/cohort/expression/external/GSE_TOY_series_matrix.txt"
    lines = path.read_text().splitlines()
    assert any(l.startswith("!Series_geo_accession") for l in lines)
    acc = next(l for l in lines if l.startswith("!Sample_geo_accession")).split("\t")[1:]
    ext = plan(SMALL).query("dataset == 'external'")
    assert [a.strip('"') for a in acc] == ext["sample"].tolist()
    chars = next(l for l in lines if l.startswith("!Sample_characteristics_ch1")).split("\t")[1:]
    assert [c.strip('"').split(": ")[1] for c in chars] == ext["cohort"].tolist()
    begin, end = lines.index("!series_matrix_table_begin"), lines.index("!series_matrix_table_end")
    m = pd.read_csv(path, sep="\t", skiprows=begin + 1, nrows=end - begin - 2, index_col=0)
    assert list(m.columns) == ext["sample"].tolist()
    tcga_genes = set(_logcpm(small).index)
    assert 0 < len(tcga_genes - set(m.index)) < 0.2 * len(tcga_genes), "some genes missing"
    assert len(set(m.index) - tcga_genes) == 20, "a few genes of its own"


def test_clinical_and_omics_tables(small):
    clin = _read(small, "results/toy/cohort/clinical.tsv")
    assert list(clin.columns) == ["patient", "cohort", "grade", "stage", "survival_time", "event",
                                  "age", "sex", "msi_like"]
    assert set(clin.grade) <= {1, 2, 3, 4} and set(clin.stage) <= {"I", "II", "III", "IV"}
    assert set(clin.event) == {0, 1} and set(clin.msi_like) == {0, 1}
    assert (clin.survival_time > 0).all()
    tcga = plan(SMALL).query("dataset == 'tcga'")["sample"]
    for name in ("cna", "rppa"):
        t = pd.read_csv(small / f"results/toy/cohort/omics/{name}.tsv.gz", sep="\t")
        assert t.columns[0] == "sample"
        assert set(t.columns[1:]) < set(tcga), f"{name}: some patients lack the modality"
        assert not t.iloc[:, 1:].isna().any().any()
    groups = _read(small, "results/toy/cohort/gene_groups.tsv")
    assert set(groups.group) == {"tumor_suppressor", "oncogene", "protein_kinase",
                                 "cell_differentiation", "transcription_factor", "cytokine_growth_factor"}
    assert groups.gene.is_unique


# --- the planted answer -------------------------------------------------------------------------

def test_cell_type_markers_follow_planted_fractions(small):
    lc = _logcpm(small)
    genes = _read(small, "results/toy/truth/genes.tsv", keep_default_na=False)
    fr = _read(small, "results/toy/truth/fractions.tsv").set_index("patient").loc[lc.columns]
    assert np.allclose(fr[CELL_TYPES].sum(axis=1), 1)
    for ct in ("tumour", "lymphocyte", "connective"):
        markers = genes.loc[genes.marker_of == ct, "gene"]
        score = lc.loc[markers].mean()
        rho = pd.Series(score.values).corr(pd.Series(fr[ct].values), method="spearman")
        assert rho > 0.6, f"{ct} markers vs planted fraction: Spearman {rho:.2f}"


def test_hazard_and_grade_rise_with_the_survival_program(small):
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    clin = _read(small, "results/toy/cohort/clinical.tsv")
    truth = _read(small, "results/toy/truth/patients.tsv").set_index("patient").loc[clin.patient]
    y = Surv.from_arrays(clin.event.astype(bool), clin.survival_time)
    cox = CoxPHSurvivalAnalysis().fit(truth[["survival_program"]].to_numpy(), y)
    assert cox.coef_[0] > 0.3, f"log hazard ratio {cox.coef_[0]:.2f}"
    assert cox.score(truth[["survival_program"]].to_numpy(), y) > 0.6
    assert np.corrcoef(truth.survival_program, clin.grade)[0, 1] > 0.4


def test_stage_is_recoverable_from_the_omics(small):
    """Stage I-IV is the planted progression latent plus a little noise; the latent moves the
    stage genes (RNA) and one RPPA protein.  Forests fit on a training split of the patients
    (stratified by cancer type) predict the held-out patients' stage well above chance
    (4 stages: macro F1 ~0.25) from log CPM, not from CNA (which carries none); one RPPA
    protein follows stage."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    clin = _read(small, "results/toy/cohort/clinical.tsv").set_index("patient")
    truth = _read(small, "results/toy/truth/patients.tsv").set_index("patient").loc[clin.index]
    order = truth["stage"].map({"I": 1, "II": 2, "III": 3, "IV": 4})
    assert pd.Series(truth["stage_program"]).corr(order, method="spearman") > 0.8
    assert 0.2 < np.corrcoef(truth["stage_program"], truth["survival_program"])[0, 1] < 0.8
    assert truth["stage"].value_counts().min() >= 0.1 * len(truth), "every stage is represented"

    lc = _logcpm(small)
    sheet = plan(SMALL).set_index("sample")

    def held_out_f1(x: pd.DataFrame) -> float:  # x: patients x features
        y = clin.loc[x.index, "stage"]
        tr, te = train_test_split(list(x.index), test_size=0.4, random_state=0, stratify=clin.loc[x.index, "cohort"])
        rf = RandomForestClassifier(n_estimators=300, random_state=0, n_jobs=1).fit(x.loc[tr], y.loc[tr])
        return f1_score(y.loc[te], rf.predict(x.loc[te]), average="macro")

    f1_rna = held_out_f1(lc.T)
    cna = pd.read_csv(small / "results/toy/cohort/omics/cna.tsv.gz", sep="\t", index_col=0).T
    cna.index = sheet.loc[cna.index, "patient"]
    f1_cna = held_out_f1(cna)
    assert f1_rna > 0.55, f"stage from RNA: macro F1 {f1_rna:.2f}"
    assert f1_cna < f1_rna - 0.2, f"stage from CNA {f1_cna:.2f} vs RNA {f1_rna:.2f}"
    # RPPA carries it more weakly: through the protein made of two stage genes
    rppa = pd.read_csv(small / "results/toy/cohort/omics/rppa.tsv.gz", sep="\t", index_col=0).T
    rppa.index = sheet.loc[rppa.index, "patient"]
    rho = rppa.corrwith(order.loc[rppa.index], method="spearman").abs()
    assert rho.max() > 0.6, f"no RPPA protein follows stage (best |rho| {rho.max():.2f})"


def test_rppa_tracks_its_genes_and_cna_tracks_nothing(small):
    lc = _logcpm(small)
    sheet = plan(SMALL).set_index("sample")
    pmap = _read(small, "results/toy/truth/rppa_map.tsv")
    rppa = pd.read_csv(small / "results/toy/cohort/omics/rppa.tsv.gz", sep="\t", index_col=0)
    rppa.columns = sheet.loc[rppa.columns, "patient"]
    r = [np.corrcoef(rppa.loc[p.protein], lc.loc[p.genes.split(";")[0], rppa.columns])[0, 1]
         for p in pmap.itertuples()]
    assert np.median(r) > 0.6, f"RPPA vs its gene: median r {np.median(r):.2f}"
    cna = pd.read_csv(small / "results/toy/cohort/omics/cna.tsv.gz", sep="\t", index_col=0)
    cna.columns = sheet.loc[cna.columns, "patient"]
    common = cna.index.intersection(lc.index)
    rc = [np.corrcoef(cna.loc[g], lc.loc[g, cna.columns])[0, 1] for g in common[:100]]
    assert abs(np.nanmedian(rc)) < 0.2


@pytest.mark.skipif(shutil.which("kallisto") is None, reason="kallisto not installed (make run installs it)")
def test_kallisto_recovers_the_simulated_abundances(small, tmp_path):
    fq = small / "results/toy/cohort/fastq"
    sample = plan(SMALL).query("dataset == 'fastq'")["sample"].iloc[0]
    with gzip.open(fq / f"{sample}.fastq.gz", "rt") as fh:
        head = [next(fh) for _ in range(4)]
    assert head[0].startswith("@") and head[2] == "+\n" and len(head[1]) == len(head[3])
    subprocess.run(["kallisto", "index", "-i", str(tmp_path / "idx"), str(fq / "transcriptome.fa")],
                   check=True, capture_output=True)
    subprocess.run(["kallisto", "quant", "-i", str(tmp_path / "idx"), "-o", str(tmp_path / "q"),
                    "--single", "-l", "200", "-s", "20", str(fq / f"{sample}.fastq.gz")],
                   check=True, capture_output=True)
    est = pd.read_csv(tmp_path / "q/abundance.tsv", sep="\t", index_col=0)["tpm"]
    truth = _read(small, "results/toy/truth/fastq_abundance.tsv").query("sample == @sample")
    truth = truth.set_index("transcript_id")["tpm"].loc[est.index]
    assert np.corrcoef(est, truth)[0, 1] > 0.95
    t2g = _read(small, "results/toy/cohort/fastq/t2g.tsv")
    assert list(t2g.columns) == ["transcript_id", "gene_id", "gene_name"]
    assert set(t2g.transcript_id) == set(est.index)


# --- slides -------------------------------------------------------------------------------------

def _slide(base: Path, sample: str, cfg=SMALL) -> tuple[Path, Path]:
    from crossmodal.steps import get

    out = base / "slides" / f"{sample}.svs"
    nuc = base / "nuclei" / f"{sample}.tsv"
    get("make_toy_slide")({"slides": str(base / "results/toy/truth/slides.tsv")},
                          {"slide": str(out), "nuclei": str(nuc)},
                          {"seed": cfg["seed"], "toy": cfg["toy"], "wildcards": {"sample": sample}})
    return out, nuc


def _rgb(path) -> np.ndarray:
    import openslide

    s = openslide.OpenSlide(str(path))
    return np.asarray(s.read_region((0, 0), 0, s.level_dimensions[0]).convert("RGB"))


def test_slide_opens_as_aperio_with_planted_nuclei(small):
    import openslide

    plan_ = _read(small, "results/toy/truth/slides.tsv", keep_default_na=False)
    row = plan_[(plan_.has_tissue == 1) & (plan_.pen_mark == "") & (plan_.blur == 0)].iloc[0]
    path, nuc = _slide(small, row["sample"])
    s = openslide.OpenSlide(str(path))
    assert s.properties["openslide.vendor"] == "aperio"
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert s.level_count >= 2 and s.level_dimensions[0] == (1024, 1024)
    n = _read(small, f"nuclei/{row['sample']}.tsv")
    counts = n.cell_type.value_counts().reindex(CELL_TYPES, fill_value=0)
    assert np.abs(counts / counts.sum() - row[CELL_TYPES].astype(float)).max() < 1.0 / counts.sum() + 1e-9
    # morphology: the dark blob under each nucleus has the planted size and darkness
    from skimage.color import rgb2hed
    from skimage.measure import label, regionprops

    rgb = _rgb(path)
    h = rgb2hed(rgb)[..., 0]
    lab = label(h > 0.035)
    props = {p.label: p for p in regionprops(lab, intensity_image=h)}
    area = {ct: [] for ct in CELL_TYPES}
    dark = {ct: [] for ct in CELL_TYPES}
    for x, y, ct in n.itertuples(index=False):
        if lab[y, x]:
            area[ct].append(props[lab[y, x]].area)
            dark[ct].append(props[lab[y, x]].intensity_mean)
    med = {ct: np.median(v) for ct, v in area.items() if v}
    assert med["tumour"] > med["normal_epithelial"] > med["lymphocyte"]
    assert np.median(dark["lymphocyte"]) > np.median(dark["normal_epithelial"])


def test_exactly_one_slide_has_no_tissue_and_it_is_white(small):
    plan_ = _read(small, "results/toy/truth/slides.tsv", keep_default_na=False)
    assert (plan_.has_tissue == 0).sum() == 1
    empty, _ = _slide(small, plan_.loc[plan_.has_tissue == 0, "sample"].iloc[0])
    rgb = _rgb(empty)
    assert (rgb.min(axis=2) > 220).mean() > 0.99
    full, _ = _slide(small, plan_.loc[plan_.has_tissue == 1, "sample"].iloc[0])
    assert (_rgb(full).min(axis=2) < 200).mean() > 0.2


def test_pen_marks_are_saturated_ink(small):
    plan_ = _read(small, "results/toy/truth/slides.tsv", keep_default_na=False)
    pen = plan_[plan_.pen_mark != ""].iloc[0]
    rgb = _rgb(_slide(small, pen["sample"])[0]).astype(int)
    ink = {"blue": 2, "green": 1}[pen.pen_mark]
    others = [c for c in range(3) if c != ink]
    saturated = (rgb[..., ink] - rgb[..., others].max(axis=2)) > 40
    assert saturated.mean() > 0.01
    plain = plan_[(plan_.pen_mark == "") & (plan_.has_tissue == 1)].iloc[0]
    rgb = _rgb(_slide(small, plain["sample"])[0]).astype(int)
    assert ((rgb[..., ink] - rgb[..., others].max(axis=2)) > 40).mean() < 0.001


def test_planted_artifacts_are_what_the_tiler_drops(small):
    """Pen strokes and washed-out squares are caught by the tiler's filters; a clean slide
    loses tiles only to background (slides rendered at the default 2048 px)."""
    from crossmodal.tiling import tile_slide

    cfg = {"seed": SMALL["seed"], "toy": dict(SMALL["toy"], slide_size=2048)}
    plan_ = _read(small, "results/toy/truth/slides.tsv", keep_default_na=False)
    tissue = plan_[plan_.has_tissue == 1]
    clean = tissue[(tissue.pen_mark == "") & (tissue.low_contrast == 0) & (tissue.blur == 0)]
    picks = {"pen": tissue[(tissue.pen_mark != "") & (tissue.low_contrast == 0)].iloc[0]["sample"],
             "low_contrast": tissue[(tissue.low_contrast == 1) & (tissue.pen_mark == "")].iloc[0]["sample"],
             "clean": clean.iloc[0]["sample"]}
    qc = {}
    for what, sample in picks.items():
        out = small / "art" / f"{sample}.svs"
        if not out.exists():
            from crossmodal.steps import get

            get("make_toy_slide")({"slides": str(small / "results/toy/truth/slides.tsv")},
                                  {"slide": str(out)}, {"seed": cfg["seed"], "toy": cfg["toy"],
                                                        "wildcards": {"sample": sample}})
        qc[what] = tile_slide(out, small / "art" / f"{what}.lmdb", sample=sample)
    assert qc["pen"]["dropped"]["pen"] >= 1 and qc["pen"]["kept"] >= 1
    assert qc["low_contrast"]["dropped"]["low_contrast"] >= 1 and qc["low_contrast"]["kept"] >= 1
    assert qc["clean"]["kept"] >= 4
    assert {k: v for k, v in qc["clean"]["dropped"].items() if k != "background"} == \
        {"pen": 0, "low_contrast": 0, "max_tiles": 0, "blur": 0}


def test_slide_step_names_an_unknown_sample(small):
    with pytest.raises(ValueError, match="NOT-A-SAMPLE"):
        _slide(small, "NOT-A-SAMPLE")


# --- end to end (the default workflow, run once per session) ---------------------------------

def test_toy_run_builds_the_cohort_and_all_slides(toy_run):
    import openslide

    sheet = pd.read_csv(toy_run / "results/toy/cohort/samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(sheet, plan({"seed": 0}).fillna("").astype(str))
    slides = [s for s in sheet.slide if s]
    assert len(slides) >= 60
    for s in slides:
        assert openslide.OpenSlide(str(toy_run / s)).properties["openslide.vendor"] == "aperio"
    assert (toy_run / "results/toy/truth/overview.png").stat().st_size > 10_000
    bench = list((toy_run / "benchmarks/make_toy_slide").glob("*.tsv"))
    assert len(bench) == len(slides)
