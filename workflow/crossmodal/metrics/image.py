"""Image-generation metrics: FID, KID and IS from features streamed through a pluggable extractor.

Formulas (one implementation each, checked against torch-fidelity and torchmetrics in
``tests/test_metrics_image.py``):

* :func:`frechet_distance` - ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})`` with the
  trace of the square root from the eigenvalues of ``S1 S2`` (as torch-fidelity / torchmetrics);
* :func:`fid_from_features` - means and unbiased (ddof = 1) covariances, then the above;
* :func:`kid_from_features` - unbiased MMD² with the polynomial kernel
  ``(x.y / d + 1)^3`` over ``subsets`` random subsets of ``subset_size`` (Bińkowski et al.
  2018), subsets drawn as torch-fidelity draws them (``numpy.random.RandomState(seed)``,
  ``choice`` without replacement), mean ± sd over subsets;
* :func:`inception_score_from_logits` - ``exp(E_x KL(p(y|x) || p(y)))`` per split of the
  (shuffled) set, mean ± sd over splits.

Streaming (:func:`extract_stats`): images go through the extractor in batches; FID statistics
are accumulated as running mean / co-moment matrices (Chan et al.'s pairwise update, float64),
IS as per-split sums, and KID keeps a uniform reservoir of at most ``kid_pool`` feature vectors,
so memory is bounded by ``d^2 + kid_pool * d`` floats whatever the number of images.

Extractors (:func:`get_extractor`), chosen by name:

* ``inception-fid`` - the FID-standard Inception-V3 (TF 2015-12-05 weights as converted by
  torch-fidelity / pytorch-fid; torch-fidelity's ``FeatureExtractorInceptionV3``), loaded from a
  local weights file; nothing is downloaded.  2048-d pool features, 1008 logits for IS.  Only
  numbers from this extractor are comparable to the papers' FID/KID/IS.
* ``cohort-ssl`` - the SimCLR encoder trained on the cohort's real tiles
  (:mod:`crossmodal.models.ssl`), the offline default.  IS needs class posteriors; this
  extractor supplies the posteriors of an isotropic Gaussian mixture over k-means clusters of
  the training tiles' features (a stand-in, labelled so in every table).

Public names (stable; other chains import them): ``frechet_distance``, ``fid_from_features``,
``kid_from_features``, ``kid_subset_size``, ``inception_score_from_logits``, ``ISAccumulator``,
``RunningMoments``, ``Reservoir``, ``Extractor``, ``EXTRACTORS``, ``get_extractor``,
``load_inception_fid``, ``resolve_device``, ``open_image_set``, ``ImageFolder``,
``extract_stats`` -> ``ImageSetStats``, ``compare`` (one labelled table row), ``NOT_COMPARABLE``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

NOT_COMPARABLE = "not comparable to the paper's"
#: fewest images per Inception-score split; smaller sets use fewer splits (a split of a handful of
#: images has a meaningless marginal p(y)); 50k-image sets are unaffected
IS_MIN_PER_SPLIT = 20
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")


# --------------------------------------------------------------------------------------
# formulas
# --------------------------------------------------------------------------------------
def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"frechet_distance: means must be equal 1-D vectors, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: covariances must be ({d}, {d}), got {s1.shape} and {s2.shape}")
    diff = mu1 - mu2
    tr_covmean = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def _features(name: str, a) -> np.ndarray:
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: features must be (n, d), got shape {a.shape}")
    if len(a) < 2:
        raise ValueError(f"{name}: needs at least 2 feature vectors, got {len(a)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite feature values")
    return a


def fid_from_features(a, b) -> float:
    """FID between feature sets ``a`` (n, d) and ``b`` (m, d)."""
    a, b = _features("fid_from_features: a", a), _features("fid_from_features: b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"fid_from_features: a has {a.shape[1]} features, b {b.shape[1]}")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    m = len(x)
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float((sxx + syy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid_from_features(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0, *,
                      degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """KID: unbiased polynomial-kernel MMD² over random subsets; ``(mean, std)``.

    ``subset_size`` larger than either set is reduced to the smaller set's size (logged as a
    warning; :func:`kid_subset_size` tells callers the size that was used).
    """
    a, b = _features("kid_from_features: a", a), _features("kid_from_features: b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"kid_from_features: a has {a.shape[1]} features, b {b.shape[1]}")
    m = kid_subset_size(len(a), len(b), subset_size)
    g = 1.0 / a.shape[1] if gamma is None else float(gamma)
    rng = np.random.RandomState(seed)
    mmds = np.empty(int(subsets))
    for i in range(int(subsets)):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        mmds[i] = _mmd2_unbiased(x, y, degree, g, coef0)
    return float(mmds.mean()), float(mmds.std())


def kid_subset_size(n_a: int, n_b: int, subset_size: int = 1000) -> int:
    m = min(int(subset_size), n_a, n_b)
    if m < 2:
        raise ValueError(f"KID: needs at least 2 samples per set, got {n_a} and {n_b}")
    if m < subset_size:
        log.warning("KID: subset size %d reduced to %d (sets of %d and %d)", subset_size, m, n_a, n_b)
    return m


def inception_score_from_logits(logits, splits: int = 10, *, shuffle: bool = True,
                                seed: int = 2020) -> tuple[float, float]:
    """Inception score of class ``logits`` (n, K): mean ± sd over ``splits`` equal parts."""
    import torch

    x = torch.as_tensor(np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits),
                        dtype=torch.float64)
    if x.ndim != 2 or len(x) < splits:
        raise ValueError(f"inception_score_from_logits: logits must be (n >= splits={splits}, K), got {tuple(x.shape)}")
    acc = ISAccumulator(len(x), x.shape[1], splits=splits, shuffle=shuffle, seed=seed)
    acc.update(np.arange(len(x)), x)
    return acc.result()


class ISAccumulator:
    """Streaming Inception score: each image's split is fixed up front (the shuffled order of
    torch-fidelity), and per split we keep ``sum p(y|x)`` and ``sum p log p`` only."""

    def __init__(self, n_total: int, n_classes: int, *, splits: int = 10, shuffle: bool = True, seed: int = 2020):
        self.splits = int(splits)
        order = np.random.RandomState(seed).permutation(n_total) if shuffle else np.arange(n_total)
        pos = np.empty(n_total, np.int64)
        pos[order] = np.arange(n_total)  # position of image i in the shuffled order
        bounds = np.array([(i * n_total) // self.splits for i in range(self.splits + 1)])
        self.split_of = np.searchsorted(bounds, pos, side="right") - 1
        self.sum_p = np.zeros((self.splits, n_classes))
        self.sum_plogp = np.zeros(self.splits)
        self.count = np.zeros(self.splits, np.int64)

    def update(self, index, logits) -> None:
        import torch

        lg = torch.as_tensor(logits).double()
        p = lg.softmax(1)
        plogp = (p * lg.log_softmax(1)).sum(1).cpu().numpy()
        p = p.cpu().numpy()
        s = self.split_of[np.asarray(index)]
        np.add.at(self.sum_p, s, p)
        np.add.at(self.sum_plogp, s, plogp)
        np.add.at(self.count, s, 1)

    def result(self) -> tuple[float, float]:
        scores = []
        for k in range(self.splits):
            n = self.count[k]
            if n == 0:
                continue
            q = self.sum_p[k] / n
            with np.errstate(divide="ignore", invalid="ignore"):
                cross = np.where(self.sum_p[k] > 0, self.sum_p[k] * np.log(q), 0.0).sum()
            scores.append(math.exp((self.sum_plogp[k] - cross) / n))
        return float(np.mean(scores)), float(np.std(scores))


class RunningMoments:
    """Running mean and covariance of feature batches (float64, pairwise/Chan update)."""

    def __init__(self, dim: int, device=None):
        import torch

        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, feats) -> None:
        import torch

        x = torch.as_tensor(feats).to(self.mean.device, torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        xc = x - mb
        m2b = xc.T @ xc
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * (nb / n)
        self.m2 += m2b + torch.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"RunningMoments: needs at least 2 samples, got {self.n}")
        return self.mean.cpu().numpy(), (self.m2 / (self.n - 1)).cpu().numpy()


class Reservoir:
    """A uniform random sample (Vitter's algorithm R) of at most ``capacity`` rows."""

    def __init__(self, capacity: int, dim: int, seed: int = 0):
        self.capacity = int(capacity)
        self.data = np.zeros((0, dim), np.float32)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def update(self, rows) -> None:
        rows = np.asarray(rows, np.float32)
        free = self.capacity - len(self.data)
        if free > 0:
            take = rows[:free]
            self.data = np.concatenate([self.data, take])
            self.seen += len(take)
            rows = rows[free:]
        for r in rows:
            self.seen += 1
            j = self.rng.integers(0, self.seen)
            if j < self.capacity:
                self.data[j] = r


# --------------------------------------------------------------------------------------
# extractors
# --------------------------------------------------------------------------------------
@dataclass
class Extractor:
    """A named feature extractor: ``fn(uint8 (N, 3, H, W) on device) -> (features, logits|None)``."""

    name: str
    dim: int
    fn: Callable
    device: str = "cpu"
    comparable: bool = False
    logits_note: str = ""
    info: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "comparable to the paper's" if self.comparable else f"{NOT_COMPARABLE} (extractor {self.name})"

    def __call__(self, x):
        import torch

        with torch.inference_mode():
            return self.fn(x.to(self.device))


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no CUDA device")
    return device


def missing_inception_message(path) -> str:
    return (f"inception-fid: weights file {path} not found. Nothing is downloaded at run time: on a machine "
            f"with internet fetch {INCEPTION_URL} (the FID Inception-V3 of torch-fidelity, converted from "
            f"TensorFlow's 2015-12-05 graph; pytorch-fid's pt_inception-2015-12-05-6726825d.pth has the same "
            f"layers), copy it to {Path(path).resolve()} (config key metrics.inception_weights), "
            f"or use the extractor cohort-ssl.")


def load_inception_fid(path, device: str = "cpu"):
    """torch-fidelity's FID Inception-V3 from the local weights file ``path`` (never downloads)."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path) if path else None
    if path is None or not path.is_file():
        raise FileNotFoundError(missing_inception_message(path or "<metrics.inception_weights unset>"))
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                            feature_extractor_weights_path=str(path))
    except (RuntimeError, KeyError, ValueError, EOFError, torch.serialization.pickle.UnpicklingError) as e:
        raise ValueError(f"inception-fid: weights file {path} does not fit the FID Inception-V3 "
                         f"(torch-fidelity FeatureExtractorInceptionV3): {str(e)[:400]}") from None
    return model.to(device)


def _inception_extractor(weights=None, device="cpu", **_):
    model = load_inception_fid(weights, device)

    def fn(x):
        feats, logits = model(x)
        return feats, logits

    return Extractor("inception-fid", 2048, fn, device, comparable=True,
                     logits_note="ImageNet-1008 logits (logits_unbiased)", info={"weights": str(weights)})


def _ssl_extractor(weights=None, device="cpu", **_):
    import torch

    from crossmodal.models import ssl

    if not weights:
        raise FileNotFoundError("cohort-ssl: no encoder checkpoint given (the train_ssl_encoder rule writes "
                                "results/metrics/ssl/<scheme>/encoder.pt)")
    enc, ck = ssl.load_encoder(weights)
    enc = enc.to(device)
    clusters = ck.get("clusters")
    cent = None
    if clusters:
        cent = torch.as_tensor(np.asarray(clusters["centroids"]), dtype=torch.float32, device=device)
        inv2s2 = 1.0 / (2.0 * float(clusters["sigma2"]))

    def fn(x):
        f = enc(x)
        if cent is None:
            return f, None
        return f, -torch.cdist(f, cent).pow(2) * inv2s2

    note = (f"posteriors of an isotropic Gaussian mixture on {len(cent)} k-means clusters of the "
            "training tiles' SimCLR features (stand-in for ImageNet classes)") if cent is not None else ""
    return Extractor("cohort-ssl", enc.feature_dim, fn, device, comparable=False, logits_note=note,
                     info={"weights": str(weights), "depth": enc.depth, "image_size": enc.image_size})


EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    "inception-fid": _inception_extractor,
    "cohort-ssl": _ssl_extractor,
}


def get_extractor(name: str, *, weights=None, device: str = "auto") -> Extractor:
    """The extractor ``name`` (see :data:`EXTRACTORS`), its weights loaded from ``weights``."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; known: {', '.join(sorted(EXTRACTORS))}")
    return EXTRACTORS[name](weights=weights, device=resolve_device(device))


# --------------------------------------------------------------------------------------
# streaming over image sets
# --------------------------------------------------------------------------------------
class ImageFolder:
    """PNG/JPEG/TIFF files of a folder (sorted) as RGB uint8 arrays - a dataset of images."""

    SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder}: not found")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in self.SUFFIXES)
        if not self.files:
            raise ValueError(f"image folder {self.folder}: no {sorted(self.SUFFIXES)} files")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return np.asarray(im.convert("RGB"))


def open_image_set(source):
    """A dataset from a tile LMDB (``*.lmdb``), a list of LMDBs, an image folder, or a dataset."""
    from crossmodal.data import TileDataset

    if isinstance(source, (list, tuple)):
        return TileDataset(list(source))
    if isinstance(source, (str, Path)):
        p = Path(source)
        return TileDataset([p]) if p.suffix == ".lmdb" else ImageFolder(p)
    return source


def _collate(batch):
    import torch

    idx = torch.tensor([b[0] for b in batch])
    imgs = torch.from_numpy(np.stack([np.asarray(b[1], np.uint8) for b in batch])).permute(0, 3, 1, 2)
    return idx, imgs


class _Indexed:
    def __init__(self, ds, indices):
        self.ds, self.indices = ds, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        return j, self.ds[int(self.indices[j])]


@dataclass
class ImageSetStats:
    """What :func:`extract_stats` keeps of one image set."""

    n: int
    mu: np.ndarray
    sigma: np.ndarray
    kid_features: np.ndarray
    inception_score: tuple[float, float] | None
    extractor: str
    is_splits: int = 0


def extract_stats(source, extractor: Extractor, *, batch_size: int = 64, max_images: int | None = None,
                  kid_pool: int = 50_000, is_splits: int = 10, seed: int = 0, num_workers: int = 0,
                  desc: str = "features") -> ImageSetStats:
    """Stream ``source`` (see :func:`open_image_set`) through ``extractor`` with bounded memory.

    ``max_images`` (if set and smaller than the set) takes a seeded random subset.  The
    Inception score uses ``is_splits`` splits, fewer when the set has under
    ``IS_MIN_PER_SPLIT`` images per split (logged; recorded in ``ImageSetStats.is_splits``).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    ds = open_image_set(source)
    n_all = len(ds)
    if n_all < 2:
        raise ValueError(f"extract_stats: image set {source} has {n_all} images; needs at least 2")
    idx = np.arange(n_all)
    if max_images and max_images < n_all:
        idx = np.sort(np.random.default_rng(seed).choice(n_all, int(max_images), replace=False))
    n = len(idx)
    loader = DataLoader(_Indexed(ds, idx), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=extractor.device.startswith("cuda"))
    moments = RunningMoments(extractor.dim, device=extractor.device)
    reservoir = Reservoir(kid_pool, extractor.dim, seed=seed)
    is_acc = None
    n_splits = max(1, min(int(is_splits), n // IS_MIN_PER_SPLIT))
    if n_splits < is_splits:
        log.warning("%s: Inception score over %d split(s) instead of %d (%d images; >= %d per split)",
                    desc, n_splits, is_splits, n, IS_MIN_PER_SPLIT)
    log.info("%s: %d images through %s on %s", desc, n, extractor.name, extractor.device)
    for j, imgs in tqdm(loader, desc=desc, mininterval=5):
        feats, logits = extractor(imgs)
        moments.update(feats)
        reservoir.update(feats.float().cpu().numpy())
        if logits is not None:
            if is_acc is None:
                is_acc = ISAccumulator(n, logits.shape[1], splits=n_splits, seed=2020 + seed)
            is_acc.update(j.numpy(), logits.cpu())
    mu, sigma = moments.mean_cov()
    return ImageSetStats(n, mu, sigma, reservoir.data, is_acc.result() if is_acc else None, extractor.name,
                         n_splits if is_acc else 0)


def compare(a: ImageSetStats, b: ImageSetStats, extractor: Extractor, *, kid_subsets: int = 100,
            kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """One metric-table row comparing image sets ``a`` and ``b`` (labelled with the extractor)."""
    m = kid_subset_size_used = min(kid_subset_size, len(a.kid_features), len(b.kid_features))
    kid_mean, kid_std = kid_from_features(a.kid_features, b.kid_features, kid_subsets, m, seed)
    nan = float("nan")
    ia, ib = a.inception_score or (nan, nan), b.inception_score or (nan, nan)
    return {"extractor": extractor.name, "comparability": extractor.label, "n_a": a.n, "n_b": b.n,
            "fid": frechet_distance(a.mu, a.sigma, b.mu, b.sigma),
            "kid_mean": kid_mean, "kid_std": kid_std, "kid_subsets": kid_subsets,
            "kid_subset_size": kid_subset_size_used,
            "is_a_mean": ia[0], "is_a_std": ia[1], "is_b_mean": ib[0], "is_b_std": ib[1],
            "is_splits_a": a.is_splits, "is_splits_b": b.is_splits,
            "is_classes": extractor.logits_note or "none (IS undefined for this extractor)"}
