"""PathGen training (Algorithm 1) and sampling (Algorithm 2) on the shared DDPM core.

Training first fits the denoiser's patch-embedding scaler on the training cases' patches
(:meth:`crossmodal.models.pathgen.PathGenDenoiser.set_patch_scaler`), then draws ``t ~
U{1..T}`` and minimises ``||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t |
patches)||^2`` (equation 7) with Adam (paper: lr 1e-4) over the
training split's cases.  Sampling runs the T-step ancestral sampler from ``x_T ~ N(0, I)``
with ``sigma_t = sqrt(beta_tilde_t)`` (equation 6; :class:`crossmodal.models.diffusion.DDPM`
with ``posterior_variance="beta_tilde"``) ``n_draws`` times per case and averages the draws.

Paper vs public text: Algorithm 2 prints the update as ``1/sqrt(abar_t) (x_t - (1 - abar_t) /
sqrt(1 - abar_t) eps)``; that is not the DDPM posterior mean (Ho et al. eq. 11 uses
``1/sqrt(alpha_t)`` and ``beta_t``), which equation 5 also garbles; we use the DDPM posterior
mean of the shared core and note it here.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from crossmodal.fileio import atomic_path, write_table

log = logging.getLogger(__name__)


def load_bags(paths: list[str], samples) -> dict[str, torch.Tensor]:
    """``sample -> (n, d) float tensor`` for the embedding files of ``samples``."""
    from pathlib import Path

    from crossmodal.pathgen.patches import read_embeddings

    by_name = {Path(p).name[:-4]: p for p in paths}
    out = {}
    for s in samples:
        if s not in by_name:
            raise FileNotFoundError(f"pathgen: no patch-embedding file for case {s} among the inputs")
        out[s] = torch.from_numpy(read_embeddings(by_name[s])["features"])
    return out


def collate(bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bags to (B, N_max, d); ``mask`` True on padding."""
    n = max(len(b) for b in bags)
    d = bags[0].shape[1]
    x = torch.zeros(len(bags), n, d)
    mask = torch.ones(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, :len(b)] = b
        mask[i, :len(b)] = False
    return x, mask


def build_model(hp: dict, group_sizes: list[int], patch_dim: int):
    from crossmodal.models.pathgen import PathGenDenoiser

    return PathGenDenoiser(group_sizes, patch_dim, d_model=hp["d_model"], n_heads=hp["n_heads"],
                           rounds=hp["coattention_rounds"], dropout=hp["dropout"])


def make_ddpm(hp: dict):
    from crossmodal.models.diffusion import DDPM

    return DDPM(hp["timesteps"], hp["beta_start"], hp["beta_end"], posterior_variance="beta_tilde")


def train(x0: pd.DataFrame, bags: dict, group_sizes: list[int], hp: dict, *, seed: int, device: str = "cpu"):
    """Train on the rows of ``x0`` (cases x genes); returns ``(model, losses DataFrame)``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    samples = list(x0.index)
    X = torch.tensor(x0.to_numpy(), dtype=torch.float32)
    patch_dim = next(iter(bags.values())).shape[1]
    model = build_model(hp, group_sizes, patch_dim)
    model.set_patch_scaler(torch.cat([bags[s] for s in samples]).float())  # training cases only
    model = model.to(device)
    ddpm = make_ddpm(hp)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    bs = min(hp["batch_size"], len(samples))
    rows = []
    rng = np.random.default_rng(seed)
    model.train()
    for epoch in tqdm(range(hp["epochs"]), desc="PathGen training", leave=False, disable=None):
        order = rng.permutation(len(samples))
        tot = 0.0
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            patches, mask = collate([bags[samples[j]] for j in idx])
            loss = ddpm.loss(lambda xt, t: model(xt, t, patches=patches.to(device), mask=mask.to(device)),
                             X[idx].to(device), generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        rows.append({"epoch": epoch + 1, "loss": tot / len(order)})
        if (epoch + 1) % max(1, hp["epochs"] // 10) == 0:
            log.info("PathGen epoch %d/%d: loss %.4f", epoch + 1, hp["epochs"], rows[-1]["loss"])
    return model.eval(), pd.DataFrame(rows)


@torch.no_grad()
def sample(model, ddpm, bags: dict, samples: list[str], n_genes: int, *, n_draws: int, seed: int,
           batch_size: int = 64, device: str = "cpu", clip: float | None = None) -> np.ndarray:
    """Mean of ``n_draws`` DDPM samples per case -> (len(samples), n_genes).

    ``clip``: clamp the sampler's x0 estimate to [-clip, clip] at every step (Ho et al.'s
    ``clip_denoised``; not stated in PathGen; None = no clamp)."""
    g = torch.Generator().manual_seed(seed)
    out = np.zeros((len(samples), n_genes), np.float32)
    for i in tqdm(range(0, len(samples), batch_size), desc="PathGen sampling", leave=False, disable=None):
        chunk = samples[i:i + batch_size]
        patches, mask = collate([bags[s] for s in chunk])
        kv, mask = model.encode_patches(patches.to(device)), mask.to(device)  # once per case, not per step
        acc = torch.zeros(len(chunk), n_genes)
        for k in range(n_draws):
            x = ddpm.sample(lambda xt, t: model(xt, t, patch_tokens=kv, mask=mask), (len(chunk), n_genes),
                            generator=g, device=device, clip=None if clip is None else (-clip, clip))
            acc += x.cpu()
            log.info("PathGen: cases %d-%d, draw %d/%d done", i + 1, i + len(chunk), k + 1, n_draws)
        out[i:i + len(chunk)] = (acc / n_draws).numpy()
    return out


def cross_fit_folds(cases: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """The cross-fit fold (0 .. k-1) of every training case (``cases.split == "train"``): whole
    patients are dealt to folds in a seeded random order, so a patient's cases share one fold and
    the folds differ in size by at most one patient."""
    train = cases[cases["split"] == "train"]
    patients = np.array(sorted(train["patient"].astype(str).unique()))
    if k < 2 or k > len(patients):
        raise ValueError(f"pathgen.cross_fit.folds = {k}: needs 2 .. {len(patients)} (the training patients)")
    order = np.random.default_rng(seed).permutation(len(patients))
    fold_of = {patients[j]: i % k for i, j in enumerate(order)}
    return train["patient"].astype(str).map(fold_of).astype(int)


def save_model(path, model, hp: dict, meta: dict) -> None:
    obj = {"format": "crossmodal-pathgen", "hp": hp, "group_sizes": model.group_sizes,
           "patch_dim": model.patch_proj[0].in_features, "state": model.state_dict(), "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_model(path):
    from crossmodal.fileio import load_checkpoint

    ck = load_checkpoint(path, "PathGen checkpoint", fmt="crossmodal-pathgen", hint="written by rule train_pathgen")
    model = build_model(ck["hp"], ck["group_sizes"], ck["patch_dim"])
    state = dict(ck["state"])
    for k in ("patch_mean", "patch_std"):  # checkpoints written before the patch scaler: identity
        state.setdefault(k, getattr(model, k))
    model.load_state_dict(state)
    return model.eval(), ck


def write_losses(path, losses: pd.DataFrame) -> None:
    write_table(path, losses, index=False)
