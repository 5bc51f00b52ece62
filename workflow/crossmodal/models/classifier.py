"""ResNet tile classifiers: training with a held-out validation fraction and early stopping,
prediction, accuracy / F1 / AUC, and stratified k-fold cross-validation.

Used by RNA-GAN (a real-trained ResNet-18 classifying tiles generated from an external cohort;
SimCLR-pretrained ResNet-50 vs from scratch, 5-fold CV) and RNA-CDM's downstream experiments.
Networks are torchvision's ResNets; weights are random ("trained from scratch") unless a
backbone state dict (e.g. from SimCLR) is given.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossmodal.data import TileView

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Defaults: RNA-GAN STAR Methods - AdamW, lr 3e-5, 10 epochs, early stopping on 20% validation."""

    epochs: int = 10
    lr: float = 3e-5
    weight_decay: float = 0.01
    batch_size: int = 32
    val_fraction: float = 0.2
    patience: int = 3
    image_size: int = 256
    device: str = "cpu"  # "auto" = CUDA when torch sees a GPU (the rule must request one), else CPU


def make_resnet(arch: str, n_classes: int, backbone_state: dict | None = None, *,
                seed: int | None = None) -> nn.Module:
    """A torchvision ResNet (random init) with an ``n_classes`` head; optionally load a
    backbone state dict (keys of the ResNet without ``fc``).  With ``seed`` the initial weights
    depend on it alone (not on the process's global torch RNG, which starts from a random seed
    in every process), and the global RNG is left as it was."""
    import torchvision

    if arch not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"unknown classifier architecture {arch!r} (resnet18, resnet34, resnet50)")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return make_resnet(arch, n_classes, backbone_state)
    net = getattr(torchvision.models, arch)(weights=None)
    if backbone_state is not None:
        missing, unexpected = net.load_state_dict(backbone_state, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")]
        if bad or unexpected:
            raise ValueError(f"backbone weights do not fit {arch}: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")
    net.fc = nn.Linear(net.fc.in_features, n_classes)
    return net


_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def to_input(tiles: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> normalised float (n, 3, size, size)."""
    x = torch.as_tensor(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - _MEAN) / _STD


def _flip_aug(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    r = torch.rand(len(x), 2, generator=gen)
    x = torch.where((r[:, 0] < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where((r[:, 1] < 0.5).view(-1, 1, 1, 1), x.flip(-2), x)


def _device(device: str) -> torch.device:
    from crossmodal.metrics.image import resolve_device

    return torch.device(resolve_device(device))


@torch.no_grad()
def predict_proba(model: nn.Module, tiles, image_size: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n, classes), computed on the device the model's weights are on;
    ``tiles``: uint8 (n, H, W, 3) or an indexable that decodes batches of them (see :func:`train`)."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(tiles), batch_size):
        out.append(torch.softmax(model(to_input(tiles[i:i + batch_size], image_size).to(dev)), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def _rows(tiles, idx):
    """Rows ``idx`` of ``tiles``: a copy for an in-memory array, a :class:`crossmodal.data.TileView`
    (no tile copied) otherwise."""
    return tiles[idx] if isinstance(tiles, np.ndarray) else TileView(tiles, idx)


def validation_split(y: np.ndarray, val_fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a stratified ``val_fraction`` of the tiles, or - with
    ``groups`` (the slide / patient of each tile) - of the groups, so that no slide has tiles
    on both sides (a per-tile split lets early stopping score tiles whose neighbours it trained
    on).  Grouped: StratifiedGroupKFold with round(1 / val_fraction) folds (at most one per
    group), its first fold held out."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    y = np.asarray(y)
    if groups is None:
        return train_test_split(np.arange(len(y)), test_size=val_fraction, random_state=seed, stratify=y)
    groups = np.asarray(groups)
    if len(groups) != len(y):
        raise ValueError(f"classifier validation split: {len(groups)} groups for {len(y)} tiles")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"classifier validation split by slide: the tiles come from {n_groups} slide(s); "
                         "a held-out slide needs at least 2 (set val_fraction 0 for no early stopping)")
    k = int(min(max(round(1 / val_fraction), 2), n_groups))
    tr, va = next(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    return tr, va


def train(model: nn.Module, tiles, y: np.ndarray, s: TrainSettings, *, seed: int = 0,
          val: tuple | None = None, progress: bool = True, groups=None) -> tuple[nn.Module, list[dict]]:
    """Train with AdamW; early stopping on the validation loss (``val`` given, or a stratified
    ``val_fraction`` of the training tiles - of their slides when ``groups`` (slide or patient
    per tile) is given; ``val_fraction`` 0 with no ``val`` = no early stopping).  ``tiles``:
    uint8 (n, H, W, 3), or an object that decodes such an array for an index array (tiles
    streamed from disk).  Returns the best model and per-epoch history."""
    from tqdm.auto import tqdm

    y = np.asarray(y)
    if len(set(y.tolist())) < 2:
        raise ValueError(f"classifier training needs at least 2 classes, got {sorted(set(y.tolist()))}")
    if val is None and s.val_fraction > 0:
        tr, va = validation_split(y, s.val_fraction, seed, groups)
        if len(set(y[tr].tolist())) < 2:
            raise ValueError("classifier: the training part of the validation split holds one class only "
                             f"({len(tr)} tiles); more slides per class are needed")
        val = (TileView(tiles, va), y[va])
        tiles, y = TileView(tiles, tr), y[tr]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # CPU stream: same shuffles and flips on any device
    dev = _device(s.device)
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    lossf = nn.CrossEntropyLoss()
    best, best_state, since, hist = np.inf, None, 0, []
    for epoch in tqdm(range(s.epochs), desc="classifier", disable=not progress, mininterval=2):
        model.train()
        perm = torch.randperm(len(y), generator=gen).numpy()
        tl = []
        for i in range(0, len(perm), s.batch_size):
            b = perm[i:i + s.batch_size]
            if len(b) < 2:  # batch norm needs 2 samples
                continue
            x = _flip_aug(to_input(tiles[b], s.image_size), gen).to(dev)
            loss = lossf(model(x), torch.as_tensor(y[b], dtype=torch.long, device=dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tl.append(loss.item())
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(tl)) if tl else float("nan")}
        if val is not None:
            p = predict_proba(model, val[0], s.image_size)
            row["val_loss"] = float(nn.functional.nll_loss(torch.log(torch.as_tensor(p) + 1e-8),
                                                           torch.as_tensor(val[1], dtype=torch.long)))
            if row["val_loss"] < best:
                best, best_state, since = row["val_loss"], copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
        hist.append(row)
        if val is not None and since >= s.patience:
            log.info("classifier: early stop at epoch %d", epoch + 1)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, hist  # on s.device


def scores(y_true, proba: np.ndarray, n_classes: int | None = None) -> dict:
    """Accuracy, macro F1, AUC (binary: positive class 1; multi-class: one-vs-rest macro)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y_true = np.asarray(y_true)
    pred = proba.argmax(1)
    out = {"accuracy": float(accuracy_score(y_true, pred)),
           "f1": float(f1_score(y_true, pred, average="macro", labels=np.arange(proba.shape[1]), zero_division=0)),
           "n": int(len(y_true))}
    try:
        if proba.shape[1] == 2:
            out["auc"] = float(roc_auc_score(y_true, proba[:, 1]))
        else:
            out["auc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=np.arange(proba.shape[1])))
    except ValueError:  # one class only in y_true
        out["auc"] = float("nan")
    return out


def grouped_tests(y_true, proba: np.ndarray, groups, chance: float) -> dict:
    """Significance of :func:`scores` with the patient (``groups``) as the unit: tiles of one
    patient are not independent draws, so tile-level p-values would overstate the evidence.

    - ``accuracy_p``: one-sided one-sample t-test that the patients' tile accuracies exceed
      ``chance``;
    - ``auc_p`` (two classes only, else NaN): one-sided Mann-Whitney test that the patients of
      class 1 get a higher mean P(class 1) than those of class 0 - the patient-level AUC's test;
      ``auc_min_p``: the smallest p that test can give with these patient counts (exact test), so
      a reader can tell 'no signal' from 'too few patients';
    - ``n_groups``."""
    import pandas as pd

    from crossmodal import stats

    y_true, groups = np.asarray(y_true), np.asarray(groups).astype(str)
    if len(groups) != len(y_true):
        raise ValueError(f"grouped_tests: {len(groups)} group labels for {len(y_true)} tiles")
    d = pd.DataFrame({"g": groups, "y": y_true, "hit": proba.argmax(1) == y_true})
    mixed = d.groupby("g")["y"].nunique()
    if (mixed > 1).any():
        raise ValueError(f"grouped_tests: patient(s) {', '.join(mixed.index[mixed > 1][:5])} hold tiles of "
                         "several classes")
    per = d.groupby("g").agg(y=("y", "first"), acc=("hit", "mean"))
    out = {"n_groups": int(len(per)), "accuracy_p": stats.greater_than(per["acc"], chance)["p_value"],
           "auc_p": float("nan"), "auc_min_p": float("nan")}
    if proba.shape[1] == 2:
        score = pd.Series(proba[:, 1]).groupby(groups).mean().reindex(per.index)
        pos, neg = score[per["y"] == 1].to_numpy(), score[per["y"] == 0].to_numpy()
        if len(pos) and len(neg):
            from math import comb

            out["auc_p"] = stats.ranksum(pos, neg, alternative="greater")["p_value"]
            out["auc_min_p"] = 1 / comb(len(pos) + len(neg), len(pos))
    return out


def cross_validate(tiles: np.ndarray, y: np.ndarray, make_model, s: TrainSettings, *, folds: int = 5,
                   seed: int = 0, groups: np.ndarray | None = None, progress: bool = True) -> tuple[list[dict], np.ndarray]:
    """Stratified k-fold CV (by ``groups`` with StratifiedGroupKFold when given, so tiles of one
    patient never sit in both train and test).  ``make_model()`` builds a fresh network per fold,
    after ``torch.manual_seed(seed + fold)``, so its initial weights are reproducible too.
    Returns per-fold scores (each row's ``confusion`` holds that fold's confusion matrix, rows
    true, columns predicted) and the summed confusion matrix."""
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    k = len(np.unique(y))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(tiles, y, groups)
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(tiles, y)
    rows, cm = [], np.zeros((k, k), dtype=int)
    for f, (tr, te) in enumerate(splitter):
        torch.manual_seed(seed + f)  # the initial weights (train() seeds only what follows)
        model, _ = train(make_model(), _rows(tiles, tr), y[tr], s, seed=seed + f, progress=progress,
                         groups=None if groups is None else np.asarray(groups)[tr])
        p = predict_proba(model, _rows(tiles, te), s.image_size)
        sc = scores(y[te], p)
        sc["fold"] = f + 1
        sc["confusion"] = confusion_matrix(y[te], p.argmax(1), labels=np.arange(k))
        rows.append(sc)
        cm += sc["confusion"]
        log.info("fold %d/%d: accuracy %.3f F1 %.3f", f + 1, folds, sc["accuracy"], sc["f1"])
    return rows, cm
