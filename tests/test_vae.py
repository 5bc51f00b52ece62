"""The shared β-VAE (crossmodal.models.vae): loss, schedule, training with early stopping,
save/load, and the pipeline helpers' errors.  Small sizes: the whole file runs in seconds."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal.models import vae


def planted(n_per=40, genes=120, seed=0):
    """Two 'tissues' whose programs differ in 20 genes (+ unit noise)."""
    rng = np.random.default_rng(seed)
    prog = np.zeros((2, genes), np.float32)
    prog[0, :20] = 2.0
    prog[1, 20:40] = 2.0
    x = np.concatenate([prog[k] + rng.standard_normal((n_per, genes)) for k in (0, 1)]).astype(np.float32)
    y = np.repeat([0, 1], n_per)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


SMALL = vae.VAESettings(hidden=[64, 32], latent=8, lr=3e-3, batch_size=16, max_epochs=80,
                        warmup_epochs=3, patience=15)


def test_paper_defaults_are_rna_gans():
    s = vae.VAESettings()
    assert (s.hidden, s.latent, s.beta, s.lr, s.batch_size, s.max_epochs) == ([6000, 4096], 2048, 0.005, 5e-5, 128, 250)
    assert s.reconstruction == "mean"


def test_settings_from_dict_refuse_unknown_keys_naming_them():
    s = vae.VAESettings.from_dict({"latent": 3, "reconstruction": "sum"})
    assert (s.latent, s.reconstruction) == (3, "sum")
    with pytest.raises(ValueError, match=r"unknown key\(s\) laten \(known"):
        vae.VAESettings.from_dict({"laten": 3})
    # the data keys of a config model are not network settings: the step passes them as ignored
    assert vae._step_settings({"vae": {"latent": 4, "datasets": ["gtex"], "cohorts": None}}).latent == 4
    with pytest.raises(ValueError, match="unknown key.*betta"):
        vae._step_settings({"vae": {"latent": 4, "datasets": ["gtex"], "betta": 0.1}})
    with pytest.raises(ValueError, match="reconstruction must be one of"):
        vae.VAESettings(reconstruction="median")


def test_schema_validates_extra_models_and_their_reconstruction():
    from crossmodal.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="models.multi_tissue.laten"):
        load_config({"rna_gan": {"vae": {"models": {"multi_tissue": {"laten": 3}}}}})
    with pytest.raises(ConfigError, match="models.multi_tissue.beta"):
        load_config({"rna_gan": {"vae": {"models": {"multi_tissue": {"beta": "abc"}}}}})
    with pytest.raises(ConfigError, match="reconstruction"):
        load_config({"rna_gan": {"vae": {"reconstruction": "median"}}})
    cfg = load_config({"rna_gan": {"vae": {"latent": 16, "models": {"multi_tissue": {"cohorts": None, "beta": 0.1}}}}})
    # a model entry is not filled with schema defaults: it overrides only what it names
    assert cfg["rna_gan"]["vae"]["models"]["multi_tissue"] == {"cohorts": None, "beta": 0.1}
    ms = vae.model_settings(cfg, "rna_gan", "multi_tissue")
    assert (ms["latent"], ms["beta"], ms["reconstruction"]) == (16, 0.1, "mean")
    assert vae._step_settings({"vae": ms}).beta == 0.1
    assert cfg["rna_cdm"]["vae"]["reconstruction"] == "mean"


def test_mean_reconstruction_weighs_the_kl_more_than_sum():
    """With the same beta, "mean" divides the reconstruction by n_genes, so the KL (the latent's
    distance from the prior) ends lower than under "sum" - the difference the setting makes."""
    torch.set_num_threads(1)
    x, _ = planted(n_per=30)
    kls = {}
    for rec in ("mean", "sum"):
        s = vae.VAESettings(hidden=[32], latent=4, beta=0.05, lr=3e-3, batch_size=16, max_epochs=40,
                            warmup_epochs=2, patience=40, reconstruction=rec)
        m, _ = vae.fit(x[:45], x[45:], s, seed=0, progress=False)
        kls[rec] = vae.evaluate(m, x[45:], s.beta, reconstruction=rec)["kl"]
    assert kls["mean"] < 0.5 * kls["sum"]


def test_fit_raises_a_named_error_when_the_validation_loss_is_never_finite(monkeypatch):
    x, _ = planted(n_per=10)
    real = vae.evaluate

    def nan_loss(*a, **k):
        return {**real(*a, **k), "loss": float("nan")}

    monkeypatch.setattr(vae, "evaluate", nan_loss)
    s = vae.VAESettings(hidden=[8], latent=2, batch_size=8, max_epochs=3, warmup_epochs=0, patience=2)
    with pytest.raises(vae.VAETrainingError, match="validation loss was never finite"):
        vae.fit(x[:15], x[15:], s, progress=False)


def test_architecture_has_batchnorm_and_leakyrelu_between_layers():
    m = vae.BetaVAE(50, [30, 20], 5)
    kinds = [type(x).__name__ for x in m.encoder]
    assert kinds == ["Linear", "BatchNorm1d", "LeakyReLU"] * 2
    assert m.mu.out_features == 5 and m.decoder[-1].out_features == 50


def test_loss_terms():
    x = torch.randn(4, 10)
    zero = torch.zeros(4, 3)
    total, rec, kl = vae.vae_loss(x, x, zero, zero, beta=0.5)
    assert float(rec) == 0 and float(kl) == 0 and float(total) == 0
    # KL of N(1, 1) vs N(0, 1) per dim = 0.5; summed over 3 dims
    _, _, kl = vae.vae_loss(x, x, torch.ones(4, 3), zero, beta=1.0)
    assert float(kl) == pytest.approx(1.5)
    # reconstruction "sum": squared error summed over the 10 genes; KL 1.5 weighted by beta 2
    total, rec, _ = vae.vae_loss(x, x + 1, torch.ones(4, 3), zero, beta=2.0, reconstruction="sum")
    assert float(rec) == pytest.approx(10.0) and float(total) == pytest.approx(13.0)
    # "mean" (the default: the paper's (R)MSE and the authors' F.mse_loss): averaged over genes,
    # so the same beta weighs the KL n_genes (10) times more against the reconstruction
    total, rec, _ = vae.vae_loss(x, x + 1, torch.ones(4, 3), zero, beta=2.0)
    assert float(rec) == pytest.approx(1.0) and float(total) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="reconstruction must be one of"):
        vae.vae_loss(x, x, zero, zero, beta=1.0, reconstruction="median")


def test_warmup_then_cosine_schedule():
    lr = [vae.warmup_cosine(e, 5, 50) for e in range(50)]
    assert all(a < b for a, b in zip(lr[:5], lr[1:6]))  # rises during warm-up
    assert lr[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[5:], lr[6:]))  # then decays
    assert vae.warmup_cosine(50, 5, 50) == pytest.approx(0.0, abs=1e-9)


def test_fit_separates_planted_tissues_and_keeps_the_best_epoch():
    torch.set_num_threads(1)
    x, y = planted()
    tr, va, te = slice(0, 48), slice(48, 64), slice(64, 80)
    model, hist = vae.fit(x[tr], x[va], SMALL, seed=0, progress=False)
    z = vae.encode(model, x[te])
    assert vae.silhouette_by(z, y[te]) > 0.3
    # the returned weights are those of the best validation epoch
    best = hist["val_loss"].min()
    assert vae.evaluate(model, x[va], SMALL.beta, reconstruction=SMALL.reconstruction)["loss"] == pytest.approx(best, rel=1e-4)
    # reconstruction beats predicting the (zero) mean
    assert vae.evaluate(model, x[te], SMALL.beta)["rmse"] < float(np.sqrt((x[te] ** 2).mean()))


def test_early_stopping_stops_before_max_epochs():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((40, 30)).astype(np.float32)  # nothing to learn: val loss stalls
    s = vae.VAESettings(hidden=[16], latent=4, lr=1e-2, batch_size=8, max_epochs=300, warmup_epochs=0, patience=5)
    _, hist = vae.fit(noise[:30], noise[30:], s, seed=0, progress=False)
    assert len(hist) < 300


def test_fit_is_reproducible_from_the_seed():
    x, _ = planted(n_per=20)
    s = vae.VAESettings(hidden=[16], latent=4, lr=1e-2, batch_size=8, max_epochs=5, warmup_epochs=1, patience=5)
    a, _ = vae.fit(x[:30], x[30:], s, seed=3, progress=False)
    b, _ = vae.fit(x[:30], x[30:], s, seed=3, progress=False)
    assert np.allclose(vae.encode(a, x), vae.encode(b, x))


def test_bad_input_is_named():
    x, _ = planted(n_per=10)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vae.fit(x[:15], x[15:], SMALL, progress=False)
    with pytest.raises(ValueError, match="validation split is empty"):
        vae.fit(x[:15], x[:0], SMALL, progress=False)


def test_save_load_roundtrip(tmp_path):
    x, _ = planted(n_per=10)
    m = vae.BetaVAE(x.shape[1], [16], 4).eval()
    vae.save(m, tmp_path / "m.pt", [f"g{i}" for i in range(x.shape[1])], extra={"a": 1})
    m2, genes, extra = vae.load(tmp_path / "m.pt")
    assert genes[:2] == ["g0", "g1"] and extra == {"a": 1}
    assert np.allclose(vae.encode(m, x), vae.encode(m2, x))


def test_damaged_or_wrong_model_file_is_named(tmp_path):
    """The audit's encode_expression repro: a truncated, empty, text or other-model file as the
    VAE gave torch's bare RuntimeError / EOFError / KeyError / ValueError naming no file."""
    from crossmodal.fileio import CheckpointError

    m = vae.BetaVAE(6, [4], 2).eval()
    vae.save(m, tmp_path / "model.pt", [f"g{i}" for i in range(6)])
    raw = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("garbage\n")
    torch.save({"format": "crossmodal-simclr", "arch": {}, "backbone": {}}, tmp_path / "other.pt")
    for name, match in [("trunc.pt", "unreadable"), ("zero.pt", r"unreadable \(EOFError"),
                        ("text.pt", "unreadable"), ("other.pt", r"not a VAE model checkpoint \(no 'config', 'state'")]:
        with pytest.raises(CheckpointError, match=rf"VAE model .*{name}: {match}"):
            vae.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"VAE model .*nope\.pt: not found \(the train_vae rule"):
        vae.load(tmp_path / "nope.pt")
    assert vae.load(tmp_path / "model.pt")[1][0] == "g0"


def test_load_checkpoint_names_path_and_expected_format(tmp_path):
    from crossmodal.fileio import CheckpointError, load_checkpoint

    torch.save({"format": "a", "x": 1}, tmp_path / "a.pt")
    torch.save([1, 2], tmp_path / "l.pt")
    assert load_checkpoint(tmp_path / "a.pt", "thing", fmt="a", keys=("x",))["x"] == 1
    with pytest.raises(CheckpointError, match=r"thing .*a\.pt: not a b checkpoint \(format 'a'\)"):
        load_checkpoint(tmp_path / "a.pt", "thing", fmt="b")
    with pytest.raises(CheckpointError, match=r"thing .*l\.pt: not a thing checkpoint \(no 'x'; it holds a list\)"):
        load_checkpoint(tmp_path / "l.pt", "thing", keys=("x",))
    assert issubclass(CheckpointError, ValueError)


def test_align_genes_names_missing_genes():
    df = pd.DataFrame(np.zeros((2, 2)), columns=["A", "B"])
    assert vae.align_genes(df, ["B", "A"], "t").shape == (2, 2)
    with pytest.raises(ValueError, match="missing .*first: C"):
        vae.align_genes(df, ["A", "C"], "external.tsv")


def test_model_settings_and_sample_selection():
    cfg = {"rna_gan": {"vae": {"latent": 8, "cohorts": ["L", "B"], "models": {"multi": {"cohorts": None}}}}}
    assert vae.model_settings(cfg, "rna_gan", "main")["cohorts"] == ["L", "B"]
    assert vae.model_settings(cfg, "rna_gan", "multi")["cohorts"] is None
    assert vae.model_settings(cfg, "rna_gan", "multi")["latent"] == 8
    with pytest.raises(KeyError, match="models.nope"):
        vae.model_settings(cfg, "rna_gan", "nope")
    with pytest.raises(KeyError, match="rna_cdm.vae"):
        vae.model_settings(cfg, "rna_cdm", "main")
    expr = pd.DataFrame(np.zeros((3, 2)), index=["s1", "s2", "s3"])
    splits = pd.DataFrame({"sample": ["s1", "s2", "s3"], "cohort": ["L"] * 3, "split": ["train", "val", "test"]})
    assert len(vae.select_samples(expr, splits, ["L"], "t")) == 3
    with pytest.raises(ValueError, match="cohort.*Q"):
        vae.select_samples(expr, splits, ["Q"], "t")
    with pytest.raises(ValueError, match="test split has no samples"):
        vae.select_samples(expr, splits.iloc[:2], None, "t")


def test_silhouette_needs_two_labels():
    assert math.isnan(vae.silhouette_by(np.zeros((3, 2)), ["a", "a", "a"]))


def test_fit_on_the_requested_device_saves_cpu_tensors(tmp_path):
    x, _ = planted(n_per=20)
    s = vae.VAESettings(hidden=[16], latent=4, lr=1e-2, batch_size=8, max_epochs=3, warmup_epochs=1, patience=5)
    a, _ = vae.fit(x[:30], x[30:], s, seed=3, progress=False, device="cpu")
    b, _ = vae.fit(x[:30], x[30:], s, seed=3, progress=False)  # the default stays cpu (RNA-CDM, coherent)
    assert {p.device.type for p in a.parameters()} == {"cpu"}
    assert np.allclose(vae.encode(a, x), vae.encode(b, x))
    vae.save(a, tmp_path / "m.pt", [f"g{i}" for i in range(x.shape[1])])
    state = torch.load(tmp_path / "m.pt", weights_only=False)["state"]  # no map_location: as saved
    assert state and all(v.device.type == "cpu" for v in state.values())
    m, _, _ = vae.load(tmp_path / "m.pt")
    assert np.allclose(vae.encode(m, x), vae.encode(a, x))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_without_cuda_is_refused_and_auto_means_cpu():
    x, _ = planted(n_per=10)
    s = vae.VAESettings(hidden=[8], latent=2, lr=1e-2, batch_size=8, max_epochs=1, warmup_epochs=0, patience=5)
    with pytest.raises(RuntimeError, match="cuda requested"):
        vae.fit(x[:15], x[15:], s, progress=False, device="cuda")
    m, _ = vae.fit(x[:15], x[15:], s, progress=False, device="auto")
    assert {p.device.type for p in m.parameters()} == {"cpu"}
