"""MLP diffusion models of Coherent Denoising (Methods, "Single-condition diffusion models",
"Multi-condition diffusion models", "Model implementation and training", "Coherent
Denoising") on top of the shared DDPM core :class:`crossmodal.models.diffusion.DDPM`.

* :class:`MLPDenoiser` -- input ``[x_t, sinusoidal time embedding, linearly projected
  conditions]``; hidden layers Linear -> BatchNorm -> ReLU with the time embedding
  re-concatenated after every layer; missing conditions are zeroed *after* projection (the
  paper's masking).  A single-condition model is the one-condition case.
* :func:`fit_denoiser` -- the epsilon-prediction loss of the shared DDPM (paper eq. 6); the
  multi-condition model draws a random subset of the available conditions per sample and
  step (each kept with probability 1/2, so the empty set is trained too); early stopping on
  the MSE between fully denoised validation samples and their real counterparts.
* :func:`sample` / :func:`coherent_sample` -- ancestral sampling; the Coherent Denoising
  ensemble averages the noise predictions of several single-condition models for the same
  ``x_t`` with weights ``w_i ∝ 1 / val_mse_i`` (paper eq. 7) and rejects a trajectory whose
  weighted mean pairwise cosine distance between predicted noises exceeds ``threshold`` on
  more than ``max_fraction`` of the steps, resampling it at most ``max_retries`` times.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from crossmodal.models.diffusion import DDPM

log = logging.getLogger(__name__)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of integer timesteps (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1))
    a = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(a), torch.cos(a)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class MLPDenoiser(nn.Module):
    """epsilon_theta(x_t, t, C_1..C_k) for k >= 1 conditions (zero-masked when missing)."""

    def __init__(self, x_dim: int, cond_dims: list[int], *, hidden: int = 512, layers: int = 4,
                 time_dim: int = 128, cond_emb: int = 16):
        super().__init__()
        if x_dim < 1 or layers < 1 or hidden < 1 or not cond_dims:
            raise ValueError(f"MLPDenoiser: bad sizes x_dim={x_dim} layers={layers} hidden={hidden} conds={cond_dims}")
        self.arch = dict(x_dim=x_dim, cond_dims=list(cond_dims), hidden=hidden, layers=layers,
                         time_dim=time_dim, cond_emb=cond_emb)
        self.time_dim = time_dim
        self.proj = nn.ModuleList([nn.Linear(d, cond_emb) for d in cond_dims])
        self.blocks = nn.ModuleList()
        d_in = x_dim + time_dim + cond_emb * len(cond_dims)
        for _ in range(layers):
            self.blocks.append(nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU()))
            d_in = hidden + time_dim
        self.out = nn.Linear(d_in, x_dim)

    def forward(self, x, t, conds, mask=None):
        temb = time_embedding(t, self.time_dim)
        parts = [x, temb]
        for i, (p, c) in enumerate(zip(self.proj, conds)):
            e = p(c)
            if mask is not None:
                e = e * mask[:, i:i + 1]
            parts.append(e)
        h = torch.cat(parts, dim=1)
        for b in self.blocks:
            h = torch.cat([b(h), temb], dim=1)
        return self.out(h)


@dataclass
class DiffusionSettings:
    """Defaults: the paper (Methods "Model implementation and training"): DDPM T 1000, grid
    lr [1e-4, 1e-3], batch [64, 128], layers [4-7], hidden [256, 512, 1024], time [64, 128],
    condition embedding [8, 16, 32]; up to 20,000 epochs with early stopping."""

    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    hidden: int = 512
    layers: int = 4
    time_dim: int = 128
    cond_emb: int = 16
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 20000
    eval_every: int = 100
    patience: int = 10
    val_repeats: int = 1
    noise_draws: int = 1
    cond_keep_prob: float = 0.5
    clip_x0: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionSettings":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "extra"})

    def ddpm(self) -> DDPM:
        return DDPM(self.timesteps, self.beta_start, self.beta_end)

    @property
    def clip(self) -> tuple[float, float] | None:
        return None if not self.clip_x0 else (-float(self.clip_x0), float(self.clip_x0))


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample(model: MLPDenoiser, ddpm: DDPM, conds, mask=None, *, generator: torch.Generator | None = None,
           clip: tuple[float, float] | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling of ``len(conds[0])`` samples from one model, on the model's device
    (the noise is drawn from ``generator`` on the CPU, so a GPU run draws the same numbers); the
    samples stay on that device."""
    model.eval()
    dev = _device_of(model)
    conds = [c.to(dev) for c in conds]
    mask = None if mask is None else mask.to(dev)
    n = conds[0].shape[0]
    x = torch.randn((n, model.arch["x_dim"]), generator=generator).to(dev)

    def eps_fn(xt, tt):
        return model(xt, tt, conds, mask)

    for t in range(ddpm.T - 1, -1, -1):
        noise = torch.randn(x.shape, generator=generator).to(dev) if t > 0 else None
        x = ddpm.p_step(eps_fn, x, t, noise=noise, clip=clip)
    return x


def fit_denoiser(x_train, conds_train, avail_train, x_val, conds_val, avail_val, s: DiffusionSettings, *,
                 multi: bool, seed: int = 0, name: str = "", device: str = "cpu") -> tuple[MLPDenoiser, dict]:
    """Train one denoiser on ``device``; returns it (on the CPU) at the best validation
    reconstruction MSE and its history.

    ``conds_*`` are lists of (n, d_i) arrays (missing rows zero), ``avail_*`` (n, k) 0/1 masks.
    Every random draw comes from CPU generators, so the run does not depend on the device's RNG.
    """
    dev = torch.device(device)
    x_train, x_val = _t(x_train).to(dev), _t(x_val).to(dev)
    ct, cv = [_t(c).to(dev) for c in conds_train], [_t(c).to(dev) for c in conds_val]
    at, av = _t(avail_train).to(dev), _t(avail_val).to(dev)
    if len(x_train) < 2 or len(x_val) < 1:
        raise ValueError(f"{name}: need >= 2 training and >= 1 validation samples "
                         f"(got {len(x_train)}, {len(x_val)})")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MLPDenoiser(x_train.shape[1], [c.shape[1] for c in ct], hidden=s.hidden, layers=s.layers,
                        time_dim=s.time_dim, cond_emb=s.cond_emb).to(dev)
    ddpm = s.ddpm()
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    n = len(x_train)
    best, best_state, since, hist = math.inf, copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(1, s.max_epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, s.batch_size):
            b = perm[i:i + s.batch_size]
            if len(b) < 2:
                continue
            r = max(1, int(s.noise_draws))  # several (t, noise) draws per sample and step
            b = b.repeat(r)
            m = at[b]
            if multi:  # random condition subsets, the empty set included
                m = m * (torch.rand(m.shape, generator=gen) < s.cond_keep_prob).float().to(dev)
            loss = ddpm.loss(lambda xt, tt: model(xt, tt, [c[b] for c in ct], m), x_train[b], generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % s.eval_every == 0 or epoch == s.max_epochs:
            vgen = torch.Generator().manual_seed(seed + 1)  # same noise at every evaluation
            reps = max(1, int(s.val_repeats))
            xs = sample(model, ddpm, [c.repeat(reps, 1) for c in cv], av.repeat(reps, 1), generator=vgen, clip=s.clip)
            mse = float(((xs - x_val.repeat(reps, 1)) ** 2).mean())
            hist.append({"model": name, "epoch": epoch, "train_loss": float(loss.detach()), "val_mse": mse})
            if mse < best - 1e-9:
                best, best_state, since = mse, copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
                if since >= s.patience:
                    break
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    log.info("%s: %d epochs, best validation MSE %.4g", name, hist[-1]["epoch"] if hist else 0, best)
    return model, {"val_mse": best, "history": hist}


def ensemble_weights(val_mse) -> np.ndarray:
    """Weights inversely proportional to validation MSE, summing to one (paper eq. 7)."""
    v = np.asarray(val_mse, dtype=np.float64)
    if (v <= 0).any() or not np.isfinite(v).all():
        raise ValueError(f"ensemble weights: validation MSEs must be positive and finite, got {v.tolist()}")
    w = 1.0 / v
    return w / w.sum()


def weighted_cosine_distance(eps: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per sample: sum_{i<j} w_i w_j d_ij / sum_{i<j} w_i w_j with d_ij = 1 - cos(eps_i, eps_j).

    ``eps`` is (k models, n samples, dim); returns (n,) (zeros when k < 2).
    """
    k = eps.shape[0]
    if k < 2:
        return torch.zeros(eps.shape[1], device=eps.device)
    u = nn.functional.normalize(eps, dim=2, eps=1e-12)
    num = torch.zeros(eps.shape[1], device=eps.device)
    den = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            d = 1.0 - (u[i] * u[j]).sum(1)
            num += w[i] * w[j] * d
            den += float(w[i] * w[j])
    return num / den


@torch.no_grad()
def _coherent_pass(eps_fns, w, ddpm: DDPM, n: int, dim: int, threshold: float, gen, clip=None, device=None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    dev = torch.device(device or "cpu")
    x = torch.randn((n, dim), generator=gen).to(dev)
    dist = torch.zeros((ddpm.T, n))
    wt = torch.as_tensor(w, dtype=torch.float32).to(dev)
    for step, t in enumerate(range(ddpm.T - 1, -1, -1)):
        tt = torch.full((n,), t, dtype=torch.long, device=dev)
        eps = torch.stack([f(x, tt) for f in eps_fns]).to(torch.float32)
        dist[step] = weighted_cosine_distance(eps, wt).cpu()
        consensus = (wt[:, None, None] * eps).sum(0)
        noise = torch.randn(x.shape, generator=gen).to(dev) if t > 0 else None
        x = ddpm.p_step(lambda *_: consensus, x, t, noise=noise, clip=clip)
    return x.cpu(), dist


@torch.no_grad()
def coherent_sample(eps_fns, val_mse, ddpm: DDPM, n: int, dim: int, *, threshold: float = 1.0,
                    max_fraction: float = 0.05, max_retries: int = 3,
                    generator: torch.Generator | None = None,
                    clip: tuple[float, float] | None = None, device=None) -> tuple[torch.Tensor, dict]:
    """Coherent Denoising of ``n`` samples from the models ``eps_fns`` (callables ``(x_t, t)``
    already bound to their conditions) with coherence-based rejection.

    Returns the samples and a record: ``rejected`` (trajectories rejected and resampled, all
    tries), ``still_rejected`` (incoherent after ``max_retries`` retries; kept, flagged in
    ``incoherent``), ``fraction_over`` (per final sample, fraction of steps over threshold),
    ``distances`` (T x n weighted mean pairwise cosine distances of the final trajectories) and
    ``first_distances`` (the same of the first pass, before any resampling: the population the
    threshold sensitivity analysis judges, as generating at another threshold would).  ``device``: where the models and their bound conditions
    are (the samples come back on the CPU).
    """
    w = ensemble_weights(val_mse)
    x, dist = _coherent_pass(eps_fns, w, ddpm, n, dim, threshold, generator, clip, device)
    first = dist.clone()
    frac = (dist > threshold).float().mean(0)
    bad = frac > max_fraction
    rejected = int(bad.sum())
    tries = 0
    while bad.any() and tries < max_retries:
        tries += 1
        idx = torch.nonzero(bad).flatten()
        # resample the rejected rows only, with their own conditions
        sub = [_subset_fn(f, idx) for f in eps_fns]
        x2, d2 = _coherent_pass(sub, w, ddpm, len(idx), dim, threshold, generator, clip, device)
        x[idx], dist[:, idx] = x2, d2
        frac[idx] = (d2 > threshold).float().mean(0)
        bad = frac > max_fraction
        rejected += int(bad.sum())
    return x, {"weights": w.tolist(), "rejected": rejected, "retries": tries,
               "still_rejected": int(bad.sum()), "incoherent": bad.numpy(),
               "fraction_over": frac.numpy(), "distances": dist.numpy(), "first_distances": first.numpy()}


class BoundEps:
    """``eps(x_t, t)`` of a denoiser bound to its condition rows (and a mask)."""

    def __init__(self, model: MLPDenoiser, conds, mask=None):
        self.model, self.conds, self.mask = model, conds, mask

    def __call__(self, x, t):
        return self.model(x, t, self.conds, self.mask)

    def subset(self, idx):
        return BoundEps(self.model, [c[idx] for c in self.conds], None if self.mask is None else self.mask[idx])


def _subset_fn(f, idx):
    if hasattr(f, "subset"):
        return f.subset(idx)
    return lambda x, t: f(x, t)  # stateless callables (tests): same function on fewer rows
