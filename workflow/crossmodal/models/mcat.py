"""MCAT_GR (PathGen Methods 3.3.1, Figure 7b): MCAT (Chen et al., ICCV 2021) with a grade head.

* patch embeddings -> ``Linear + ReLU`` to ``d_model``;
* per gene group an SNN (MCAT's ``SNN_Block``: Linear, ELU, AlphaDropout, twice) -> one
  genomic token per group;
* **genomic-guided co-attention**: genomic tokens are queries over the patch bag, giving one
  co-attended pathology token per group (the weights are the co-attention maps of Figure 3d);
* pathology transformer + gated global attention pooling -> ``h_path``; genomic transformer +
  pooling -> ``h_omic``; risk head on ``[h_path, h_omic]`` -> hazard logits over the time bins;
* a **separate** gated attention pooling over the co-attended pathology tokens -> grade
  logits (the paper: genomic embeddings are not used directly for grading, and the two
  poolings are separate "to decrease the dependency between the grade and risk").

Without expression (``group_sizes=None``, the "WSI only" run) the patch embeddings go straight
to the two gated attention poolings - MCAT's attention-MIL (AMIL) baseline, no transformer over
the bag: self-attention over a slide's up to 10^5 patches would need O(N^2) memory.
Loss: ``lambda * L_survival + (1 - lambda) * L_grade`` (Results 2.3) - see
:func:`crossmodal.pathgen.predict.total_loss`.
"""
from __future__ import annotations

import torch
from torch import nn


class GatedAttentionPool(nn.Module):
    """Ilse et al. 2018 gated attention: ``a = w^T (tanh(V h) * sigmoid(U h))``; softmax over tokens."""

    def __init__(self, d: int, hidden: int | None = None, dropout: float = 0.25):
        super().__init__()
        hidden = hidden or d
        self.v = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(d, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None):
        a = self.w(self.v(h) * self.u(h)).squeeze(-1)  # (B, N)
        if mask is not None:
            a = a.masked_fill(mask, float("-inf"))
        a = torch.softmax(a, dim=1)
        return (a.unsqueeze(-1) * h).sum(1), a


def snn_block(n_in: int, d: int, dropout: float = 0.25) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, d), nn.ELU(), nn.AlphaDropout(dropout),
                         nn.Linear(d, d), nn.ELU(), nn.AlphaDropout(dropout))


class MCATGR(nn.Module):
    """``out = net(patches, mask=None, expression=None)`` -> dict of ``grade_logits`` (B, C),
    ``hazard_logits`` (B, K) and ``coattention`` (B, G, N) (None without expression)."""

    def __init__(self, patch_dim: int, n_grades: int, n_bins: int, *, group_sizes: list[int] | None = None,
                 d_model: int = 256, n_heads: int = 8, dropout: float = 0.25):
        super().__init__()
        self.group_sizes = None if group_sizes is None else [int(g) for g in group_sizes]
        self.patch_fc = nn.Sequential(nn.Linear(patch_dim, d_model), nn.ReLU(), nn.Dropout(dropout))
        layer = dict(d_model=d_model, nhead=n_heads, dim_feedforward=2 * d_model, dropout=dropout,
                     activation="relu", batch_first=True)
        self.path_pool = GatedAttentionPool(d_model, dropout=dropout)
        self.grade_pool = GatedAttentionPool(d_model, dropout=dropout)
        if self.group_sizes:
            # over the G co-attended tokens (one per gene group), not over the patch bag
            self.path_transformer = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), num_layers=2,
                                                          enable_nested_tensor=False)
            self.sig = nn.ModuleList(snn_block(g, d_model, dropout) for g in self.group_sizes)
            self.coattn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.omic_transformer = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), num_layers=2,
                                                          enable_nested_tensor=False)
            self.omic_pool = GatedAttentionPool(d_model, dropout=dropout)
            fused = 2 * d_model
        else:
            fused = d_model
        self.risk_head = nn.Sequential(nn.Linear(fused, d_model), nn.ReLU(), nn.Linear(d_model, n_bins))
        self.grade_head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, n_grades))

    def forward(self, patches: torch.Tensor, mask: torch.Tensor | None = None,
                expression: torch.Tensor | None = None) -> dict:
        h = self.patch_fc(patches)
        if self.group_sizes is None:  # AMIL: pool the patch embeddings directly (linear in N)
            h_path, _ = self.path_pool(h, mask)
            h_grade, _ = self.grade_pool(h, mask)
            return {"grade_logits": self.grade_head(h_grade), "hazard_logits": self.risk_head(h_path),
                    "coattention": None}
        if expression is None:
            raise ValueError("MCAT_GR was built with gene groups: expression is required")
        if expression.shape[1] != sum(self.group_sizes):
            raise ValueError(f"MCAT_GR: expected {sum(self.group_sizes)} genes, got {expression.shape[1]}")
        parts = torch.split(expression, self.group_sizes, dim=1)
        g = torch.stack([net(x) for net, x in zip(self.sig, parts)], dim=1)  # (B, G, d)
        co, w = self.coattn(g, h, h, key_padding_mask=mask, need_weights=True)  # (B, G, d), (B, G, N)
        tok = self.path_transformer(co)
        h_path, _ = self.path_pool(tok)
        h_grade, _ = self.grade_pool(tok)
        h_omic, _ = self.omic_pool(self.omic_transformer(g))
        return {"grade_logits": self.grade_head(h_grade),
                "hazard_logits": self.risk_head(torch.cat([h_path, h_omic], dim=1)),
                "coattention": w}
