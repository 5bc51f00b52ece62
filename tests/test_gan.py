"""DCGAN / WGAN-GP and RNA-GAN's generator inputs (crossmodal.models.gan), including the
conditioning test: different expression latents give different generator inputs and, after a
short training on tiles whose colour follows the latent, different tiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.models import gan


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("size", [8, 16, 32, 256])
def test_generator_and_critic_shapes(size):
    g, d = gan.Generator(12, size, ngf=4), gan.Critic(size, ndf=4)
    x = g(torch.randn(2, 12))
    assert x.shape == (2, 3, size, size) and float(x.detach().abs().max()) <= 1
    assert d(x).shape == (2,)


def test_bad_size_is_an_error():
    with pytest.raises(ValueError, match="power of 2"):
        gan.Generator(8, 48)


def test_default_widths_are_torchgans_and_max_channels_caps_them():
    """TorchGAN's DCGAN (the authors' network, step_channels 64) at 256 px: generator widths
    64 * 2**5 = 2048 halving to 64, critic 64 doubling to 2048, no cap."""
    def conv_widths(m):
        return [l.out_channels for l in m.net if isinstance(l, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]

    g, d = gan.Generator(16, 256, ngf=64), gan.Critic(256, ndf=64)
    assert conv_widths(g) == [2048, 1024, 512, 256, 128, 64, 3]
    assert conv_widths(d) == [64, 128, 256, 512, 1024, 2048, 1]
    g, d = gan.Generator(16, 256, ngf=64, max_channels=512), gan.Critic(256, ndf=64, max_channels=512)
    assert conv_widths(g) == [512, 512, 512, 256, 128, 64, 3]
    assert conv_widths(d) == [64, 128, 256, 512, 512, 512, 1]
    m = gan.WGANGP("gan", 8, 64, ngf=8, ndf=8, max_channels=16)
    assert max(m.G.widths) == 16 and max(m.D.widths) == 16
    for bad in (0, 2.5, "512"):
        with pytest.raises(ValueError, match="max_channels"):
            gan.Generator(8, 16, max_channels=bad)


def test_narrow_noise_stays_in_the_paper_range():
    z = gan.narrow_noise(1000, 64, std=0.1, clip=0.3, generator=torch.Generator().manual_seed(0))
    assert float(z.abs().max()) <= 0.3 + 1e-7
    assert 0.08 < float(z.std()) < 0.11


def test_generator_inputs_follow_the_variant():
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(5, 16) * 3
    kw = dict(noise_std=0.1, noise_clip=0.3, generator=g)
    zr = gan.generator_input("rna_gan", 5, 16, lat, **kw)
    # RNA-GAN input = the patient's latent + narrow noise; no per-batch standardisation
    assert float((zr - lat).abs().max()) <= 0.3 + 1e-6
    zc = gan.generator_input("control", 5, 16, None, **kw)
    assert float(zc.abs().max()) <= 0.3 + 1e-6
    zg = gan.generator_input("gan", 5, 16, None, **kw)
    assert float(zg.std()) > 0.5
    with pytest.raises(ValueError, match="latents of shape"):
        gan.generator_input("rna_gan", 5, 16, None, **kw)
    with pytest.raises(ValueError, match="unknown GAN variant"):
        gan.generator_input("vae_gan", 5, 16, None, **kw)


def test_two_expression_profiles_give_different_generator_inputs():
    a, b = torch.zeros(1, 8), torch.ones(1, 8)
    kw = dict(noise_std=0.1, noise_clip=0.3)
    za = gan.generator_input("rna_gan", 1, 8, a, generator=torch.Generator().manual_seed(1), **kw)
    zb = gan.generator_input("rna_gan", 1, 8, b, generator=torch.Generator().manual_seed(1), **kw)
    # the same noise draw: the inputs differ exactly by the latent difference
    assert torch.allclose(zb - za, b - a, atol=1e-6)


class _Linear(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        w = torch.ones_like(x[0]).flatten() / np.sqrt(x[0].numel())
        return self.scale * (x.flatten(1) @ w)


@pytest.mark.parametrize("scale,expected", [(1.0, 0.0), (2.0, 1.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic(scale, expected):
    # D(x) = scale * <w, x> with |w| = 1 has gradient norm `scale` everywhere: GP = (scale - 1)^2
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    assert float(gan.gradient_penalty(_Linear(scale), real, fake)) == pytest.approx(expected, abs=1e-5)


def test_paper_optimiser_settings():
    m = gan.WGANGP("gan", 8, 16, ngf=4, ndf=4)
    assert m.opt_g.defaults["lr"] == 1e-3 and m.opt_d.defaults["lr"] == 4e-3
    assert m.opt_g.defaults["betas"] == (0.5, 0.999) and m.gp_lambda == 10.0


def test_augment_flips_and_keeps_range():
    x = torch.linspace(-1, 1, 16).view(1, 1, 4, 4).repeat(8, 3, 1, 1)
    y = gan.augment(x, torch.Generator().manual_seed(0), jitter=0.0)
    assert y.shape == x.shape and float(y.abs().max()) <= 1
    flipped = [not torch.allclose(y[i], x[i]) for i in range(8)]
    assert any(flipped) and not all(flipped)


def _coloured_tiles(n_per, size=16, seed=0):
    """Patient A's tiles are red, patient B's blue (+ texture noise); latents are far apart."""
    rng = np.random.default_rng(seed)
    red = np.zeros((n_per, size, size, 3)); red[..., 0] = 200; red[..., 2] = 40
    blue = np.zeros((n_per, size, size, 3)); blue[..., 0] = 40; blue[..., 2] = 200
    tiles = np.concatenate([red, blue]) + rng.normal(0, 15, (2 * n_per, size, size, 3))
    lat = np.zeros((2 * n_per, 8), np.float32)
    lat[:n_per, 0], lat[n_per:, 0] = 2.0, -2.0
    return np.clip(tiles, 0, 255).astype(np.uint8), lat


def test_rna_gan_tiles_follow_the_expression_latent_after_short_training():
    tiles, lat = _coloured_tiles(32)
    m = gan.WGANGP("rna_gan", 8, 16, ngf=8, ndf=8, seed=0)
    rows, snaps = gan.fit(m, lambda b: (tiles[b], lat[b]), len(tiles), epochs=25, batch_size=16, seed=0,
                          jitter=0.0, snapshot_latents=lat, n_snapshot=4, progress=False)
    assert len(rows) == 25 and snaps.shape == (25, 4, 16, 16, 3)
    za, zb = torch.as_tensor(lat[:16]), torch.as_tensor(lat[-16:])
    ta = m.generate(16, za, seed=5).astype(float)
    tb = m.generate(16, zb, seed=5).astype(float)
    red_minus_blue = lambda t: (t[..., 0] - t[..., 2]).mean()  # noqa: E731
    # patient A's latent gives redder tiles than patient B's, as in their real tiles
    assert red_minus_blue(ta) - red_minus_blue(tb) > 40
    # and the difference between patients exceeds the spread within one patient's tiles
    within = np.abs(ta - ta.mean(0)).mean()
    assert np.abs(ta.mean(0) - tb.mean(0)).mean() > within


def test_mode_seeking_ratio_measures_noise_in_units_of_its_std():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    z1, z2 = torch.zeros(2, 8), torch.full((2, 8), 0.2)
    assert float(gan.mode_seeking_ratio(a, b, z1, z2)) == pytest.approx(0.5 / 0.2)
    assert float(gan.mode_seeking_ratio(a, b, z1, z2, noise_scale=0.1)) == pytest.approx(0.5 / 2.0)
    with pytest.raises(ValueError, match="mode_seeking"):
        gan.WGANGP("rna_gan", 8, 16, ngf=4, ndf=4, mode_seeking=-1)


def test_mode_seeking_restores_one_patients_tile_diversity_and_keeps_the_condition():
    """Beyond the paper: with its loss alone RNA-GAN maps one patient's latent to ~one tile
    whatever the narrowed noise (measured on the toy: pixel sd 2-4 within a donor vs 29 real);
    MSGAN's term spreads the tiles again while the patients stay apart."""
    tiles, lat = _coloured_tiles(32)
    real_within = np.abs(tiles[:32] - tiles[:32].mean(0)).mean()  # ~10 (texture noise)
    out = {}
    for lam in (0.0, 0.1):
        m = gan.WGANGP("rna_gan", 8, 16, ngf=8, ndf=8, seed=0, mode_seeking=lam)
        rows, _ = gan.fit(m, lambda b: (tiles[b], lat[b]), len(tiles), epochs=25, batch_size=16, seed=0,
                          jitter=0.0, snapshot_latents=lat, n_snapshot=4, progress=False)
        ta = m.generate(16, torch.as_tensor(lat[:16]), seed=5).astype(float)
        tb = m.generate(16, torch.as_tensor(lat[-16:]), seed=5).astype(float)
        out[lam] = (np.abs(ta - ta.mean(0)).mean(), ((ta[..., 0] - ta[..., 2]) - (tb[..., 0] - tb[..., 2])).mean(),
                    "mode_seeking_ratio" in rows[-1])
    (w0, cond0, logged0), (w1, cond1, logged1) = out[0.0], out[0.1]
    # measured with one thread, training seeds 0-3: within a patient 1.1-1.9 without the term,
    # 6.5-11 with λ 0.1 (λ 0.3: 14-20, more than the real tiles, and the patients merge)
    assert w0 < 0.3 * real_within
    assert w1 > 3 * w0 and w1 < 2 * real_within
    assert cond1 > 50 and cond0 > 50  # the red patient's tiles stay redder (measured 152 / 248)
    assert logged1 and not logged0


def test_control_ignores_expression():
    m = gan.WGANGP("control", 8, 16, ngf=4, ndf=4, seed=0)
    with pytest.raises(ValueError, match="rna_gan"):
        gan.generator_input("rna_gan", 2, 8, None, noise_std=0.1, noise_clip=0.3)
    assert m.generate(3, None, seed=1).shape == (3, 16, 16, 3)


def test_training_resumes_to_the_same_weights(tmp_path):
    from crossmodal.training import ResumableRun

    tiles, lat = _coloured_tiles(8)
    get = lambda b: (tiles[b], lat[b])  # noqa: E731

    def run(epochs, ckpt):
        m = gan.WGANGP("rna_gan", 8, 16, ngf=4, ndf=4, seed=0)
        r = ResumableRun(ckpt, every_steps=1, meta={"t": 1}, handle_signals=False)
        rows, snaps = gan.fit(m, get, len(tiles), epochs=epochs, batch_size=8, seed=0, snapshot_latents=lat,
                              n_snapshot=2, run=r, progress=False)
        return m, rows, snaps

    full, rows_full, snaps_full = run(3, tmp_path / "a")
    run(1, tmp_path / "b")  # "killed" after one epoch (checkpoint at its last step)
    resumed, rows_res, snaps_res = run(3, tmp_path / "b")
    assert resumed.steps == full.steps == 6
    for p, q in zip(full.G.parameters(), resumed.G.parameters()):
        assert torch.allclose(p, q)
    assert len(rows_res) == 3 and np.array_equal(snaps_full, snaps_res)


def test_wgangp_trains_generates_and_checkpoints_on_the_requested_device(tmp_path):
    from crossmodal.rna_gan.generators import load_generator, save_model

    tiles, lat = _coloured_tiles(4)
    m = gan.WGANGP("rna_gan", 8, 16, ngf=4, ndf=4, seed=0, device="cpu")
    assert m.device == torch.device("cpu")
    assert {p.device for p in list(m.G.parameters()) + list(m.D.parameters())} == {torch.device("cpu")}
    rows, snaps = gan.fit(m, lambda b: (tiles[b], lat[b]), len(tiles), epochs=1, batch_size=4, seed=0,
                          snapshot_latents=lat, n_snapshot=2, progress=False)
    assert len(rows) == 1 and isinstance(snaps, np.ndarray) and snaps.shape == (1, 2, 16, 16, 3)
    state = m.state_dict()
    assert all(v.device.type == "cpu" for v in state["G"].values())
    save_model(m, tmp_path / "g.pt", {})
    cfg = {"ngf": 4, "ndf": 4, "noise_std": 0.1, "noise_clip": 0.3}
    g = load_generator(tmp_path / "g.pt", cfg, device="cpu")
    z = torch.as_tensor(lat[:3])
    assert np.array_equal(g.generate(3, z, seed=1), m.generate(3, z, seed=1))
    # a half-copied generator, or another model's file in its place, is named with what it should be
    from crossmodal.fileio import CheckpointError

    whole = (tmp_path / "g.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"RNA-GAN generator .*cut\.pt: unreadable"):
        load_generator(tmp_path / "cut.pt", cfg)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a RNA-GAN generator checkpoint \(no 'G'"):
        load_generator(tmp_path / "other.pt", cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_without_cuda_is_a_clear_error_and_auto_falls_back_to_cpu():
    from crossmodal.rna_gan.generators import step_device

    # the project's convention (crossmodal.metrics.image.resolve_device): "cuda" without CUDA
    # is refused with a message naming the setting, "auto" means cpu
    with pytest.raises(RuntimeError, match="cuda requested"):
        gan.WGANGP("gan", 8, 16, ngf=4, ndf=4, device="cuda")
    with pytest.raises(RuntimeError, match="cuda requested"):
        step_device({"device": "cuda"})
    assert step_device({"device": "auto"}) == "cpu" and step_device({}) == "cpu"
    assert gan.WGANGP("gan", 8, 16, ngf=4, ndf=4, device="auto").device == torch.device("cpu")


def test_fit_calls_on_epoch_after_every_epoch_with_the_trained_generator():
    """The per-epoch hook behind the convergence measurement sees epochs 1..E in order, each
    after that epoch's last step, with the generator in eval mode."""
    tiles, lat = _coloured_tiles(8)
    m = gan.WGANGP("rna_gan", 8, 16, ngf=4, ndf=4, seed=0)
    seen = []

    def hook(epoch, model):
        assert model is m and not model.G.training
        seen.append((epoch, model.steps))

    rows, _ = gan.fit(m, lambda b: (tiles[b], lat[b]), len(tiles), epochs=3, batch_size=4, seed=0,
                      snapshot_latents=lat, n_snapshot=2, progress=False, on_epoch=hook)
    assert seen == [(1, 4), (2, 8), (3, 12)] and [r["epoch"] for r in rows] == [1, 2, 3]
