"""Imagen-style conditional U-Net for the diffusion models (RNA-CDM base and super-resolution).

RNA-CDM (Methods) follows Imagen (Saharia et al. 2022): U-Nets with residual blocks,
self-attention at the lower resolutions and skip connections, width ("dim") 256 for the 64x64
base model and 128 for the 64->256 super-resolution model.  The noise level (or timestep) is
embedded sinusoidally and passed through an MLP; the conditioning vector (the beta-VAE
expression latent) is projected by a linear layer and *added* to that embedding; the
embedding modulates every residual block (scale and shift after the second normalisation).
The super-resolution model receives the Gaussian-blurred, upsampled low-resolution image
concatenated to its noisy input (:func:`prepare_lowres`).

Every size comes from :class:`UNetConfig` (the ``rna_cdm.base_unet`` / ``rna_cdm.sr_unet``
config sections).  :func:`param_count` counts parameters of any configuration on the meta
device, without allocating memory.

Forward signature: ``net(x, noise_level, cond=None, lowres=None)`` where ``noise_level`` is a
``(B,)`` float tensor (EDM's ``c_noise`` or a DDPM timestep) -- the ``net(x, c_noise, **cond)``
interface of :mod:`crossmodal.models.diffusion`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Sizes of one U-Net.  Per-level lists have one entry per resolution level."""

    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    dim: int = 256
    dim_mults: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    num_res_blocks: list[int] = field(default_factory=lambda: [3, 3, 3, 3])
    attn_levels: list[bool] = field(default_factory=lambda: [False, True, True, True])
    attn_heads: int = 8
    attn_dim_head: int = 64
    cond_dim: int = 200
    lowres_channels: int = 0  # 3 for the super-resolution model, 0 for the base model
    dropout: float = 0.0
    norm_groups: int = 8

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"UNetConfig: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        cfg = cls(**d)
        cfg.check()
        return cfg

    def check(self) -> None:
        n = len(self.dim_mults)
        if isinstance(self.num_res_blocks, int):
            self.num_res_blocks = [self.num_res_blocks] * n
        if isinstance(self.attn_levels, bool):
            self.attn_levels = [self.attn_levels] * n
        if len(self.num_res_blocks) != n or len(self.attn_levels) != n:
            raise ValueError(f"UNetConfig: dim_mults, num_res_blocks and attn_levels need one entry "
                             f"per level; got {self.dim_mults}, {self.num_res_blocks}, {self.attn_levels}")
        if self.image_size % (2 ** (n - 1)):
            raise ValueError(f"UNetConfig: image_size {self.image_size} is not divisible by "
                             f"2^{n - 1} (for {n} levels)")
        for m in self.dim_mults:
            if (self.dim * m) % self.norm_groups:
                raise ValueError(f"UNetConfig: width {self.dim}*{m} not divisible by "
                                 f"norm_groups {self.norm_groups}")

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of real scalars ``x`` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale/shift from the embedding, GroupNorm-SiLU-dropout-conv, + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return h + self.skip(x)


class Attention(nn.Module):
    """Multi-head self-attention over the spatial positions (pre-norm, residual)."""

    def __init__(self, ch: int, heads: int, dim_head: int, groups: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * inner, 1, bias=False)
        self.out = nn.Conv2d(inner, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.dim_head, h * w).unbind(1)
        o = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        o = o.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)
        return x + self.out(o)


class _Level(nn.Module):
    def __init__(self, blocks, attns):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)


class UNet(nn.Module):
    """Conditional U-Net (see the module docstring)."""

    def __init__(self, cfg: UNetConfig | dict):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = UNetConfig.from_dict(cfg)
        cfg.check()
        self.cfg = cfg
        d, g = cfg.dim, cfg.norm_groups
        emb_dim = 4 * d
        self.time_mlp = nn.Sequential(nn.Linear(d, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj = nn.Linear(cfg.cond_dim, emb_dim) if cfg.cond_dim > 0 else None
        # learned "no conditioning" embedding: classifier-free guidance (Ho & Salimans 2022; Imagen
        # trains with conditioning dropout and samples with a guidance weight)
        self.null_cond = nn.Parameter(torch.zeros(emb_dim)) if cfg.cond_dim > 0 else None
        self.inp = nn.Conv2d(cfg.in_channels + cfg.lowres_channels, d, 3, padding=1)
        widths = [d * m for m in cfg.dim_mults]
        n = len(widths)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [d]
        ch = d
        for lvl, w in enumerate(widths):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks[lvl]):
                blocks.append(ResBlock(ch, w, emb_dim, g, cfg.dropout))
                attns.append(Attention(w, cfg.attn_heads, cfg.attn_dim_head, g)
                             if cfg.attn_levels[lvl] else nn.Identity())
                ch = w
                skips.append(ch)
            self.down.append(_Level(blocks, attns))
            if lvl < n - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, g, cfg.dropout)
        self.mid_attn = Attention(ch, cfg.attn_heads, cfg.attn_dim_head, g)
        self.mid2 = ResBlock(ch, ch, emb_dim, g, cfg.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(n)):
            w = widths[lvl]
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks[lvl] + 1):
                blocks.append(ResBlock(ch + skips.pop(), w, emb_dim, g, cfg.dropout))
                attns.append(Attention(w, cfg.attn_heads, cfg.attn_dim_head, g)
                             if cfg.attn_levels[lvl] else nn.Identity())
                ch = w
            self.up.append(_Level(blocks, attns))
            if lvl > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(ch, ch, 3, padding=1)))
        assert not skips
        self.out_norm = nn.GroupNorm(g, ch)
        self.out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, cond: torch.Tensor | None = None,
                lowres: torch.Tensor | None = None, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``cond_mask`` (bool ``(B,)``, optional): False rows get the learned null embedding
        instead of their conditioning (dropout in training, the unconditional half of guidance)."""
        cfg = self.cfg
        if noise_level.ndim == 0:
            noise_level = noise_level.expand(x.shape[0])
        emb = self.time_mlp(sinusoidal_embedding(noise_level, cfg.dim).to(x.dtype))
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError(f"UNet: this model needs a conditioning vector of size {cfg.cond_dim}")
            if cond.shape != (x.shape[0], cfg.cond_dim):
                raise ValueError(f"UNet: cond has shape {tuple(cond.shape)}, expected "
                                 f"({x.shape[0]}, {cfg.cond_dim})")
            c = self.cond_proj(cond.to(emb.dtype))
            # always through torch.where, so the null embedding is in the graph of every step
            # (DDP requires every parameter to take part, also when no row is dropped)
            keep = torch.ones(x.shape[0], dtype=torch.bool, device=c.device) if cond_mask is None else cond_mask
            c = torch.where(keep.to(c.device).reshape(-1, 1), c, self.null_cond.to(c.dtype))
            emb = emb + c
        if cfg.lowres_channels:
            if lowres is None or lowres.shape[1] != cfg.lowres_channels or lowres.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"UNet: super-resolution model needs `lowres` with "
                                 f"{cfg.lowres_channels} channels at {tuple(x.shape[-2:])}, got "
                                 f"{None if lowres is None else tuple(lowres.shape)}")
            x = torch.cat([x, lowres.to(x.dtype)], dim=1)
        h = self.inp(x)
        hs = [h]
        for lvl, level in enumerate(self.down):
            for blk, attn in zip(level.blocks, level.attns):
                h = attn(blk(h, emb))
                hs.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for blk, attn in zip(level.blocks, level.attns):
                h = attn(blk(torch.cat([h, hs.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(F.silu(self.out_norm(h)))


class Guided(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022) around a conditional :class:`UNet`:
    ``F = F_uncond + scale (F_cond - F_uncond)``, both halves in one batch.  ``scale`` 1 is plain
    conditional sampling.  Because the EDM denoiser is affine in the network output, guiding ``F``
    guides the denoised estimate ``D`` identically (Imagen-pytorch's ``cond_scale``)."""

    def __init__(self, net: UNet, scale: float):
        super().__init__()
        if net.cond_proj is None:
            raise ValueError("Guided: the network has no conditioning to guide")
        self.net, self.scale = net, float(scale)

    def forward(self, x, noise_level, cond=None, lowres=None):
        if self.scale == 1.0:
            return self.net(x, noise_level, cond=cond, lowres=lowres)
        b = x.shape[0]
        nl = noise_level.expand(b) if noise_level.ndim == 0 else noise_level
        mask = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]).to(x.device)
        out = self.net(torch.cat([x, x]), torch.cat([nl, nl]), cond=torch.cat([cond, cond]),
                       lowres=None if lowres is None else torch.cat([lowres, lowres]), cond_mask=mask)
        f_cond, f_uncond = out[:b], out[b:]
        return f_uncond + self.scale * (f_cond - f_uncond)


def prepare_lowres(lowres: torch.Tensor, size: int, blur_sigma: float, kernel_size: int = 3) -> torch.Tensor:
    """Upsample a low-resolution image batch to ``size`` (bilinear) and Gaussian-blur it:
    the super-resolution model's conditioning image (RNA-CDM Methods; Imagen Sec. 2.5)."""
    from torchvision.transforms.functional import gaussian_blur

    up = F.interpolate(lowres.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False)
    if blur_sigma > 0:
        up = gaussian_blur(up, kernel_size=[kernel_size, kernel_size], sigma=[blur_sigma, blur_sigma])
    return up


def param_count(cfg: UNetConfig | dict) -> int:
    """Number of parameters of a U-Net with ``cfg``, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = UNet(cfg)
    return sum(p.numel() for p in net.parameters())
