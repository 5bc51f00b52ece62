"""DCGAN generator / critic with the WGAN-GP loss, and RNA-GAN's three input variants.

RNA-GAN (Carrillo-Perez et al. 2023, STAR Methods "GAN architecture ..." and "RNA-GAN
architecture ..."): a DCGAN (Radford et al.) at 256x256, Wasserstein loss with gradient
penalty (Gulrajani et al., λ = 10, Equation 3), Adam for both networks (G 1e-3, D 4e-3, betas
0.5/0.999), colour jitter and random horizontal / vertical flips, 600 tiles per slide, one
model per tissue.  Generator inputs (``variant``):

- ``gan``      - z ~ N(0, I) (Figure 1B);
- ``rna_gan``  - the patient's β-VAE latent + noise from the narrowed normal distribution
  (values in [-0.3, 0.3], Equation 5 / Figure 1C);
- ``control``  - the narrowed noise alone (Figure 4C: no expression signal).

The authors' public code standardises the generator input per batch, over batches drawn from
one slide, which removes the patient's expression signal; we feed the latent as it is.

Differences from the authors' network (TorchGAN ``DCGANGenerator`` / ``DCGANDiscriminator`` with
``step_channels`` 64, ``nonlinearity`` LeakyReLU(0.2), their src/histopathology_gan.py; the paper
itself says only "DCGAN" and "Torchgan"):

- widths: TorchGAN doubles the width per resolution step without a cap - at 256 px the generator
  runs 2048, 1024, ..., 64 channels from 4x4 to 128x128 and the critic 64, ..., 2048 from 128x128
  to 4x4.  ``max_channels`` caps both; ``None`` (the config default) reproduces TorchGAN's widths
  (about 112 M generator and 45 M critic parameters at 256 px), an integer caps them (the classic
  DCGAN's 512, which this module hardcoded before).  The toy's widths (ngf = ndf = 8 at 64 px,
  at most 64) are below any cap.
- generator activation: ReLU (Radford et al.'s DCGAN) instead of TorchGAN's LeakyReLU(0.2).
- critic normalisation: InstanceNorm (affine) instead of TorchGAN's BatchNorm: the gradient
  penalty is computed per sample, and batch statistics couple the samples of a batch (Gulrajani
  et al. recommend no batch norm in the critic).  The critic's score is linear; TorchGAN's
  discriminator ends in LeakyReLU(0.2) (the authors' ``last_nonlinearity``).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

VARIANTS = ("gan", "rna_gan", "control")


class Generator(nn.Module):
    """DCGAN generator: z (nz) -> 4x4 -> ... -> image_size x image_size x 3 in [-1, 1].

    Widths ``ngf * 2**k`` from 4x4 (widest) to image_size/2 (``ngf``), capped at ``max_channels``
    (``None``: no cap, TorchGAN's widths); ReLU activations (TorchGAN: LeakyReLU(0.2))."""

    def __init__(self, nz: int, image_size: int = 256, ngf: int = 64, max_channels: int | None = None):
        super().__init__()
        n_up = int(round(math.log2(image_size))) - 2
        if image_size < 8 or 2 ** (n_up + 2) != image_size:
            raise ValueError(f"Generator: image_size must be a power of 2 >= 8, got {image_size}")
        self.nz, self.image_size = nz, image_size
        _check_cap(max_channels)
        cap = max_channels or float("inf")
        ch = [int(min(ngf * 2 ** (n_up - 1 - i), cap)) for i in range(n_up)]  # widths at 4x4 .. size/2
        self.widths = ch
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ch[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.nz, 1, 1))


class Critic(nn.Module):
    """DCGAN discriminator used as a WGAN critic (no batch norm: the gradient penalty is per
    sample, so instance norm replaces it, as recommended by Gulrajani et al.; TorchGAN's DCGAN
    discriminator uses BatchNorm).  Widths ``ndf * 2**k`` from image_size/2 to 4x4, capped at
    ``max_channels`` (``None``: TorchGAN's widths); linear score (TorchGAN: LeakyReLU(0.2))."""

    def __init__(self, image_size: int = 256, ndf: int = 64, max_channels: int | None = None):
        super().__init__()
        n_down = int(round(math.log2(image_size))) - 2
        if image_size < 8 or 2 ** (n_down + 2) != image_size:
            raise ValueError(f"Critic: image_size must be a power of 2 >= 8, got {image_size}")
        _check_cap(max_channels)
        cap = max_channels or float("inf")
        ch = [int(min(ndf * 2 ** i, cap)) for i in range(n_down)]  # widths at size/2 .. 4x4
        self.widths = ch
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.InstanceNorm2d(b, affine=True),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ch[-1], 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(len(x))


def _check_cap(max_channels) -> None:
    if max_channels is not None and (isinstance(max_channels, bool) or not isinstance(max_channels, int)
                                     or max_channels < 1):
        raise ValueError(f"max_channels must be a positive integer or None (no cap), got {max_channels!r}")


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def narrow_noise(n: int, dim: int, std: float, clip: float, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """The 'narrowed' normal of RNA-GAN: N(0, std²) truncated to [-clip, clip]."""
    z = torch.randn(n, dim, generator=generator, device=device) * std
    return z.clamp_(-clip, clip)


def generator_input(variant: str, n: int, nz: int, latents: torch.Tensor | None, *, noise_std: float,
                    noise_clip: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The generator input for a batch of ``n`` (``latents``: (n, nz) patient codes for rna_gan)."""
    if variant == "gan":
        return torch.randn(n, nz, generator=generator)
    noise = narrow_noise(n, nz, noise_std, noise_clip, generator)
    if variant == "control":
        return noise
    if variant == "rna_gan":
        if latents is None or latents.shape != (n, nz):
            raise ValueError(f"rna_gan needs latents of shape ({n}, {nz}), got "
                             f"{None if latents is None else tuple(latents.shape)}")
        return latents.float() + noise  # no per-batch standardisation: it cancels the expression signal
    raise ValueError(f"unknown GAN variant {variant!r}; known: {', '.join(VARIANTS)}")


def mode_seeking_ratio(fake1: torch.Tensor, fake2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                       noise_scale: float = 1.0) -> torch.Tensor:
    """Mao et al. 2019 (MSGAN, Equation 3): mean |G(z1) - G(z2)| / mean |z1 - z2| for two
    inputs that share their condition and differ in the noise.  The generator loss adds
    ``λ / (ratio + 1e-5)``, penalising a generator that maps different noise to the same tile.
    The noise difference is measured in units of the noise's std (``noise_scale``: 1 for the
    GAN's N(0, I), ``noise_std`` for the narrowed noise), so one λ means the same for the three
    variants (MSGAN's inputs are N(0, I))."""
    dz = (z1 - z2).abs().mean() / noise_scale
    return (fake1 - fake2).abs().mean() / dz.clamp_min(1e-12)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(||∇ D(x̂)||₂ - 1)²] at random interpolates x̂ of real and fake (Gulrajani et al.)."""
    eps = torch.rand(len(real), 1, 1, 1, generator=generator).to(real.device)
    xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(xh)
    (grad,) = torch.autograd.grad(out.sum(), xh, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def _resolve(device) -> torch.device:
    from crossmodal.metrics.image import resolve_device

    return torch.device(resolve_device(str(device)))


def cpu_state(state: dict) -> dict:
    """A copy of a (nested) state dict with every tensor on the CPU (loadable without CUDA)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_state(v) for v in state)
    return state


class WGANGP:
    """One generator + critic pair with the paper's optimisers; ``step`` trains on one batch.

    ``device`` ("cpu", "cuda", "auto" = cuda when available; see
    :func:`crossmodal.metrics.image.resolve_device`, which refuses "cuda" without CUDA) holds
    both networks; batches and latents are moved to it.  The generator inputs (noise) are drawn
    on the CPU from the model's seeded stream and then moved, so they do not depend on the device.
    """

    def __init__(self, variant: str, nz: int, image_size: int, *, ngf=64, ndf=64, max_channels=None,
                 lr_g=1e-3, lr_d=4e-3,
                 betas=(0.5, 0.999), gp_lambda=10.0, n_critic=1, noise_std=0.1, noise_clip=0.3, seed=0,
                 mode_seeking=0.0, device="cpu"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown GAN variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.device = _resolve(device)
        torch.manual_seed(seed)
        self.variant, self.nz, self.image_size = variant, nz, image_size
        self.gp_lambda, self.n_critic = gp_lambda, n_critic
        self.noise_std, self.noise_clip = noise_std, noise_clip
        if not mode_seeking >= 0:
            raise ValueError(f"mode_seeking must be >= 0, got {mode_seeking!r}")
        self.mode_seeking = float(mode_seeking)
        self.max_channels = max_channels
        self.G = Generator(nz, image_size, ngf, max_channels).to(self.device)
        self.D = Critic(image_size, ndf, max_channels).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=tuple(betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=tuple(betas))
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.steps = 0

    def inputs(self, n: int, latents: torch.Tensor | None) -> torch.Tensor:
        """Generator inputs for ``n`` tiles, on the model's device (drawn on the CPU)."""
        lat = latents.detach().cpu() if latents is not None else None
        return generator_input(self.variant, n, self.nz, lat, noise_std=self.noise_std,
                               noise_clip=self.noise_clip, generator=self.gen).to(self.device)

    def step(self, real: torch.Tensor, latents: torch.Tensor | None = None) -> dict:
        """One critic update (and a generator update every ``n_critic`` steps); ``real`` and
        ``latents`` may live on any device (they are moved to the model's)."""
        n = len(real)
        real = real.to(self.device)
        self.G.train(); self.D.train()
        with torch.no_grad():
            fake = self.G(self.inputs(n, latents))
        d_real, d_fake = self.D(real).mean(), self.D(fake).mean()
        gp = gradient_penalty(self.D, real, fake, self.gen)  # eps drawn on the CPU, moved to real's device
        loss_d = d_fake - d_real + self.gp_lambda * gp  # Equation 3
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        out = {"loss_d": loss_d.item(), "wasserstein": (d_real - d_fake).item(), "gp": gp.item()}
        self.steps += 1
        if self.steps % self.n_critic == 0:
            z1 = self.inputs(n, latents)
            fake1 = self.G(z1)
            loss_g = -self.D(fake1).mean()  # Equation 4 (maximise D(G(z)))
            if self.mode_seeking > 0:
                z2 = self.inputs(n, latents)  # same condition (latent), new noise
                ms = mode_seeking_ratio(fake1, self.G(z2), z1, z2, 1.0 if self.variant == "gan" else self.noise_std)
                loss_g = loss_g + self.mode_seeking / (ms + 1e-5)
                out["mode_seeking_ratio"] = ms.item()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            out["loss_g"] = loss_g.item()
        return out

    @torch.no_grad()
    def generate(self, n: int, latents: torch.Tensor | None = None, *, seed: int | None = None,
                 batch_size: int = 64) -> np.ndarray:
        """``n`` tiles as uint8 (n, H, W, 3); ``latents`` (n, nz) for rna_gan."""
        self.G.eval()
        gen = torch.Generator().manual_seed(seed) if seed is not None else self.gen
        out = []
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            lat = latents[i:i + m].detach().cpu() if latents is not None else None
            z = generator_input(self.variant, m, self.nz, lat, noise_std=self.noise_std,
                                noise_clip=self.noise_clip, generator=gen)
            out.append(to_uint8(self.G(z.to(self.device))))  # to_uint8 returns CPU numpy
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

    def state_dict(self) -> dict:
        """Every tensor on the CPU, so a checkpoint written on a GPU loads anywhere."""
        return cpu_state({"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                          "opt_d": self.opt_d.state_dict(), "gen": self.gen.get_state(), "steps": self.steps})

    def load_state_dict(self, s: dict) -> None:
        """Load a :meth:`state_dict` (from any device) onto this model's device (the optimisers
        cast their state to their parameters' device)."""
        self.G.load_state_dict(s["G"]); self.D.load_state_dict(s["D"])
        self.opt_g.load_state_dict(s["opt_g"]); self.opt_d.load_state_dict(s["opt_d"])
        self.gen.set_state(s["gen"]); self.steps = s["steps"]


def to_float(tiles_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1]."""
    t = torch.as_tensor(tiles_uint8)
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (n, 3, H, W) in [-1, 1] -> uint8 (n, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def augment(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Per-tile colour jitter (brightness / contrast / saturation ±jitter) and random
    horizontal / vertical flips (RNA-GAN STAR Methods; the strength is not given in the paper).
    ``x`` float (n, 3, H, W) in [-1, 1]."""
    from torchvision.transforms.v2 import functional as TF

    img = (x + 1) / 2
    n = len(img)
    out = []
    r = torch.rand(n, 5, generator=generator)
    for i in range(n):
        t = img[i]
        if jitter > 0:
            t = TF.adjust_brightness(t, 1 + jitter * (2 * float(r[i, 0]) - 1))
            t = TF.adjust_contrast(t, 1 + jitter * (2 * float(r[i, 1]) - 1))
            t = TF.adjust_saturation(t, 1 + jitter * (2 * float(r[i, 2]) - 1))
        if r[i, 3] < 0.5:
            t = t.flip(-1)
        if r[i, 4] < 0.5:
            t = t.flip(-2)
        out.append(t)
    return torch.stack(out).clamp(0, 1) * 2 - 1



class _History:
    """Per-epoch log and snapshot tiles, checkpointed with the model (state_dict protocol)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.snapshots: list[np.ndarray] = []

    def state_dict(self) -> dict:
        return {"rows": self.rows, "snapshots": self.snapshots}

    def load_state_dict(self, s: dict) -> None:
        self.rows, self.snapshots = list(s["rows"]), list(s["snapshots"])


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased resize of float (n, 3, H, W) tiles to size x size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def fit(model: WGANGP, get_batch, n: int, *, epochs: int, batch_size: int, seed: int = 0,
        jitter: float = 0.1, snapshot_latents: np.ndarray | None = None, n_snapshot: int = 16,
        max_steps_per_epoch: int | None = None, run=None, progress: bool = True, on_epoch=None):
    """Train ``model`` for ``epochs`` passes over ``n`` training tiles.

    ``get_batch(indices) -> (uint8 tiles (b, H, W, 3), latents (b, nz) or None)`` reads a
    batch (any tile size: tiles are resized to the model's).  Batches are shuffled per epoch
    with :func:`crossmodal.training.step_batch` (a pure function of seed and step, so a run
    resumed from a checkpoint sees the same batches).  ``run`` is an optional
    :class:`crossmodal.training.ResumableRun` (checkpoints; SIGTERM -> save and exit 75).

    Batches are moved to ``model.device`` before augmentation; latents and snapshot inputs too.

    ``on_epoch(epoch, model)``: called at the end of every epoch (1-based), with the generator
    in eval mode, before the step's checkpoint; an epoch replayed after a resume calls it
    again, so it should write idempotently (e.g. a per-epoch file, replaced).

    Returns (history rows, snapshots (epochs, n_snapshot, H, W, 3)): tiles generated after
    each epoch from the same fixed inputs (for Figure 5), as CPU uint8 arrays.
    """
    from tqdm.auto import tqdm

    from crossmodal.training import step_batch

    if n < 2:
        raise ValueError(f"GAN training needs at least 2 tiles, got {n}")
    bs = min(batch_size, n)
    per_epoch = n // bs
    if max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, int(max_steps_per_epoch))
    snap_gen = torch.Generator().manual_seed(seed + 11)
    snap_lat = None
    if model.variant == "rna_gan":
        if snapshot_latents is None or len(snapshot_latents) == 0:
            raise ValueError("rna_gan needs snapshot_latents (patient codes) for the per-epoch snapshots")
        pick = torch.randint(len(snapshot_latents), (n_snapshot,), generator=snap_gen)
        snap_lat = torch.as_tensor(np.asarray(snapshot_latents, np.float32))[pick]
    snap_z = generator_input(model.variant, n_snapshot, model.nz, snap_lat, noise_std=model.noise_std,
                             noise_clip=model.noise_clip, generator=snap_gen).to(model.device)
    hist = _History()
    aug_gen = torch.Generator()
    objects = {"model": model, "history": hist}
    start = run.restore(objects) if run is not None else 0
    total = epochs * per_epoch
    agg: dict[str, list[float]] = {}
    bar = tqdm(range(start, total), desc=f"WGAN-GP {model.variant}", disable=not progress, mininterval=2,
               initial=start, total=total)
    for s in bar:
        epoch, k = divmod(s, per_epoch)
        idx = step_batch(epoch * (n // bs) + k, n=n, batch_size=bs, seed=seed)
        tiles, lat = get_batch(idx)
        aug_gen.manual_seed(seed * 1_000_003 + s)  # per-step augmentation stream (resume-safe)
        real = augment(resize(to_float(tiles).to(model.device), model.image_size), aug_gen, jitter)
        lat_t = torch.as_tensor(np.asarray(lat, np.float32)) if model.variant == "rna_gan" else None  # moved in step
        out = model.step(real, lat_t)
        for key, v in out.items():
            agg.setdefault(key, []).append(v)
        if k == per_epoch - 1:  # end of an epoch: log and snapshot
            row = {"epoch": epoch + 1, "steps": s + 1}
            row.update({key: float(np.mean(v)) for key, v in agg.items()})
            agg = {}
            hist.rows.append(row)
            model.G.eval()
            with torch.no_grad():
                hist.snapshots.append(to_uint8(model.G(snap_z)))
                if on_epoch is not None:
                    on_epoch(epoch + 1, model)
            bar.set_postfix(epoch=epoch + 1, W=f"{row.get('wasserstein', float('nan')):.3g}")
        if run is not None:
            run.step_done(s + 1, objects)
    snaps = np.stack(hist.snapshots) if hist.snapshots else np.zeros((0, n_snapshot, model.image_size,
                                                                      model.image_size, 3), np.uint8)
    return hist.rows, snaps
