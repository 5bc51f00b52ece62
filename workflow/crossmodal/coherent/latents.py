"""Per-modality 32-d latents (Coherent Denoising Methods, "Autoencoder embedding").

Omics (CNA, RNA-seq, RPPA): an autoencoder per modality on standardised features -- the
shared fully connected model of :mod:`crossmodal.models.vae` with β = 0 (the KL term off, so
it is a plain autoencoder; we use its mean code).  Slide embeddings: PCA - of the embeddings
standardised with the training statistics like every modality, i.e. PCA of the correlation
matrix (the paper says only "PCA was used to reduce their dimensionality"; our choice, so that
no single Titan dimension's scale dominates the components).  Every scaler,
autoencoder and PCA is fit on the training split; the latents are then standardised with the
training mean and sd so the diffusion models see unit-scale data.  Latent dimensions with
no training variance (a dead unit) are dropped and logged.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crossmodal.coherent.preprocess import MODALITIES

log = logging.getLogger(__name__)


def _split_rows(df: pd.DataFrame, labels: pd.DataFrame, split: str) -> list[str]:
    return [i for i in labels.index[labels["split"] == split] if i in df.index]


def encode_modality(name: str, df: pd.DataFrame, labels: pd.DataFrame, s: dict, *, seed: int = 0
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from crossmodal.models import vae

    tr, va = _split_rows(df, labels, "train"), _split_rows(df, labels, "val")
    if len(tr) < 2:
        raise ValueError(f"latents {name}: fewer than 2 training samples")
    sc = StandardScaler().fit(df.loc[tr].to_numpy())
    x = sc.transform(df.to_numpy()).astype(np.float32)
    pos = {k: i for i, k in enumerate(df.index)}
    dim = int(s["dim"])
    hist = pd.DataFrame()
    if name == "wsi":
        k = min(dim, len(tr), df.shape[1])
        pca = PCA(n_components=k, random_state=seed).fit(x[[pos[i] for i in tr]])
        z = pca.transform(x)
        hist = pd.DataFrame({"modality": name, "component": np.arange(1, k + 1),
                             "explained_variance_ratio": pca.explained_variance_ratio_})
    else:
        if not va:
            log.warning("latents %s: no validation sample holds this modality; early stopping on training loss", name)
            va = tr
        # beta 0: a plain autoencoder; squared error summed over features, as before the shared VAE
        # took reconstruction "mean" as its default (Adam makes the two nearly equivalent)
        st = vae.VAESettings.from_dict({**s["autoencoder"], "latent": dim, "beta": 0.0, "reconstruction": "sum"})
        model, h = vae.fit(x[[pos[i] for i in tr]], x[[pos[i] for i in va]], st, seed=seed, progress=False)
        z = vae.encode(model, x)
        hist = h.assign(modality=name)
    ztr = z[[pos[i] for i in tr]]
    sd = ztr.std(0)
    live = sd > 1e-6
    if (~live).any():
        log.warning("latents %s: dropped %d dead latent dimensions", name, int((~live).sum()))
    z = (z[:, live] - ztr.mean(0)[live]) / sd[live]
    out = pd.DataFrame(z, index=df.index, columns=[f"{name}_{i}" for i in range(int(live.sum()))])
    return out, hist


def encode_all(data: dict[str, pd.DataFrame], labels: pd.DataFrame, s: dict, *, seed: int = 0
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One latent table (rows = every labelled sample, NaN where a modality is missing)."""
    parts, hists = [], []
    for k, m in enumerate(MODALITIES):
        z, h = encode_modality(m, data[m], labels, s, seed=seed + k)
        parts.append(z.reindex(labels.index))
        hists.append(h)
    lat = pd.concat(parts, axis=1)
    lat.index.name = "sample"
    return lat, pd.concat(hists, ignore_index=True)
