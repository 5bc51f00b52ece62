"""RNA-CDM (issue 6): the cascade's steps on a tiny planted-signal tile set -- training both
stages, kill-and-resume, generation conditioned on expression, sampler determinism, evaluation
and the reproduction table -- plus config / target helpers.  No pipeline run (fast)."""
from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

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


def test_two_process_ddp_training_on_cpu_resumes_in_one_process(data):
    """The Polaris path on CPU: two processes under accelerate launch (DDP, gloo) train one
    model - global batch 2 x 16, one checkpoint writer, one copy of the progress lines in the
    step's log - and a later one-process job resumes that checkpoint and finishes the run."""
    import json

    out = data["root"] / "ddp"
    log = data["root"] / "ddp.log"
    inputs = {"tiles": data["lmdbs"], "latent": data["latent"], "splits": data["splits"]}
    outputs = {"model": str(out / "model.pt"), "history": str(out / "history.tsv"), "done": str(out / "done.json")}
    params = {"stage": "base", "seed": 0, "device": "cpu", "checkpoints": str(out / "ckpt")}
    steps.run("train_rna_cdm", inputs, outputs, {**params, "rna_cdm": _cfg(steps=20, checkpoint_every=10),
                                                 "num_processes": 2}, logfile=str(log))
    d = json.loads((out / "done.json").read_text())
    assert d["num_processes"] == 2 and d["global_batch"] == 32 and d["steps_this_job"] == 20
    assert sorted(p.name for p in (out / "ckpt").iterdir() if p.name.startswith("step-"))[-1] == "step-000000020"
    text = log.read_text()
    assert "launching 2 processes" in text and text.count("step 20/20") == 1, text[-2000:]
    assert cascade.load_model(out / "model.pt").cfg.image_size == 8
    for f in ("model.pt", "done.json"):  # the next job (one process, more steps) resumes at step 20
        (out / f).unlink()
    steps.run("train_rna_cdm", inputs, outputs, {**params, "rna_cdm": _cfg(steps=30, checkpoint_every=10)})
    d = json.loads((out / "done.json").read_text())
    assert d["steps_this_job"] == 10 and d["num_processes"] == 1
    assert d["all_jobs"]["jobs"] == 2 and d["all_jobs"]["steps"] == 30 and "cpu:0 x2" in d["all_jobs"]["devices"]
    h = pd.read_csv(out / "history.tsv", sep="\t")
    assert h["step"].iloc[-1] == 30


def test_done_json_records_training_throughput(trained):
    """done.json: steps run in this job x global batch over the step-loop seconds, device, processes."""
    import json

    cfg, out = trained
    for stage in cascade.STAGES:
        d = json.loads((out[stage] / "done.json").read_text())
        assert d["steps_this_job"] == 150 and d["global_batch"] == 16  # 24 training tiles >= batch 16
        assert d["tiles_this_job"] == 150 * 16
        assert 0 < d["seconds_training_steps"] <= d["seconds_this_job"]
        assert d["tiles_per_s"] == pytest.approx(d["tiles_this_job"] / d["seconds_training_steps"], rel=1e-2)
        assert d["device"] == "cpu" and d["num_processes"] == 1
        assert d["all_jobs"]["jobs"] == 1 and d["all_jobs"]["tiles"] == 2400
    # a marker from before throughput was recorded is reported as such, not retrained
    from crossmodal.rna_cdm.steps import training_throughput

    old = out["base"].parent / "old_done.json"
    old.write_text(json.dumps({"finished": True, "stage": "sr", "steps": 150, "seconds_this_job": 1.15}))
    ours, note = training_throughput(str(out["base"] / "done.json"), str(old))
    assert ours.endswith(" / -") and "predates the throughput fields" in note and ours != "- / -"


def _generate(data, trained, name: str, *, tiles_per_patient: int, seed: int):
    """Run the generation step on the test patients of the planted problem; the LMDB path."""
    cfg, out = trained
    gen = data["root"] / name
    steps.run("generate_rna_cdm_tiles", {"base": str(out["base"] / "model.pt"), "sr": str(out["sr"] / "model.pt"),
                                         "latent": data["latent"], "splits": data["splits"]},
              {"tiles": str(gen)}, {"rna_cdm": cfg, "cohorts": COHORTS, "split": "test",
                                    "tiles_per_patient": tiles_per_patient, "mpp": 2.0, "seed": seed, "device": "cpu"})
    return gen


def test_generated_tiles_follow_the_expression_latent(data, trained):
    """Planted signal: tiles generated from a red-cohort patient's latent are red, from a
    blue-cohort patient's blue (conditioning, not memorised noise)."""
    gen = _generate(data, trained, "gen.lmdb", tiles_per_patient=3, seed=0)
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
    import json

    done = json.loads((killed / "done.json").read_text())  # throughput: this job resumed at 8
    assert done["steps_this_job"] == 4 and done["tiles_this_job"] == 4 * done["global_batch"]
    assert done["all_jobs"]["jobs"] == 2 and done["all_jobs"]["steps"] == 12
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
    with pytest.raises(ValueError, match=r"bad\.pt: not a RNA-CDM U-Net checkpoint \(no 'unet'"):
        cascade.load_model(bad)
    (tmp_path / "empty.pt").write_bytes(b"")  # a zero-byte copy: was a bare EOFError
    with pytest.raises(ValueError, match=r"RNA-CDM U-Net .*empty\.pt: unreadable \(EOFError"):
        cascade.load_model(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match=r"rna_cdm: no slides of cohorts \[.TCGA-ZZZ.\]"):
        cascade.select_lmdbs(data["lmdbs"], pd.read_csv(data["splits"], sep="\t"), ["TCGA-ZZZ"], ["train"])
    cfg = _cfg()
    cfg["sr_unet"] = {**cfg["sr_unet"], "image_size": 8}
    with pytest.raises(ValueError, match="must exceed"):
        cascade.check_sizes(cfg)


def test_super_resolution_trains_on_crops_and_samples_whole_tiles(data, tmp_path):
    """rna_cdm.train.sr_crop: the SR U-Net trains on random crops (Imagen) and still draws whole
    tiles; a crop the U-Net's levels cannot halve is refused, naming the key."""
    _train(data, "sr", _cfg(steps=3, sr_crop=8), tmp_path / "sr")
    sr = cascade.load_model(tmp_path / "sr" / "model.pt")
    out = sr(torch.zeros(2, 3, 16, 16), torch.zeros(2), cond=torch.zeros(2, sr.cfg.cond_dim),
             lowres=torch.zeros(2, 3, 16, 16))
    assert out.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="sr_crop 9 is not divisible"):
        _train(data, "sr", _cfg(steps=1, sr_crop=9), tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.pt").exists()


def test_sr_steps_trains_only_the_super_resolution_stage_longer(data, tmp_path):
    """rna_cdm.train.sr_steps: the SR stage trains that many steps, the base stage train.steps."""
    import json

    cfg = _cfg(steps=2, sr_steps=4, checkpoint_every=2)
    for stage, n in (("base", 2), ("sr", 4)):
        _train(data, stage, cfg, tmp_path / stage)
        assert json.loads((tmp_path / stage / "done.json").read_text())["steps"] == n
        assert pd.read_csv(tmp_path / stage / "history.tsv", sep="\t")["step"].max() == n
        assert torch.load(tmp_path / stage / "model.pt", weights_only=False)["info"]["steps"] == n


def test_super_resolution_summary_correlates_per_patient_percentages():
    """The SR-fidelity summary: per-patient % of each class, real vs super-resolved, r across
    patients; a class the SR copies exactly gets r 1, one it scrambles does not."""
    from crossmodal.cells import CLASSES
    from crossmodal.rna_cdm.steps import super_resolution_summary

    rng = np.random.default_rng(0)
    rows = []
    for p in range(8):
        real = {c: int(rng.integers(1, 30)) for c in CLASSES}
        for t in range(2):
            rows.append({"sample": f"P{p}", "kind": "real", **real})
            sr = dict(real, inflammatory=int(rng.integers(1, 30)))  # inflammatory scrambled
            rows.append({"sample": f"P{p}", "kind": "sr", **sr})
            rows.append({"sample": f"P{p}", "kind": "sr_other_latent", **{c: 5 for c in CLASSES}})
    t = super_resolution_summary(pd.DataFrame(rows)).set_index("class")
    assert list(t.index) == CLASSES and (t["n_patients"] == 8).all()
    assert t.loc["dead", "pearson_r_sr"] > 0.6 and abs(t.loc["inflammatory", "pearson_r_sr"]) < 0.6
    assert t["pearson_r_sr_other_latent"].isna().all()  # constant percentages: no correlation defined
    np.testing.assert_allclose(t["real_pct"].sum(), 100)


def test_super_resolution_fidelity_step(data, trained, tmp_path):
    """evaluate_rna_cdm_super_resolution on the planted set: every selected real tile is counted
    as itself and super-resolved with its own and with another patient's latent; too few
    patients is refused, naming the split."""
    cfg, out = trained
    o = {"table": str(tmp_path / "sr.tsv"), "counts": str(tmp_path / "sr_tiles.tsv"), "figure": str(tmp_path / "sr.png")}
    inputs = {"sr": str(out["sr"] / "model.pt"), "real": data["lmdbs"], "latent": data["latent"],
              "splits": data["splits"]}
    params = {"rna_cdm": cfg, "cohorts": COHORTS, "split": "train", "tiles_per_patient": 2, "mpp": 2.0,
              "cells": {"method": "classical", "classical": {}}, "data_note": "planted", "seed": 0, "device": "cpu"}
    steps.run("evaluate_rna_cdm_super_resolution", inputs, o, params)
    c = pd.read_csv(o["counts"], sep="\t", keep_default_na=False)
    assert c.groupby("kind").size().to_dict() == {"real": 8, "sr": 8, "sr_other_latent": 8}
    other = c[c.kind == "sr_other_latent"]
    assert (other["latent_of"] != other["sample"]).all() and (c[c.kind == "sr"]["latent_of"] == c[c.kind == "sr"]["sample"]).all()
    t = pd.read_csv(o["table"], sep="\t")
    assert len(t) == 5 and set(t["split"]) == {"train"} and (t["base_px"] == 8).all() and (t["tile_px"] == 16).all()
    assert "stand-in for HoVer-Net" in t["counter"].iloc[0]
    assert (tmp_path / "sr.png").stat().st_size > 1000 and (tmp_path / "sr.pdf").exists()
    with pytest.raises(ValueError, match="1 test patient"):
        steps.run("evaluate_rna_cdm_super_resolution", inputs, {k: str(tmp_path / f"x_{k}") for k in o},
                  dict(params, split="test", cohorts=COHORTS[:1]))
    assert not (tmp_path / "x_table").exists()
    with pytest.raises(ValueError, match="microns per pixel"):
        steps.run("evaluate_rna_cdm_super_resolution", inputs, {k: str(tmp_path / f"y_{k}") for k in o},
                  dict(params, mpp=None))


def test_evaluation_table_quotes_the_paper_and_labels_the_stand_in(data, trained, monkeypatch):
    """FID table on the planted set with a tiny stand-in extractor (colour histogram features)."""
    from crossmodal.metrics import image
    from crossmodal.rna_cdm import deconvolution as dc

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
    assert np.isfinite(gen_all["fid"]) and gen_all["n_other"] == 12 and gen_all["n_real"] == 12
    assert "TCGA-AAA 6, TCGA-BBB 6" in gen_all["sets"]
    floor = t[t.comparison.str.startswith("real vs real")].iloc[0]
    assert floor["n_real"] == 12 and floor["n_other"] == 12
    assert gen_all["paper_n"] == 50000 and (t[t.scope == COHORTS[0]]["paper_n"] == 10000).all()
    vae = data["root"] / "vae_metrics.tsv"
    pd.DataFrame({"split": ["train", "val", "test"], "rmse": [0.5, 0.6, 0.61], "mae": [0.4, 0.4, 0.41]}).to_csv(
        vae, sep="\t", index=False)
    from crossmodal.models import vae as vae_lib

    vae_model = data["root"] / "vae_model.pt"
    vae_lib.save(vae_lib.BetaVAE(37, [8], 2), vae_model, [f"g{i}" for i in range(37)], extra={"cohorts": COHORTS})
    rep = data["root"] / "reproduction.tsv"
    # the direction of a claim: speed-up 30x (goal >= 25x: holds) with FIDs 50 / 20 (not comparable);
    # Fig. 4A no significant difference (p 0.4: holds), Fig. 4B pretraining below the baseline (fails)
    smp = data["root"] / "samplers.tsv"
    pd.DataFrame({"sampler": ["karras", "ddpm"], "speedup_vs_ddpm": [30.0, 1.0], "fid": [50.0, 20.0],
                  "n_tiles": 64, "device": "cpu"}).to_csv(smp, sep="\t", index=False)
    ds = data["root"] / "downstream.tsv"
    pd.DataFrame({"experiment": ["A: replace real by synthetic"] * 2 + ["B: pretrain on synthetic, fine-tune on real"] * 2,
                  "setting": ["0% synthetic", "25% synthetic", "no pretraining", "pretrained on 25% synthetic"],
                  "paper": ["baseline", "no significant difference vs 0% (Fig. 4A)", "baseline", "higher"],
                  "accuracy_mean": [0.8, 0.78, 0.8, 0.7], "accuracy_sd": 0.01, "f1_mean": 0.7,
                  "p_value_vs_baseline": [np.nan, 0.4, np.nan, 0.01], "n_folds": 3, "n_real_train": 27,
                  "chance_accuracy": 0.5, "baseline_above_chance_p": [0.001, np.nan, 0.001, np.nan],
                  "equivalence_margin": [0.05, 0.05, np.nan, np.nan],
                  "tost_p_value_vs_baseline": [np.nan, 0.01, np.nan, np.nan]}
                 ).to_csv(ds, sep="\t", index=False)
    from crossmodal.cells import PAPER_TABLE1

    t1 = data["root"] / "table1.tsv"  # the paper's own Table 1: real and synthetic means correlate (r 0.90)
    pd.DataFrame([{"cohort": g, "counter": "test counter", "Tile type": k, "n_tiles": 10,
                   **dict(zip(["Tumor", "Lymphocytes", "Connective", "Dead", "Normal"], v))}
                  for (g, k), v in PAPER_TABLE1.items()]).to_csv(t1, sep="\t", index=False)
    # Suppl. Fig. 4: fibroblast over all types; haematopoietic per type (higher / same / lower)
    pert = data["root"] / "perturbation.tsv"
    pd.DataFrame([
        # perturbation, scope, difference, paired t p, TOST p -> holds
        {"perturbation": k, "counted": "connective" if k == "fibroblast" else "inflammatory", "scope": sc,
         "n_patients": 10, "mean_pct_bulk": 20.0, "mean_pct_perturbed": 20.0 + d, "difference": d, "latent_shift": 1.0,
         "p_value": p, "tost_p_value": tp, "equivalence_margin_pct": 5.0, "paper_direction": dc.paper_direction(k, sc),
         "paper": dc.PAPER_SUPPL4_TEXT[k], "method": "test stand-in", "note": ""}
        for k, sc, d, p, tp in (("fibroblast", "all", 2.0, 0.01, 0.9), ("fibroblast", "TCGA-GBM", -1.0, 0.5, 0.5),
                                ("haematopoietic", "all", 1.0, 0.01, 0.9),
                                ("haematopoietic", "TCGA-LUAD", 3.0, 0.01, 0.9),
                                ("haematopoietic", "TCGA-GBM", 3.0, 0.01, 0.9),
                                ("haematopoietic", "TCGA-COAD", 0.5, 0.6, 0.01),
                                ("haematopoietic", "TCGA-CESC", 0.5, 0.6, 0.4))]).to_csv(pert, sep="\t", index=False)
    steps.run("build_rna_cdm_reproduction", {"vae_metrics": str(vae), "vae_model": str(vae_model),
                                             "base": str(out["base"] / "model.pt"), "sr": str(out["sr"] / "model.pt"),
                                             "base_done": str(out["base"] / "done.json"),
                                             "sr_done": str(out["sr"] / "done.json"), "fid": str(table),
                                             "table1": str(t1), "samplers": [str(smp)], "downstream": [str(ds)],
                                             "perturbation": [str(pert)]},
              {"table": str(rep)}, {"data": "toy", "data_note": "planted test set"})
    from crossmodal import reproduction

    t = pd.read_csv(rep, sep="\t", keep_default_na=False)
    own = t["claim"] == "parameters of the cascade (paper-size config)"  # counted from the schema, no data
    assert list(t.columns[:7]) == reproduction.COLUMNS and (t.loc[~own, "data"] == "toy").all()
    assert (t.loc[own, "data"] == "schema defaults (no data)").all()
    assert (t["paper_section"].str.strip() != "").all() and t.loc[~own, "note"].str.startswith("planted test set").all()
    r = t.set_index("claim")
    holds = r["direction_holds"]
    assert holds["Karras vs DDPM-1000 speed-up per tile"] == "True" and r.loc["Karras vs DDPM-1000 speed-up per tile", "this_run"] == "30×"
    assert holds["FID Karras-32 / DDPM-1000"] == "False" and "25% of the larger" in r.loc["FID Karras-32 / DDPM-1000", "note"]
    assert r.loc["Karras vs DDPM-1000 speed-up per tile", "paper_section"].startswith("issue 6 (benchmark goal)")
    assert holds["Fig. 4A: accuracy, 25% synthetic"] == "True" and holds["Fig. 4A: accuracy, 0% synthetic"] == "n/a"
    assert "TOST" in r.loc["Fig. 4A: accuracy, 25% synthetic", "note"]
    s4 = holds[holds.index.str.startswith("Suppl. Fig. 4")]
    assert s4.to_dict() == {
        "Suppl. Fig. 4: connective % from fibroblast-attributable vs bulk expression, all cancer types": "True",
        "Suppl. Fig. 4: inflammatory % from haematopoietic-attributable vs bulk expression, TCGA-LUAD": "True",
        "Suppl. Fig. 4: inflammatory % from haematopoietic-attributable vs bulk expression, TCGA-GBM": "False",
        "Suppl. Fig. 4: inflammatory % from haematopoietic-attributable vs bulk expression, TCGA-COAD": "True",
        "Suppl. Fig. 4: inflammatory % from haematopoietic-attributable vs bulk expression, TCGA-CESC": "False"}
    assert holds["Fig. 4B: accuracy, pretrained on 25% synthetic"] == "False"
    assert r.loc["Fig. 4B: accuracy, no pretraining", "paper_section"].endswith("Figure 4B")
    cell_mix = r.loc[r.index.str.startswith("synthetic tiles keep the real tiles' cell mix")].iloc[0]
    assert cell_mix["direction_holds"] == "True" and cell_mix["this_run"].startswith("r = 0.90")
    assert "Table 1" in cell_mix["paper_section"] and "r = 0.90" in cell_mix["paper_value"]
    for bare in ("β-VAE test RMSE", "β-VAE input genes", "FID50k (all)", "parameters of the cascade (this run)",
                 "training throughput (tiles/s), base / SR"):
        assert holds[bare] == "n/a", bare
    assert r.loc["β-VAE input genes", "paper_value"] == "17,655" and r.loc["β-VAE input genes", "this_run"] == "37"
    thr = r.loc["training throughput (tiles/s), base / SR"]
    assert thr["paper_value"].startswith("≈ 29.3 ")  # 79,000 x 256 / (8 x 86,400 s)
    import json

    want = " / ".join(f"{json.loads((out[s] / 'done.json').read_text())['tiles_per_s']:.2f}" for s in cascade.STAGES)
    assert thr["this_run"] == want and "150 steps x 16 tiles" in thr["note"] and "on cpu x1" in thr["note"]
    assert r.loc["FID50k (all)", "paper_value"] == "23.36"
    assert float(r.loc["FID50k (all)", "this_run"]) == pytest.approx(gen_all["fid"], rel=1e-3)
    # the real set has the generated set's cancer-type mix: 6 tiles per type, not all 24 test tiles
    assert "n = 12 generated vs 12 real tiles (paper: 50,000 vs 50,000)" in r.loc["FID50k (all)", "note"]
    assert r.loc["β-VAE test RMSE", "this_run"] == "0.61" and r.loc["β-VAE test RMSE", "paper_section"].startswith("Results: ")
    assert r.loc["parameters of the cascade (paper-size config)", "paper_value"] == "1.8 B"
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
    # the reproduction table's data column: toy, or the real cohort
    assert targets.data_label(cfg) == "toy"
    real = dict(cfg, cohort={"source": "sheet"}, run_name="gtex_run")
    assert targets.data_label(real) == "TCGA (2 projects)"
    assert targets.data_label(dict(real, rna_cdm=dict(cfg["rna_cdm"], cohorts=["GTEX-Lung"]))) == "gtex_run (GTEX-Lung)"
    # paper defaults: deconvolution, perturbation, downstream run; SimCLR needs a label file
    assert targets.experiments(cfg) == {"deconvolution": True, "perturbation": True, "downstream": True,
                                        "simclr": False}
    assert "results/rna_cdm/simclr/summary.tsv" not in targets.targets(cfg, samples)
    assert targets.experiment_tables(cfg, "simclr") == []
    cfg["rna_cdm"]["simclr"]["labels"] = "labels.tsv"
    cfg["rna_cdm"]["deconvolution"]["enabled"] = False
    assert targets.experiments(cfg) == {"deconvolution": False, "perturbation": False, "downstream": True,
                                        "simclr": True}
    assert targets.simclr_labels(cfg) == ["labels.tsv"]
    assert targets.counts(cfg, samples) == "results/expression/tcga/counts.tsv.gz"
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
                 "generate_rna_cdm_evaluation_tiles", "results/rna_cdm/cells/generated_evaluation.tsv",
                 "plot_rna_cdm_cell_table", "results/rna_cdm/figures/cell_distributions.png", "build_rna_cdm_reproduction",
                 "generate_rna_cdm_external_tiles",
                 "deconvolve_rna_cdm", "perturb_rna_cdm", "classify_rna_cdm_downstream"):
        assert rule in out, rule
    # the paper's MSI tiles (Kather et al., Kaggle) are not in the sample sheet: SimCLR is not planned
    assert "evaluate_rna_cdm_simclr" not in out
    assert "resources/signatures/rna_cdm_markers.tsv" in out
    assert "results/tiles/tile256/TCGA-LUAD-0000-01A.lmdb" in out
    assert "results/tiles/tile256/TCGA-PAAD-0000-01A.lmdb" not in out  # VAE-only project: no slides
    assert "make_toy_slide" not in out
    assert "gpu=4" in out.replace(" ", "")
    import yaml
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config" / "rna_cdm.yaml").read_text()))
    merged = validate(cfg, SCHEMA_DIR / "config.schema.yaml")
    rc = merged["rna_cdm"]
    # toy values that once leaked through the merge (32 px SR crops, raw tiles, 4 SR-fidelity tiles)
    assert (rc["train"]["sr_crop"], rc["evaluate"]["sr_fidelity_tiles"]) == (None, 16)
    # Results: FID50k etc. on 50k tiles, 10,000 per cancer type; the deconvolution's ten per patient
    assert (rc["evaluate"]["tiles_per_cohort"], rc["generate"]["tiles_per_patient"]) == (10000, 10)
    # the paper's ~190 node-hours (8 days on 4 A100) fit the training rules' 1 + 3 retries jobs
    assert rc["train"]["runtime_min"] <= 72 * 60 and 4 * rc["train"]["runtime_min"] >= 190 * 60
    assert merged["tiling"]["presets"]["tile256"]["format"] == "jpeg"
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
    srf = pd.read_csv(toy_run / "results/rna_cdm/cells/super_resolution.tsv", sep="\t")
    assert len(srf) == 5 and (srf["n_patients"] == n_test).all() and np.isfinite(srf["objects_per_tile_sr"]).all()
    srt = pd.read_csv(toy_run / "results/rna_cdm/cells/super_resolution_tiles.tsv", sep="\t")
    assert len(srt) == 3 * n_test * cfg["rna_cdm"]["evaluate"]["sr_fidelity_tiles"]
    fid = pd.read_csv(toy_run / "results/rna_cdm/fid.tsv", sep="\t")
    row = fid[(fid.scope == "all") & fid.comparison.str.startswith("real vs RNA-CDM")].iloc[0]
    assert row["paper_fid"] == 23.36 and np.isfinite(row["fid"])
    assert "not comparable" in row["comparability"] and "toy" in row["data"]
    # toy: evaluate.tiles_per_cohort null -> the per-patient set is the evaluation set (same tiles as before)
    assert cfg["rna_cdm"]["evaluate"]["tiles_per_cohort"] is None and row["n_other"] == len(gen) and row["paper_n"] == 50000
    umap = pd.read_csv(toy_run / "results/rna_cdm/vae/main/umap_silhouette.tsv", sep="\t")
    assert (umap["n_cancer_types"] == 5).all() and (umap["split"] == cfg["rna_cdm"]["evaluate"]["umap_split"]).all()
    t1 = pd.read_csv(toy_run / "results/rna_cdm/cells/table1.tsv", sep="\t")
    assert set(t1["Tile type"]) == {"Real", "Synthetic"}
    from crossmodal import reproduction

    rep = reproduction.check(pd.read_csv(toy_run / "results/rna_cdm/reproduction.tsv", sep="\t", keep_default_na=False))
    assert {"FID50k (all)", "β-VAE test RMSE", "parameters of the cascade (paper-size config)", "β-VAE input genes",
            "training throughput (tiles/s), base / SR", "Karras vs DDPM-1000 speed-up per tile"} <= set(rep["claim"])
    # every row ran on the toy data but the paper-size parameter count, which reads only the schema defaults
    params_row = rep["claim"] == "parameters of the cascade (paper-size config)"
    assert (rep.loc[~params_row, "data"] == "toy").all() and (rep["paper_section"] != "").all()
    assert (rep.loc[params_row, "data"] == "schema defaults (no data)").all() and params_row.sum() == 1
    assert rep["claim"].str.startswith("beyond the paper: inflammatory %").any()
    assert rep["claim"].str.startswith("synthetic tiles keep the real tiles' cell mix").any()
    # audit fixes: verdicts the toy's evidence cannot support are n/a, with the gate in the note
    by = rep.set_index("claim")
    assert targets.external_sets(cfg, samples), "the toy config generates external-cohort tiles"
    assert by.filter(like="Suppl. Fig. 2: tiles generated from external", axis=0)["this_run"].str.contains(
        "figures/external_").all()
    assert "Fig. 2: UMAP of the β-VAE reconstructions shows a cluster per cancer type" in by.index
    assert by.loc["Fig. 4C: fine-tuning after synthetic pretraining keeps the class-specific misclassifications",
                  "direction_holds"] == "n/a"
    fid_row = by.loc["FID Karras-32 / DDPM-1000"]
    assert "n = 2 / 2 tiles" in fid_row["this_run"] and fid_row["direction_holds"] == "n/a"
    coad = by.loc["Suppl. Fig. 4: inflammatory % from haematopoietic-attributable vs bulk expression, TCGA-COAD"]
    assert coad["direction_holds"] != "True" and "paired t p" in coad["this_run"]
    assert by.loc["parameters of the cascade (paper-size config)", "data"] == "schema defaults (no data)"
    assert not (rep["note"].str.count("cohort-ssl") > 1).any()  # the extractor is named once per note
    assert "Suppl. Fig. 5: accuracy at 4,000 training tiles, SimCLR vs from scratch" in by.index
    smp = pd.read_csv(toy_run / "results/rna_cdm/samplers.tsv", sep="\t").set_index("sampler")
    assert smp.loc["karras", "network_evaluations_per_stage"] == 63
    assert smp.loc["karras", "seconds_per_tile"] < smp.loc["ddpm", "seconds_per_tile"] / 4


# ------------------------------------------- deconvolution, perturbation, downstream, SimCLR
CLASSES4 = {"epithelial": ["epi"], "fibroblast": ["fib"], "endothelial": [], "haematopoietic": ["imm"],
            "other": ["dead"]}


def _planted_bulk(n=24, seed=0):
    """Bulk counts = signature x planted fractions x library, negative-binomial noise; 4 cell
    types (no endothelial), 15 markers each (x20 in their own type) + 20 shared genes."""
    rng = np.random.default_rng(seed)
    types = ["epi", "fib", "imm", "dead"]
    genes = [f"G{i}" for i in range(80)]
    base = rng.lognormal(3, 0.5, len(genes))
    sig = np.tile(base[:, None], (1, 4)) * rng.lognormal(0, 0.1, (len(genes), 4))
    for k in range(4):
        sig[15 * k:15 * (k + 1), :] *= 0.05
        sig[15 * k:15 * (k + 1), k] *= 400
    frac = rng.dirichlet([6, 2, 2, 1], n)
    rate = frac @ sig.T * rng.lognormal(7, 0.2, (n, 1))
    counts = rng.negative_binomial(10, 10 / (10 + rate)).astype(float)
    samples = [f"S{i:02d}" for i in range(n)]
    return (pd.DataFrame(counts, index=samples, columns=genes),
            pd.DataFrame(sig, index=pd.Index(genes, name="gene"), columns=types),
            pd.DataFrame(frac, index=samples, columns=types))


@pytest.mark.parametrize("method, min_r", [("nnls", 0.95), ("nu_svr", 0.85)])
def test_deconvolution_recovers_planted_fractions(method, min_r):
    from crossmodal.rna_cdm import deconvolution as dc

    bulk, sig, truth = _planted_bulk()
    frac = dc.deconvolve(bulk, sig, method)
    assert np.allclose(frac.sum(axis=1), 1) and (frac.to_numpy() >= 0).all()
    cls = dc.class_fractions(frac, CLASSES4)
    assert list(cls.columns) == dc.CLASSES
    assert cls["endothelial"].isna().all()  # no signature column: absent, not 0
    for k, col in (("epithelial", "epi"), ("fibroblast", "fib"), ("haematopoietic", "imm")):
        r = np.corrcoef(cls[k], truth[col])[0, 1]
        assert r > min_r, f"{method} {k}: r = {r:.2f}"
    with pytest.raises(ValueError, match="method must be"):
        dc.deconvolve(bulk, sig, "cibersortx")
    with pytest.raises(ValueError, match="counts.tsv: only 3 signature genes in the bulk matrix"):
        dc.deconvolve(bulk.iloc[:, :3], sig, method, what="counts.tsv")
    # the gene weights come from the training samples: the other (test) samples do not move a
    # sample's fractions - with weights over all rows, dropping half the test rows did
    train, test = bulk.index[: len(bulk) // 2], bulk.index[len(bulk) // 2:]
    full = dc.deconvolve(bulk, sig, method, weight_samples=train).loc[test[:3]]
    part = dc.deconvolve(bulk.loc[list(train) + list(test[:3])], sig, method, weight_samples=train).loc[test[:3]]
    pd.testing.assert_frame_equal(full, part)
    with pytest.raises(ValueError, match="none of the 1 weight samples"):
        dc.deconvolve(bulk, sig, method, weight_samples=["nobody"])


def test_signature_errors_name_the_file(tmp_path):
    from crossmodal.rna_cdm import deconvolution as dc

    _, sig, _ = _planted_bulk()
    p = tmp_path / "sig.tsv"
    sig.to_csv(p, sep="\t")
    assert list(dc.read_signature(p, CLASSES4).columns) == ["epi", "fib", "imm", "dead"]
    with pytest.raises(ValueError, match="sig.tsv: columns \\['endo'\\]"):
        dc.read_signature(p, {**CLASSES4, "endothelial": ["endo"]})
    (sig * -1).to_csv(p, sep="\t")
    with pytest.raises(ValueError, match="sig.tsv: values must be finite and non-negative"):
        dc.read_signature(p, CLASSES4)
    with pytest.raises(ValueError, match="no gene column 'symbol'"):
        dc.read_signature(p, CLASSES4, "symbol")


def test_repository_signature_file_is_documented_and_readable():
    from conftest import REPO
    from crossmodal.rna_cdm import deconvolution as dc

    cfg = validate({}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")["deconvolution"]
    sig = dc.read_signature(REPO / cfg["signature"], cfg["classes"])
    assert list(sig.columns) == dc.CLASSES and len(sig) >= 40
    assert "hand-made" in (REPO / cfg["signature"]).read_text().splitlines()[0]
    assert (REPO / "resources" / "signatures" / "rna_cdm_markers.md").exists()


def test_default_deconvolution_recovers_fractions_mixed_from_the_shipped_signature():
    """The shipped marker signature has rows that all sum to 1.15, so a ν-SVR with a free
    intercept cannot identify the fractions (noise-free (.5, .2, .1, .2) came back as
    (1, 0, 0, 0)).  The default method must recover them exactly without noise, and closely
    from bulk whose marker levels differ from the signature's and carry count noise."""
    from conftest import REPO
    from crossmodal.rna_cdm import deconvolution as dc

    cfg = validate({}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")["deconvolution"]
    sig = dc.read_signature(REPO / cfg["signature"], cfg["classes"])
    S = sig.to_numpy()
    assert np.allclose(S.sum(axis=1), S.sum(axis=1)[0])  # the collinearity that broke the intercept fit
    f = np.array([0.5, 0.2, 0.1, 0.2])
    for bulk in (pd.DataFrame([S @ f], columns=sig.index), pd.DataFrame([S @ f * 37.0], columns=sig.index)):
        got = dc.deconvolve(bulk, sig, cfg["method"]).iloc[0].to_numpy()
        assert np.allclose(got, f, atol=0.01), got
    rng = np.random.default_rng(3)
    n = 60
    truth = rng.dirichlet([4, 2, 1, 2], n)
    level = rng.lognormal(0, 0.5, len(S))  # each marker's own level, which the signature does not know
    other = rng.lognormal(3, 1, 200)  # the rest of the transcriptome
    rate = np.hstack([truth @ S.T * level * 300, np.tile(other, (n, 1))]) * rng.lognormal(0, 0.3, (n, 1))
    counts = rng.negative_binomial(10, 10 / (10 + rate)).astype(float)
    bulk = pd.DataFrame(counts, columns=list(sig.index) + [f"X{i}" for i in range(200)])
    for method in (cfg["method"], "nnls"):
        got = dc.class_fractions(dc.deconvolve(bulk, sig, method), cfg["classes"]).to_numpy()
        for k, name in enumerate(dc.CLASSES):
            r = np.corrcoef(got[:, k], truth[:, k])[0, 1]
            assert r > 0.9, f"{method} {name}: r = {r:.2f}"
        mae = np.abs(got - truth).mean()
        assert mae < 0.06, f"{method}: mean absolute error {mae:.3f}"


def test_attributable_expression_moves_every_gene_toward_the_cell_types_profile():
    """The signature covers 10 of each type's 15 markers; the fibroblast-attributable
    expression must raise the fibroblast markers the signature does not list and lower the
    epithelial ones (they used to be scaled by f_fibroblast, which the library rescale undid);
    profiles are fitted on training samples only; a zero fraction is refused by name."""
    from crossmodal.rna_cdm import deconvolution as dc

    bulk, full, truth = _planted_bulk(n=60, seed=2)
    in_sig = [f"G{15 * k + i}" for k in range(4) for i in range(10)]
    sig = full.loc[in_sig]
    frac = dc.deconvolve(bulk, sig, "nnls")
    train, test = bulk.index[:40], bulk.index[40:]
    prof = dc.cell_type_profiles(bulk.loc[train], frac.loc[train])
    assert list(prof.index) == list(bulk.columns)  # every gene, not only the signature's
    for j, k in enumerate(("epi", "fib", "imm")):  # markers outside the signature: highest in their own type
        hidden = [f"G{15 * j + i}" for i in range(10, 15)]
        others = prof.loc[hidden, [c for c in prof.columns if c != k]].max(axis=1)
        assert (prof.loc[hidden, k] > others).all(), prof.loc[hidden]
    fib = dc.attributable_expression(bulk.loc[test], prof, frac, ["fib"])
    assert np.allclose(fib.sum(axis=1), bulk.loc[test].sum(axis=1))
    ratio = (fib + 1) / (bulk.loc[test] + 1)
    hidden_fib, hidden_epi = [f"G{i}" for i in range(25, 30)], [f"G{i}" for i in range(10, 15)]
    assert (ratio[hidden_fib].mean(axis=1) > 2).all(), ratio[hidden_fib].mean(axis=1)
    down = ratio[hidden_epi].mean(axis=1)
    assert (down < 1).all() and down.median() < 0.5, down
    # towards the fibroblast profile: every test sample's expression correlates more with it (log scale)
    target = np.log(full["fib"])
    r_of = lambda x: np.log1p(x).apply(lambda row: np.corrcoef(row, target)[0, 1], axis=1)  # noqa: E731
    assert (r_of(fib) > r_of(bulk.loc[test]) + 0.2).all(), (r_of(fib), r_of(bulk.loc[test]))
    # a sample without fibroblasts has no fibroblast expression: refused, naming it
    zero = frac.copy()
    zero.loc[test[0], "fib"] = 0.0
    with pytest.raises(ValueError, match=f"fraction of fib is 0 in sample\\(s\\) {test[0]}"):
        dc.attributable_expression(bulk.loc[test], prof, zero, ["fib"])
    with pytest.raises(ValueError, match="3 samples with expression and fractions"):
        dc.cell_type_profiles(bulk.iloc[:3], frac)


def test_paired_tests_difference_and_equivalence():
    from crossmodal import stats

    base = np.array([0.80, 0.82, 0.79, 0.81, 0.80])
    assert stats.tost(base + 0.005, base + np.array([0, 0.01, -0.01, 0.005, 0]), 0.05)["p_value"] < 0.05
    noisy = base + np.array([0.1, -0.12, 0.08, -0.1, 0.05])
    assert stats.tost(noisy, base, 0.05)["p_value"] > 0.05  # not shown equal: too variable
    assert stats.ttest(base + 0.1, base, paired=True)["p_value"] == 0.0  # constant shift, no variance
    assert stats.ttest(base, base, paired=True)["p_value"] == 1.0
    assert stats.greater_than([0.9, 0.92, 0.88], 0.2)["p_value"] < 0.01
    assert stats.greater_than([0.2, 0.25, 0.2], 0.2)["p_value"] > 0.05
    with pytest.raises(ValueError, match="margin must be > 0"):
        stats.tost(base, base, 0.0)
    # agrees with statsmodels' paired TOST where that is defined
    from statsmodels.stats.weightstats import ttost_paired

    assert stats.tost(noisy, base, 0.05)["p_value"] == pytest.approx(ttost_paired(noisy, base, -0.05, 0.05)[0])


def test_fig4a_no_difference_needs_a_baseline_above_chance_and_an_equivalence_test():
    """22.5 % on 5 classes (chance 20 %) used to 'hold'; it is n/a, and a real baseline holds only
    with TOST p ≤ 0.05.  The note's p tests the baseline against chance + margin (not chance), a
    TOST over identical fold accuracies is n/a (not p = 0), and one-class folds are named."""
    from crossmodal.rna_cdm.steps import ALPHA, fig4a_holds

    def table(base_acc, base_sd, tost, acc=None, sd=0.05, one=(0, 0)):
        return pd.DataFrame({"experiment": "A", "setting": ["0% synthetic", "25% synthetic"],
                             "paper": ["baseline", "no significant difference vs 0% (Fig. 4A)"],
                             "accuracy_mean": [base_acc, base_acc if acc is None else acc],
                             "accuracy_sd": [base_sd, sd], "n_folds": 3, "chance_accuracy": 0.2,
                             "baseline_above_chance_p": [0.022, np.nan], "equivalence_margin": 0.05,
                             "tost_p_value_vs_baseline": [np.nan, tost], "folds_one_class": list(one)})

    for base_acc, base_sd, tost, want in ((0.225, 0.0095, 0.01, "n/a"), (0.9, 0.6, 0.01, "n/a"),
                                          (0.9, 0.01, 0.01, True), (0.9, 0.01, 0.3, False)):
        t = table(base_acc, base_sd, tost)
        holds, note = fig4a_holds(next(t.iloc[1:].itertuples()), t, ALPHA)
        assert holds == want, (base_acc, base_sd, tost, holds)
        assert "TOST" in note and "chance + margin (25.0 %)" in note
    # the toy: 22.5 ± 1.0 % over 3 folds is below chance + margin, so its p vs 25 % is large, not 0.022
    t = table(0.225, 0.0095, 0.0, acc=0.225, sd=0.0095, one=(3, 3))
    holds, note = fig4a_holds(next(t.iloc[1:].itertuples()), t, ALPHA)
    assert holds == "n/a" and "p = 0.022" not in note and "(p = 0.98)" in note
    assert "TOST n/a: identical fold accuracies" in note and "3/3 folds predict a single class" in note
    t = table(0.9, 0.01, 0.0, acc=0.9, sd=0.01)
    assert fig4a_holds(next(t.iloc[1:].itertuples()), t, ALPHA)[0] == "n/a"


def test_suppl4_same_needs_equivalence_and_no_significant_change_and_a_margin_below_the_bulk_level():
    """The toy's TCGA-COAD lymphocytes rose 2.02 -> 4.77 % (paired t p = 0.0059) and used to count as
    'the same' because TOST within ± 5 points passed (p = 0.0036): a significant change is not the
    same, and a margin above the bulk level makes equivalence empty (n/a)."""
    from crossmodal.rna_cdm.deconvolution import suppl4_holds

    # the toy COAD row: margin 5 points > bulk 2.02 % -> n/a, and the note says why
    holds, note = suppl4_holds("same", 2.75, 0.0059, 0.0036, 0.05, margin=5.0, bulk_pct=2.02, n=2)
    assert holds == "n/a" and "bulk level" in note and "df = 1" in note
    # a measurable margin: TOST passes but the change is significant -> False, not True
    holds, note = suppl4_holds("same", 2.75, 0.0059, 0.0036, 0.05, margin=5.0, bulk_pct=20.0, n=10)
    assert holds is False and "paired t-test is significant" in note
    # TOST passes and no significant change -> True; TOST fails -> False
    assert suppl4_holds("same", 0.3, 0.6, 0.01, 0.05, margin=5.0, bulk_pct=20.0, n=10)[0] is True
    assert suppl4_holds("same", 0.3, 0.6, 0.2, 0.05, margin=5.0, bulk_pct=20.0, n=10)[0] is False
    # higher / lower unchanged: sign and paired t p ≤ alpha
    assert suppl4_holds("higher", 2.0, 0.01, 0.5, 0.05, margin=5.0, bulk_pct=2.0, n=2)[0] is True
    assert suppl4_holds("higher", 2.0, 0.12, 0.5, 0.05)[0] is False
    assert suppl4_holds("lower", 2.0, 0.01, 0.5, 0.05)[0] is False
    assert suppl4_holds("-", 2.0, 0.01, 0.5, 0.05)[0] == "n/a"


def test_sampler_fid_comparison_is_na_below_the_minimum_tile_count():
    """The toy's 2 tiles per sampler gave FID 109 vs 95, 'comparable' (True): now n/a, n in the note."""
    from crossmodal.rna_cdm.steps import MIN_SAMPLER_TILES, sampler_fid_holds

    def table(fk, fd, n):
        return pd.DataFrame({"fid": [fk, fd], "n_tiles": [n, n]}, index=pd.Index(["karras", "ddpm"], name="sampler"))

    holds, note = sampler_fid_holds(table(109.4, 95.5, 2))
    assert holds == "n/a" and "here 2" in note and "n/a" in note
    assert sampler_fid_holds(table(109.4, 95.5, MIN_SAMPLER_TILES))[0] is True
    assert sampler_fid_holds(table(150.0, 95.5, MIN_SAMPLER_TILES))[0] is False
    assert sampler_fid_holds(table(150.0, 95.5, 8), min_tiles=8)[0] is False


def test_simclr_ahead_needs_a_test_or_a_gap_beyond_one_sd_and_a_baseline_that_is_not_constant():
    """Toy: SimCLR 70.5 ± 18.2 vs from scratch 69.2 ± 26.6 % at 8 tiles used to hold; at 16 / 32
    tiles from scratch is the majority-class predictor (84.6 ± 0.0 %) -> n/a."""
    from crossmodal.rna_cdm.steps import ALPHA, simclr_holds

    def rows(a, p, b, sd, one=0, maj=0.846):
        ssl = pd.Series({"accuracy_mean": a, "p_value_vs_scratch": p})
        scr = pd.Series({"accuracy_mean": b, "accuracy_sd": sd, "majority_accuracy": maj, "folds_one_class": one,
                         "n_folds": 3})
        return ssl, scr

    assert simclr_holds(*rows(0.705, 0.9, 0.692, 0.266, one=2), ALPHA)[0] is False  # 1.3 points, p 0.9
    holds, note = simclr_holds(*rows(0.833, 0.4, 0.846, 0.0, one=3), ALPHA)
    assert holds == "n/a" and "majority class" in note
    assert simclr_holds(*rows(0.9, 0.4, 0.846, 0.0, one=0), ALPHA)[0] == "n/a"  # sd 0 at the majority rate
    assert simclr_holds(*rows(0.80, 0.01, 0.70, 0.2), ALPHA)[0] is True  # significant
    assert simclr_holds(*rows(0.95, 0.2, 0.70, 0.1), ALPHA)[0] is True  # beyond 1 sd
    assert simclr_holds(*rows(0.60, 0.01, 0.70, 0.02), ALPHA)[0] is False  # behind


def test_simclr_summary_records_the_majority_rate_one_class_folds_and_a_paired_test():
    from crossmodal.rna_cdm.downstream import simclr_summary

    rows = []
    for f, (a, b) in enumerate(((0.8, 0.6), (0.82, 0.61), (0.79, 0.63))):
        rows.append({"init": "SimCLR on RNA-CDM tiles", "train_size": 8, "n_train": 8, "fold": f + 1, "accuracy": a,
                     "f1": 0.5, "auc": 0.6, "majority_accuracy": 0.6, "one_class": False})
        rows.append({"init": "from scratch", "train_size": 8, "n_train": 8, "fold": f + 1, "accuracy": b,
                     "f1": 0.4, "auc": 0.5, "majority_accuracy": 0.6, "one_class": f > 0})
    s = simclr_summary(pd.DataFrame(rows)).set_index("init")
    assert s.loc["SimCLR on RNA-CDM tiles", "p_value_vs_scratch"] < 0.01
    assert np.isnan(s.loc["from scratch", "p_value_vs_scratch"])
    assert s.loc["from scratch", "folds_one_class"] == 2 and s.loc["from scratch", "majority_accuracy"] == 0.6


def test_simclr_reproduction_rows_quote_the_papers_numbers():
    from crossmodal import reproduction as rp
    from crossmodal.rna_cdm.steps import _simclr_rows

    t = pd.DataFrame({"init": ["SimCLR on RNA-CDM tiles", "from scratch"], "train_size": [8, 8], "n_folds": 3,
                      "n_train": 8, "accuracy_mean": [0.705, 0.692], "accuracy_sd": [0.18, 0.27], "f1_mean": 0.4,
                      "auc_mean": [0.375, 0.424], "majority_accuracy": 0.846, "folds_one_class": [0, 2],
                      "p_value_vs_scratch": [0.9, np.nan], "paper": ["ahead of from scratch", "behind SimCLR"],
                      "task": "msi_like"})
    c = rp.Claims("toy")
    _simclr_rows(c, t)
    f = c.frame().set_index("claim")
    assert f.loc["Suppl. Fig. 5: accuracy, SimCLR on RNA-CDM tiles, 8 training tiles", "direction_holds"] is False
    assert "AUC 0.38" in f.loc["Suppl. Fig. 5: accuracy, SimCLR on RNA-CDM tiles, 8 training tiles", "this_run"]
    four = f.loc["Suppl. Fig. 5: accuracy at 4,000 training tiles, SimCLR vs from scratch"]
    assert four["paper_value"] == "73.42 ± 1.5 % vs 66.06 ± 2.1 %" and four["direction_holds"] == "n/a"
    assert "not run" in four["this_run"]
    assert f.loc["Suppl. Fig. 5: largest SimCLR gain over from scratch", "this_run"].startswith("+1.3 points at 8")


def test_super_resolution_row_needs_a_significant_correlation():
    from crossmodal.rna_cdm.steps import pearson_p

    assert pearson_p(0.32, 10) == pytest.approx(0.367, abs=0.01)  # the toy's neoplastic row: not significant
    assert pearson_p(0.8, 10) < 0.01
    assert np.isnan(pearson_p(0.5, 2))


def test_fig2_cluster_row_scores_the_reconstruction_umap_and_needs_enough_samples():
    from crossmodal.rna_cdm.steps import vae_cluster_row

    def table(s_umap, n, split):
        reps = ["input expression", "reconstructed expression", "latent mean", "UMAP of input",
                "UMAP of reconstruction"]
        return pd.DataFrame({"representation": reps, "split": split, "n_samples": n, "n_cancer_types": 5,
                             "silhouette_cancer_type": [0.08, 0.26, 0.35, 0.12, s_umap]})

    holds, ours, note = vae_cluster_row(table(-0.04, 10, "test"))  # the toy's test split: 2 per type
    assert holds == "n/a" and "n = 10 samples of 5 cancer types (test)" in ours and "latent means 0.35" in ours
    holds, _, note = vae_cluster_row(table(0.6, 50, "all"))
    assert holds is True and "training samples" in note
    assert vae_cluster_row(table(0.1, 50, "test"))[0] is False


def test_fig4c_row_is_not_measurable_with_a_baseline_at_chance():
    from crossmodal.rna_cdm.steps import fig4c_this_run

    def table(acc, p):
        return pd.DataFrame({"experiment": ["B: pretrain"], "paper": ["baseline"], "accuracy_mean": [acc],
                             "chance_accuracy": [0.2], "baseline_above_chance_p": [p]})

    assert fig4c_this_run(table(0.225, 0.022)).startswith("not measurable")
    assert fig4c_this_run(table(0.8, 0.001)).startswith("see the confusion matrices")


def test_metric_notes_name_the_extractor_once_and_bound_the_inception_score():
    from crossmodal.rna_cdm.steps import extractor_note, is_note

    note = extractor_note("cohort-ssl", "not comparable to the paper's (extractor cohort-ssl)")
    assert note.count("cohort-ssl") == 1
    assert "at most 10" in is_note("posteriors of an isotropic Gaussian mixture on 10 k-means clusters of the "
                                   "training tiles' SimCLR features")
    assert "at most" not in is_note("1000 ImageNet classes")


def test_real_tiles_are_drawn_with_the_generated_cancer_type_mix():
    from crossmodal.rna_cdm.steps import matched_indices

    have = {"A": np.arange(0, 100), "B": np.arange(100, 110), "C": np.arange(110, 400)}
    idx, short = matched_indices({"A": 5, "B": 5, "C": 5}, have, seed=0)
    assert [int(np.isin(idx, have[c]).sum()) for c in "ABC"] == [5, 5, 5] and len(set(idx)) == 15
    assert np.array_equal(idx, matched_indices({"A": 5, "B": 5, "C": 5}, have, seed=0)[0])  # seeded
    idx, short = matched_indices({"A": 5, "B": 20}, have, seed=0)
    assert short == {"B": (10, 20)} and int(np.isin(idx, have["B"]).sum()) == 10


def _write_planted_expression(root, data):
    """Counts for the 6 test-fixture samples, scaler and a hand-set linear β-VAE whose latent
    is (fibroblast-marker score, -score): the planted red/blue conditioning of the cascade."""
    from crossmodal.expression import normalise
    from crossmodal.models import vae as vae_lib

    bulk, sig, _ = _planted_bulk(n=14, seed=1)
    splits = pd.read_csv(data["splits"], sep="\t")
    # the fixture's 6 patients plus 8 more training samples (expression only): the per-gene
    # cell-type profiles of the perturbation are fitted on the training split
    extra = pd.DataFrame({"sample": [f"EXTRA-{i}" for i in range(8)], "cohort": COHORTS[0], "dataset": "tcga",
                          "split": "train"}).assign(patient=lambda d: d["sample"])
    pd.concat([splits, extra], ignore_index=True).to_csv(root / "splits.tsv", sep="\t", index=False)
    bulk.index = list(splits["sample"]) + list(extra["sample"])
    bulk.rename_axis("sample").to_csv(root / "counts.tsv.gz", sep="\t")
    sig.to_csv(root / "signature.tsv", sep="\t")
    normalise.fit_scaler(normalise.log_transform(bulk)).to_csv(root / "scaler.tsv", sep="\t", index=False)
    net = vae_lib.BetaVAE(len(bulk.columns), [2], 2, negative_slope=1.0)
    with torch.no_grad():
        w = torch.zeros(2, len(bulk.columns))
        w[0, 15:30], w[0, :15] = 0.3, -0.3
        w[1] = -w[0]
        net.encoder[0].weight.copy_(w)
        net.encoder[0].bias.zero_()
        net.mu.weight.copy_(torch.eye(2))
        net.mu.bias.zero_()
    vae_lib.save(net, root / "vae.pt", list(bulk.columns))
    return bulk


def test_deconvolve_and_perturb_steps(data, trained, tmp_path):
    from crossmodal.rna_cdm import deconvolution as dc

    cfg, out = trained
    bulk = _write_planted_expression(tmp_path, data)
    gen_counts = tmp_path / "gen_counts.tsv"
    rng = np.random.default_rng(0)
    rows = [{"sample": s, "tile": t, "neoplastic": int(rng.integers(1, 20)), "inflammatory": int(rng.integers(0, 9)),
             "connective": int(rng.integers(0, 9)), "dead": 1, "non_neoplastic_epithelial": 2}
            for s in bulk.index[:6] for t in range(3)]
    pd.DataFrame(rows).to_csv(gen_counts, sep="\t", index=False)
    dcfg = {"signature": str(tmp_path / "signature.tsv"), "gene_column": "gene", "method": "nnls",
            "classes": CLASSES4, "signature_note": "planted test signature", "split": "test"}
    o = {k: str(tmp_path / f"dec_{k}.{e}") for k, e in (("fractions", "tsv"), ("correlations", "tsv"),
                                                       ("figure", "png"))}
    steps.run("deconvolve_rna_cdm", {"signature": dcfg["signature"], "counts": str(tmp_path / "counts.tsv.gz"),
                                     "splits": str(tmp_path / "splits.tsv"), "generated_counts": str(gen_counts),
                                     "truth": []}, o, {"deconvolution": dcfg})
    fr = pd.read_csv(o["fractions"], sep="\t").set_index("sample")
    assert fr["endothelial"].isna().all() and "planted test signature" in fr["method"].iloc[0]
    c = pd.read_csv(o["correlations"], sep="\t")
    assert set(c["class"]) == set(dc.CLASSES)
    assert "absent" in c.set_index("class").loc["endothelial", "note"]
    assert c.set_index("class").loc["fibroblast", "n_patients"] == 6
    assert os.path.exists(o["figure"]) and os.path.exists(o["figure"].replace(".png", ".pdf"))

    # the fibroblast-attributable expression moves the latent towards the fibroblast code
    f4 = fr[[f"signature_{k}" for k in ("epi", "fib", "imm", "dead")]].set_axis(["epi", "fib", "imm", "dead"], axis=1)
    train = pd.read_csv(tmp_path / "splits.tsv", sep="\t").query("split == 'train'")["sample"]
    prof = dc.cell_type_profiles(bulk.loc[train], f4.loc[train])
    fib = dc.attributable_expression(bulk, prof, f4, ["fib"])
    z_b = dc._encode(bulk, tmp_path / "scaler.tsv", tmp_path / "vae.pt")
    z_f = dc._encode(fib, tmp_path / "scaler.tsv", tmp_path / "vae.pt")
    assert (z_f[:, 0] > z_b[:, 0] + 1).all()

    po = {"table": str(tmp_path / "pert.tsv"), "tiles": str(tmp_path / "pert_tiles.tsv"),
          "figure": str(tmp_path / "pert.png")}
    steps.run("perturb_rna_cdm", {"signature": dcfg["signature"], "fractions": o["fractions"],
                                  "counts": str(tmp_path / "counts.tsv.gz"), "scaler": str(tmp_path / "scaler.tsv"),
                                  "vae": str(tmp_path / "vae.pt"), "base": str(out["base"] / "model.pt"),
                                  "sr": str(out["sr"] / "model.pt"), "splits": str(tmp_path / "splits.tsv")},
              po, {"rna_cdm": cfg, "deconvolution": dcfg, "perturbation": {"classes": ["fibroblast", "haematopoietic"],
                                                                            "tiles_per_patient": 2,
                                                                            "equivalence_margin_pct": 5.0},
                   "cohorts": COHORTS, "split": "test", "cells": {"method": "classical", "classical": None},
                   "mpp": 0.5, "seed": 0, "device": "cpu"})
    t = pd.read_csv(po["table"], sep="\t")
    assert set(zip(t["perturbation"], t["scope"])) == {(k, s) for k in ("fibroblast", "haematopoietic")
                                                       for s in ["all", *COHORTS]}
    assert set(t.set_index("perturbation")["counted"]) == {"connective", "inflammatory"}
    assert (t["latent_shift"] > 0).all()
    # every scope carries the paired test and the equivalence test; the paper's direction per type
    tested = t["n_patients"] >= 2  # patients with counted nuclei in both conditions
    assert (t.loc[tested, "p_value"].notna() & t.loc[tested, "tost_p_value"].notna()).all()
    assert t.loc[~tested, "p_value"].isna().all() and t.loc[t.scope != "all", "n_patients"].max() <= 1
    assert set(t.loc[t.perturbation == "fibroblast", "paper_direction"]) == {"higher"}
    assert t.set_index(["perturbation", "scope"]).loc[("haematopoietic", "all"), "paper_direction"] == "-"
    tiles = pd.read_csv(po["tiles"], sep="\t")
    assert len(tiles) == 2 * 2 * 3 and set(tiles["condition"]) == {"bulk", "fibroblast", "haematopoietic"}
    with pytest.raises(ValueError, match="haematopoietic maps to no signature column"):
        steps.run("perturb_rna_cdm", {"signature": dcfg["signature"], "fractions": o["fractions"],
                                      "counts": str(tmp_path / "counts.tsv.gz"), "scaler": str(tmp_path / "scaler.tsv"),
                                      "vae": str(tmp_path / "vae.pt"), "base": str(out["base"] / "model.pt"),
                                      "sr": str(out["sr"] / "model.pt"), "splits": str(tmp_path / "splits.tsv")},
                  {k: str(tmp_path / f"bad_{k}") for k in po},
                  {"rna_cdm": cfg, "deconvolution": {**dcfg, "classes": {**CLASSES4, "haematopoietic": []}},
                   "perturbation": {"classes": ["haematopoietic"], "tiles_per_patient": 1, "equivalence_margin_pct": 5.0},
                   "cohorts": COHORTS,
                   "split": "test", "cells": {"method": "classical", "classical": None}, "mpp": 0.5, "seed": 0,
                   "device": "cpu"})
    assert not (tmp_path / "bad_table").exists()


def test_sampler_benchmark_warms_up_before_timing_either_sampler(data, trained, monkeypatch, tmp_path):
    """The first cascade call is an untimed one-tile warm-up; then Karras and DDPM are timed on
    the same tiles (the first timed sampler no longer pays the initialisation)."""
    from crossmodal.metrics import image

    def colour_extractor(weights=None, device="cpu", **_):
        return image.Extractor("colour-test", 3, lambda x: (x.float().mean((2, 3)) / 255, None), device)

    monkeypatch.setitem(image.EXTRACTORS, "colour-test", colour_extractor)
    calls, real = [], cascade.sample_cascade

    def spy(base, sr, z, cfg, **k):
        calls.append((len(z), k["sampler"]))
        return real(base, sr, z, cfg, **k)

    monkeypatch.setattr(cascade, "sample_cascade", spy)
    cfg, out = trained
    steps.run("benchmark_rna_cdm_samplers", {"base": str(out["base"] / "model.pt"), "sr": str(out["sr"] / "model.pt"),
                                             "latent": data["latent"], "real": data["lmdbs"], "splits": data["splits"]},
              {"table": str(tmp_path / "samplers.tsv")},
              {"rna_cdm": cfg, "cohorts": COHORTS, "n_tiles": 2, "extractor": "colour-test", "kid_subset_size": 2,
               "seed": 0, "device": "cpu"})
    assert calls == [(1, "karras"), (2, "karras"), (2, "ddpm")]
    t = pd.read_csv(tmp_path / "samplers.tsv", sep="\t")
    assert list(t["sampler"]) == ["karras", "ddpm"] and (t["n_tiles"] == 2).all()


def test_tile_budget_spreads_each_cancer_types_tiles_over_its_patients():
    """evaluate.tiles_per_cohort (paper: 10,000 per cancer type) split evenly over the test
    patients, the remainder to the first ones; without it, tiles_per_patient each."""
    from crossmodal.rna_cdm.steps import tile_budget

    plan = pd.DataFrame({"cohort": ["A", "A", "A", "B", "B"], "patient": list("pqrst")},
                        index=["a3", "a1", "a2", "b1", "b2"])
    n = tile_budget(plan, 4, 7)
    assert list(n.index) == list(plan.index)  # plan order: the LMDB follows it
    assert n.to_dict() == {"a1": 3, "a2": 2, "a3": 2, "b1": 4, "b2": 3}
    assert (tile_budget(plan, 4, None) == 4).all()
    # the toy's value: 8 per type over 2 test patients = 4 each, the per-patient set's counts
    two = plan[plan.cohort == "B"]
    assert tile_budget(two, 4, 8).tolist() == tile_budget(two, 4, None).tolist() == [4, 4]
    assert tile_budget(plan, 4, 2).to_dict() == {"a1": 1, "a2": 1, "a3": 0, "b1": 1, "b2": 1}
    assert tile_budget(plan, 4, 10000).groupby(plan.cohort).sum().to_dict() == {"A": 10000, "B": 10000}
    with pytest.raises(ValueError, match="tiles_per_cohort must be >= 1"):
        tile_budget(plan, 4, 0)


def test_generation_streams_batches_to_the_lmdb_with_the_cohort_budget(data, trained, monkeypatch):
    """tiles_per_cohort: 3 tiles per cancer type over 2 patients (2 + 1); each sampling batch
    (generate.batch_size 2) is written before the next is drawn; the tiles equal the all-at-once
    cascade's."""
    from crossmodal.data import TileWriter as TW

    cfg, out = trained
    cfg = dict(cfg, generate=dict(cfg["generate"], batch_size=2))
    events = []
    real_iter, real_add = cascade.iter_cascade, TW.add

    def iter_spy(*a, **k):
        for item in real_iter(*a, **k):
            events.append("draw")
            yield item

    def add_spy(self, *a, **k):
        events.append("add")
        return real_add(self, *a, **k)

    monkeypatch.setattr(cascade, "iter_cascade", iter_spy)
    monkeypatch.setattr(TW, "add", add_spy)
    gen = data["root"] / "gen_budget.lmdb"
    steps.run("generate_rna_cdm_tiles", {"base": str(out["base"] / "model.pt"), "sr": str(out["sr"] / "model.pt"),
                                         "latent": data["latent"], "splits": data["splits"]},
              {"tiles": str(gen)}, {"rna_cdm": cfg, "cohorts": COHORTS, "split": "train", "tiles_per_patient": 10,
                                    "tiles_per_cohort": 3, "mpp": 2.0, "seed": 4, "device": "cpu"})
    assert "".join(e[0] for e in events) == "daadaadaa"  # 6 tiles in batches of 2, each written at once
    ds = TileDataset([gen])
    metas = [ds.meta(i) for i in range(len(ds))]
    assert [(m["sample"], m["replicate"]) for m in metas] == [
        ("TCGA-AAA-0", 0), ("TCGA-AAA-0", 1), ("TCGA-AAA-1", 0), ("TCGA-BBB-0", 0), ("TCGA-BBB-0", 1),
        ("TCGA-BBB-1", 0)]
    # Fig. 4B pretraining holds out whole generating patients for early stopping: the tiles carry them
    from crossmodal.rna_cdm.downstream import synthetic_tiles

    _, y, g = synthetic_tiles(gen, COHORTS, 8, with_groups=True)
    assert list(g) == ["TCGA-AAA-0", "TCGA-AAA-0", "TCGA-AAA-1", "TCGA-BBB-0", "TCGA-BBB-0", "TCGA-BBB-1"]
    assert list(y) == [0, 0, 0, 1, 1, 1]
    monkeypatch.undo()
    base, sr = cascade.load_model(out["base"] / "model.pt"), cascade.load_model(out["sr"] / "model.pt")
    lat = cascade.read_latents(data["latent"])
    whole = cascade.sample_cascade(base, sr, lat.loc[[m["sample"] for m in metas]].to_numpy(np.float32), cfg,
                                   seed=4, batch_size=2)
    np.testing.assert_array_equal(np.stack([ds[i] for i in range(len(ds))]), whole)


def test_synthetic_need_covers_replacement_and_pretraining():
    """Figure 4's synthetic tiles per class: 75% of the largest per-class training fold (A), or
    the 100% pretraining set (the real set's size) over the classes (B) - the paper's 5,000
    tiles, 5 folds: 600 vs 1,000 per class."""
    from crossmodal.rna_cdm.downstream import synthetic_need

    y = np.repeat(np.arange(5), 1000)
    folds = [(np.flatnonzero(np.arange(5000) % 5 != f), np.flatnonzero(np.arange(5000) % 5 == f)) for f in range(5)]
    assert synthetic_need(y, folds, [0, 0.25, 0.5, 0.75], [0.25, 0.5, 0.75, 1.0], 5) == 1000
    assert synthetic_need(y, folds, [0, 0.75], [0.25], 5) == 600


def test_replacement_keeps_size_and_class_balance():
    from crossmodal.rna_cdm import downstream as ds

    rng = np.random.default_rng(0)
    x, y = np.zeros((20, 4, 4, 3), np.uint8), np.repeat([0, 1], 10)
    sx, sy = np.full((12, 4, 4, 3), 255, np.uint8), np.repeat([0, 1], 6)
    for frac, n_syn in ((0.0, 0), (0.5, 10), (0.5999, 12)):
        xt, yt, n = ds.replace_with_synthetic(x, y, sx, sy, frac, rng)
        assert n == n_syn and len(yt) == 20 and (np.bincount(yt) == 10).all()
        assert int((xt == 255).all(axis=(1, 2, 3)).sum()) == n_syn
    with pytest.raises(ValueError, match="7 tiles wanted, 6 available"):
        ds.replace_with_synthetic(x, y, sx, sy, 0.7, rng)


@pytest.fixture(scope="module")
def generated(data, trained):
    return str(_generate(data, trained, "gen_downstream.lmdb", tiles_per_patient=10, seed=2))


def test_downstream_classifier_learns_the_planted_colours(data, generated, tmp_path):
    """Red vs blue cohorts: the real-only baseline classifies the held-out patients' tiles; the
    tables hold every Figure 4A/B setting with a paired test vs the baseline."""
    c = validate({"downstream": {"image_size": 16, "n_tiles": 48, "folds": 2, "epochs": 6, "lr": 1e-3,
                                 "batch_size": 8, "pretrain_epochs": 2, "pretrain_val_fraction": 0.0,
                                 "finetune_epochs": 2, "finetune_lr": 1e-3, "real_splits": ["train"],
                                 "replace_fractions": [0.0, 0.5, 0.75], "pretrain_fractions": [0.25, 0.4]}},
                 SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")["downstream"]
    o = {"table": tmp_path / "summary.tsv", "folds": tmp_path / "folds.tsv", "figure": tmp_path / "acc.png",
         "confusion": tmp_path / "cm.png"}
    steps.run("downstream_rna_cdm", {"real": data["lmdbs"], "generated": generated, "splits": data["splits"]},
              {k: str(v) for k, v in o.items()}, {"downstream": c, "cohorts": COHORTS, "data_note": "planted", "seed": 0})
    t = pd.read_csv(o["table"], sep="\t").set_index("setting")
    assert list(t.index) == ["0% synthetic", "50% synthetic", "75% synthetic",
                             "no pretraining", "pretrained on 25% synthetic", "pretrained on 40% synthetic"]
    assert t.loc["0% synthetic", "accuracy_mean"] > 0.9
    assert t.loc["pretrained on 25% synthetic", "n_synthetic"] == 12  # shares of the 48 real tiles
    assert t.loc["pretrained on 40% synthetic", "n_synthetic"] == 18  # 9 of the 10 generated per class
    assert np.isnan(t.loc["0% synthetic", "p_value_vs_baseline"])
    assert np.isfinite(t.loc["50% synthetic", "p_value_vs_baseline"])
    assert t.loc["no pretraining", "paper"] == "baseline" and (t["data"] == "planted").all()
    n_train = pd.read_csv(data["splits"], sep="\t").query("split == 'train'")["patient"].nunique()
    assert (t["real_patients_seen_by_generator"] == f"0 of {n_train}").all()  # no generator_splits given
    f = pd.read_csv(o["folds"], sep="\t")
    assert set(f["fold"]) == {1, 2} and len(f) == 2 * 6
    for frac in (0.5, 0.75):  # replacement keeps the training-set size
        r = f[f.setting == f"{int(100 * frac)}% synthetic"]
        share = r["n_synthetic"] / (r["n_synthetic"] + r["n_real_train"])
        assert (abs(share - frac) < 0.1).all(), share
    for p in (o["figure"], o["confusion"]):
        assert p.exists() and p.with_suffix(".pdf").exists()
    # pretraining on 100% (24 per class) needs more than the 10 generated per class: refused before
    # any training, naming the LMDB and the budget (it used to be capped silently)
    o2 = {k: str(tmp_path / f"x_{v.name}") for k, v in o.items()}
    with pytest.raises(ValueError, match=r"10 generated TCGA-AAA tiles.*need 24 per cancer type.*tiles_per_cohort"):
        steps.run("downstream_rna_cdm", {"real": data["lmdbs"], "generated": generated, "splits": data["splits"]},
                  o2, {"downstream": dict(c, pretrain_fractions=[1.0]), "cohorts": COHORTS, "seed": 0})
    assert not any(Path(v).exists() for v in o2.values())


def test_real_tile_patients_that_trained_the_generator_are_counted_and_noted(data, generated, tmp_path):
    """A real-tile patient whose tiles trained RNA-CDM can reach a test fold through the synthetic
    arms: the schema defaults keep them apart ([val] vs train_splits [train]); a config that
    overlaps them (the toy) gets the count in summary.tsv, the data note and the reproduction notes."""
    from crossmodal.rna_cdm.downstream import generator_overlap
    from crossmodal.rna_cdm.steps import seen_note

    sch = validate({}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")
    assert not set(sch["downstream"]["real_splits"]) & set(sch["train_splits"])
    assert not set(sch["simclr"]["real_splits"]) & set(sch["train_splits"])
    splits = pd.read_csv(data["splits"], sep="\t")
    train = sorted(set(splits.loc[splits["split"] == "train", "patient"]))
    n, of, note = generator_overlap(train + ["someone-else"], splits, ["train"])
    assert (n, of) == (len(train), len(train) + 1) and "trained RNA-CDM (splits train)" in note
    assert generator_overlap(train, splits, ["val"]) == (0, len(train), "")
    c = validate({"downstream": {"image_size": 16, "n_tiles": 24, "folds": 2, "epochs": 1, "lr": 1e-3,
                                 "batch_size": 8, "pretrain_epochs": 1, "pretrain_val_fraction": 0.0,
                                 "finetune_epochs": 1, "finetune_lr": 1e-3, "real_splits": ["train"],
                                 "replace_fractions": [0.0, 0.5], "pretrain_fractions": [0.25]}},
                 SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")["downstream"]
    o = {"table": tmp_path / "summary.tsv", "folds": tmp_path / "folds.tsv", "figure": tmp_path / "acc.png",
         "confusion": tmp_path / "cm.png"}
    steps.run("downstream_rna_cdm", {"real": data["lmdbs"], "generated": generated, "splits": data["splits"]},
              {k: str(v) for k, v in o.items()}, {"downstream": c, "cohorts": COHORTS, "data_note": "planted",
                                                   "seed": 0, "generator_splits": ["train"]})
    t = pd.read_csv(o["table"], sep="\t")
    k = len(train)
    assert (t["real_patients_seen_by_generator"] == f"{k} of {k}").all(), t["real_patients_seen_by_generator"]
    assert t["data"].str.startswith("planted; ").all() and t["data"].str.contains("favouring them").all()
    assert "real-tile patients trained RNA-CDM" in seen_note(t)
    assert seen_note(t.assign(real_patients_seen_by_generator="0 of 4")) == ""


def test_simclr_on_synthetic_then_binary_task(data, generated, tmp_path):
    labels = tmp_path / "labels.tsv"
    splits = pd.read_csv(data["splits"], sep="\t")
    pd.DataFrame({"patient": splits["patient"], "msi_like": (splits["cohort"] == "TCGA-AAA").astype(int)}).to_csv(
        labels, sep="\t", index=False)
    c = validate({"simclr": {"labels": str(labels), "label_column": "msi_like", "task_cohorts": COHORTS,
                             "real_splits": ["train"], "tiles_per_slide": 4, "image_size": 16, "epochs": 1,
                             "batch_size": 8, "train_sizes": [4, 8], "folds": 2, "finetune_epochs": 3,
                             "batch_size_finetune": 4, "ssl_lr": 1e-3}},
                 SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")["simclr"]
    o = {"encoder": tmp_path / "enc.pt", "done": tmp_path / "done.json", "table": tmp_path / "summary.tsv",
         "folds": tmp_path / "folds.tsv", "figure": tmp_path / "acc.png"}
    inp = {"generated": generated, "real": data["lmdbs"], "splits": data["splits"], "labels": [str(labels)]}
    par = {"simclr": c, "checkpoints": str(tmp_path / "ckpt"), "data_note": "planted", "seed": 0, "device": "cpu"}
    steps.run("simclr_rna_cdm", inp, {k: str(v) for k, v in o.items()}, par)
    from crossmodal.models import ssl

    _, ck = ssl.load_encoder(o["encoder"])
    assert ck["meta"]["source"] == "RNA-CDM tiles" and ck["meta"]["n_tiles"] == 20
    t = pd.read_csv(o["table"], sep="\t")
    assert set(zip(t["init"], t["train_size"])) == {(i, n) for i in ("SimCLR on RNA-CDM tiles", "from scratch")
                                                    for n in (4, 8)}
    assert (t["n_folds"] == 2).all() and t["task"].str.contains("msi_like").all()
    assert {"majority_accuracy", "folds_one_class", "p_value_vs_scratch"} <= set(t.columns)
    assert t.loc[t["init"] == "from scratch", "p_value_vs_scratch"].isna().all()
    assert o["figure"].with_suffix(".pdf").exists()
    pd.DataFrame({"patient": splits["patient"], "msi_like": "MSI"}).to_csv(labels, sep="\t", index=False)
    with pytest.raises(ValueError, match="labels.tsv: column msi_like must be binary"):
        steps.run("simclr_rna_cdm", inp, {k: str(tmp_path / f"x_{k}") for k in o}, par)


def check_toy_experiments(run) -> dict:
    """The issue's toy checks of the deconvolution / perturbation / downstream / SimCLR
    experiments on a finished toy run directory ``run`` (callable on any run directory)."""
    from pathlib import Path

    run = Path(run)
    c = pd.read_csv(run / "results/rna_cdm/deconvolution/correlations.tsv", sep="\t")
    planted = c[c.comparison.str.startswith("deconvolved vs planted")].set_index("class")
    # the deconvolution recovers the planted fractions of every class the toy plants
    assert set(planted.index) == {"epithelial", "fibroblast", "haematopoietic"}
    assert (planted["pearson_r"] > 0.9).all(), planted["pearson_r"]
    counted = c[c.comparison.str.startswith("deconvolved vs counted")].set_index("class")
    assert "absent" in counted.loc["endothelial", "note"]  # the toy has no endothelial cells
    assert counted.loc[["epithelial", "fibroblast", "haematopoietic"], "n_patients"].min() >= 5
    # the perturbed expression goes through the real input's normalisation: re-encoding the bulk
    # counts reproduces the pipeline's latent codes
    from crossmodal.rna_cdm import deconvolution as dc

    counts = pd.read_csv(run / "results/expression/tcga/counts.tsv.gz", sep="\t", index_col=0).iloc[:8]
    z = dc._encode(counts, run / "results/expression/tcga/scaler_vae.tsv", run / "results/rna_cdm/vae/main/model.pt")
    lat = pd.read_csv(run / "results/rna_cdm/vae/main/latent/tcga.tsv.gz", sep="\t", index_col="sample")
    assert np.allclose(z, lat.loc[counts.index].to_numpy(), atol=1e-4)
    p = pd.read_csv(run / "results/rna_cdm/perturbation/summary.tsv", sep="\t")
    overall = p[p.scope == "all"].set_index("perturbation")
    assert set(overall.index) == {"fibroblast", "haematopoietic"}
    # the attributable expression moves the diffusion model's conditioning by more than the
    # spread between patients (seed 0: 7.7x fibroblast, 6.4x haematopoietic)
    assert (overall["latent_shift"] > 0.5).all(), overall["latent_shift"]
    d = pd.read_csv(run / "results/rna_cdm/downstream/summary.tsv", sep="\t")
    assert len(d) == 9 and d["accuracy_mean"].between(0, 1).all() and d["data"].str.contains("toy").all()
    sc = pd.read_csv(run / "results/rna_cdm/simclr/summary.tsv", sep="\t")
    assert set(sc["init"]) == {"SimCLR on RNA-CDM tiles", "from scratch"}
    rep = pd.read_csv(run / "results/rna_cdm/reproduction.tsv", sep="\t", keep_default_na=False)
    for q in ("Suppl. Fig. 3", "Suppl. Fig. 4", "Fig. 4A", "Fig. 4B", "Suppl. Fig. 5"):
        assert rep["claim"].str.startswith(q).any(), q
    assert rep.loc[rep.claim.str.startswith("Suppl. Fig. 3"), "note"].str.contains("CIBERSORTx").all()
    # every experiment row with a paper direction is checked, or says which gate left it without one:
    # SimCLR rows against a from-scratch model that only predicts the majority class, "same" rows whose
    # equivalence margin is not below the bulk level, rows quoting the paper's number at its own size
    ssl = rep[rep.claim.str.contains(r"^Suppl\. Fig\. 5: accuracy, SimCLR on RNA-CDM tiles, \d+ training tiles")]
    assert len(ssl) and (ssl["direction_holds"].isin(["True", "False"])
                         | ssl["note"].str.contains("n/a: from scratch predicts the majority class")).all(), ssl
    s4 = rep[rep.claim.str.startswith("Suppl. Fig. 4")]
    assert (s4["direction_holds"].isin(["True", "False"])
            | s4["note"].str.contains("n/a: the margin .* is not below the bulk level")).all(), s4
    assert s4["direction_holds"].isin(["True", "False"]).any()
    return {k: bool(overall.loc[k, "targeted_type_rises"]) for k in overall.index}


def test_toy_deconvolution_perturbation_and_downstream(toy_run):
    check_toy_experiments(toy_run)


def test_toy_perturbation_raises_the_targeted_type(toy_run):
    """Issue 6, toy check 2 (Suppl. Fig. 4): tiles generated from the fibroblast- / haematopoietic-
    attributable expression hold more connective / inflammatory cells than tiles from the bulk.
    Seed 0, 10 test patients x 2 tiles (2026-12-06): connective 4.4 -> 6.7 % (paired t p = 0.019),
    inflammatory 0.7 -> 1.8 % (p = 0.055).  It failed (connective 4.5 -> 3.5 %) before every gene
    got a cell-type profile and before the β-VAE's reconstruction became a per-gene mean."""
    assert check_toy_experiments(toy_run) == {"fibroblast": True, "haematopoietic": True}


CELL_MIX_XFAIL = (
    "measured on the toy config, seed 0 (10 test patients x 4 generated 64 px tiles, classical counter), "
    "2026-12-06: generated tiles' counted neoplastic / inflammatory % vs the planted tumour / lymphocyte "
    "fractions r = 0.34 / 0.72 - lymphocytes follow since the beta-VAE reconstruction is a per-gene mean "
    "(sharper latents), tumour does not (FID 50.3, real-vs-real floor 49.6 on the same per-cancer-type mix). "
    "Earlier, with the summed reconstruction: r = 0.15 / 0.33 (FID 48.8). Not the counter: the same patients' real tiles at "
    "64 px give r 0.87 / 0.96 with 4 tiles each. Not the latent: a ridge from the 16-d beta-VAE latent "
    "predicts the held-out fractions with r 0.66 / 0.81. Both cascade stages lose it. SR stage "
    "(results/rna_cdm/cells/super_resolution.tsv, real test tiles shrunk to 16 px and super-resolved): "
    "neoplastic % r 0.57 but inflammatory -0.05 across patients, 66 objects per tile vs 38 real, 53 % "
    "counted as dead (3000 SR steps on 16 px crops: inflammatory r 0.56, 43 objects, but FID 88). Base "
    "stage: at 16 px (8 um/px) no nucleus is visible; a 32 px base (1000 steps) + 2500-step SR still "
    "gives r 0.02 / 0.29, with 3000 base steps 0.23 / 0.61 (guidance 3: 0.19 / 0.68) at ~4 more CPU "
    "minutes than the toy budget allows; classifier-free guidance 4 on the toy cascade did not help. "
    "The lymphocyte r of 0.72 is a lucky draw: the same trained cascade sampled with seeds 1 / 2 (4 tiles "
    "per patient) gives tumour -0.01 / -0.06, lymphocyte 0.39 / 0.52, and 16 tiles per patient (seeds 0 / 1) "
    "tumour -0.14 / 0.02, lymphocyte 0.45 / 0.26 (2026-12-06): at toy scale (1000 steps of batch 8 over ~30 "
    "training patients) the cascade barely follows its latent")


@pytest.mark.xfail(strict=False, reason=CELL_MIX_XFAIL)
def test_toy_generated_cell_mix_follows_the_planted_fractions(toy_run):
    """Issue 6, toy check 1: tiles generated from a patient's expression have a counted cell mix
    that correlates with the patient's planted fractions (r > 0.5 for tumour and lymphocyte)."""
    from pathlib import Path

    from scipy.stats import pearsonr

    run = Path(toy_run)
    g = pd.read_csv(run / "results/rna_cdm/cells/generated_test.tsv", sep="\t")
    truth = pd.read_csv(run / "results/toy/truth/patients.tsv", sep="\t").set_index("sample")
    tot = g.groupby("sample")[["neoplastic", "inflammatory", "connective", "dead", "non_neoplastic_epithelial"]].sum()
    pct = tot.div(tot.sum(axis=1), axis=0)
    assert len(pct) >= 8
    r = {t: pearsonr(pct[c], truth.loc[pct.index, t]).statistic
         for c, t in (("neoplastic", "tumour"), ("inflammatory", "lymphocyte"))}
    assert min(r.values()) > 0.5, r


def test_vae_umap_figure_separates_planted_cancer_types(tmp_path):
    """plot_rna_cdm_vae_umap on a tiny β-VAE of three planted expression programs: the test
    samples' input and reconstruction cluster by cancer type (silhouette > 0.3); a split with
    one cancer type is refused, naming the split table."""
    from crossmodal.models import vae as vae_lib

    rng = np.random.default_rng(0)
    types = ["TCGA-AAA", "TCGA-BBB", "TCGA-CCC"]
    programs = rng.normal(0, 2, (3, 40))
    rows, expr = [], {}
    for k, c in enumerate(types):
        for i in range(20):
            s = f"{c}-{i}"
            expr[s] = programs[k] + rng.normal(0, 0.5, 40)
            rows.append({"patient": s, "sample": s, "cohort": c, "dataset": "tcga",
                         "split": "test" if i < 6 else ("val" if i < 9 else "train")})
    expr = pd.DataFrame(expr).T.rename_axis("sample")
    expr.columns = [f"G{j}" for j in range(40)]
    z_path, sp_path = tmp_path / "z_vae.tsv.gz", tmp_path / "splits.tsv"
    expr.to_csv(z_path, sep="\t")
    splits = pd.DataFrame(rows)
    splits.to_csv(sp_path, sep="\t", index=False)
    train = splits[splits.split == "train"]["sample"]
    val = splits[splits.split == "val"]["sample"]
    settings = vae_lib.VAESettings(hidden=[32], latent=4, lr=3e-3, batch_size=16, max_epochs=60, warmup_epochs=2)
    model, _ = vae_lib.fit(expr.loc[train].to_numpy(np.float32), expr.loc[val].to_numpy(np.float32), settings, seed=0)
    vae_lib.save(model, tmp_path / "model.pt", list(expr.columns))
    o = {"figure": str(tmp_path / "umap.png"), "table": str(tmp_path / "sil.tsv")}
    inputs = {"model": str(tmp_path / "model.pt"), "expression": [str(z_path)], "splits": str(sp_path)}
    params = {"cohorts": None, "split": "test", "umap_neighbors": 5, "data_note": "planted", "seed": 0}
    steps.run("plot_rna_cdm_vae_umap", inputs, o, params)
    t = pd.read_csv(o["table"], sep="\t").set_index("representation")
    assert (t["n_samples"] == 18).all() and (t["n_cancer_types"] == 3).all() and (t["data"] == "planted").all()
    assert t.loc["input expression", "silhouette_cancer_type"] > 0.3
    assert t.loc["reconstructed expression", "silhouette_cancer_type"] > 0.3
    assert t.loc["UMAP of reconstruction", "silhouette_cancer_type"] > 0.3
    assert (tmp_path / "umap.png").stat().st_size > 1000 and (tmp_path / "umap.pdf").exists()
    splits.loc[splits.split == "test", "split"] = "val"
    splits.loc[splits["sample"] == "TCGA-AAA-0", "split"] = "test"
    splits.to_csv(sp_path, sep="\t", index=False)
    bad = {k: str(tmp_path / f"x_{k}") for k in o}
    with pytest.raises(ValueError, match=r"splits.tsv: the test split has 1 samples of 1 cancer type"):
        steps.run("plot_rna_cdm_vae_umap", inputs, bad, params)
    assert not any(Path(v).exists() for v in bad.values())


def test_simclr_paper_column_quotes_both_models_and_the_200_tile_contradiction():
    """Suppl. Fig. 5: 73.42 ± 1.5 (SimCLR) and 66.06 ± 2.1 (from scratch) at 4,000 tiles, the
    11.8-point gap at 1,000, and at 200 tiles the Results (from scratch ahead) vs the caption
    (SimCLR always ahead)."""
    from crossmodal.rna_cdm.downstream import simclr_paper_value

    assert simclr_paper_value("SimCLR on RNA-CDM tiles", 4000) == "73.42 ± 1.5 % (4000 tiles)"
    assert simclr_paper_value("from scratch", 4000) == "66.06 ± 2.1 % (4000 tiles)"
    assert "11.8 points" in simclr_paper_value("from scratch", 1000)
    for init in ("SimCLR on RNA-CDM tiles", "from scratch"):
        v = simclr_paper_value(init, 200)
        assert "from scratch ahead at 200 tiles (Results)" in v and "caption" in v
    assert simclr_paper_value("from scratch", 2000) == "behind SimCLR"


# ------------------------------------------- Figure 3A: cell-type distributions, real vs synthetic
def test_cell_distribution_figure_from_real_and_synthetic_counts(tmp_path):
    """Per-tile percentages in long form (tiles without nuclei dropped) and the Figure 3A
    output of the Table 1 step, on a small planted count table."""
    from crossmodal import cells

    def counts(path, sample, rows):
        df = pd.DataFrame(rows, columns=cells.CLASSES)
        df.insert(0, "sample", sample)
        df.to_csv(path, sep="\t", index=False)
        return str(path)

    real = [counts(tmp_path / "r1.tsv", "A-1", [[8, 2, 0, 0, 0], [6, 2, 2, 0, 0], [0, 0, 0, 0, 0]]),
            counts(tmp_path / "r2.tsv", "B-1", [[0, 10, 0, 0, 0], [1, 3, 0, 0, 0]])]
    synth = counts(tmp_path / "s.tsv", "A-1", [[5, 5, 0, 0, 0], [0, 0, 0, 0, 4]])
    pct = cells.percentages(pd.concat([pd.read_csv(p, sep="\t").assign(tile_type=k, cohort=c) for p, k, c in
                                       ((real[0], "Real", "A"), (real[1], "Real", "B"), (synth, "Synthetic", "A"))],
                                      ignore_index=True))
    long = cells.distribution_long(pct)
    assert len(long) == 6 * len(cells.CLASSES)  # the empty real tile of A-1 is left out
    tumour = long[(long.cohort == "A") & (long.cell_type == "Tumor")].groupby("tile_type")["pct"].apply(list)
    assert tumour["Real"] == [80.0, 60.0] and tumour["Synthetic"] == [50.0, 0.0]
    assert list(long["cell_type"].cat.categories) == ["Tumor", "Lymphocytes", "Connective", "Dead", "Normal"]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['tile_type'\]"):
        cells.distribution_long(pct.drop(columns="tile_type"))
    out = {k: str(tmp_path / f"{k}.{ext}") for k, ext in
           (("table", "tsv"), ("correlations", "tsv"), ("figure", "png"), ("distribution", "png"))}
    steps.run("plot_cell_table", {"counts": real, "synthetic_counts": synth},
              out, {"cells": {"method": "classical"}, "cohorts": {"A-1": "A", "B-1": "B"}})
    for k in ("figure", "distribution"):
        assert Path(out[k]).stat().st_size > 0 and Path(out[k]).with_suffix(".pdf").exists()
    t1 = pd.read_csv(out["table"], sep="\t")
    assert list(zip(t1["cohort"], t1["Tile type"], t1["n_tiles"])) == [("A", "Real", 2), ("A", "Synthetic", 2),
                                                                      ("B", "Real", 2)]
