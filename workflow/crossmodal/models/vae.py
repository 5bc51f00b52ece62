"""β-VAE on gene expression, shared by RNA-GAN and RNA-CDM.

RNA-GAN (Carrillo-Perez et al. 2023, STAR Methods "β VAE architecture ..."): encoder and
decoder of two linear layers (6,000 and 4,096 units), latent 2,048, batch norm between the
layers, LeakyReLU, β = 0.005, Adam 5e-5 with warm-up and a cosine schedule, up to 250 epochs
with early stopping on the validation loss, batch 128.  RNA-CDM uses the same model with
hidden 6,000/4,000, latent 200 and Adam 3e-3.  Every size is a constructor / settings argument
so both papers (and the toy config) use this one implementation.

Loss (Equation 2 of RNA-GAN; Equation 2 of RNA-CDM): reconstruction term + β·KL(q(z|x) || N(0, I)),
the KL summed over latent dimensions and averaged over the batch.  Neither paper says how the
reconstruction term is reduced over genes; both name the (root) mean squared error as the usual
reconstruction loss (RNA-GAN STAR Methods "β VAE architecture ..."; RNA-CDM Methods "β-VAE for
multi-cancer latent embedding generation") and the authors' public code uses ``F.mse_loss`` -
the squared error averaged over genes - plus β·KL.  ``reconstruction="mean"`` (the default) is
that: β = 0.005 then weighs the KL against a per-gene error.  ``reconstruction="sum"`` sums the
squared error over genes (the Gaussian-likelihood form), which makes the same β about n_genes
times weaker (~19,000x at RNA-GAN's 19,198 genes).  (The authors' public code also uses
β = 0.0005 and input dropout, which we expose as settings but do not use by default.)
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from crossmodal.steps import step

log = logging.getLogger(__name__)


RECONSTRUCTIONS = ("mean", "sum")


class VAETrainingError(RuntimeError):
    """The β-VAE training produced no usable model (e.g. the validation loss was never finite)."""


@dataclass
class VAESettings:
    """Hyperparameters; defaults are RNA-GAN's (STAR Methods)."""

    hidden: list[int] = field(default_factory=lambda: [6000, 4096])
    latent: int = 2048
    beta: float = 0.005
    lr: float = 5e-5
    batch_size: int = 128
    max_epochs: int = 250
    warmup_epochs: int = 10
    patience: int = 20
    negative_slope: float = 0.01
    input_dropout: float = 0.0
    weight_decay: float = 0.0
    reconstruction: str = "mean"  # "mean" (squared error averaged over genes) or "sum"

    def __post_init__(self):
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"VAESettings: reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, "
                             f"got {self.reconstruction!r}")

    @classmethod
    def from_dict(cls, d: dict, ignore=()) -> "VAESettings":
        """Settings from a mapping; a key that is neither a setting nor in ``ignore`` is an error
        (a misspelt hyperparameter must not fall back to its default silently)."""
        unknown = sorted(k for k in d if k not in cls.__dataclass_fields__ and k not in ignore)
        if unknown:
            raise ValueError(f"VAE settings: unknown key(s) {', '.join(map(str, unknown))} "
                             f"(known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _mlp(sizes: list[int], negative_slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(negative_slope)]
    return nn.Sequential(*layers)


class BetaVAE(nn.Module):
    """Fully connected β-VAE: genes -> hidden... -> (μ, log σ²) -> hidden reversed -> genes."""

    def __init__(self, n_genes: int, hidden=(6000, 4096), latent: int = 2048,
                 negative_slope: float = 0.01, input_dropout: float = 0.0):
        super().__init__()
        if n_genes < 1 or latent < 1 or not hidden:
            raise ValueError(f"BetaVAE: bad sizes n_genes={n_genes} hidden={hidden} latent={latent}")
        hidden = list(hidden)
        self.n_genes, self.hidden, self.latent = n_genes, hidden, latent
        self.negative_slope, self.input_dropout = negative_slope, input_dropout
        self.dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.encoder = _mlp([n_genes] + hidden, negative_slope)
        self.mu = nn.Linear(hidden[-1], latent)
        self.logvar = nn.Linear(hidden[-1], latent)
        self.decoder = nn.Sequential(_mlp([latent] + hidden[::-1], negative_slope),
                                     nn.Linear(hidden[0], n_genes))

    def config(self) -> dict:
        return {"n_genes": self.n_genes, "hidden": self.hidden, "latent": self.latent,
                "negative_slope": self.negative_slope, "input_dropout": self.input_dropout}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.dropout(x))
        return self.mu(h), self.logvar(h).clamp(-30, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


def vae_loss(x, recon, mu, logvar, beta: float, reconstruction: str = "mean"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL), each averaged over the batch.  The reconstruction term is the
    squared error averaged (``"mean"``, the authors' ``F.mse_loss``) or summed (``"sum"``) over
    genes; the KL is summed over latent dimensions."""
    se = (recon - x) ** 2
    if reconstruction == "mean":
        rec = se.mean(dim=1).mean()
    elif reconstruction == "sum":
        rec = se.sum(dim=1).mean()
    else:
        raise ValueError(f"vae_loss: reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, got {reconstruction!r}")
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()
    return rec + beta * kl, rec, kl


def warmup_cosine(epoch: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` epochs, then cosine decay to 0 at ``total``."""
    if warmup > 0 and epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    span = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(epoch - warmup, span) / span))


def _batches(n: int, batch_size: int, gen: torch.Generator | None):
    idx = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        b = idx[i:i + batch_size]
        if gen is not None and len(b) < 2 and n >= 2:  # BatchNorm needs 2 samples per batch
            continue
        yield b


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: BetaVAE, x: np.ndarray | torch.Tensor, beta: float, batch_size: int = 512,
             reconstruction: str = "mean") -> dict:
    """Loss terms and reconstruction errors (from μ, eval mode) on ``x`` (computed on the
    model's device)."""
    model.eval()
    a = np.asarray(x, dtype=np.float32)
    if not a.flags.writeable:  # e.g. a read-only view from pandas: torch warns on sharing it
        a = a.copy()
    x = torch.as_tensor(a).to(_model_device(model))
    tot = rec = kl = se = ae = 0.0
    for b in _batches(len(x), batch_size, None):
        xb = x[b]
        r, mu, lv = model(xb)
        t, rr, kk = vae_loss(xb, r, mu, lv, beta, reconstruction)
        n = len(b)
        tot += float(t) * n; rec += float(rr) * n; kl += float(kk) * n
        se += float(((r - xb) ** 2).sum()); ae += float((r - xb).abs().sum())
    n = max(len(x), 1)
    cells = max(x.numel(), 1)
    return {"loss": tot / n, "reconstruction": rec / n, "kl": kl / n,
            "rmse": math.sqrt(se / cells), "mae": ae / cells}


def fit(x_train: np.ndarray, x_val: np.ndarray, settings: VAESettings, *, seed: int = 0,
        progress: bool = True, device="cpu") -> tuple[BetaVAE, pd.DataFrame]:
    """Train a β-VAE; returns the model at the best validation loss and the per-epoch history.

    Early stopping: stop after ``patience`` epochs without a lower validation loss.  The model
    and the data live on ``device`` ("cpu", "cuda", "auto" = cuda when available; "cuda"
    without CUDA is an error, :func:`crossmodal.metrics.image.resolve_device`); the returned
    model stays there (:func:`save` writes CPU tensors).
    """
    from crossmodal.metrics.image import resolve_device

    dev = torch.device(resolve_device(str(device)))
    from tqdm.auto import tqdm

    x_train = np.asarray(x_train, dtype=np.float32)
    x_val = np.asarray(x_val, dtype=np.float32)
    if len(x_train) < 2:
        raise ValueError(f"β-VAE: need at least 2 training samples, got {len(x_train)}")
    if len(x_val) < 1:
        raise ValueError("β-VAE: the validation split is empty (early stopping needs it)")
    if not np.isfinite(x_train).all() or not np.isfinite(x_val).all():
        raise ValueError("β-VAE: expression contains NaN/inf; impute or drop genes before training")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    s = settings
    model = BetaVAE(x_train.shape[1], s.hidden, s.latent, s.negative_slope, s.input_dropout).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: warmup_cosine(e, s.warmup_epochs, s.max_epochs))
    xt = torch.tensor(x_train, device=dev)  # a copy: the input may be a read-only view
    best, best_state, since, rows = math.inf, None, 0, []
    bar = tqdm(range(s.max_epochs), desc="β-VAE", disable=not progress, mininterval=2)
    for epoch in bar:
        model.train()
        tl, nb = 0.0, 0
        for b in _batches(len(xt), s.batch_size, gen):
            r, mu, lv = model(xt[b])
            loss, _, _ = vae_loss(xt[b], r, mu, lv, s.beta, s.reconstruction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tl += loss.item(); nb += 1
        sched.step()
        val = evaluate(model, x_val, s.beta, reconstruction=s.reconstruction)
        rows.append({"epoch": epoch + 1, "train_loss": tl / max(nb, 1), "val_loss": val["loss"],
                     "val_rmse": val["rmse"], "lr": opt.param_groups[0]["lr"]})
        bar.set_postfix(train=f"{tl / max(nb, 1):.3g}", val=f"{val['loss']:.3g}")
        if val["loss"] < best - 1e-8:
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best, since = val["loss"], 0
        else:
            since += 1
            if since >= s.patience:
                log.info("β-VAE: early stop at epoch %d (best val loss %.4g)", epoch + 1, best)
                break
    if best_state is None:
        last = rows[-1] if rows else {}
        raise VAETrainingError(
            f"β-VAE: the validation loss was never finite in {len(rows)} epoch(s) (last train loss "
            f"{last.get('train_loss', float('nan')):.4g}, val loss {last.get('val_loss', float('nan')):.4g}); "
            "the training diverged - lower lr, check the z-scored input for extreme values, or "
            f"use a smaller beta (lr {s.lr}, beta {s.beta}, reconstruction {s.reconstruction})")
    model.load_state_dict(best_state)
    model.eval()
    log.info("β-VAE: %d epochs, best validation loss %.4g", len(rows), best)
    return model, pd.DataFrame(rows)


@torch.no_grad()
def encode(model: BetaVAE, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Latent means μ(x) (the deterministic code RNA-GAN feeds to its generator), computed on
    the model's device, returned as a CPU array."""
    model.eval()
    x = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: pandas may hand over a read-only view
    x = x.to(_model_device(model))
    out = [model.encode(x[b])[0] for b in _batches(len(x), batch_size, None)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, model.latent), np.float32)


@torch.no_grad()
def decode(model: BetaVAE, z: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    z = torch.as_tensor(np.asarray(z, dtype=np.float32)).to(_model_device(model))
    out = [model.decode(z[b]) for b in _batches(len(z), batch_size, None)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, model.n_genes), np.float32)


def save(model: BetaVAE, path, genes: list[str], extra: dict | None = None) -> None:
    from crossmodal.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"config": model.config(), "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "genes": list(genes),
                    "extra": extra or {}}, tmp)


def load(path) -> tuple[BetaVAE, list[str], dict]:
    """``(model in eval mode, genes, extra)`` from :func:`save`'s file; a
    :class:`~crossmodal.fileio.CheckpointError` naming ``path`` when it is unreadable or not
    a VAE checkpoint."""
    from crossmodal.fileio import CheckpointError, load_checkpoint

    ck = load_checkpoint(path, "VAE model", keys=("config", "state", "genes"), hint="the train_vae rule writes it")
    try:
        cfg = ck["config"]
        model = BetaVAE(cfg["n_genes"], cfg["hidden"], cfg["latent"], cfg["negative_slope"], cfg["input_dropout"])
        model.load_state_dict(ck["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"VAE model {path}: config and weights do not make a BetaVAE "
                              f"({type(e).__name__}: {str(e)[:300]})") from None
    model.eval()
    return model, ck["genes"], ck.get("extra", {})


def align_genes(df: pd.DataFrame, genes: list[str], what: str) -> np.ndarray:
    """Columns of ``df`` in the model's gene order; every gene must be present."""
    missing = [g for g in genes if g not in df.columns]
    if missing:
        raise ValueError(f"{what}: {len(missing)} of the model's {len(genes)} genes are missing "
                         f"(first: {', '.join(missing[:5])}); the expression stage sets genes an "
                         "external cohort lacks to 0 - check it ran with the same reference")
    return df[genes].to_numpy(np.float32)


# --------------------------------------------------------------------------------------
# pipeline steps (rules train_vae / encode_expression in workflow/rules/vae.smk)
# --------------------------------------------------------------------------------------
def model_settings(config: dict, paper: str, model: str) -> dict:
    """The settings of VAE ``model`` of ``paper``: config[paper]["vae"] with, for a model
    other than ``main``, the overrides in config[paper]["vae"]["models"][model]."""
    if paper not in config or "vae" not in config[paper]:
        raise KeyError(f"config: {paper}.vae is missing (needed by results/{paper}/vae/{model}/)")
    base = {k: v for k, v in config[paper]["vae"].items() if k != "models"}
    if model != "main":
        extra = config[paper]["vae"].get("models", {})
        if model not in extra:
            raise KeyError(f"config: {paper}.vae.models.{model} is not defined "
                           f"(known: main, {', '.join(extra)})")
        base.update(extra[model])
    base.setdefault("datasets", ["gtex"])
    base.setdefault("cohorts", None)
    return base


def expression_inputs(config: dict, paper: str, model: str) -> list[str]:
    """The z-scored expression tables a VAE model trains on."""
    return [f"results/expression/{d}/z_vae.tsv.gz" for d in model_settings(config, paper, model)["datasets"]]


def read_expression(paths: list[str]) -> pd.DataFrame:
    """Stack z-scored expression tables (samples x genes); genes must agree across tables."""
    frames = []
    for p in paths:
        df = pd.read_csv(p, sep="\t", index_col="sample")
        if df.empty:
            raise ValueError(f"{p}: no samples")
        if frames and list(df.columns) != list(frames[0].columns):
            common = frames[0].columns.intersection(df.columns)
            raise ValueError(f"{p}: genes differ from {paths[0]} ({len(common)} in common of "
                             f"{len(frames[0].columns)}); the VAE needs one gene space")
        frames.append(df)
    out = pd.concat(frames)
    if out.index.duplicated().any():
        raise ValueError(f"{paths}: duplicated sample ids {list(out.index[out.index.duplicated()][:5])}")
    return out


def select_samples(expr: pd.DataFrame, splits: pd.DataFrame, cohorts, what: str) -> pd.DataFrame:
    """The split table rows (indexed by sample) of samples in ``expr`` and ``cohorts``."""
    sp = splits.set_index("sample")
    sp = sp[sp.index.isin(expr.index)]
    if cohorts:
        unknown = sorted(set(cohorts) - set(sp["cohort"]))
        if unknown:
            raise ValueError(f"{what}: cohort(s) {', '.join(unknown)} have no samples with expression "
                             f"(present: {', '.join(sorted(sp['cohort'].unique()))})")
        sp = sp[sp["cohort"].isin(cohorts)]
    for s in ("train", "val", "test"):
        if not (sp["split"] == s).any():
            raise ValueError(f"{what}: the {s} split has no samples of cohorts {cohorts or 'all'}")
    return sp


def silhouette_by(z: np.ndarray, labels) -> float:
    """Silhouette of latent codes by label (nan if fewer than 2 labels or too few samples)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(set(labels)) < 2 or len(labels) <= len(set(labels)):
        return float("nan")
    return float(silhouette_score(z, labels))


# keys of config[paper]["vae"] (and of its models.*) that choose the data, not the network
DATA_KEYS = ("datasets", "cohorts")


def _step_settings(params) -> VAESettings:
    return VAESettings.from_dict(params["vae"], ignore=DATA_KEYS)


def _set_threads(threads: int) -> None:
    torch.set_num_threads(max(int(threads), 1))


@step("train_vae")
def train_vae_step(inputs, outputs, params, *, threads=1, log=None):
    """Train a β-VAE on z-scored expression (train split; early stopping on val); write the
    model, per-epoch history and, per split, RMSE / MAE and the silhouette by cohort of the
    latent means and of the input expression.  Trains on params["device"] ("auto" when absent)."""
    from crossmodal.fileio import write_table

    _set_threads(threads)
    cfg = params["vae"]
    paths = inputs["expression"] if isinstance(inputs["expression"], list) else [inputs["expression"]]
    expr = read_expression(paths)
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    sp = select_samples(expr, splits, cfg.get("cohorts"), f"train_vae ({', '.join(paths)})")
    genes = list(expr.columns)
    part = {s: sp.index[sp["split"] == s] for s in ("train", "val", "test")}
    log_ = logging.getLogger(__name__)
    log_.info("β-VAE on %d genes: %s", len(genes),
              ", ".join(f"{s} {len(ix)} samples" for s, ix in part.items()))
    settings = _step_settings(params)
    model, hist = fit(expr.loc[part["train"]].to_numpy(np.float32), expr.loc[part["val"]].to_numpy(np.float32),
                      settings, seed=int(params["seed"]), device=params.get("device", "auto"))
    rows = []
    for s, ix in part.items():
        m = evaluate(model, expr.loc[ix].to_numpy(np.float32), settings.beta, reconstruction=settings.reconstruction)
        z = encode(model, expr.loc[ix].to_numpy(np.float32))
        rows.append({"split": s, "n": len(ix), "rmse": m["rmse"], "mae": m["mae"], "loss": m["loss"],
                     "silhouette_cohort": silhouette_by(z, sp.loc[ix, "cohort"]),
                     # the same samples' input expression: how much the latent sharpens the cohorts
                     "silhouette_cohort_input": silhouette_by(expr.loc[ix].to_numpy(np.float32), sp.loc[ix, "cohort"])})
    metrics = pd.DataFrame(rows)
    log_.info("β-VAE test RMSE %.4f MAE %.4f silhouette %.3f", *metrics.set_index("split").loc["test", ["rmse", "mae", "silhouette_cohort"]])
    save(model, outputs["model"], genes, extra={"cohorts": sorted(sp["cohort"].unique()),
                                               "settings": settings.__dict__, "epochs": len(hist)})
    write_table(outputs["history"], hist, index=False)
    write_table(outputs["metrics"], metrics, index=False)


@step("encode_expression")
def encode_expression_step(inputs, outputs, params, *, threads=1, log=None):
    """Latent means μ of every sample of one expression table under a trained β-VAE."""
    from crossmodal.fileio import write_table

    _set_threads(threads)
    model, genes, _ = load(inputs["model"])
    expr = pd.read_csv(inputs["expression"], sep="\t", index_col="sample")
    x = align_genes(expr, genes, inputs["expression"])
    z = encode(model, x)
    out = pd.DataFrame(z, index=expr.index, columns=[f"z{i}" for i in range(z.shape[1])])
    logging.getLogger(__name__).info("encoded %d samples into %d latent dimensions", *z.shape)
    write_table(outputs["latent"], out)
