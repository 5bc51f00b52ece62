"""FID / KID / IS against torch-fidelity and torchmetrics on identical features; streaming
statistics; the extractors' weight loading (inception-fid from a local file, cohort-ssl)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.metrics import image as im


def _feats(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    return base + shift


def test_fid_matches_torch_fidelity_and_torchmetrics():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torchmetrics.image.fid import _compute_fid

    a, b = _feats(400, 64, 0), _feats(300, 64, 1, shift=0.3)
    ours = im.fid_from_features(a, b)
    s1, s2 = fid_features_to_statistics(torch.tensor(a)), fid_features_to_statistics(torch.tensor(b))
    ref_tf = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
    ref_tm = float(_compute_fid(torch.tensor(s1["mu"]), torch.tensor(s1["sigma"]),
                                torch.tensor(s2["mu"]), torch.tensor(s2["sigma"])))
    assert ours > 1.0
    assert ours == pytest.approx(ref_tf, rel=1e-4)
    assert ours == pytest.approx(ref_tm, rel=1e-4)


def test_kid_matches_torch_fidelity_and_torchmetrics():
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torchmetrics.image.kid import poly_mmd

    a, b = _feats(250, 32, 2), _feats(260, 32, 3, shift=0.2)
    mean, std = im.kid_from_features(a, b, subsets=20, subset_size=100, seed=7)
    ref = kid_features_to_metric(torch.tensor(a), torch.tensor(b), kid_subsets=20, kid_subset_size=100,
                                 rng_seed=7, kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, verbose=False)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
    # full-set subsets: every subset is the whole set, so the mean is torchmetrics' poly_mmd
    full, full_std = im.kid_from_features(a[:200], b[:200], subsets=3, subset_size=200, seed=0)
    assert full == pytest.approx(float(poly_mmd(torch.tensor(a[:200]), torch.tensor(b[:200]))), rel=1e-4)
    assert full_std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_torch_fidelity_and_uniform_is_one():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.tensor(np.random.default_rng(4).normal(scale=3.0, size=(500, 10)))
    mean, std = im.inception_score_from_logits(logits, splits=10)
    ref = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-4)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-4)
    assert im.inception_score_from_logits(np.zeros((100, 1008)), splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    # one confident class per image, classes balanced: IS = number of classes
    confident = np.eye(5)[np.arange(500) % 5] * 50
    assert im.inception_score_from_logits(confident, splits=5, shuffle=False)[0] == pytest.approx(5.0, rel=1e-3)


def test_fid_self_zero_and_monotone_in_shift():
    a = _feats(500, 16, 5)
    assert abs(im.fid_from_features(a, a)) < 1e-6
    b = _feats(500, 16, 6)
    fids = [im.fid_from_features(a, b + s) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids
    kids = [im.kid_from_features(a, b + s, subsets=10, subset_size=200)[0] for s in (0.0, 0.5, 1.0)]
    assert kids[0] < kids[1] < kids[2]


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="fid_from_features: a has 4 features, b 3"):
        im.fid_from_features(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        im.fid_from_features(np.full((5, 4), np.nan), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="unknown feature extractor 'vgg'"):
        im.get_extractor("vgg")


def test_running_moments_and_reservoir_are_exact_and_bounded():
    x = _feats(1000, 8, 9) + 100.0  # a large offset: the pairwise update must stay accurate
    rm = im.RunningMoments(8)
    res = im.Reservoir(128, 8, seed=0)
    for i in range(0, 1000, 37):
        rm.update(torch.tensor(x[i:i + 37]))
        res.update(x[i:i + 37])
    mu, cov = rm.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-10)
    assert res.data.shape == (128, 8) and res.seen == 1000
    # the reservoir is a sample of the rows, not just the first ones
    assert (res.data[:, 0] != x[:128, 0].astype(np.float32)).any()


def test_streamed_stats_equal_in_memory_metrics(tmp_path):
    """extract_stats over an image folder == the formulas on all features at once."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i:03d}.png")
    w = torch.tensor(rng.normal(size=(3, 6)), dtype=torch.float32)

    def fn(x):
        f = x.float().mean(dim=(2, 3)) @ w
        return f, f[:, :4]

    ext = im.Extractor("toy-linear", 6, fn)
    st = im.extract_stats(tmp_path, ext, batch_size=7, is_splits=4)
    assert st.is_splits == 2  # 40 images: at most 40 // IS_MIN_PER_SPLIT splits
    allf = np.concatenate([fn(torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None])[0].numpy()
                           for p in sorted(tmp_path.glob("*.png"))])
    np.testing.assert_allclose(st.mu, allf.mean(0), rtol=1e-5)
    np.testing.assert_allclose(st.sigma, np.cov(allf, rowvar=False), rtol=1e-4, atol=1e-6)
    ref_is = im.inception_score_from_logits(allf[:, :4], splits=2, seed=2020)
    assert st.inception_score == pytest.approx(ref_is, rel=1e-5)
    row = im.compare(st, st, ext, kid_subsets=5, kid_subset_size=20)
    assert abs(row["fid"]) < 1e-6 * np.trace(st.sigma)
    assert row["kid_subset_size"] == 20
    assert "not comparable to the paper's" in row["comparability"]


def _random_inception_state(monkeypatch):
    """A randomly initialised state dict of torch-fidelity's FID Inception-V3 architecture."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    monkeypatch.setattr(fe.torch, "load", lambda *a, **k: {})
    model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.undo()
    return state


def test_inception_fid_loads_local_weights_and_never_downloads(tmp_path, monkeypatch):
    missing = tmp_path / "weights" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError) as e:
        im.get_extractor("inception-fid", weights=missing, device="cpu")
    assert str(missing) in str(e.value) and "metrics.inception_weights" in str(e.value)

    state = _random_inception_state(monkeypatch)
    torch.save(state, tmp_path / "inc.pth")
    ext = im.get_extractor("inception-fid", weights=tmp_path / "inc.pth", device="cpu")
    assert ext.comparable and ext.dim == 2048
    feats, logits = ext(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    # the loaded weights are the file's, not fresh random ones
    loaded = im.load_inception_fid(tmp_path / "inc.pth")
    k = "Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(loaded.state_dict()[k], state[k])

    del state["fc.weight"]
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth does not fit"):
        im.get_extractor("inception-fid", weights=tmp_path / "wrong.pth", device="cpu")


def test_cohort_ssl_extractor_roundtrip(tmp_path):
    from crossmodal.models import ssl

    torch.manual_seed(0)
    enc, head = ssl.build(depth=10, image_size=32, proj_dim=16)
    ssl.save_encoder(tmp_path / "enc.pt", enc.eval(), head,
                     clusters={"centroids": np.random.default_rng(0).normal(size=(3, enc.feature_dim)), "sigma2": 2.0})
    ext = im.get_extractor("cohort-ssl", weights=tmp_path / "enc.pt", device="cpu")
    x = torch.randint(0, 255, (4, 3, 48, 48), dtype=torch.uint8)
    f, logits = ext(x)
    with torch.inference_mode():
        np.testing.assert_allclose(f.numpy(), enc.eval()(x).numpy(), rtol=1e-5, atol=1e-6)
    assert logits.shape == (4, 3) and not ext.comparable
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        im.get_extractor("cohort-ssl", weights=tmp_path / "nope.pt", device="cpu")
    raw = (tmp_path / "enc.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[:100])
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("cut.pt", "empty.pt"):
        with pytest.raises(ValueError, match=rf"SimCLR encoder .*{name}: unreadable"):
            ssl.load_encoder(tmp_path / name)
    torch.save({"config": {}}, tmp_path / "vae.pt")
    with pytest.raises(ValueError, match=r"SimCLR encoder .*vae\.pt: not a crossmodal-simclr checkpoint"):
        ssl.load_encoder(tmp_path / "vae.pt")


def test_nt_xent_equals_a_direct_formulation():
    from crossmodal.models import ssl

    torch.manual_seed(1)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    t = 0.5
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    losses = []
    for i in range(10):  # SimCLR eq. (1) for anchor i, its positive j = i +- 5
        j = (i + 5) % 10
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(10) if k != i)
        losses.append(-torch.log(torch.exp(z[i] @ z[j] / t) / den))
    assert float(ssl.nt_xent_loss(z1, z2, t)) == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
    # aligned views of orthogonal images: loss -log(e^10 / (e^10 + 8)) at temperature 0.1
    e = torch.eye(5, 8)
    assert float(ssl.nt_xent_loss(e, e, 0.1)) == pytest.approx(-np.log(np.exp(10) / (np.exp(10) + 8)), rel=1e-3)
    assert float(ssl.nt_xent_loss(e, e, 0.1)) < 0.01 < float(ssl.nt_xent_loss(z1, z2, 0.1))


def _textured_lmdb(path, sample, n, kind, seed):
    from crossmodal.data import TileWriter

    rng = np.random.default_rng(seed)
    with TileWriter(path, {"mpp": 0.5, "sample": sample, "encoding": "png"}) as w:
        for k in range(n):
            base = np.array([200, 120, 180] if kind == "pink" else [120, 110, 200], np.float64)
            img = base + rng.normal(0, 25, (32, 32, 3))
            w.add(np.clip(img, 0, 255).astype(np.uint8), {"sample": sample, "x": 32 * k, "y": 0, "mpp": 0.5})


def test_ssl_and_real_fid_steps_end_to_end(tmp_path):
    """train_ssl_encoder -> compute_real_fid on tiny LMDBs: a table labelled with its extractor;
    a held-out set from another tissue gets a larger FID than one from the same tissue."""
    import pandas as pd

    from crossmodal.metrics import steps as ms

    lmdbs, rows = [], []
    for s, kind, split in (("A1", "pink", "train"), ("A2", "pink", "train"), ("A3", "pink", "test"),
                           ("B1", "blue", "val")):
        _textured_lmdb(tmp_path / f"{s}.lmdb", s, 24, kind, seed=len(rows))
        lmdbs.append(str(tmp_path / f"{s}.lmdb"))
        rows.append({"patient": s, "sample": s, "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    hp = {"depth": 10, "image_size": 32, "proj_dim": 8, "temperature": 0.5, "epochs": 1, "batch_size": 16,
          "lr": 0.06, "momentum": 0.9, "weight_decay": 5e-4, "crop_scale": [0.5, 1.0], "jitter": 0.5,
          "max_tiles": None, "is_clusters": 3, "checkpoint_every": 100}
    out = {"encoder": str(tmp_path / "ssl" / "encoder.pt"), "done": str(tmp_path / "ssl" / "done.json"),
           "losses": str(tmp_path / "ssl" / "losses.tsv")}
    ms.train_ssl_encoder({"tiles": lmdbs, "splits": str(tmp_path / "splits.tsv")}, out,
                         {"ssl": hp, "seed": 0, "device": "cpu", "checkpoints": str(tmp_path / "ssl" / "ck")})
    assert len(pd.read_csv(out["losses"], sep="\t")) == 3  # 48 training tiles / batch 16, one epoch
    fid = {"batch_size": 16, "max_images": None, "kid_pool": 1000, "kid_subsets": 10, "kid_subset_size": 20,
           "is_splits": 2}
    tables = {}
    for name, held_out in (("same", ["A1", "A2", "A3"]), ("other", ["A1", "A2", "B1"])):
        ins = {"tiles": [str(tmp_path / f"{s}.lmdb") for s in held_out], "splits": str(tmp_path / "splits.tsv"),
               "encoder": [out["encoder"]]}  # as Snakemake passes it
        o = {"table": str(tmp_path / f"{name}.tsv")}
        ms.compute_real_fid(ins, o, {"extractors": ["cohort-ssl"], "inception_weights": None, "fid": fid,
                                     "seed": 0, "device": "cpu"})
        tables[name] = pd.read_csv(o["table"], sep="\t").iloc[0]
    t = tables["same"]
    assert t.extractor == "cohort-ssl" and "not comparable to the paper's" in t.comparability
    assert t.n_a == 48 and t.n_b == 24 and t.is_a_mean >= 1.0
    assert tables["other"].fid > 2 * t.fid
    # inception-fid without its weights: the error names the config key, nothing is written
    with pytest.raises(FileNotFoundError, match="metrics.inception_weights"):
        ms.compute_real_fid(ins, {"table": str(tmp_path / "x.tsv")},
                            {"extractors": ["inception-fid"], "inception_weights": str(tmp_path / "no.pth"),
                             "fid": fid, "seed": 0, "device": "cpu"})
    assert not (tmp_path / "x.tsv").exists()
