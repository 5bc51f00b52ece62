"""RNA-GAN reproduction: unit tests of the claims table and target helpers, and the toy checks
of issue 5 on the session's toy run (ground truth known: planted tissue programs)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal.rna_gan import reproduction, targets

R = "results/rna_gan"


# ---------------------------------------------------------------- unit tests (no pipeline)
def _frames(fid_rna=80.0, fid_gan=90.0, fid_control=150.0, acc=0.9, ssl=(0.8, 0.82, 0.84),
            scratch=(0.7, 0.6, 0.66), acc_p=0.001, auc_p=0.002, auc_min_p=1e-5):
    vm = pd.DataFrame({"split": ["train", "val", "test"], "rmse": [0.5, 0.6, 0.62], "mae": [0.4] * 3,
                       "silhouette_cohort": [0.5, 0.45, 0.4]})
    checks = pd.DataFrame({"model": ["main"] * 2, "check": ["generated_in_target_tissue", "shifted_in_target_tissue"],
                           "value": [1.0, 0.25], "n": [40, 30]})
    fid = pd.DataFrame({"tissue": ["L"] * 3, "variant": ["gan", "rna_gan", "control"],
                        "fid": [fid_gan, fid_rna, fid_control]})
    ext = pd.DataFrame([{"accuracy": acc, "f1": acc, "auc": 0.9, "chance": 0.5, "accuracy_p": acc_p,
                         "auc_p": auc_p, "auc_min_p": auc_min_p, "n_groups": 20}])
    sim = pd.DataFrame({"init": ["ssl"] * len(ssl) + ["scratch"] * len(scratch),
                        "fold": list(range(len(ssl))) + list(range(len(scratch))),
                        "accuracy": [*ssl, *scratch], "f1": [*ssl, *scratch]})
    return vm, vm, checks, fid, ext, sim


def test_reproduction_table_flags_directions():
    t = reproduction.build(*_frames(), data="toy", extractor_note="features: x")
    assert list(t.columns) == reproduction.COLUMNS
    row = lambda s: t[t["claim"].str.startswith(s)].iloc[0]  # noqa: E731
    assert row("FID RNA-GAN < GAN")["direction_holds"] is True
    assert row("noise-only control")["direction_holds"] is True
    assert row("centroid difference shifts")["direction_holds"] is False  # 25% < 50%
    assert row("centroid + random draw")["direction_holds"] is True  # 40 of 40, binomial p ~ 1e-12
    assert row("SimCLR on synthetic")["direction_holds"] is True
    assert (t["data"] == "toy").all()
    t2 = reproduction.build(*_frames(fid_rna=95.0, acc=0.4), data="gtex", extractor_note="")
    assert t2[t2["claim"].str.startswith("FID RNA-GAN < GAN")].iloc[0]["direction_holds"] is False
    assert t2[t2["claim"].str.contains("accuracy")].iloc[0]["direction_holds"] is False


def test_external_classifier_rows_are_judged_with_the_donor_as_the_unit():
    """Tiles of one donor are not independent: accuracy and AUC hold only when significant over
    donors, and are n/a when even perfect separation cannot reach 0.05 with so few donors (3 vs 3
    in the toy's held-out evaluation: smallest Mann-Whitney p 1/20) or the table has no test."""
    def rows(**kw):
        t = reproduction.build(*_frames(**kw), data="toy", extractor_note="")
        acc = t[t["claim"].str.contains("classifies external-cohort RNA-GAN tiles: accuracy")].iloc[0]
        return acc, t.loc[acc.name + 2]  # accuracy, F1, AUC

    acc, auc = rows()
    assert acc["direction_holds"] is True and auc["direction_holds"] is True and auc["claim"] == "... AUC"
    assert "20 donors, p = 0.002" in auc["note"] and "Mann-Whitney" in auc["note"]
    acc, auc = rows(acc_p=0.3, auc_p=0.2)
    assert acc["direction_holds"] is False and "not significantly over donors" in acc["note"]
    assert auc["direction_holds"] is False
    _, auc = rows(auc_p=0.05, auc_min_p=0.05)
    assert auc["direction_holds"] is True  # p <= 0.05 at the extreme of 3 vs 3
    _, auc = rows(auc_p=0.1, auc_min_p=0.1)
    assert auc["direction_holds"] == "n/a" and "smallest p 0.1" in auc["note"]
    acc, auc = rows(acc_p=float("nan"), auc_p=float("nan"))
    assert acc["direction_holds"] == "n/a" and auc["direction_holds"] == "n/a"


def test_grouped_tests_use_the_donor_as_the_unit():
    from crossmodal.models.classifier import grouped_tests

    rng = np.random.default_rng(0)
    donors = np.repeat([f"d{i}" for i in range(8)], 50)
    y = np.repeat([0, 1] * 4, 50)
    # every tile of a donor gets that donor's score; class 1 donors score higher
    s = np.repeat([0.2, 0.6, 0.3, 0.7, 0.25, 0.8, 0.35, 0.65], 50) + rng.normal(0, 0.01, 400)
    proba = np.c_[1 - s, s]
    r = grouped_tests(y, proba, donors, 0.5)
    assert r["n_groups"] == 8 and r["auc_min_p"] == pytest.approx(1 / 70)
    assert r["auc_p"] == pytest.approx(1 / 70)  # perfect separation of 4 vs 4 donors
    # 400 tiles, but only 8 independent donors: one donor-level flip makes it non-significant
    s2 = np.repeat([0.2, 0.6, 0.3, 0.7, 0.25, 0.8, 0.75, 0.1], 50)
    r2 = grouped_tests(y, np.c_[1 - s2, s2], donors, 0.5)
    assert r2["auc_p"] > 0.05
    from scipy.stats import mannwhitneyu

    assert mannwhitneyu(s2[y == 1], s2[y == 0], alternative="greater").pvalue < 1e-4  # what tiles would claim
    with pytest.raises(ValueError, match="d0 hold tiles of several classes"):
        grouped_tests(np.r_[1, y[1:]], proba, donors, 0.5)



def test_reproduction_table_fold_count_sd_thresholds_and_sections():
    vm, mm, checks, fid, ext, _ = _frames()
    sim = pd.DataFrame({"init": ["ssl"] * 3 + ["scratch"] * 3, "fold": [0, 1, 2] * 2,
                        "accuracy": [0.8, 0.9, 0.85, 0.6, 0.7, 0.65], "f1": [0.7, 0.8, 0.75, 0.5, 0.6, 0.55]})
    mm = mm.assign(silhouette_cohort=[0.5, 0.45, 0.25])  # above 0 but under issue 5's 0.3
    t = reproduction.build(vm, mm, checks, fid, ext, sim, data="toy", extractor_note="",
                           epochs={"L": {"gan": 91, "rna_gan": 11, "control": 91}})
    row = lambda s: t[t["claim"].str.startswith(s)].iloc[0]  # noqa: E731
    acc = row("SimCLR on synthetic")
    assert "3-fold CV" in acc["claim"] and "5-fold" not in acc["claim"]
    assert t[t["claim"] == "... F1"].iloc[-1]["this_run"] == "75% ± 5% vs 55% ± 5%"  # the SimCLR F1 has its sd
    assert row("β-VAE latents separate the tissues (multi-tissue")["direction_holds"] is False
    assert row("β-VAE latents separate the tissues (two tissues")["direction_holds"] is True  # 0.4 > 0.3
    assert row("FID RNA-GAN < GAN")["paper_section"] == "Discussion"
    ep = row("RNA-GAN needs fewer training epochs")
    assert ep["direction_holds"] == "n/a" and "not measured: configured 11 vs 91" in ep["this_run"]
    mae = row("β-VAE test mean absolute error percentage")
    assert mae["paper_value"] == "39%" and mae["direction_holds"] == "n/a" and "not computed" in mae["this_run"]
    t2 = reproduction.build(vm, mm, checks, fid, ext, sim, data="toy", extractor_note="")
    assert not t2["claim"].str.contains("fewer training epochs").any()  # no epochs given: no row


def _curve(tissue, variant, kids):
    return pd.DataFrame({"tissue": tissue, "variant": variant, "epoch": np.arange(1, len(kids) + 1), "kid": kids})


def test_epochs_to_quality_reads_the_first_epoch_at_the_level_both_generators_end_at():
    from crossmodal.rna_gan.convergence import epochs_to_quality

    fast = [0.9, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]  # RNA-GAN: good by epoch 4
    slow = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.12, 0.12]  # GAN: ends slightly worse
    never = [0.9] * 10  # the control
    curves = pd.concat([_curve("L", "gan", slow), _curve("L", "rna_gan", fast), _curve("L", "control", never)])
    r = epochs_to_quality(curves, window=1).set_index("variant")
    assert r.loc["gan", "threshold"] == pytest.approx(0.12)  # the higher final KID: the GAN's
    assert r.loc["rna_gan", "epoch_reached"] == 4 and r.loc["gan", "epoch_reached"] == 9
    assert np.isnan(r.loc["control", "epoch_reached"]) and r.loc["control", "epochs_trained"] == 10
    # a one-epoch dip does not count once the curve is smoothed over 3 epochs
    dip = [0.9, 0.05, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1, 0.1, 0.1]
    r3 = epochs_to_quality(pd.concat([_curve("L", "gan", slow), _curve("L", "rna_gan", dip)]), window=3)
    assert r3.set_index("variant").loc["rna_gan", "epoch_reached"] > 2
    with pytest.raises(ValueError, match="no KID curve of rna_gan"):
        epochs_to_quality(_curve("L", "gan", slow), window=1)


def test_reproduction_row_for_fewer_epochs_is_measured_from_the_convergence_table():
    from crossmodal.rna_gan.convergence import epochs_to_quality

    fast, slow = [0.9, 0.3, 0.1, 0.1, 0.1], [0.9, 0.8, 0.5, 0.2, 0.1]
    conv = epochs_to_quality(pd.concat([_curve("L", "gan", slow), _curve("L", "rna_gan", fast)]), window=1)
    conv["smooth_epochs"] = 1
    t = reproduction.build(*_frames(), data="toy", extractor_note="features: x", convergence=conv,
                           epochs={"L": {"gan": 5, "rna_gan": 5, "control": 5}})
    ep = t[t["claim"] == "RNA-GAN needs fewer training epochs than the GAN (L)"]
    assert len(ep) == 1 and ep.iloc[0]["direction_holds"] is True, ep.to_dict("records")
    assert ep.iloc[0]["this_run"].startswith("epoch 3 vs 5 (trained 5 / 5)")
    conv2 = epochs_to_quality(pd.concat([_curve("L", "gan", fast), _curve("L", "rna_gan", slow)]), window=1)
    t2 = reproduction.build(*_frames(), data="toy", extractor_note="", convergence=conv2)
    assert t2[t2["claim"].str.contains("fewer training epochs")].iloc[0]["direction_holds"] is False


def test_per_epoch_tiles_are_written_replayably_and_gathered_with_their_epoch(tmp_path):
    """The training step's hook writes each epoch's fixed-input tiles to its own LMDB (a replayed
    epoch replaces its file with the same tiles); gather makes one LMDB whose tiles keep their
    epoch, and names a missing epoch."""
    from crossmodal.data import TileDataset, close_all
    from crossmodal.models import gan
    from crossmodal.rna_gan import convergence

    lat = pd.DataFrame(np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32), index=["a", "b", "c"])
    pts = pd.DataFrame({"patient": ["pa", "pb", "pc"]}, index=["a", "b", "c"])
    plan = convergence.epoch_plan(pts, lat, "L", "rna_gan", 7)
    assert [(s, n) for s, _, _, n in plan] == [("a", 3), ("b", 2), ("c", 2)]
    assert np.array_equal(plan[1][2], lat.loc["b"].to_numpy())
    assert all(z is None for _, _, z, _ in convergence.epoch_plan(pts, lat, "L", "gan", 7))
    m = gan.WGANGP("rna_gan", 8, 16, ngf=4, ndf=4, seed=0)
    hook = convergence.EpochTiles(tmp_path / "ck" / "convergence", plan, 5, {"tissue": "L"})
    hook(1, m)
    first = TileDataset(str(hook.path(1)))
    e1 = np.stack([first[i] for i in range(len(first))])
    first.close(); close_all()
    with torch.no_grad():
        for p in m.G.parameters():
            p.add_(0.5)
    hook(2, m)
    hook(1, m)  # replayed after a resume: same inputs, so the file now holds the new weights' tiles
    n = convergence.gather(hook.folder, 2, tmp_path / "conv.lmdb", {"tissue": "L"})
    ds = TileDataset(str(tmp_path / "conv.lmdb"))
    epochs = [ds.meta(i)["epoch"] for i in range(len(ds))]
    samples = [ds.meta(i)["sample"] for i in range(len(ds))]
    tiles = np.stack([ds[i] for i in range(len(ds))])
    ds.close(); close_all()
    assert n == 14 and epochs == [1] * 7 + [2] * 7 and samples[:3] == ["a"] * 3
    assert np.array_equal(tiles[:7], tiles[7:])  # same inputs, same weights
    assert not np.array_equal(tiles[:7], e1)  # the replay replaced epoch 1's file
    # JPEG per-epoch tiles are copied as stored (no second compression), renumbered
    jh = convergence.EpochTiles(tmp_path / "ckj" / "convergence", plan, 5, {"encoding": "jpeg", "jpeg_quality": 95})
    jh(1, m)
    convergence.gather(jh.folder, 1, tmp_path / "convj.lmdb", {"encoding": "jpeg", "jpeg_quality": 95})
    a, b = TileDataset(str(jh.path(1))), TileDataset(str(tmp_path / "convj.lmdb"))
    assert [b.encoded(i)[1] for i in range(7)] == [a.encoded(i)[1] for i in range(7)]
    assert [b.meta(i)["index"] for i in range(7)] == list(range(7)) and b.encoded(0)[2] == "jpeg"
    a.close(); b.close(); close_all()
    with pytest.raises(FileNotFoundError, match="epoch_0003.lmdb"):
        convergence.gather(hook.folder, 3, tmp_path / "conv3.lmdb", {})
    with pytest.raises(ValueError, match="epoch_0001.lmdb holds 7 tiles, the config asks for 8"):
        convergence.gather(hook.folder, 2, tmp_path / "conv3.lmdb", {}, per_epoch=8)
    assert not (tmp_path / "conv3.lmdb").exists()


def test_reproduction_table_reports_both_classifier_evaluations():
    vm, mm, checks, fid, _, sim = _frames()
    ext = pd.DataFrame([{"evaluation": "external", "accuracy": 0.3, "f1": 0.3, "auc": 0.2, "chance": 0.5},
                        {"evaluation": "heldout_donors", "accuracy": 0.8, "f1": 0.8, "auc": 0.9, "chance": 0.5,
                         "accuracy_p": 0.01, "n_groups": 12}])
    t = reproduction.build(vm, mm, checks, fid, ext, sim, data="toy", extractor_note="")
    acc = t[t["claim"].str.endswith(": accuracy")].set_index("claim")["direction_holds"]
    assert acc["real-trained ResNet-18 classifies external-cohort RNA-GAN tiles: accuracy"] is False
    assert acc["real-trained ResNet-18 classifies RNA-GAN tiles of held-out donors: accuracy"] is True
    assert t["note"].str.contains("cancer-like").any()  # the toy's external cohort is said to be a stand-in


def test_reproduction_notes_explain_the_control_and_one_class_calls():
    """The control row says why the narrow-noise control is not starved (with this run's FID of the
    GAN and the per-donor diversity); a classifier row whose tiles all got one call says that its
    accuracy is chance by construction."""
    vm, mm, checks, fid, _, sim = _frames(fid_rna=44.0, fid_gan=27.0, fid_control=31.0)
    fid = fid.assign(within_patient_sd=[25.0, 1.5, 27.0], real_within_patient_sd=30.0)
    ext = pd.DataFrame([{"evaluation": "heldout_donors", "accuracy": 0.5, "f1": 0.33, "auc": 0.13, "chance": 0.5,
                         "majority_call": "L", "majority_share": 1.0}])
    t = reproduction.build(vm, mm, checks, fid, ext, sim, data="toy", extractor_note="")
    note = t[t["claim"].str.startswith("noise-only control")].iloc[0]["note"]
    assert "invariant to the scale of its input" in note and "31 vs 27" in note
    assert "near copies" in note and "RNA-GAN 1.5, control 27, real 30" in note
    acc = t[t["claim"].str.endswith("held-out donors: accuracy")].iloc[0]
    assert acc["direction_holds"] is False and "calls every one of these tiles L" in acc["note"]
    fid2 = fid.assign(within_patient_sd=[25.0, 20.0, 27.0])  # a diverse RNA-GAN is not called copies
    t2 = reproduction.build(vm, mm, checks, fid2, ext.assign(majority_share=0.7), sim, data="toy", extractor_note="")
    assert not t2["note"].str.contains("near copies|calls every one").any()


def test_narrow_noise_control_is_a_gan_up_to_the_input_scale():
    """The DCGAN generator (transposed convolution without bias, then BatchNorm - TorchGAN's
    DCGANGenerator, which the paper used) normalises away the scale of its input: the control's
    noise shrunk to [-0.3, 0.3] yields the same tiles as unit noise, so the control is a GAN."""
    from crossmodal.models.gan import Generator

    torch.manual_seed(0)
    g = Generator(16, 16, ngf=4).train()
    z, z2 = torch.randn(32, 16), torch.randn(32, 16)
    with torch.no_grad():
        a, narrow, other = g(z), g(0.1 * z), g(z2)
    assert (a - narrow).abs().mean() < 0.05 * (a - other).abs().mean()  # measured: 0.0003 vs 0.04
    assert torch.allclose(narrow.std(0).mean(), a.std(0).mean(), rtol=0.05)  # as diverse as unit noise


def test_within_patient_sd_measures_tile_diversity_per_patient():
    from crossmodal.rna_gan.evaluate import within_patient_sd

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    copies = np.repeat(tile, 4, 0)
    varied = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert within_patient_sd(copies, np.array(["a"] * 4)) == 0.0
    assert within_patient_sd(varied, np.array(["a"] * 4)) > 50  # uniform grey levels: sd ~74
    # two patients, each a set of copies: tiles differ between patients but not within them
    both = np.concatenate([copies, np.repeat(varied[:1], 4, 0)])
    assert within_patient_sd(both, np.array(["a"] * 4 + ["b"] * 4)) == 0.0
    assert np.isnan(within_patient_sd(varied[:1], np.array(["a"])))  # one tile: no spread to measure


def _tile_lmdbs(tmp_path, n_per: dict, size=8):
    """One slide LMDB per sample (header names the sample), written with the project's writer;
    every tile's red channel encodes (sample number, tile number)."""
    from crossmodal.data import TileWriter

    paths = []
    for k, (s, n) in enumerate(n_per.items()):
        p = tmp_path / f"{s}.lmdb"
        with TileWriter(p, {"sample": s, "mpp": 0.5, "encoding": "png"}) as w:
            for j in range(n):
                t = np.zeros((size, size, 3), np.uint8); t[..., 0] = 10 * k; t[..., 1] = j
                w.add(t, {"sample": s})
        paths.append(str(p))
    return paths


def _generated_lmdb(tmp_path, n_per: dict, size=8):
    """One generated LMDB holding the tiles of many patients (sample only in the tile metadata)."""
    from crossmodal.data import TileWriter

    p = tmp_path / "rna_gan.lmdb"
    with TileWriter(p, {"mpp": None, "encoding": "png", "tile_size": size}) as w:
        for s, n in n_per.items():
            for _ in range(n):
                w.add(np.zeros((size, size, 3), np.uint8), {"sample": s})
    return str(p)


def test_spread_pick_is_seeded_balanced_and_gives_unused_quota_away():
    from crossmodal.rna_gan.evaluate import spread_pick

    groups = np.array(["a"] * 50 + ["b"] * 50 + ["c"] * 3, dtype=object)
    p = spread_pick(groups, 21, seed=0)
    assert len(p) == 21 and len(set(p)) == 21 and np.array_equal(p, np.sort(p))
    counts = pd.Series(groups[p]).value_counts()
    assert counts["c"] == 3 and counts["a"] == counts["b"] == 9  # c's unused share goes to a and b
    assert np.array_equal(p, spread_pick(groups, 21, seed=0))
    assert not np.array_equal(p, spread_pick(groups, 21, seed=1))
    assert np.array_equal(spread_pick(groups, 500, seed=0), np.arange(len(groups)))
    assert pd.Series(groups[spread_pick(groups, 2, seed=0)]).nunique() == 2  # fewer than groups: distinct ones


def test_load_tiles_subset_spans_patients_and_decodes_only_what_it_keeps(tmp_path, monkeypatch):
    """The FID reference / SimCLR task tiles: at most max_total, spread over the patients (not
    the first LMDBs), seeded, and no tile outside the subset is decoded."""
    import crossmodal.data as data
    from crossmodal.rna_gan.evaluate import load_tiles

    paths = _tile_lmdbs(tmp_path, {"p1": 40, "p2": 40, "p3": 40, "p4": 40})
    decoded = []
    real_decode = data.decode_tile
    monkeypatch.setattr(data, "decode_tile", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    tiles, samples = load_tiles(paths, seed=3, max_total=12)
    assert len(tiles) == 12 and len(decoded) == 12
    assert pd.Series(samples).value_counts().to_dict() == {"p1": 3, "p2": 3, "p3": 3, "p4": 3}
    # the tile pixels belong to the sample reported for them, and the draw is seeded
    assert all(int(t[0, 0, 0]) == 10 * (int(s[1]) - 1) for t, s in zip(tiles, samples))
    again, _ = load_tiles(paths, seed=3, max_total=12)
    other, _ = load_tiles(paths, seed=4, max_total=12)
    assert np.array_equal(tiles, again) and not np.array_equal(tiles, other)
    # a generated LMDB (patients only in the tile metadata) is spread over its patients too
    decoded.clear()
    _, gs = load_tiles(_generated_lmdb(tmp_path, {"a": 30, "b": 30, "c": 30}), seed=0, max_total=6)
    assert len(decoded) == 6 and sorted(gs) == ["a", "a", "b", "b", "c", "c"]


def test_simclr_task_tiles_are_spread_over_each_cohorts_patients(tmp_path):
    from crossmodal.rna_gan.simclr import _task_tiles

    paths = _tile_lmdbs(tmp_path, {"g1": 20, "g2": 20, "l1": 20, "l2": 20, "l3": 20})
    sc = {"g1": "GBM", "g2": "GBM", "l1": "LUAD", "l2": "LUAD", "l3": "LUAD"}
    x, y, g = _task_tiles(paths, sc, ["GBM", "LUAD"], 12, 8, seed=0)
    assert len(x) == 12 and (y == 0).sum() == 6 and (y == 1).sum() == 6
    assert pd.Series(g).value_counts().to_dict() == {"g1": 3, "g2": 3, "l1": 2, "l2": 2, "l3": 2}


def test_generated_tiles_figure_shows_fig5_at_one_epoch_and_each_generator_at_its_own_last(tmp_path):
    from crossmodal.rna_gan.evaluate import plot_generated_tiles, tile_rows

    def snaps(epochs, tag):  # tile value = tag + epoch, so the shown epoch can be read back
        return np.stack([np.full((8, 4, 4, 3), tag + e, np.uint8) for e in range(1, epochs + 1)])

    trained = {("L", "gan"): 30, ("L", "rna_gan"): 11, ("L", "control"): 40}
    s = {k: snaps(n, 100 * i) for i, (k, n) in enumerate(trained.items())}
    rows = tile_rows(s, ["L"], ["gan", "rna_gan", "control"], {"L": 11})
    got = {(r["panel"], r["variant"]): (r["epoch"], int(r["tiles"][0, 0, 0, 0])) for r in rows}
    assert got[("same epoch (Fig. 5)", "gan")] == (11, 11)
    assert got[("same epoch (Fig. 5)", "rna_gan")] == (11, 111)
    assert ("same epoch (Fig. 5)", "control") not in got
    assert got[("own final epoch (Fig. 4C)", "control")] == (40, 240)  # not RNA-GAN's 11
    assert got[("own final epoch", "gan")] == (30, 30)
    with pytest.raises(ValueError, match="L gan: no per-epoch snapshots"):
        tile_rows({**s, ("L", "gan"): s[("L", "gan")][:0]}, ["L"], ["gan", "rna_gan", "control"], {"L": 11})
    paths = []
    for k in trained:
        paths.append(str(tmp_path / f"{k[1]}.npz"))
        np.savez_compressed(paths[-1], snapshots=s[k])
    plot_generated_tiles({"snapshots": paths}, {"figure": str(tmp_path / "fig5.png")},
                         {"tissues": ["L"], "variants": ["gan", "rna_gan", "control"], "epochs": {"L": 11}})
    assert (tmp_path / "fig5.png").stat().st_size > 0 and (tmp_path / "fig5.pdf").exists()


def test_fig4d_external_tile_grid_per_tissue(tmp_path):
    from crossmodal.data import TileDataset, TileWriter
    from crossmodal.rna_gan.evaluate import external_tile_grid, plot_external_tiles

    ext = tmp_path / "external.lmdb"
    with TileWriter(ext, {"mpp": None, "encoding": "png", "tile_size": 8, "variant": "rna_gan"}) as w:
        for t, samples in (("Lung", ["l1", "l2", "l3"]), ("Brain", ["b1", "b2"])):
            for s in samples:
                for _ in range(10):
                    w.add(np.full((8, 8, 3), 50 if t == "Lung" else 200, np.uint8), {"sample": s, "tissue": t})
    grids = external_tile_grid(TileDataset(ext), ["Lung", "Brain"], 6, seed=0)
    lung, ls = grids["Lung"]
    assert len(lung) == 6 and (lung == 50).all() and sorted(ls) == ["l1", "l1", "l2", "l2", "l3", "l3"]
    assert (grids["Brain"][0] == 200).all() and sorted(set(grids["Brain"][1])) == ["b1", "b2"]
    with pytest.raises(ValueError, match="no external tile of tissue Kidney"):
        external_tile_grid(TileDataset(ext), ["Kidney"], 6, seed=0)
    out = tmp_path / "fig4d_external_tiles.png"
    plot_external_tiles({"tiles": str(ext)}, {"figure": str(out)},
                        {"tissues": ["Lung", "Brain"], "cohorts": {"GEO-Lung": "Lung", "GEO-Brain": "Brain"}, "seed": 0})
    assert out.stat().st_size > 0 and out.with_suffix(".pdf").exists()


def test_tiles_are_generated_for_the_fid_reference_patients():
    """generate_rna_gan_tiles generates for the patients whose real tiles are the FID reference
    (config features.real_splits), so both sides of the FID come from the same patients."""
    from crossmodal.rna_gan.generators import _patients_to_generate

    splits = pd.DataFrame({"sample": list("abcde"), "patient": list("abcde"), "cohort": ["L"] * 4 + ["B"],
                           "split": ["train", "val", "test", "test", "test"]})
    lat = pd.DataFrame(np.zeros((5, 2)), index=list("abcde"))
    assert list(_patients_to_generate(splits, lat, "L", ["test"]).index) == ["c", "d"]
    assert list(_patients_to_generate(splits, lat, "L", ["train", "val", "test"]).index) == list("abcd")
    with pytest.raises(ValueError, match="no B samples with expression in split"):
        _patients_to_generate(splits, lat, "B", ["train"])


def test_targets_and_missing_tissue_error():
    samples = pd.DataFrame({"cohort": ["A", "A", "B"], "dataset": ["gtex"] * 3, "slide": ["a.svs", "", "b.svs"]},
                           index=["s1", "s2", "s3"])
    cfg = {"tiling": {"default_preset": "tile256"}}
    assert targets.tissue_lmdbs(cfg, samples, "A") == ["results/tiles/tile256/s1.lmdb"]
    with pytest.raises(ValueError, match="no sample with a slide in cohort 'C'"):
        targets.tissue_lmdbs(cfg, samples, "C")
    assert targets.tissue_dataset(samples, "B") == "gtex"


def test_external_cohorts_pair_with_tissues():
    cfg = {"rna_gan": {"enabled": True, "tissues": ["L", "B"],
                       "external": {"dataset": "external", "cohorts": ["GEO-L", "GEO-B"]}}}
    assert targets.external_cohorts(cfg) == {"GEO-L": "L", "GEO-B": "B"}
    samples = pd.DataFrame({"cohort": ["GEO-L", "GEO-B", "L"], "dataset": ["external", "external", "gtex"]},
                           index=["g1", "g2", "s1"])
    assert targets.external_sample_cohort(cfg, samples) == {"g1": "GEO-L", "g2": "GEO-B"}
    with pytest.raises(ValueError, match="GEO-B have no sample of dataset 'external'"):
        targets.external_sample_cohort(cfg, samples.iloc[[0, 2]])
    cfg["rna_gan"]["external"]["cohorts"] = ["GEO-L"]
    with pytest.raises(ValueError, match="one external cohort per tissue"):
        targets.external_cohorts(cfg)


def _stub_real_cohort(wd):
    """A sample sheet shaped like the real RNA-GAN cohort (GTEx 5 tissues, GSE120795, TCGA
    GBM/LUAD) whose files are empty placeholders: enough for Snakemake to plan the DAG."""
    import shutil

    from conftest import REPO

    shutil.copytree(REPO / "config", wd / "config")
    (wd / "data").mkdir()
    rows = ["patient\tsample\tcohort\tdataset\tslide\texpression\texpression_format"]
    for f in ("gtex.gct", "gse.txt"):
        (wd / "data" / f).touch()
    for t in ("Lung", "Brain_Cortex", "Pancreas", "Stomach", "Liver"):
        for i in range(5):  # as in GTEx, each donor gave every tissue (one donor, several cohorts)
            s = f"GTEX-D{i}-{t[:3].upper()}1-SM-X{i}"
            slide = f"data/{s}.svs" if t in ("Lung", "Brain_Cortex") else ""
            if slide:
                (wd / slide).touch()
            rows.append(f"GTEX-D{i}\t{s}\tGTEx-{t}\tgtex\t{slide}\tdata/gtex.gct\tgct")
    for t in ("Lung", "Brain_Cortex"):
        rows += [f"GSM{t[:3]}{i}\tGSM{t[:3]}{i}\tGEO-GSE120795-{t}\texternal\t\tdata/gse.txt\tgeo_series_matrix"
                 for i in range(3)]
    for c in ("GBM", "LUAD"):
        for i in range(3):
            s = f"TCGA-{c}-000{i}-01A"
            (wd / "data" / f"{s}.svs").touch()
            (wd / "data" / f"{s}.tsv").touch()
            rows.append(f"TCGA-{c}-000{i}\t{s}\tTCGA-{c}\ttcga\tdata/{s}.svs\tdata/{s}.tsv\tstar_counts")
    (wd / "config" / "samples_rna_gan.tsv").write_text("\n".join(rows) + "\n")


def test_paper_config_plans_the_real_gtex_run(tmp_path):
    """config/rna_gan.yaml (merged into config/config.yaml by --configfile) plans the real-data
    chain with the paper's sizes, not the toy overrides of config/config.yaml."""
    from conftest import REPO, run_snakemake

    _stub_real_cohort(tmp_path)
    p = run_snakemake(tmp_path, "-n", "-p", "rna_gan_all", configfile=REPO / "config" / "rna_gan.yaml")
    out = p.stdout + p.stderr
    assert "train_rna_gan_generator" in out and "cross_validate_rna_gan_simclr" in out
    assert "results/rna_gan/vae/multi_tissue/model.pt" in out
    assert "results/tiles/tile256/GTEX-D0-LUN1-SM-X0.lmdb" in out
    assert "make_toy_slide" not in out  # real slides, no toy cohort
    # the merged config carries the paper's values (toy ones would leak through a merge)
    import yaml
    from snakemake.utils import update_config

    from crossmodal.config import SCHEMA_DIR, validate

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config" / "rna_gan.yaml").read_text()))
    validate(cfg, SCHEMA_DIR / "config.schema.yaml")
    rg = cfg["rna_gan"]
    assert (rg["vae"]["hidden"], rg["vae"]["latent"], rg["vae"]["lr"], rg["vae"]["batch_size"]) == ([6000, 4096], 2048, 5e-5, 128)
    assert rg["vae"]["models"]["multi_tissue"]["datasets"] == ["gtex"]
    assert (rg["gan"]["image_size"], rg["gan"]["noise_dim"], rg["gan"]["epochs"]["rna_gan"]) == (256, 2048, 11)
    assert rg["gan"]["tissue_epochs"]["GTEx-Brain_Cortex"] == {"gan": 39, "rna_gan": 24, "control": 39}
    assert rg["external"]["cohorts"] == ["GEO-GSE120795-Lung", "GEO-GSE120795-Brain_Cortex"]
    assert (rg["simclr"]["arch"], rg["simclr"]["n_tiles"], rg["features"]["extractor"]) == ("resnet50", 10000, "inception-fid")
    assert rg["features"]["real_splits"] == ["test"]
    assert (rg["classifier"]["lr"], rg["classifier"]["max_tiles_per_slide"], rg["simclr"]["folds"]) == (3e-5, 600, 5)
    assert cfg["expression"]["protein_coding"] == "resources/genes/protein_coding.tsv"


# ---------------------------------------------------------------- toy checks (session toy run)
def test_toy_outputs_exist(toy_run):
    for t in targets.targets(_toy_config()):
        assert (toy_run / t).exists(), t
        if t.endswith(".png"):
            assert (toy_run / t).with_suffix(".pdf").exists(), t


def test_toy_vae_reconstructs_and_generates_in_the_chosen_tissue(toy_run):
    """Test-split reconstruction errors are written, and decoded centroid + prior draws land
    in the chosen tissue (the Figure 2A operation)."""
    for model in ("main", "multi_tissue"):
        m = pd.read_csv(toy_run / R / f"vae/{model}/test_metrics.tsv", sep="\t").set_index("split")
        assert m.loc["test", "rmse"] > 0 and m.loc["test", "mae"] > 0
        assert m.loc["test", "n"] >= 4  # 3 test donors per toy tissue: the silhouette is defined
    checks = pd.read_csv(toy_run / R / "vae/latent_checks.tsv", sep="\t")
    checks = checks[checks["space"] == "expression"].set_index(["model", "check"])["value"]
    assert checks[("main", "generated_in_target_tissue")] > 0.8  # by the nearest real profiles, as the UMAP shows


def test_toy_vae_latents_separate_tissues_on_the_test_split(toy_run):
    """Issue 5, toy check 1: on held-out (test) donors the β-VAE latent means separate the two
    toy tissues with silhouette > 0.3 (the GTEx GCT holds TPM, as the real one does, so the
    planted library size does not swamp the tissue axis)."""
    m = pd.read_csv(toy_run / R / "vae/main/test_metrics.tsv", sep="\t").set_index("split")
    assert m.loc["test", "silhouette_cohort"] > 0.3, m.loc["test"].to_dict()


RNA_GAN_VS_CONTROL = (
    "not reproducible by construction with the paper's generator, measured 2026-12-02 on the toy config, "
    "seed 0 (FID on cohort-ssl features, tiles for the same 15 donors per tissue as the real reference, "
    "lung / brain): RNA-GAN 43.0 / 44.2 vs control 25.3 / 31.3 vs GAN 29.2 / 27.4. (1) The control is a "
    "GAN: the generator's first transposed convolution has no bias and feeds a BatchNorm (as TorchGAN's "
    "DCGANGenerator, the authors' code), so it is invariant to the scale of its input "
    "(test_narrow_noise_control_is_a_gan_up_to_the_input_scale); the paper's Fig. 4C cannot come from the "
    "narrow noise. (2) RNA-GAN draws ~one tile per donor: pixel sd between one donor's tiles 1.8 / 5.7 "
    "vs control 27.9 / 27.2 (real 29.4 / 29.8; fid.tsv within_patient_sd). Its input is the posterior "
    "mean (as in the authors' code), all 16 toy latent dims are active (sd 0.2-1.25 between donors of a "
    "tissue) and the noise has sd 0.1, ~1-4% of the input variance. Tried (seed 0, lung / brain): 112 "
    "extra inactive (zero) latent dims, as a 2048-d latent would have, 39.8 / 39.7 (48: 42.2 / 38.8); "
    "noise sd 0.173 (that of the authors' code's U(-0.3, 0.3)) 43.6 / 45.5; a minibatch-stddev critic 45.6 / 35.6 (batches mix "
    "donors, so per-donor collapse stays invisible); 50 epochs 37.0 / 35.6; batch 8 (authors' code) "
    "36.9 / 39.5 while the control improves too (23.6 / 29.8). With the β-VAE's reconstruction error "
    "averaged over genes (the paper's reading of β, 2026-12-06): RNA-GAN 38.1 / 39.0, control and GAN unchanged. "
    "With the paper's 2048-d VAE latent and GAN input (toy: 16; 2026-12-06: the noise, on all 2048 dimensions, has "
    "half the variance of the donors' latent means, 20 vs 39): RNA-GAN 39.2 / 51.8 vs control 27.3 / 29.5 vs GAN 30.9 / 32.4, within-donor pixel sd 1.07 / "
    "1.04 - the generator learns to ignore the noise however large it is next to the condition. With MSGAN's "
    "mode-seeking term on every variant (rna_gan.gan.mode_seeking, beyond the paper; 2026-12-06, training seeds "
    "0 / 1 / 2, lung / brain): without it RNA-GAN 38.1 / 39.0, 38.8 / 51.0, 37.7 / 40.6 vs control 25.3 / 31.3, "
    "30.2 / 30.4, 26.6 / 28.5; with λ 1 the per-donor collapse is gone (within-donor pixel sd 22-24, real 29) and "
    "RNA-GAN 27.6 / 29.5, 28.4 / 32.3, 28.3 / 29.7 vs control 25.5 / 34.8, 28.4 / 32.1, 24.0 / 28.0 - level, "
    "RNA-GAN lower in 3 of 6, a coin flip with 15 donors per tissue")


@pytest.mark.xfail(reason=RNA_GAN_VS_CONTROL, strict=False)
def test_toy_rna_gan_beats_the_noise_only_control(toy_run):
    """Issue 5, toy check 2: RNA-GAN's FID is below the noise-only control's, in every tissue."""
    f = pd.read_csv(toy_run / R / "fid.tsv", sep="\t").pivot(index="tissue", columns="variant", values="fid")
    assert (f["rna_gan"] < f["control"]).all(), f


def test_toy_fid_table_reports_per_donor_tile_diversity(toy_run):
    """fid.tsv says how much one patient's tiles differ (the diagnostic behind the check above)
    for every tissue x generator, next to the real tiles' spread."""
    f = pd.read_csv(toy_run / R / "fid.tsv", sep="\t")
    assert len(f) == 6 and f["within_patient_sd"].notna().all() and (f["within_patient_sd"] >= 0).all(), f
    assert (f["real_within_patient_sd"] > 10).all(), f  # measured 29.4 / 29.8 grey levels


def test_toy_real_trained_classifier_tells_the_tissues_apart(toy_run):
    """The planted tissue morphology (lung: stroma + alveolar epithelium; brain cortex: dense small
    glial nuclei) is learnable: the real-trained classifier beats chance on the real tiles of the
    test-split donors, which it never saw."""
    e = pd.read_csv(toy_run / R / "external_classifier.tsv", sep="\t").set_index("evaluation")
    assert set(e.index) == {"external", "real_heldout", "heldout_donors"}
    assert (e["train_splits"] == "train,val").all()
    assert e.loc["real_heldout", "accuracy"] > 0.7, e.loc["real_heldout"].to_dict()


CLASSIFIER_AUC_ON_GENERATED = (
    "a coin flip at toy scale, not a property: the real-trained ResNet-18 tells the two tissues' RNA-GAN "
    "generators apart, but the direction follows the numerical path of the GAN training. Same commit "
    "(c7901ec), same seed 0, config and code: AUC 0.786 on the CI machine, 0.230 on another machine of "
    "the same kind (2026-12-07; training there is bit-for-bit repeatable, so the CPU's floating-point "
    "path decides); with the RNA-GAN chain reseeded, seeds 1 / 2 give AUC 1.00 / 0.00 (2026-12-06). "
    "Accuracy is 50% in all of them (every generated tile called lung)")


@pytest.mark.xfail(reason=CLASSIFIER_AUC_ON_GENERATED, strict=False)
def test_toy_classifier_on_generated_tiles_beats_chance(toy_run):
    """Issue 5, toy check 3: the real-trained classifier ranks the RNA-GAN tiles generated from the
    held-out donors' expression (the toy's stand-in for the healthy GSE120795 cohort; the toy's
    external cohort is cancer-like, its row is reported but not the check) by tissue better than
    chance.  Measured 2026-12-02, seed 0: AUC 0.977 (accuracy 67.7%). The AUC is the
    threshold-free part of the check: the same tiles scored by classifiers of seeds 1-4 give AUC
    0.946 / 0.964 / 0.911 / 0.357 (GAN tiles 0.57 / 0.27 / 0.34 / 0.18, control 0.68 / 0.53 / 0.36 /
    0.41). Before 2026-12-02 the classifier's initial weights were unseeded, hence the AUC of 0.135.
    Since 2026-12-06 early stopping holds out whole slides (no slide's tiles on both sides) and the
    β-VAE averages its reconstruction error over genes: seed 0 AUC 0.786 (accuracy 50%, every tile
    called lung); the slide-level split alone, on the earlier tiles, gives AUC 0.814 / 50%.
    With the whole RNA-GAN chain reseeded (GANs, generation, classifier; 2026-12-06) seeds 1 / 2
    give AUC 1.00 / 0.00 at 50%: the classifier tells the two tissues' generators apart completely,
    in a direction the seed sets. On 2026-12-07 the unchanged commit gave AUC 0.230 on another machine:
    the direction also follows the CPU's floating-point path, hence the non-strict xfail."""
    e = pd.read_csv(toy_run / R / "external_classifier.tsv", sep="\t").set_index("evaluation")
    assert e.loc["heldout_donors", "auc"] > 0.75, e.loc["heldout_donors"].to_dict()


CLASSIFIER_ACCURACY_ON_GENERATED = (
    "held on seed 0 (67.7% vs chance 50%, measured 2026-12-02, early stopping on a per-tile split) but "
    "not robustly; with the per-slide early-stopping split (2026-12-06) seed 0 also scores exactly 50% "
    "(every tile called lung, AUC 0.79); with classifier "
    "seeds 1-4 the same held-out RNA-GAN tiles score exactly 50% (GAN tiles 50-54%, control 50%): "
    "the real-trained ResNet-18 gives (nearly) every generated tile one call, lung, while it ranks "
    "them well (AUC 0.91-0.96 in 3 of 4); after 150 WGAN-GP steps at 64 px the generated tiles lack "
    "the sharp nuclei of the real ones; with 4x the GAN epochs (over the "
    "toy budget) the GAN's tiles reach 72%; with the RNA-GAN chain reseeded (seeds 1 / 2, 2026-12-06) 50% at "
    "AUC 1.00 / 0.00, and with the mode-seeking term (rna_gan.gan.mode_seeking 0.5-2, seeds 0-2) 50-51% on the "
    "held-out donors' tiles")


@pytest.mark.xfail(reason=CLASSIFIER_ACCURACY_ON_GENERATED, strict=False)
def test_toy_classifier_accuracy_on_generated_tiles_beats_chance(toy_run):
    """Issue 5, toy check 3 as the paper reports it (accuracy at the 0.5 threshold)."""
    e = pd.read_csv(toy_run / R / "external_classifier.tsv", sep="\t").set_index("evaluation")
    assert e.loc["heldout_donors", "accuracy"] > e.loc["heldout_donors", "chance"] + 0.1, e.loc["heldout_donors"].to_dict()


def test_toy_reproduction_table(toy_run):
    t = pd.read_csv(toy_run / R / "reproduction.tsv", sep="\t")
    assert list(t.columns) == reproduction.COLUMNS
    assert (t["data"] == "toy").all()
    assert t["claim"].str.contains("FID RNA-GAN < GAN").any()
    assert t["claim"].str.contains("SimCLR").any()
    assert t["claim"].str.startswith("generated tiles keep the tissues apart").any()
    sil = pd.read_csv(toy_run / R / "tile_silhouette.tsv", sep="\t")
    assert list(sil["source"]) == ["real", "gan", "rna_gan", "control"]


def test_toy_convergence_scores_every_epoch_and_reads_off_the_epochs(toy_run):
    """The 'fewer epochs' measurement: a KID for every epoch of every generator, falling as the
    GAN and RNA-GAN learn (epoch-1 tiles are far from real ones), and the epoch at which each
    reaches the level both end at - which the reproduction row reports."""
    from crossmodal.rna_gan.convergence import smooth

    c = pd.read_csv(toy_run / R / "convergence.tsv", sep="\t")
    e = pd.read_csv(toy_run / R / "epochs_to_quality.tsv", sep="\t")
    for (t, v), cv in c.groupby(["tissue", "variant"]):
        assert list(cv["epoch"]) == list(range(1, len(cv) + 1)) and len(cv) >= 10, (t, v)
        assert np.isfinite(cv["kid"]).all() and (cv["n_generated"] == cv["n_generated"].iloc[0]).all()
        if v != "control":
            k = smooth(cv["kid"], 3)
            assert k[-1] < k[0], (t, v, k)
    assert len(c.groupby(["tissue", "variant"])) == 6
    pair = e[e["variant"].isin(["gan", "rna_gan"])]
    assert pair["epoch_reached"].notna().all() and (pair["epoch_reached"] <= pair["epochs_trained"]).all(), pair
    t = pd.read_csv(toy_run / R / "reproduction.tsv", sep="\t")
    rows = t[t["claim"].str.startswith("RNA-GAN needs fewer training epochs")]
    assert len(rows) == 2 and rows["this_run"].str.startswith("epoch ").all(), rows["this_run"].tolist()


def test_toy_rna_gan_is_conditioned_on_expression(toy_run, monkeypatch):
    """Two test-split patients' different expression profiles give different generator inputs
    and different tiles from the trained toy RNA-GAN (same noise)."""
    monkeypatch.chdir(toy_run)
    from crossmodal.rna_gan.generators import load_generator, read_latents

    cfg = _toy_config()
    t = cfg["rna_gan"]["tissues"][0]
    lat = read_latents(f"{R}/vae/main/latent/gtex.tsv.gz")
    expr = pd.read_csv("results/expression/gtex/z_vae.tsv.gz", sep="\t", index_col="sample")
    splits = pd.read_csv("results/splits/vae.tsv", sep="\t", dtype=str)
    test = splits[(splits["cohort"] == t) & (splits["split"] == "test")]
    ss = [s for s in test["sample"] if s in lat.index][:2]
    assert len(ss) == 2, f"{t}: need two test-split patients with a latent code, got {ss}"
    assert not np.allclose(expr.loc[ss[0]], expr.loc[ss[1]])
    za, zb = (torch.as_tensor(np.repeat(lat.loc[s].to_numpy(np.float32)[None], 8, 0)) for s in ss)
    assert not torch.allclose(za, zb)
    g = load_generator(f"{R}/gan/{t}/rna_gan/generator.pt", cfg["rna_gan"]["gan"])
    ta, tb = g.generate(8, za, seed=1).astype(float), g.generate(8, zb, seed=1).astype(float)
    assert np.abs(ta - tb).mean() > 1.0  # grey levels; identical inputs would give 0


def _toy_config():
    from conftest import REPO

    from crossmodal.config import load_config

    return load_config(path=REPO / "config" / "config.yaml")


def test_saved_generator_reloads_with_the_width_cap_it_was_trained_with(tmp_path):
    from crossmodal.rna_gan.generators import build_model, load_generator, save_model

    cfg = {"image_size": 64, "ngf": 8, "ndf": 8, "max_channels": 16, "noise_dim": 4, "lr_g": 1e-3, "lr_d": 4e-3,
           "betas": [0.5, 0.999], "gp_lambda": 10.0, "n_critic": 1, "noise_std": 0.1, "noise_clip": 0.3}
    m = build_model("gan", cfg, 4, seed=0)
    assert m.G.widths == [16, 16, 16, 8]
    save_model(m, tmp_path / "g.pt", {})
    back = load_generator(tmp_path / "g.pt", {**cfg, "max_channels": None})  # the checkpoint's cap wins
    assert back.G.widths == [16, 16, 16, 8]
    assert np.array_equal(back.generate(2, seed=3), m.generate(2, seed=3))
    # a checkpoint from before the cap was configurable was built with the hardcoded 512
    wide = {**cfg, "image_size": 16, "ngf": 512, "ndf": 8, "max_channels": 512}
    save_model(build_model("gan", wide, 4, seed=0), tmp_path / "old.pt", {})
    ck = torch.load(tmp_path / "old.pt", weights_only=False)
    del ck["max_channels"]
    torch.save(ck, tmp_path / "old.pt")
    assert load_generator(tmp_path / "old.pt", {**wide, "max_channels": None}).G.widths == [512, 512]


def test_simclr_cv_keeps_one_confusion_matrix_per_fold_and_plots_them(monkeypatch, tmp_path):
    """classifier.cross_validate keeps one confusion matrix per fold (Figure S4 shows the five
    test splits' matrices; they sum to the returned total); the figure has one panel per fold and
    initialisation, each titled with that fold's accuracy and F1."""
    from crossmodal.models import classifier as clf
    from crossmodal.rna_gan import simclr

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = (rng.normal(size=(60, 2, 2, 3)) + y[:, None, None, None] * 0.8).astype(np.float32)
    groups = np.array([f"p{i // 3}" for i in range(60)], dtype=object)

    def fake_train(model, tiles, yy, s, seed=0, progress=True, **kw):  # a threshold "network"
        return {"thr": float(tiles.mean()) + 0.05 * (seed % 3)}, []

    def fake_proba(model, tiles, image_size, batch_size=64):
        p1 = 1 / (1 + np.exp(-4 * (tiles.reshape(len(tiles), -1).mean(1) - model["thr"])))
        return np.stack([1 - p1, p1], 1)

    monkeypatch.setattr(clf, "train", fake_train)
    monkeypatch.setattr(clf, "predict_proba", fake_proba)
    s = clf.TrainSettings(epochs=1, lr=1e-3, weight_decay=0.0, batch_size=4, val_fraction=0.0, image_size=2)
    rows, ref_cm = clf.cross_validate(x, y, lambda: None, s, folds=3, seed=5, groups=groups, progress=False)
    cms = [r["confusion"] for r in rows]
    assert len(cms) == 3
    assert np.array_equal(sum(cms), ref_cm)
    for r, cm in zip(rows, cms):
        assert cm.sum() == r["n"] and np.isclose(np.trace(cm) / cm.sum(), r["accuracy"])
    assert len({cm.tobytes() for cm in cms}) > 1  # the folds differ: not one matrix repeated

    figs = []
    monkeypatch.setattr(simclr, "save_figure", lambda fig, path: figs.append(fig))
    all_rows = [{**r, "init": "ssl"} for r in rows] + [{**r, "init": "scratch"} for r in rows]
    simclr.plot_fold_confusions(tmp_path / "cm.png", {"ssl": cms, "scratch": cms}, all_rows, ["GBM", "LUAD"])
    axes = [a for a in figs[0].axes if a.images]
    assert len(axes) == 6
    titles = [a.get_title() for a in axes]
    for r, t in zip(rows + rows, titles):
        assert t == f"fold {r['fold']}: acc {100 * r['accuracy']:.1f}%, F1 {100 * r['f1']:.1f}%"
    assert "SimCLR" in axes[0].get_ylabel() and "scratch" in axes[3].get_ylabel()


def _source_feats(seed=0, n=30, d=6):
    """Features of two tissues per source: real and rna_gan separated along one axis, the
    control's tissues drawn from one distribution (mixed)."""
    rng = np.random.default_rng(seed)
    sep = {"real": 4.0, "gan": 2.0, "rna_gan": 4.0, "control": 0.0}
    return {(t, s): rng.normal(size=(n + 3 * k, d)) + np.eye(d)[0] * sep[s] * k
            for s in sep for k, t in enumerate(["L", "B"])}


def test_tile_silhouette_by_tissue_per_source_on_the_features():
    from crossmodal.rna_gan.evaluate import tissue_silhouettes

    feats = _source_feats()
    sil = tissue_silhouettes(feats, ["L", "B"], ["real", "gan", "rna_gan", "control"]).set_index("source")
    s = sil["silhouette_by_tissue"]
    assert s["real"] > 0.3 and s["rna_gan"] > 0.3 and abs(s["control"]) < 0.1
    assert s["real"] > s["gan"] > s["control"]
    assert sil.loc["real", "n_tiles"] == "L:30,B:33" and sil.loc["real", "n_scored"] == 63
    sub = tissue_silhouettes(feats, ["L", "B"], ["real"], max_tiles=20, seed=1).iloc[0]
    assert sub["n_scored"] == 20 and sub["silhouette_by_tissue"] > 0.2
    one = {("L", "real"): feats[("L", "real")], ("B", "real"): feats[("B", "real")][:1]}
    assert np.isnan(tissue_silhouettes(one, ["L", "B"], ["real"]).iloc[0]["silhouette_by_tissue"])
    with pytest.raises(ValueError, match="no gan features of B"):
        tissue_silhouettes({("L", "gan"): feats[("L", "gan")]}, ["L", "B"], ["gan"])


def test_tile_umap_is_one_joint_seeded_embedding_with_a_panel_per_source(monkeypatch, tmp_path):
    from crossmodal.rna_gan import evaluate
    from crossmodal.rna_gan.evaluate import joint_tile_umap, plot_tile_umap, tissue_silhouettes

    feats = _source_feats(n=20)
    sources = ["real", "gan", "rna_gan", "control"]
    emb, tis, src = joint_tile_umap(feats, ["L", "B"], sources, seed=3)
    assert emb.shape == (sum(len(v) for v in feats.values()), 2)
    assert (src == "control").sum() == 43 and ((src == "real") & (tis == "B")).sum() == 23
    emb2, _, _ = joint_tile_umap(feats, ["L", "B"], sources, seed=3)
    assert np.allclose(emb, emb2)  # seeded
    # one embedding: the well-separated real tissues land apart in the shared coordinates
    c = [emb[(src == "real") & (tis == t)].mean(0) for t in ("L", "B")]
    assert np.linalg.norm(c[0] - c[1]) > 1.0
    figs = []
    monkeypatch.setattr(evaluate, "save_figure", lambda fig, path: figs.append(fig))
    sil = tissue_silhouettes(feats, ["L", "B"], sources)
    plot_tile_umap(tmp_path / "u.png", emb, tis, src, ["L", "B"], sources, sil, "x")
    axes = figs[0].axes
    assert len(axes) == 4
    assert [a.get_title().split("\n")[0] for a in axes] == [evaluate.SOURCE_TITLES[s] for s in sources]
    assert all("silhouette by tissue" in a.get_title() for a in axes)
    assert axes[0].get_xlim() == axes[3].get_xlim()  # shared coordinates
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == ["L (20)", "B (23)"]


def test_reproduction_row_for_tissue_separation_of_generated_tiles():
    sil = pd.DataFrame({"source": ["real", "gan", "rna_gan", "control"],
                        "silhouette_by_tissue": [0.3, 0.2, 0.25, -0.01],
                        "null_mean": [0.0] * 4, "null_q95": [0.05] * 4,
                        "p_permutation": [0.005, 0.005, 0.005, 0.6], "permutations": [199] * 4})
    t = reproduction.build(*_frames(), data="toy", extractor_note="features: x", silhouette=sil)
    row = t[t["claim"] == "generated tiles keep the tissues apart (silhouette by tissue, RNA-GAN vs real)"].iloc[0]
    assert row["direction_holds"] is True and row["this_run"].startswith("RNA-GAN 0.25 vs real 0.3")
    assert "GAN 0.2" in row["this_run"] and "control -0.01" in row["this_run"]
    assert "Figures 3B/C, 4B" in row["paper_section"] and "preserved" in row["paper_value"]
    assert "permutation null, one-sided p < 0.05; here real 0.3" in row["note"]
    assert "more than the real tiles" not in row["note"]
    # a positive silhouette that random tissue labels reach as often is no separation
    t2 = reproduction.build(*_frames(), data="toy", extractor_note="", silhouette=sil.assign(
        silhouette_by_tissue=[0.01, 0.2, 0.04, 0.0], p_permutation=[0.4, 0.005, 0.2, 0.6]))
    r2 = t2[t2["claim"].str.startswith("generated tiles keep")].iloc[0]
    assert r2["direction_holds"] == "n/a" and "real tiles do not separate" in r2["note"]
    # the real tiles separate beyond the null, but weakly (audit: real 0.0046, RNA-GAN 0.176 from
    # mode collapse): still nothing to preserve, n/a - not True because the generated tiles separate more
    t2b = reproduction.build(*_frames(), data="toy", extractor_note="", silhouette=sil.assign(
        silhouette_by_tissue=[0.0046, 0.14, 0.176, 0.057], p_permutation=[0.015, 0.005, 0.005, 0.005]))
    r2b = t2b[t2b["claim"].str.startswith("generated tiles keep")].iloc[0]
    assert r2b["direction_holds"] == "n/a" and "silhouette >= 0.1" in r2b["note"], r2b["note"]
    # the real tiles separate clearly and RNA-GAN's do not beat their null: False
    t2c = reproduction.build(*_frames(), data="toy", extractor_note="", silhouette=sil.assign(
        p_permutation=[0.005, 0.005, 0.3, 0.6]))
    assert t2c[t2c["claim"].str.startswith("generated tiles keep")].iloc[0]["direction_holds"] is False
    t3 = reproduction.build(*_frames(), data="toy", extractor_note="", silhouette=sil.assign(
        silhouette_by_tissue=[0.01, 0.2, 0.15, 0.0]))
    assert "more than the real tiles" in t3[t3["claim"].str.startswith("generated tiles keep")].iloc[0]["note"]
    # without the permutation columns the direction is not judged from "silhouette > 0"
    t4 = reproduction.build(*_frames(), data="toy", extractor_note="", silhouette=sil.iloc[:, :2])
    assert t4[t4["claim"].str.startswith("generated tiles keep")].iloc[0]["direction_holds"] == "n/a"
    assert not reproduction.build(*_frames(), data="toy", extractor_note="")["claim"].str.startswith(
        "generated tiles keep").any()  # no table, no row
    with pytest.raises(ValueError, match="real and rna_gan"):
        reproduction.build(*_frames(), data="toy", extractor_note="", silhouette=sil.iloc[:2])


def test_centroid_checks_must_beat_two_tissue_chance_by_a_binomial_test():
    """Nearest of two centroids is right half the time by chance: 60% of 10 profiles is not
    evidence, 60% of 200 is; a missing share or count is n/a, not False."""
    vm, mm, checks, fid, ext, sim = _frames()
    def rows(value, n):
        c = checks.assign(value=[value, value], n=[n, n])
        t = reproduction.build(vm, mm, c, fid, ext, sim, data="toy", extractor_note="")
        return t[t["claim"].str.startswith("centroid")]
    small = rows(0.6, 10)
    assert (small["direction_holds"] == False).all() and small["note"].str.contains("binomial").all()  # noqa: E712
    assert (rows(0.6, 200)["direction_holds"] == True).all()  # noqa: E712
    assert (rows(float("nan"), 10)["direction_holds"] == "n/a").all()


def test_missing_values_make_comparisons_na_not_false():
    vm, mm, checks, fid, ext, sim = _frames(fid_rna=float("nan"))
    t = reproduction.build(vm, mm, checks, fid, ext, sim, data="toy", extractor_note="")
    assert t[t["claim"].str.startswith("FID RNA-GAN < GAN")].iloc[0]["direction_holds"] == "n/a"
    assert t[t["claim"].str.startswith("noise-only control")].iloc[0]["direction_holds"] == "n/a"


def test_tile_silhouette_permutation_null():
    """The label-permutation test: separated tissues get p at its floor, unseparated ones do not;
    the observed value equals sklearn's silhouette whatever the row blocking."""
    from sklearn.metrics import silhouette_score

    from crossmodal.rna_gan.evaluate import silhouettes_permuted, tissue_silhouettes

    feats = _source_feats()
    sil = tissue_silhouettes(feats, ["L", "B"], ["real", "control"], permutations=99, seed=0).set_index("source")
    assert sil.loc["real", "p_permutation"] == pytest.approx(0.01) and sil.loc["real", "permutations"] == 99
    assert sil.loc["control", "p_permutation"] > 0.05
    assert sil.loc["real", "null_q95"] < sil.loc["real", "silhouette_by_tissue"]
    x = np.concatenate([feats[("L", "gan")], feats[("B", "gan")]])
    lab = np.array(["L"] * len(feats[("L", "gan")]) + ["B"] * len(feats[("B", "gan")]))
    obs, null = silhouettes_permuted(x, lab, 5, seed=1, block=7)
    assert obs == pytest.approx(silhouette_score(x, lab), abs=1e-9) and len(null) == 5
    assert "p_permutation" not in tissue_silhouettes(feats, ["L", "B"], ["real"]).columns  # 0 = no test


def test_lazy_tiles_decode_on_demand_and_equal_the_loaded_tiles(tmp_path):
    from crossmodal.data import TileView, TileWriter
    from crossmodal.rna_gan.evaluate import load_tiles, resize_uint8, select_tiles, tile_set

    rng = np.random.default_rng(0)
    paths = []
    for s, n in (("a", 5), ("b", 9)):  # one LMDB per slide, random pixels
        p = tmp_path / f"{s}.lmdb"
        with TileWriter(p, {"mpp": None, "encoding": "png", "tile_size": 16}) as w:
            for _ in range(n):
                w.add(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), {"sample": s})
        paths.append(str(p))
    tiles, samples = load_tiles(paths, size=8, max_per_source=6, seed=2)
    assert len(tiles) == 11 and tiles.std() > 10
    ds, idx, s2 = select_tiles(paths, max_per_source=6, seed=2)
    assert list(samples) == list(s2)
    lazy = TileView(ds, idx, 8, resize_uint8)
    assert len(lazy) == len(tiles)
    np.testing.assert_array_equal(lazy[np.array([3, 0])], tiles[[3, 0]])
    np.testing.assert_array_equal(lazy[2:5], tiles[2:5])
    np.testing.assert_array_equal(lazy[4], tiles[4])  # one tile: (s, s, 3)
    assert TileView(ds)[0].shape == (16, 16, 3) and len(TileView(ds)) == 14  # all tiles, stored size
    with pytest.raises(ValueError, match="resize"):
        TileView(ds, idx, 8)
    assert isinstance(tile_set(ds, idx, 8), np.ndarray)  # small: held in memory
    big = tile_set(ds, idx, 8, max_bytes=100)  # over the limit: streamed
    assert isinstance(big, TileView)
    np.testing.assert_array_equal(big[:], tiles)


def test_simclr_rows_need_a_paired_test_over_folds_not_a_higher_mean():
    """Audit item 5: 47.9 ± 5.6% vs 43.4 ± 15% (the toy's F1, folds disagree) is noise, not a win;
    a consistent gain over folds is; with one fold the test cannot run (n/a)."""
    noisy = _frames(ssl=(0.5227, 0.4167, 0.4985), scratch=(0.3571, 0.6101, 0.3333))
    t = reproduction.build(*noisy, data="toy", extractor_note="")
    acc, f1 = t[t["claim"].str.startswith("SimCLR on synthetic")].iloc[0], t[t["claim"] == "... F1"].iloc[-1]
    assert acc["this_run"].startswith("47.9% ± 5.6% vs 43.4% ± 15%")
    assert f1["direction_holds"] is False and "paired t-test over the 3 folds" in f1["note"]
    assert "less than the folds' spread" in f1["note"]
    good = reproduction.build(*_frames(), data="toy", extractor_note="")
    assert (good[good["claim"].str.startswith("SimCLR") | (good["claim"] == "... F1")].tail(2)["direction_holds"]
            == True).all()  # noqa: E712
    one = reproduction.build(*_frames(ssl=(0.9,), scratch=(0.5,)), data="toy", extractor_note="")
    assert one[one["claim"].str.startswith("SimCLR")].iloc[0]["direction_holds"] == "n/a"
    # the same gain in every fold is decided exactly (the t statistic is undefined)
    same = reproduction.build(*_frames(ssl=(0.75, 0.5, 0.625), scratch=(0.5, 0.25, 0.375)), data="toy", extractor_note="")
    assert same[same["claim"].str.startswith("SimCLR")].iloc[0]["direction_holds"] == True  # noqa: E712


def test_knn_tissue_scores_profiles_by_their_nearest_real_profiles():
    from crossmodal.rna_gan.latent import knn_tissue

    ref = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [5, 0], [5.1, 0], [5.2, 0]])
    lab = ["a", "a", "a", "b", "b", "b"]
    q = np.array([[0.05, 0], [4.9, 0], [2.4, 0], [2.6, 0]])
    assert list(knn_tissue(q, ref, lab, k=3)) == ["a", "b", "a", "b"]
    # a 1-1 tie among 2 neighbours goes to the nearer one
    assert list(knn_tissue(np.array([[3.0, 0]]), ref[[2, 3]], ["a", "b"], k=2)) == ["b"]
    assert list(knn_tissue(q[:1], ref, lab, k=50)) == ["a"]  # k capped at 6: a 3-3 tie, the nearest is an a
    with pytest.raises(ValueError, match="no reference"):
        knn_tissue(q, ref[:0], [], k=3)


def _checks_with_spaces():
    d = "30 all donors (train 18)"
    rows = [("main", "generated_in_target_tissue", "expression", 0.975, 40, 0.5),
            ("main", "generated_in_target_tissue", "umap", 0.925, 40, 0.5),
            ("main", "shifted_in_target_tissue", "expression", 0.933, 30, 0.5),
            ("main", "shifted_in_target_tissue", "umap", 0.933, 30, 0.5),
            ("main", "silhouette_latent_by_tissue", "latent", 0.399, 30, float("nan")),
            ("multi_tissue", "silhouette_latent_by_tissue", "latent", 0.176, 80, float("nan")),
            ("multi_tissue", "generated_in_target_tissue", "expression", 0.743, 140, 1 / 7),
            ("multi_tissue", "generated_in_target_tissue", "umap", 0.793, 140, 1 / 7)]
    return pd.DataFrame([dict(zip(["model", "check", "space", "value", "n", "chance"], r), donors=d) for r in rows])


def test_latent_rows_use_expression_space_the_larger_sample_and_say_n_and_donors():
    """Audit items 3, 6, 7: the generated/shifted shares are the expression-space scores (the
    UMAP's share beside them), the donors are named, the silhouette direction uses the larger of
    the test split and the figure's donors and prints both n; the multi-tissue generation row
    tests against 1/7; the pathologist evaluation is an n/a row quoting the paper."""
    vm, mm, _, fid, ext, sim = _frames()
    vm = vm.assign(n=[18, 6, 6], silhouette_cohort=[0.299, 0.657, 0.776])
    mm = mm.assign(n=[48, 16, 16], silhouette_cohort=[0.148, 0.193, 0.226])
    t = reproduction.build(vm, mm, _checks_with_spaces(), fid, ext, sim, data="toy", extractor_note="")
    row = lambda s: t[t["claim"].str.startswith(s)].iloc[0]  # noqa: E731
    two = row("β-VAE latents separate the tissues (two tissues")
    assert two["this_run"] == "silhouette 0.399 (n = 30); test split 0.776 (n = 6)" and two["direction_holds"] is True
    assert "training split 0.299 (n = 18)" in two["note"] and "30 all donors" in two["note"]
    multi = row("β-VAE latents separate the tissues (multi-tissue")
    assert multi["this_run"].startswith("silhouette 0.176 (n = 80)") and multi["direction_holds"] is False
    gen = row("centroid + random draw")
    assert gen["this_run"] == "97.5% nearest real profiles of the target tissue (in the figure's UMAP: 92.5%)"
    assert "expression space" in gen["note"] and "real profiles: 30 all donors" in gen["note"]
    assert "n = 40" in gen["note"]
    mg = row("multi-tissue β-VAE generates")
    assert mg["direction_holds"] is True and "14.3%, 7 tissues" in mg["note"] and "Figure 2C" in mg["paper_section"]
    path = row("pathologists prefer")
    assert path["direction_holds"] == "n/a" and "p = 0.025" in path["paper_value"] and "74.98%" in path["paper_value"]
    # the test split is the larger sample: it is used, and a disagreement across the threshold is flagged
    small = _checks_with_spaces().assign(n=lambda d: np.where(d["check"] == "silhouette_latent_by_tissue", 4, d["n"]))
    t2 = reproduction.build(vm.assign(n=[18, 6, 10]), mm, small, fid, ext, sim, data="toy", extractor_note="")
    r2 = t2[t2["claim"].str.startswith("β-VAE latents separate the tissues (two")].iloc[0]
    assert r2["this_run"].startswith("silhouette 0.776 (n = 10); figure donors 0.399 (n = 4)")
    sm = small.assign(value=lambda d: np.where(d["check"] == "silhouette_latent_by_tissue", 0.2, d["value"]))
    t3 = reproduction.build(vm, mm, sm.assign(n=lambda d: np.where(d["check"] == "silhouette_latent_by_tissue", 30,
                                                                   d["n"])), fid, ext, sim, data="toy",
                            extractor_note="")
    r3 = t3[t3["claim"].str.startswith("β-VAE latents separate the tissues (two")].iloc[0]
    assert r3["direction_holds"] is False and "fragile" in r3["note"]


def test_fig5_same_epoch_is_informative_when_both_generators_train_equally_long():
    from crossmodal.rna_gan.evaluate import fig5_epochs

    reached = pd.DataFrame({"tissue": ["L", "L", "L", "B", "B"],
                            "variant": ["gan", "rna_gan", "control", "gan", "rna_gan"],
                            "epoch_reached": [14, 23, 14, float("nan"), 25]})
    got = fig5_epochs({"L": {"gan": 25, "rna_gan": 25}, "B": {"gan": 25, "rna_gan": 25},
                       "P": {"gan": 91, "rna_gan": 11}}, reached)
    assert got["L"][0] == 14 and "first epoch" in got["L"][1]  # not 25, the final epoch shown below anyway
    assert got["B"][0] == 12 and "middle" in got["B"][1]  # RNA-GAN reaches it only at the end, the GAN never
    assert got["P"] == (11, "RNA-GAN's last epoch, as in the paper")
    assert fig5_epochs({"L": {"gan": 25, "rna_gan": 25}})["L"][0] == 12  # no convergence table


def test_convergence_plot_labels_its_log_axis_and_separates_coinciding_markers(tmp_path, monkeypatch):
    """Audit item 10: a log KID axis with one tick label cannot be read; generators reaching the
    level at the same epoch must not hide each other."""
    import matplotlib.pyplot as plt

    from crossmodal.rna_gan import convergence

    ep = np.arange(1, 11)
    curves = pd.concat([pd.DataFrame({"tissue": "L", "variant": v, "epoch": ep, "kid": 0.5 / ep ** k})
                        for v, k in (("gan", 0.8), ("rna_gan", 0.5), ("control", 0.8))])
    reached = convergence.epochs_to_quality(curves, 1)
    assert reached.set_index("variant").loc["gan", "epoch_reached"] == reached.set_index("variant").loc[
        "control", "epoch_reached"]
    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    convergence.plot(tmp_path / "c.png", curves, reached, 1, "x")
    ax = seen["fig"].axes[0]
    assert ax.get_yscale() == "log" and "lower = closer to real" in ax.get_ylabel()
    seen["fig"].canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels(minor=True) if t.get_text()]
    assert len(labels) >= 3, labels
    tri = [ln.get_xdata()[0] for ln in ax.lines if ln.get_marker() == "v"]
    assert len(tri) == 3 and len(set(tri)) == 3  # gan and control at one epoch, drawn apart
    assert (tmp_path / "c.pdf").exists()


def test_simclr_cv_folds_group_the_slides_of_one_patient():
    """TCGA-GBM patients often have several diagnostic slides (one sample row each): the CV groups
    are patients, so no patient's tiles sit in both a training and a test fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    from crossmodal.rna_gan.simclr import patient_groups
    from crossmodal.rna_gan.targets import sample_patients

    samples = pd.DataFrame({"patient": ["P1", "P1", "P2", "P3", "P4", "P4"],
                            "cohort": ["TCGA-GBM"] * 3 + ["TCGA-LUAD"] * 3},
                           index=["P1-DX1", "P1-DX2", "P2-DX1", "P3-DX1", "P4-DX1", "P4-DX2"])
    m = sample_patients(samples, ["TCGA-GBM", "TCGA-LUAD"])
    tiles_of = np.repeat(samples.index.to_numpy(), 5)
    g = patient_groups(tiles_of, m)
    y = np.repeat((samples["cohort"] == "TCGA-LUAD").astype(int).to_numpy(), 5)
    for tr, te in StratifiedGroupKFold(n_splits=2).split(np.zeros(len(y)), y, g):
        assert not set(g[tr]) & set(g[te])
        assert not {s[:2] for s in tiles_of[tr]} & {s[:2] for s in tiles_of[te]}  # P1's two slides together
    assert list(patient_groups(tiles_of[:3], None)) == list(tiles_of[:3])
    with pytest.raises(ValueError, match="no patient for sample"):
        patient_groups(["X-DX1"], m)
