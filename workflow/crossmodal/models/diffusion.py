"""One diffusion core for all four papers: EDM (Karras et al. 2022) and DDPM (Ho et al. 2020).

* :class:`EDM` -- preconditioning (``c_skip``, ``c_out``, ``c_in``, ``c_noise``; EDM Table 1),
  the EDM training loss with log-normal sigma sampling (``ln sigma ~ N(P_mean, P_std^2)``,
  weight ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2``), the Karras
  sigma schedule (EDM eq. 5) and the stochastic Heun sampler (EDM Algorithm 2).  RNA-CDM
  (Methods, "RNA-CDM: a cascaded diffusion model") trains with EDM and samples with
  rho 7, S_churn 80, S_tmin 0.05, S_tmax 50, S_noise 1.003 and 32 steps -- the defaults here.
* :class:`DDPM` -- the linear-schedule Gaussian diffusion (T 1000, betas 1e-4..0.02): forward
  process ``q(x_t | x_0)``, epsilon-prediction loss, and the ancestral sampler with posterior
  variance ``beta_t`` or ``beta_tilde_t``.  Generic over the data shape and the denoiser: it
  calls ``eps_fn(x_t, t, **cond)`` with integer timesteps ``t`` (shape ``(B,)``), so PathGen and
  Coherent Denoising can train epsilon-prediction networks with it directly.
* :meth:`EDM.ddpm_eps_fn` turns an EDM-trained denoiser into such an ``eps_fn`` (a DDPM state
  ``x_t = sqrt(abar_t) (x_0 + sigma_t eps)`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``),
  so the 1000-step DDPM baseline RNA-CDM compares against runs on the *same* network as the
  32-step Karras sampler.
* :func:`make_ema` -- the EMA copy used for sampling (``torch.optim.swa_utils.AveragedModel``).

Networks used with :class:`EDM` are called as ``net(x, c_noise, **cond)`` and return the raw
output ``F``; the preconditioned denoiser is ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)``.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``(B,)`` to broadcast against ``like`` ``(B, ...)``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


# ======================================================================================
# EDM (Karras et al. 2022)
# ======================================================================================
class EDM:
    """EDM preconditioning, loss and samplers.

    Defaults are EDM's (Karras et al. 2022, Table 1 and Sec. 5): sigma_data 0.5, P_mean -1.2,
    P_std 1.2, sigma_min 0.002, sigma_max 80 -- also the defaults of the Imagen implementation
    RNA-CDM follows ("ElucidatedImagen").
    """

    def __init__(self, sigma_data: float = 0.5, P_mean: float = -1.2, P_std: float = 1.2,
                 sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"EDM: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if sigma_data <= 0 or P_std <= 0:
            raise ValueError(f"EDM: sigma_data and P_std must be > 0, got {sigma_data}, {P_std}")
        self.sigma_data = float(sigma_data)
        self.P_mean = float(P_mean)
        self.P_std = float(P_std)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    # -- preconditioning (EDM Table 1) -------------------------------------------------
    def precondition(self, sigma: torch.Tensor):
        """``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (any shape)."""
        sd2 = self.sigma_data ** 2
        s2 = sigma ** 2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / torch.sqrt(s2 + sd2)
        c_in = 1.0 / torch.sqrt(s2 + sd2)
        c_noise = torch.log(sigma) / 4.0
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (EDM eq. 8)."""
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def denoise(self, net: Callable, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        """The preconditioned denoiser ``D(x; sigma)`` (an estimate of the clean data)."""
        if not torch.is_tensor(sigma):
            sigma = torch.tensor(float(sigma), device=x.device)
        sigma = sigma.to(device=x.device, dtype=torch.float32)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        xf = x.to(torch.float32)
        f = net((_bcast(c_in, xf) * xf).to(x.dtype), c_noise, **cond).to(torch.float32)
        return _bcast(c_skip, xf) * xf + _bcast(c_out, xf) * f

    # -- training ----------------------------------------------------------------------
    def sample_sigma(self, n: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Log-normal training noise levels: ``ln sigma ~ N(P_mean, P_std^2)`` (EDM Sec. 5)."""
        z = torch.randn(n, generator=generator, device=device if generator is None else generator.device)
        return torch.exp(self.P_mean + self.P_std * z).to(device)

    def loss(self, net: Callable, x0: torch.Tensor, *, generator: torch.Generator | None = None,
             reduction: str = "mean", **cond) -> torch.Tensor:
        """EDM training loss ``lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2`` (EDM eq. 2, 8).

        Per-sample losses are averaged over the non-batch dimensions; ``reduction="none"``
        returns them, otherwise their mean.
        """
        b = x0.shape[0]
        sigma = self.sample_sigma(b, device=x0.device, generator=generator)
        if generator is None:
            noise = torch.randn_like(x0, dtype=torch.float32)
        else:
            noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        x0f = x0.to(torch.float32)
        d = self.denoise(net, x0f + _bcast(sigma, x0f) * noise, sigma, **cond)
        per = (self.loss_weight(sigma) * ((d - x0f) ** 2).flatten(1).mean(1))
        return per if reduction == "none" else per.mean()

    # -- sampling ----------------------------------------------------------------------
    def sigma_schedule(self, num_steps: int = 32, rho: float = 7.0, *, device=None) -> torch.Tensor:
        """Karras et al. eq. 5 noise levels ``t_0 > ... > t_{N-1}`` followed by ``t_N = 0``.

        ``t_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``.
        """
        if num_steps < 2:
            raise ValueError(f"sigma_schedule: need at least 2 steps, got {num_steps}")
        i = torch.arange(num_steps, dtype=torch.float64)
        a, b = self.sigma_max ** (1 / rho), self.sigma_min ** (1 / rho)
        t = (a + i / (num_steps - 1) * (b - a)) ** rho
        return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(device)

    @torch.no_grad()
    def sample(self, net: Callable, shape, *, num_steps: int = 32, rho: float = 7.0,
               S_churn: float = 80.0, S_tmin: float = 0.05, S_tmax: float = 50.0,
               S_noise: float = 1.003, clip: tuple[float, float] | None = None,
               generator: torch.Generator | None = None, device=None, progress: bool = False,
               **cond) -> torch.Tensor:
        """Karras stochastic sampler (EDM Algorithm 2: Heun steps with churn).

        Defaults are RNA-CDM's (Methods): rho 7, S_churn 80, S_tmin 0.05, S_tmax 50,
        S_noise 1.003, 32 steps -> 63 network evaluations.  ``clip`` clamps each denoised
        estimate (e.g. ``(-1, 1)`` for images, Imagen's static thresholding).  ``S_churn=0``
        gives the deterministic Heun sampler (EDM Algorithm 1).
        """
        device = torch.device(device) if device is not None else (
            generator.device if generator is not None else torch.device("cpu"))
        t = self.sigma_schedule(num_steps, rho, device=device).to(torch.float32)

        def randn(shp):
            g_dev = generator.device if generator is not None else device
            return torch.randn(shp, generator=generator, device=g_dev).to(device)

        def D(x, s):
            d = self.denoise(net, x, s, **cond)
            return d.clamp(*clip) if clip is not None else d

        x = randn(shape) * t[0]
        gamma_max = min(S_churn / num_steps, math.sqrt(2) - 1)
        for i in _progress(range(num_steps), progress, "Karras sampler"):
            t_cur, t_next = t[i], t[i + 1]
            gamma = gamma_max if S_tmin <= float(t_cur) <= S_tmax else 0.0
            t_hat = t_cur * (1 + gamma)
            if gamma > 0:
                x = x + torch.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * randn(shape)
            d = (x - D(x, t_hat)) / t_hat
            x_next = x + (t_next - t_hat) * d
            if i < num_steps - 1:  # 2nd-order correction (not at t_N = 0)
                d2 = (x_next - D(x_next, t_next)) / t_next
                x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d2)
            x = x_next
        return x

    # -- bridge to DDPM ----------------------------------------------------------------
    def ddpm_eps_fn(self, net: Callable, ddpm: "DDPM") -> Callable:
        """An ``eps_fn(x_t, t, **cond)`` for :class:`DDPM` backed by this EDM denoiser.

        A VP state ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` is the EDM state
        ``x_t / sqrt(abar_t)`` at ``sigma_t = sqrt((1 - abar_t) / abar_t)``, so
        ``eps = (x_t / sqrt(abar_t) - D) / sigma_t``.
        """
        def eps_fn(x_t, t, **cond):
            ab = ddpm.alphas_cumprod.to(x_t.device)[t].to(torch.float32)
            sigma = torch.sqrt((1 - ab) / ab)
            x_ve = x_t.to(torch.float32) / _bcast(torch.sqrt(ab), x_t)
            d = self.denoise(net, x_ve, sigma, **cond)
            return (x_ve - d) / _bcast(sigma, x_t)

        return eps_fn


# ======================================================================================
# DDPM (Ho et al. 2020)
# ======================================================================================
class DDPM:
    """Gaussian diffusion with a linear beta schedule and epsilon prediction.

    ``posterior_variance`` is ``"beta"`` (sigma_t^2 = beta_t) or ``"beta_tilde"``
    (sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t), the two choices of Ho et al. Sec. 3.2.
    Timesteps are 0-based: ``t = 0`` is the first noising step (``x_1`` in the paper).
    """

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 posterior_variance: str = "beta"):
        if timesteps < 1 or not (0 < beta_start <= beta_end < 1):
            raise ValueError(f"DDPM: need timesteps >= 1 and 0 < beta_start <= beta_end < 1, "
                             f"got {timesteps}, {beta_start}, {beta_end}")
        if posterior_variance not in ("beta", "beta_tilde"):
            raise ValueError(f"DDPM: posterior_variance must be 'beta' or 'beta_tilde', "
                             f"got {posterior_variance!r}")
        self.T = int(timesteps)
        self.posterior_variance = posterior_variance
        self.betas = torch.linspace(beta_start, beta_end, self.T, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.alphas_cumprod_prev = prev
        self.beta_tilde = self.betas * (1 - prev) / (1 - self.alphas_cumprod)

    def _at(self, v: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _bcast(v.to(like.device)[t].to(torch.float32), like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``."""
        if noise is None:
            noise = torch.randn_like(x0, dtype=torch.float32)
        ab = self._at(self.alphas_cumprod, t, x0)
        return torch.sqrt(ab) * x0.to(torch.float32) + torch.sqrt(1 - ab) * noise

    def loss(self, eps_fn: Callable, x0: torch.Tensor, *, generator: torch.Generator | None = None,
             reduction: str = "mean", **cond) -> torch.Tensor:
        """The simple loss ``||eps - eps_fn(x_t, t)||^2`` with ``t ~ U{0..T-1}`` (Ho et al. eq. 14)."""
        b = x0.shape[0]
        g_dev = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.T, (b,), generator=generator, device=g_dev).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=g_dev).to(x0.device)
        pred = eps_fn(self.q_sample(x0, t, noise), t, **cond).to(torch.float32)
        per = ((pred - noise) ** 2).flatten(1).mean(1)
        return per if reduction == "none" else per.mean()

    @torch.no_grad()
    def p_step(self, eps_fn: Callable, x: torch.Tensor, t: int, *, noise: torch.Tensor | None = None,
               clip: tuple[float, float] | None = None, **cond) -> torch.Tensor:
        """One ancestral step ``x_t -> x_{t-1}`` (no noise added at ``t = 0``)."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_fn(x, tt, **cond).to(torch.float32)
        ab = float(self.alphas_cumprod[t])
        ab_prev = float(self.alphas_cumprod_prev[t])
        beta = float(self.betas[t])
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if clip is not None:
            x0_hat = x0_hat.clamp(*clip)
        # posterior mean (Ho et al. eq. 7); equals 1/sqrt(a_t) (x_t - beta_t/sqrt(1-abar_t) eps)
        mean = (beta * math.sqrt(ab_prev) / (1 - ab)) * x0_hat + \
               ((1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)) * x
        if t == 0:
            return mean
        var = beta if self.posterior_variance == "beta" else float(self.beta_tilde[t])
        if noise is None:
            noise = torch.randn_like(x)
        return mean + math.sqrt(var) * noise

    @torch.no_grad()
    def sample(self, eps_fn: Callable, shape, *, generator: torch.Generator | None = None,
               device=None, clip: tuple[float, float] | None = None, progress: bool = False,
               **cond) -> torch.Tensor:
        """Ancestral sampling ``x_T ~ N(0, I) -> x_0`` in ``T`` network evaluations."""
        device = torch.device(device) if device is not None else (
            generator.device if generator is not None else torch.device("cpu"))
        g_dev = generator.device if generator is not None else device

        def randn():
            return torch.randn(shape, generator=generator, device=g_dev).to(device)

        x = randn()
        for t in _progress(range(self.T - 1, -1, -1), progress, "DDPM sampler"):
            x = self.p_step(eps_fn, x, t, noise=randn() if t > 0 else None, clip=clip, **cond)
        return x


# ======================================================================================
# EMA
# ======================================================================================
def make_ema(model: nn.Module, decay: float = 0.9999) -> torch.optim.swa_utils.AveragedModel:
    """An exponential-moving-average copy of ``model`` (``ema.module`` is the averaged net).

    Call ``ema.update_parameters(model)`` after each optimiser step; the first call copies
    the weights.  Buffers are averaged too.  Its ``state_dict`` checkpoints like any module.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema
