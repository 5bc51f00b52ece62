"""Cell counting: the classical counter on tiles drawn here with known nuclei, the steps on a
real tile LMDB, and HoVer-Net weight loading (random weights saved and reloaded - the public
PanNuke checkpoint itself is not available offline and is untested)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal import cells

H = np.array([0.65, 0.70, 0.29])  # haematoxylin, eosin OD vectors (Ruifrok & Johnston)
E = np.array([0.07, 0.99, 0.11])


def _tile(types, mpp=0.5, size=256, seed=0):
    """An H&E-like tile (Beer-Lambert) with one nucleus of each listed type on a grid."""
    from skimage import draw

    rng = np.random.default_rng(seed)
    um = 1 / mpp
    h = np.zeros((size, size))
    e = np.full((size, size), 0.4)
    step = int(16 * um)
    centres = [(y, x) for y in range(step // 2, size - step // 2 + 1, step)
               for x in range(step // 2, size - step // 2 + 1, step)]
    for (y, x), t in zip(centres, types):
        if t == "neoplastic":
            rr, cc = draw.disk((y, x), 5.2 * um, shape=h.shape); lvl = 0.9
        elif t == "inflammatory":
            rr, cc = draw.disk((y, x), 3.0 * um, shape=h.shape); lvl = 1.1
        elif t == "connective":
            rr, cc = draw.ellipse(y, x, 1.5 * um, 6 * um, shape=h.shape, rotation=rng.uniform(0, np.pi)); lvl = 0.7
        elif t == "dead":
            parts = [draw.disk((y + dy, x + dx), 1.1 * um, shape=h.shape) for dy, dx in ((-2 * um, 0), (2 * um, 1.5 * um))]
            rr, cc = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]); lvl = 0.3
        else:
            rr, cc = draw.ellipse(y, x, 3.3 * um, 4.1 * um, shape=h.shape); lvl = 0.55
        h[rr, cc] = lvl
    od = h[..., None] * H + e[..., None] * E
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8), centres[:len(types)]


def test_classical_counter_recovers_drawn_types():
    types = (["neoplastic"] * 4 + ["inflammatory"] * 5 + ["connective"] * 3 + ["dead"] * 2
             + ["non_neoplastic_epithelial"] * 6)
    rgb, _ = _tile(types)
    counts = cells.count_tile(rgb, 0.5)
    assert counts == {"neoplastic": 4, "inflammatory": 5, "connective": 3, "dead": 2, "non_neoplastic_epithelial": 6}
    # microns, not pixels: the same tissue at 0.25 um/px gives the same counts
    rgb2, _ = _tile(types[:12], mpp=0.25, size=512)
    assert cells.count_tile(rgb2, 0.25) == {"neoplastic": 4, "inflammatory": 5, "connective": 3, "dead": 0,
                                            "non_neoplastic_epithelial": 0}


def test_counter_rejects_missing_mpp_and_empty_tile_is_zero():
    with pytest.raises(ValueError, match="microns per pixel"):
        cells.count_tile(np.full((64, 64, 3), 230, np.uint8), 0)
    assert sum(cells.count_tile(np.full((64, 64, 3), 235, np.uint8), 0.5).values()) == 0
    with pytest.raises(ValueError, match="microns per pixel"):
        cells.count_tile(np.full((64, 64, 3), 230, np.uint8), float("nan"))


def test_count_cells_without_mpp_names_the_lmdb(tmp_path):
    from crossmodal.data import TileWriter

    with TileWriter(tmp_path / "gen.lmdb", {"mpp": None, "encoding": "png"}) as w:
        w.add(np.full((32, 32, 3), 230, np.uint8), {"sample": "G1"})
    with pytest.raises(ValueError, match=r"gen.lmdb records no mpp"):
        cells.count_cells({"lmdb": str(tmp_path / "gen.lmdb")}, {"counts": str(tmp_path / "c.tsv")},
                          {"cells": {"method": "classical", "classical": {}, "max_tiles_per_slide": None}, "seed": 0})
    assert not (tmp_path / "c.tsv").exists()


def test_table1_layout():
    pct = pd.DataFrame({"cohort": ["A", "A", "B"], "tile_type": ["Real"] * 3,
                        **{c: [50.0, 30.0, 10.0] for c in cells.CLASSES}})
    t = cells.table1(pct)
    assert list(t.columns) == ["cohort", "Tile type", "n_tiles", "Tumor", "Lymphocytes", "Connective", "Dead", "Normal"]
    assert t.iloc[0]["Tumor"] == "40.00 ± 14.14"
    # the paper's Table 1 quoted next to ours for the cohorts it reports
    pct["cohort"] = ["TCGA-LUAD", "TCGA-LUAD", "toy-only"]
    tp = cells.table1(pct, paper=True).set_index("cohort")
    assert tp.loc["TCGA-LUAD", "paper Dead"] == "33.15 ± 28.07" and tp.loc["toy-only", "paper Tumor"] == ""


def test_count_and_table_steps_on_a_tile_lmdb(tmp_path):
    from crossmodal.data import TileWriter

    mix = {"S1": ["neoplastic"] * 6 + ["inflammatory"] * 2, "S2": ["neoplastic"] * 2 + ["inflammatory"] * 6,
           "S3": ["neoplastic"] * 4 + ["inflammatory"] * 4 + ["connective"] * 2}
    counts = []
    for s, types in mix.items():
        with TileWriter(tmp_path / f"{s}.lmdb", {"mpp": 0.5, "sample": s, "encoding": "png"}) as w:
            for k in range(2):
                w.add(_tile(types, seed=k)[0], {"sample": s, "x": 256 * k, "y": 0, "mpp": 0.5})
        out = tmp_path / f"{s}.tsv"
        cells.count_cells({"lmdb": str(tmp_path / f"{s}.lmdb")}, {"counts": str(out)},
                          {"cells": {"method": "classical", "classical": {}, "max_tiles_per_slide": None}, "seed": 0})
        counts.append(str(out))
    t = pd.read_csv(counts[0], sep="\t")
    assert len(t) == 2 and (t.neoplastic == 6).all() and (t.inflammatory == 2).all()
    assert (t.pct_neoplastic == 75.0).all() and (t.pct_dead == 0).all()
    truth = pd.DataFrame({"sample": list(mix), "tumour": [0.75, 0.25, 0.4], "lymphocyte": [0.25, 0.75, 0.4],
                          "connective": [0, 0, 0.2], "necrotic": [0, 0, 0], "normal_epithelial": [0, 0, 0]})
    truth.to_csv(tmp_path / "truth.tsv", sep="\t", index=False)
    outs = {k: str(tmp_path / f"{k}.{ext}") for k, ext in
            (("table", "tsv"), ("correlations", "c.tsv"), ("figure", "png"))}
    cells.plot_cell_table({"counts": counts, "truth": [str(tmp_path / "truth.tsv")]}, outs,
                          {"cells": {"method": "classical"}, "cohorts": {"S1": "A", "S2": "A", "S3": "B"}})
    t1 = pd.read_csv(outs["table"], sep="\t")
    assert set(t1.cohort) == {"A", "B"} and "not comparable" in t1.counter[0]
    assert "toy cohort" in t1.data[0] and "paper Normal" in t1.columns
    cor = pd.read_csv(outs["correlations"], sep="\t").set_index("pannuke_class")
    assert cor.loc["neoplastic", "pearson_r"] > 0.99 and cor.loc["inflammatory", "pearson_r"] > 0.99
    assert (tmp_path / "figure.pdf").exists()


def test_hovernet_loads_a_saved_state_dict(tmp_path):
    torch.manual_seed(0)
    net = cells.build_hovernet()
    torch.save({"desc": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "hv.tar")
    loaded = cells.load_hovernet(tmp_path / "hv.tar")
    k = "decoder.tp.u0.conv.weight"
    assert torch.equal(loaded.state_dict()[k], net.state_dict()[k])
    assert "conv0./.weight" in net.state_dict()  # the public checkpoint's key naming
    with torch.inference_mode():
        out = loaded(torch.randint(0, 255, (1, 3, 128, 128)).float())  # 256 px -> 164 px; 128 -> 36 (faster)
    assert out["tp"].shape == (1, 6, 36, 36) and out["hv"].shape == (1, 2, 36, 36)
    inst, types = cells.hovernet_instances({k: v[0] for k, v in out.items()})
    assert inst.shape == (36, 36) and all(0 <= t < 5 for t in types.values())
    with pytest.raises(FileNotFoundError, match="hovernet_fast_pannuke_type_tf2pytorch.tar"):
        cells.load_hovernet(tmp_path / "missing.tar")
    (tmp_path / "cut.tar").write_bytes((tmp_path / "hv.tar").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"HoVer-Net checkpoint .*cut\.tar: unreadable"):
        cells.load_hovernet(tmp_path / "cut.tar")
    sd = net.state_dict()
    sd.pop(k)
    torch.save(sd, tmp_path / "bad.tar")
    with pytest.raises(ValueError, match="bad.tar does not fit"):
        cells.load_hovernet(tmp_path / "bad.tar")


def test_classical_counter_recovers_toy_planted_fractions():
    """Slides rendered by the toy cohort's own renderer (crossmodal.toy.slides, as rule
    make_toy_slide) from Dirichlet-drawn fractions, tiled at 20x as preset tile256: the counted
    per-patient fractions correlate with the planted ones for every type (the counter's
    thresholds are fixed in config; it never sees the planted labels)."""
    from PIL import Image

    from crossmodal.toy.slides import render_slide

    rng = np.random.default_rng(11)
    toy = {"slide_size": 1024, "slide_mpp": 0.25, "tissue_fraction": 0.6, "nucleus_spacing_um": 18}
    planted, counted = [], []
    for i in range(10):
        fr = rng.dirichlet(np.full(5, 3.0))
        info = {"sample": f"TEST-{i:02d}", "has_tissue": 1, "pen_mark": "", "blur": 0, "low_contrast": 0,
                **{cells.TOY_TRUTH[c]: f for c, f in zip(cells.CLASSES, fr)}}
        rgb, _ = render_slide(info, toy, seed=0)
        rgb = np.asarray(Image.fromarray(rgb).resize((512, 512), Image.Resampling.LANCZOS))  # 0.25 -> 0.5 um/px
        tot = np.zeros(5)
        for y in (0, 256):
            for x in (0, 256):
                c = cells.count_tile(rgb[y:y + 256, x:x + 256], 0.5)
                tot += [c[k] for k in cells.CLASSES]
        planted.append(fr)
        counted.append(tot / tot.sum())
    planted, counted = np.array(planted), np.array(counted)
    for k, c in enumerate(cells.CLASSES):
        r = np.corrcoef(planted[:, k], counted[:, k])[0, 1]
        assert r > 0.9, (c, r)
    assert np.abs(planted - counted).mean() < 0.04


def test_hovernet_postprocessing_splits_touching_nuclei_by_their_hv_maps():
    """Ideal HoVer-Net outputs for two touching nuclei (one neoplastic, one inflammatory) and a
    separate connective one: the watershed on the h/v gradients returns three typed instances."""
    size = 64
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    npm = np.zeros((size, size))
    h, v = np.zeros((size, size)), np.zeros((size, size))
    tp = np.zeros((size, size), int)
    for (cy, cx, r, t) in ((20, 20, 7, 1), (20, 33, 7, 2), (46, 40, 6, 3)):
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        m &= npm == 0  # the first nucleus keeps the shared border
        npm[m] = 1
        h[m], v[m] = (xx[m] - cx) / r, (yy[m] - cy) / r
        tp[m] = t
    logit = torch.tensor(np.stack([1 - npm, npm]) * 10.0)
    out = {"np": logit, "hv": torch.tensor(np.stack([h, v])), "tp": torch.nn.functional.one_hot(
        torch.tensor(tp), 6).permute(2, 0, 1).float()}
    inst, types = cells.hovernet_instances(out)
    assert inst.max() == 3 and sorted(types.values()) == [0, 1, 2]  # neoplastic, inflammatory, connective
    assert inst[20, 20] != inst[20, 33] and inst[20, 20] > 0 and inst[20, 33] > 0
