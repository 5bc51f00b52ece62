"""RNA-CDM (issue 6): the cascade's steps on a tiny planted-signal tile set -- training both
stages, kill-and-resume, generation conditioned on expression, sampler determinism, evaluation
and the reproduction table -- plus config / target helpers.  No pipeline run (fast)."""
from __future__ import annotations

import copy
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal import steps
from crossmodal.config import SCHEMA_DIR, validate
from crossmodal.data import TileDataset, TileWriter
from crossmodal.rna_cdm import cascade, targets

COHORTS = ["TCGA-AAA", "TCGA-BBB"]
COLOURS = {"TCGA-AAA": (200, 60, 60), "TCGA-BBB": (60, 60, 200)}  # planted: red vs blue tissue


def _cfg(**train):
    cfg = validate({"cohorts": COHORTS,
                    "base_unet": {"image_size": 8, "dim": 16, "dim_mults": [1, 2], "num_res_blocks": [1, 1],
                                  "attn_levels": [False, True], "attn_heads": 2, "attn_dim_head": 8},
                    "sr_unet": {"image_size": 16, "dim": 16, "dim_mults": [1, 2], "num_res_blocks": [1, 1],
                                "attn_levels": [False, False], "attn_heads": 2, "attn_dim_head": 8},
                    "train": {"lr": 2e-3, "batch_size": 16, "steps": 150, "ema_decay": 0.9,
                              "checkpoint_every": 50, **train},
                    "sampler": {"num_steps": 12},
                    "ddpm": {"timesteps": 100, "beta_end": 0.2},
                    "generate": {"tiles_per_patient": 3}},
                   SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 patients per cohort (2 train, 1 test), 12 tiles of 32 px per slide; the cohort's
    colour is planted in the tiles and its one-hot code in the latent."""
    root = tmp_path_factory.mktemp("rna_cdm")
    rng = np.random.default_rng(0)
    rows, lat, lmdbs = [], {}, []
    for ci, c in enumerate(COHORTS):
        for p in range(3):
            s = f"{c}-{p}"
            rows.append({"patient": s, "sample": s, "cohort": c, "dataset": "tcga",
                         "split": "test" if p == 2 else "train"})
            lat[s] = np.eye(2)[ci] * 2 - 1 + rng.normal(0, 0.05, 2)
            path = root / "tiles" / f"{s}.lmdb"
            with TileWriter(path, {"sample": s, "mpp": 0.5}) as w:
                for _ in range(12):
                    base = np.array(COLOURS[c], float)
                    t = base + rng.normal(0, 12, (32, 32, 3))
                    w.add(np.clip(t, 0, 255).astype(np.uint8), {"sample": s})
            lmdbs.append(str(path))
    splits = root / "splits.tsv"
    pd.DataFrame(rows).to_csv(splits, sep="\t", index=False)
    latent = root / "latent.tsv"
    pd.DataFrame(lat, index=["z0", "z1"]).T.rename_axis("sample").to_csv(latent, sep="\t")
    return {"root": root, "lmdbs": lmdbs, "splits": str(splits), "latent": str(latent)}


def _train(data, stage, cfg, out, **kw):
    return steps.run("train_rna_cdm", {"tiles": data["lmdbs"], "latent": data["latent"], "splits": data["splits"]},
                     {"model": str(out / "model.pt"), "history": str(out / "history.tsv"),
                      "done": str(out / "done.json")},
                     {"stage": stage, "rna_cdm": cfg, "seed": 0, "device": "cpu",
                      "checkpoints": str(out / "ckpt"), **kw})


@pytest.fixture(scope="module")
def trained(data):
    cfg = _cfg()
    out = {}
    for stage in cascade.STAGES:
        d = data["root"] / "unet" / stage
        _train(data, stage, cfg, d)
        out[stage] = d
    return cfg, out


def test_training_writes_models_and_the_edm_loss_decreases(trained):
    cfg, out = trained
    for stage, size in (("base", 8), ("sr", 16)):
        h = pd.read_csv(out[stage] / "history.tsv", sep="\t")
        assert h["step"].iloc[-1] == 150
        first, last = h["loss"].iloc[:3].mean(), h["loss"].iloc[-3:].mean()
        assert last < 0.7 * first, f"{stage}: EDM loss {first:.3f} -> {last:.3f}"
        net = cascade.load_model(out[stage] / "model.pt")
        assert net.cfg.image_size == size and net.cfg.cond_dim == 2
        assert net.cfg.lowres_channels == (3 if stage == "sr" else 0)


def test_generated_tiles_follow_the_expression_latent(data, trained):
    """Planted signal: tiles generated from a red-cohort patient's latent are red, from a
    blue-cohort patient's blue (conditioning, not memorised noise)."""
    cfg, out = trained
    gen = data["root"] / "gen.lmdb"
    steps.run("generate_rna_cdm_tiles", {"base": str(out["base"] / "model.pt"), "sr": str(out["sr"] / "model.pt"),
                                         "latent": data["latent"], "splits": data["splits"]},
              {"tiles": str(gen)}, {"rna_cdm": cfg, "cohorts": COHORTS, "split": "test", "tiles_per_patient": 3,
                                    "mpp": 2.0, "seed": 0, "device": "cpu"})
    ds = TileDataset([gen])
    assert len(ds) == 6 and ds.headers[0]["tile_size"] == 16 and ds.headers[0]["mpp"] == 2.0
    metas = [ds.meta(i) for i in range(len(ds))]
    assert sorted({m["sample"] for m in metas}) == ["TCGA-AAA-2", "TCGA-BBB-2"]
    for i, m in enumerate(metas):
        r, _, b = ds[i].reshape(-1, 3).mean(0)
        if m["cohort"] == "TCGA-AAA":
            assert r > b + 60, f"tile {i} of {m['sample']}: mean R {r:.0f} B {b:.0f}"
        else:
            assert b > r + 60, f"tile {i} of {m['sample']}: mean R {r:.0f} B {b:.0f}"


def test_cascade_sampling_is_deterministic_given_the_seed_and_ddpm_runs_on_the_same_nets(trained):
    cfg, out = trained
    base, sr = cascade.load_model(out["base"] / "model.pt"), cascade.load_model(out["sr"] / "model.pt")
    z = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)
    a, lo = cascade.sample_cascade(base, sr, z, cfg, seed=3, return_lowres=True)
    b = cascade.sample_cascade(base, sr, z, cfg, seed=3)
    c = cascade.sample_cascade(base, sr, z, cfg, seed=4)
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8 and lo.shape == (2, 8, 8, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    d = cascade.sample_cascade(base, sr, z, cfg, seed=3, sampler="ddpm")
    assert d.shape == a.shape
    # both samplers put the planted colour where the latent says (red first, blue second)
    for x in (a, d):
        m = x.reshape(2, -1, 3).mean(1)
        assert m[0, 0] > m[0, 2] and m[1, 2] > m[1, 0]
    with pytest.raises(ValueError, match="expects"):
        cascade.sample_cascade(base, sr, np.zeros((2, 5), np.float32), cfg, seed=0)


def test_kill_and_resume_repeats_and_skips_no_step(data, monkeypatch):
    """SIGTERM mid-run -> checkpoint + exit 75; the rerun resumes and ends at the same final
    step with the same weights as an uninterrupted run."""
    cfg = _cfg(steps=12, checkpoint_every=5)
    ref = data["root"] / "resume_ref"
    _train(data, "base", cfg, ref, log_every=1)
    killed = data["root"] / "resume_killed"
    calls = {"n": 0}
    orig = cascade.TileBatches.__call__

    def call(self, b):
        calls["n"] += 1
        if calls["n"] == 8:  # during step 8: the scheduler's SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, b)

    monkeypatch.setattr(cascade.TileBatches, "__call__", call)
    with pytest.raises(SystemExit) as e:
        _train(data, "base", cfg, killed, log_every=1)
    assert e.value.code == 75
    assert not (killed / "done.json").exists() and not (killed / "model.pt").exists()
    assert sorted(p.name for p in (killed / "ckpt").glob("step-*"))[-1] == "step-000000008"
    monkeypatch.setattr(cascade.TileBatches, "__call__", orig)
    _train(data, "base", cfg, killed, log_every=1)
    assert (killed / "done.json").exists()
    h = pd.read_csv(killed / "history.tsv", sep="\t")
    assert list(h["step"]) == list(range(1, 13))  # every step once, across the kill
    assert np.allclose(h["loss"], pd.read_csv(ref / "history.tsv", sep="\t")["loss"])
    a = torch.load(ref / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(killed / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_changed_settings_do_not_resume_old_checkpoints(data):
    cfg = _cfg(steps=3, checkpoint_every=1)
    out = data["root"] / "changed"
    _train(data, "base", cfg, out)
    cfg2 = copy.deepcopy(cfg)
    cfg2["train"]["lr"] = 1e-2
    (out / "done.json").unlink()
    with pytest.raises(Exception, match="different settings"):
        _train(data, "base", cfg2, out)


def test_bad_inputs_are_named(data, tmp_path):
    lat = pd.read_csv(data["latent"], sep="\t", index_col="sample").iloc[1:]
    p = tmp_path / "short_latent.tsv"
    lat.to_csv(p, sep="\t")
    with pytest.raises(ValueError, match="short_latent.tsv: no latent code for training sample"):
        _train({**data, "latent": str(p)}, "base", _cfg(steps=1), tmp_path / "x")
    assert not (tmp_path / "x" / "model.pt").exists()
    bad = tmp_path / "bad.pt"
    torch.save({"foo": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt: not an RNA-CDM U-Net checkpoint"):
        cascade.load_model(bad)
    with pytest.raises(ValueError, match="no slides of cohorts"):
        cascade.select_lmdbs(data["lmdbs"], pd.read_csv(data["splits"], sep="\t"), ["TCGA-ZZZ"], ["train"])
    cfg = _cfg()
    cfg["sr_unet"] = {**cfg["sr_unet"], "image_size": 8}
    with pytest.raises(ValueError, match="must exceed"):
        cascade.check_sizes(cfg)


def test_evaluation_table_quotes_the_paper_and_labels_the_stand_in(data, trained, monkeypatch):
    """FID table on the planted set with a tiny stand-in extractor (colour histogram features)."""
    from crossmodal.metrics import image

    def colour_extractor(weights=None, device="cpu", **_):
        def fn(x):
            f = x.float().mean((2, 3)) / 255
            return torch.cat([f, f ** 2], 1), None
        return image.Extractor("colour-test", 6, fn, device)

    monkeypatch.setitem(image.EXTRACTORS, "colour-test", colour_extractor)
    cfg, out = trained
    gen = data["root"] / "gen_eval.lmdb"
    steps.run("generate_rna_cdm_tiles", {"base": str(out["base"] / "model.pt"), "sr": str(out["sr"] / "model.pt"),
                                         "latent": data["latent"], "splits": data["splits"]},
              {"tiles": str(gen)}, {"rna_cdm": cfg, "cohorts": COHORTS, "split": "test", "tiles_per_patient": 6,
                                    "mpp": 2.0, "seed": 1, "device": "cpu"})
    table = data["root"] / "fid.tsv"
    steps.run("evaluate_rna_cdm", {"real": data["lmdbs"], "generated": str(gen), "splits": data["splits"]},
              {"table": str(table)}, {"cohorts": COHORTS, "extractor": "colour-test", "max_images": None,
                                      "kid_subset_size": 5, "data_note": "planted test set", "seed": 0,
                                      "device": "cpu"})
    t = pd.read_csv(table, sep="\t")
    assert set(t["scope"]) == {"all", *COHORTS}
    gen_all = t[(t.scope == "all") & t.comparison.str.startswith("real vs RNA-CDM")].iloc[0]
    assert gen_all["paper_fid"] == 23.36 and gen_all["paper_kid"] == 0.015 and gen_all["paper_is"] == 3.19
    assert "not comparable" in gen_all["comparability"] and gen_all["data"] == "planted test set"
    assert np.isfinite(gen_all["fid"]) and gen_all["n_other"] == 12
    vae = data["root"] / "vae_metrics.tsv"
    pd.DataFrame({"split": ["train", "val", "test"], "rmse": [0.5, 0.6, 0.61], "mae": [0.4, 0.4, 0.41]}).to_csv(
        vae, sep="\t", index=False)
    rep = data["root"] / "reproduction.tsv"
    steps.run("rna_cdm_reproduction", {"vae_metrics": str(vae), "base": str(out["base"] / "model.pt"),
                                       "sr": str(out["sr"] / "model.pt"), "fid": str(table), "samplers": []},
              {"table": str(rep)}, {"data_note": "planted test set"})
    r = pd.read_csv(rep, sep="\t").set_index("quantity")
    assert r.loc["FID50k (all)", "paper"] == "23.36" and float(r.loc["FID50k (all)", "ours"]) == gen_all["fid"]
    assert r.loc["β-VAE test RMSE", "ours"] == "0.61" and "planted test set" in r.loc["β-VAE test RMSE", "source"]
    assert r.loc["parameters of the cascade (paper-size config)", "paper"] == "1.8 B"
    fig = data["root"] / "tiles.png"
    steps.run("plot_rna_cdm_tiles", {"real": data["lmdbs"], "generated": str(gen), "splits": data["splits"]},
              {"figure": str(fig)}, {"cohorts": COHORTS, "per_row": 3, "seed": 0})
    assert fig.exists() and fig.with_suffix(".pdf").exists()


def test_targets_helpers():
    samples = pd.DataFrame({"cohort": ["TCGA-LUAD", "TCGA-LUAD", "TCGA-COAD", "TCGA-COAD"],
                            "dataset": ["tcga", "tcga", "tcga", "external"],
                            "slide": ["a.svs", "", "c.svs", ""]}, index=["s1", "s2", "s3", "e1"])
    cfg = {"rna_cdm": validate({"cohorts": ["TCGA-LUAD", "TCGA-COAD"]}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml",
                               "rna_cdm"),
           "tiling": {"presets": {"tile256": {"tile_size": 256, "target_mpp": 0.5}}}, "cohort": {"source": "toy"}}
    assert targets.tile_lmdbs(cfg, samples) == ["results/tiles/tile256/s1.lmdb", "results/tiles/tile256/s3.lmdb"]
    assert targets.latent(cfg, samples) == "results/rna_cdm/vae/main/latent/tcga.tsv.gz"
    assert targets.tile_mpp(cfg) == 0.5  # paper size: 256 px generated = the tiles' mpp
    assert targets.external_sets(cfg, samples) == ["external_external"]
    assert "results/rna_cdm/reproduction.tsv" in targets.targets(cfg, samples)
    cfg["rna_cdm"]["cohorts"] = ["TCGA-GBM"]
    with pytest.raises(ValueError, match="no sample with a slide in TCGA-GBM"):
        targets.tile_lmdbs(cfg, samples)


def _stub_real_cohort(wd):
    """A sample sheet shaped like the real RNA-CDM cohort (TCGA projects of Table 2, slides for
    the five diffusion projects, GEO external rows) of empty placeholder files: enough to plan."""
    import shutil

    from conftest import REPO

    shutil.copytree(REPO / "config", wd / "config")
    (wd / "data").mkdir()
    (wd / "resources").mkdir()  # the repository's resources plus placeholder weight files
    for child in (REPO / "resources").iterdir():
        if child.name != "weights":
            (wd / "resources" / child.name).symlink_to(child)
    (wd / "resources" / "weights").mkdir()
    for f in ("weights-inception-2015-12-05-6726825d.pth", "hovernet_fast_pannuke_type_tf2pytorch.tar"):
        (wd / "resources" / "weights" / f).touch()
    rows = ["patient\tsample\tcohort\tdataset\tslide\texpression\texpression_format"]
    cfg = validate({}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")
    for c in cfg["vae"]["cohorts"]:
        for i in range(5):
            s = f"{c}-000{i}-01A"
            slide = f"data/{s}.svs" if c in cfg["cohorts"] else ""
            for f in filter(None, [slide, f"data/{s}.tsv"]):
                (wd / f).touch()
            rows.append(f"{c}-000{i}\t{s}\t{c}\ttcga\t{slide}\tdata/{s}.tsv\tstar_counts")
    (wd / "data" / "gse.txt").touch()
    for c in ("TCGA-COAD", "TCGA-LUAD"):
        rows += [f"GSM{c[5:]}{i}\tGSM{c[5:]}{i}\t{c}\texternal\t\tdata/gse.txt\tgeo_series_matrix" for i in range(3)]
    # rna_gan.smk resolves its GTEx inputs while parsing (even with rna_gan disabled)
    (wd / "data" / "gtex.gct").touch()
    for t in ("Lung", "Brain_Cortex"):
        (wd / "data" / f"GTEX-{t}.svs").touch()
        rows.append(f"GTEX-{t}\tGTEX-{t}-0001\tGTEx-{t}\tgtex\tdata/GTEX-{t}.svs\tdata/gtex.gct\tgct")
    (wd / "config" / "samples_rna_cdm.tsv").write_text("\n".join(rows) + "\n")


def test_paper_config_plans_the_real_tcga_run(tmp_path):
    """config/rna_cdm.yaml plans the real run with the paper's sizes and 4 GPUs per U-Net."""
    from conftest import REPO, run_snakemake

    _stub_real_cohort(tmp_path)
    p = run_snakemake(tmp_path, "-n", "-p", "rna_cdm_all", configfile=REPO / "config" / "rna_cdm.yaml")
    out = p.stdout + p.stderr
    for rule in ("train_rna_cdm_base", "train_rna_cdm_sr", "generate_rna_cdm_tiles", "evaluate_rna_cdm",
                 "plot_rna_cdm_cell_table", "summarise_rna_cdm", "generate_rna_cdm_external_tiles"):
        assert rule in out, rule
    assert "results/tiles/tile256/TCGA-LUAD-0000-01A.lmdb" in out
    assert "results/tiles/tile256/TCGA-PAAD-0000-01A.lmdb" not in out  # VAE-only project: no slides
    assert "make_toy_slide" not in out
    assert "gpu=4" in out.replace(" ", "")
    import yaml
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config" / "rna_cdm.yaml").read_text()))
    rc = validate(cfg, SCHEMA_DIR / "config.schema.yaml")["rna_cdm"]
    assert (rc["base_unet"]["image_size"], rc["base_unet"]["dim"], rc["sr_unet"]["image_size"], rc["sr_unet"]["dim"]) \
        == (64, 256, 256, 128)
    assert (rc["train"]["lr"], rc["train"]["batch_size"], rc["train"]["steps"], rc["train"]["gpus"]) == (1e-4, 64, 79000, 4)
    assert (rc["vae"]["hidden"], rc["vae"]["latent"], rc["vae"]["beta"]) == ([6000, 4000], 200, 0.005)
    s = rc["sampler"]
    assert (s["num_steps"], s["rho"], s["S_churn"], s["S_tmin"], s["S_tmax"], s["S_noise"]) == (32, 7, 80, 0.05, 50, 1.003)


# ---------------------------------------------------------------- toy checks (session toy run)
def _toy():
    import yaml

    from conftest import REPO
    from crossmodal import samplesheet

    cfg = validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), SCHEMA_DIR / "config.schema.yaml")
    return cfg, samplesheet.load(cfg)


def test_toy_chain_outputs_and_tables(toy_run):
    cfg, samples = _toy()
    for t in targets.targets(cfg, samples):
        assert (toy_run / t).exists(), t
        if t.endswith(".png"):
            assert (toy_run / t).with_suffix(".pdf").exists(), t
    gen = TileDataset([toy_run / "results/rna_cdm/generated/test.lmdb"])
    n_test = sum(1 for s in pd.read_csv(toy_run / "results/splits/vae.tsv", sep="\t").itertuples()
                 if s.split == "test" and s.cohort in cfg["rna_cdm"]["cohorts"])
    assert len(gen) == n_test * cfg["rna_cdm"]["generate"]["tiles_per_patient"]
    assert gen.headers[0]["tile_size"] == cfg["rna_cdm"]["sr_unet"]["image_size"]
    fid = pd.read_csv(toy_run / "results/rna_cdm/fid.tsv", sep="\t")
    row = fid[(fid.scope == "all") & fid.comparison.str.startswith("real vs RNA-CDM")].iloc[0]
    assert row["paper_fid"] == 23.36 and np.isfinite(row["fid"])
    assert "not comparable" in row["comparability"] and "toy" in row["data"]
    t1 = pd.read_csv(toy_run / "results/rna_cdm/cells/table1.tsv", sep="\t")
    assert set(t1["Tile type"]) == {"Real", "Synthetic"}
    rep = pd.read_csv(toy_run / "results/rna_cdm/reproduction.tsv", sep="\t")
    assert {"FID50k (all)", "β-VAE test RMSE", "parameters of the cascade (paper-size config)"} <= set(rep["quantity"])
    smp = pd.read_csv(toy_run / "results/rna_cdm/samplers.tsv", sep="\t").set_index("sampler")
    assert smp.loc["karras", "network_evaluations_per_stage"] == 63
    assert smp.loc["karras", "seconds_per_tile"] < smp.loc["ddpm", "seconds_per_tile"] / 4
