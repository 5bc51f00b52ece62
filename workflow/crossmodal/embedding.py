"""2-D embeddings for figures: one seeded UMAP (umap-learn) shared by every paper's plots."""
from __future__ import annotations

import numpy as np


def umap_2d(x: np.ndarray, neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """Seeded UMAP of ``x`` (n, d) to (n, 2); ``neighbors`` is clamped to what ``n`` allows, and
    the spectral initialisation (which needs more points than neighbours) falls back to random."""
    import umap

    x = np.asarray(x)
    n = len(x)
    if n < 3:
        raise ValueError(f"UMAP: {n} points, too few to embed")
    k = max(2, min(int(neighbors), n - 1))
    init = "spectral" if n > k + 2 else "random"
    return umap.UMAP(n_neighbors=k, random_state=seed, init=init, n_jobs=1).fit_transform(x)
