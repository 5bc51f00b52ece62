"""SimCLR (Chen et al. 2020, ICML) on histology tiles: a ResNet backbone from torchvision,
a 2-layer projection head, the NT-Xent loss (written once, here) and a resumable trainer.

Used for the ``cohort-ssl`` feature extractor of :mod:`crossmodal.metrics.image` (an encoder
trained on the cohort's real tiles, the offline stand-in for the FID Inception network),
and by the RNA-GAN / RNA-CDM SimCLR pretraining experiments (RNA-GAN STAR Methods: ResNet-50,
SGD lr 0.06, momentum 0.9, weight decay 5e-4, cosine annealing, 100 epochs; RNA-CDM Methods:
ResNet-18, 50 epochs).

Depths 18/34/50/101/152 are torchvision's ResNets; depth 10 is torchvision's ``ResNet`` class
with one ``BasicBlock`` per stage (a small backbone for toy-scale runs on a CPU).  Weights are
always random-initialised: nothing is downloaded.

Checkpoint (``save_encoder`` / ``load_encoder``): a ``torch.save`` dict with ``format``
("crossmodal-simclr"), ``arch`` (depth, image_size, proj_dim, feature_dim), ``backbone`` and
``head`` state dicts, ``clusters`` (optional k-means centroids in feature space, see
:mod:`crossmodal.metrics.image`) and ``meta`` (hyperparameters, tile counts).

Public names: ``resnet_backbone``, ``build``, ``nt_xent_loss``, ``augmentation``,
``train_simclr``, ``save_encoder``, ``load_encoder``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "crossmodal-simclr"
DEPTHS = (10, 18, 34, 50, 101, 152)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet_backbone(depth: int = 18):
    """A torchvision ResNet of ``depth`` with its classifier removed; ``(module, feature_dim)``."""
    import torch.nn as nn
    import torchvision.models as tvm
    from torchvision.models.resnet import BasicBlock, ResNet

    if depth not in DEPTHS:
        raise ValueError(f"resnet_backbone: depth must be one of {DEPTHS}, got {depth}")
    if depth == 10:
        net = ResNet(BasicBlock, [1, 1, 1, 1])
    else:
        net = getattr(tvm, f"resnet{depth}")(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _module_classes():
    import torch
    import torch.nn as nn

    class Encoder(nn.Module):
        """Backbone applied to uint8 or float RGB batches (N, 3, H, W), resized to
        ``image_size`` and ImageNet-normalised; returns (N, feature_dim) features."""

        def __init__(self, depth: int, image_size: int):
            super().__init__()
            self.depth, self.image_size = int(depth), int(image_size)
            self.backbone, self.feature_dim = resnet_backbone(depth)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def prepare(self, x):
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                x = nn.functional.interpolate(x, size=(self.image_size, self.image_size),
                                              mode="bilinear", antialias=True, align_corners=False)
            return (x - self.mean) / self.std

        def forward(self, x):
            return self.backbone(self.prepare(x))

    class ProjectionHead(nn.Module):
        """SimCLR's g(.): Linear - ReLU - Linear to ``proj_dim``."""

        def __init__(self, dim: int, proj_dim: int):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, proj_dim))

        def forward(self, h):
            return self.net(h)

    return Encoder, ProjectionHead


def build(depth: int = 18, image_size: int = 224, proj_dim: int = 128):
    """``(encoder, head)`` for SimCLR."""
    Encoder, ProjectionHead = _module_classes()
    enc = Encoder(depth, image_size)
    return enc, ProjectionHead(enc.feature_dim, proj_dim)


def nt_xent_loss(z1, z2, temperature: float = 0.5):
    """NT-Xent (normalised temperature-scaled cross entropy), SimCLR eq. (1), averaged over
    all 2N anchors: positives are the two views of one image, the other 2N - 2 are negatives."""
    import torch
    import torch.nn.functional as F

    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent_loss: views must be equal (N, D) batches, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def augmentation(image_size: int, *, crop_scale=(0.08, 1.0), jitter: float = 0.5):
    """SimCLR augmentations for one uint8 CHW tile: random resized crop, horizontal and vertical
    flips (tissue has no orientation), colour jitter (p 0.8), grayscale (p 0.2)."""
    import torch
    from torchvision.transforms import v2

    s = float(jitter)
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
    ])


def _tiles_tensor(dataset, idx, load_size: int):
    """uint8 (B, 3, load_size, load_size) tensor of dataset tiles ``idx``."""
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(np.stack([np.asarray(dataset[int(i)]) for i in idx])).permute(0, 3, 1, 2)
    if batch.shape[-1] != load_size:
        batch = F.interpolate(batch.float(), size=(load_size, load_size), mode="bilinear",
                              antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return batch


def train_simclr(dataset, ckpt_dir, done_path, hp: Mapping[str, Any], *, seed: int = 0,
                 device: str = "auto", checkpoint_every: int = 200, time_limit_s: float | None = None):
    """Train SimCLR on ``dataset`` (RGB uint8 HxWx3 tiles, e.g. a ``TileDataset``).

    ``hp``: depth, image_size, proj_dim, temperature, epochs, batch_size, lr, momentum,
    weight_decay, crop_scale, jitter.  SGD with cosine annealing over all steps (RNA-GAN STAR
    Methods).  Resumable through :class:`crossmodal.training.ResumableRun` (checkpoints in
    ``ckpt_dir``, finished marker ``done_path``).  Returns ``(encoder, head, losses)``: the
    trained modules in eval mode and the loss of each step run in this call.
    """
    import torch
    from tqdm import tqdm

    from crossmodal import training

    n = len(dataset)
    bs = int(hp["batch_size"])
    if n < 2:
        raise ValueError(f"train_simclr: needs at least 2 tiles, got {n}")
    bs = min(bs, n)
    per_epoch = n // bs
    total = per_epoch * int(hp["epochs"])
    training.seed_everything(seed)
    acc = training.make_accelerator(device)
    enc, head = build(int(hp["depth"]), int(hp["image_size"]), int(hp["proj_dim"]))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=float(hp["lr"]), momentum=float(hp["momentum"]),
                          weight_decay=float(hp["weight_decay"]))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    enc, head, opt = acc.prepare(enc, head, opt)
    with training.ResumableRun(ckpt_dir, every_steps=checkpoint_every, accelerator=acc,
                               meta={"hp": dict(hp), "n_tiles": n, "seed": seed}, time_limit_s=time_limit_s) as run:
        objects = {"encoder": enc, "head": head, "opt": opt, "sched": sched}
        start = run.restore(objects)
        aug = augmentation(int(hp["image_size"]), crop_scale=hp.get("crop_scale", (0.08, 1.0)),
                           jitter=float(hp.get("jitter", 0.5)))
        load_size = int(hp["image_size"]) * 2  # decode once, crop from a 2x larger view
        log.info("SimCLR: %d tiles, ResNet-%d at %d px, batch %d, %d steps (%d epochs) on %s",
                 n, hp["depth"], hp["image_size"], bs, total, hp["epochs"], acc.device)
        enc.train()
        head.train()
        losses = []
        for step in tqdm(range(start, total), desc="SimCLR", initial=start, total=total, mininterval=5):
            idx = training.step_batch(step, n=n, batch_size=bs, seed=seed)
            tiles = _tiles_tensor(dataset, idx, load_size)
            v1 = torch.stack([aug(t) for t in tiles]).to(acc.device)
            v2_ = torch.stack([aug(t) for t in tiles]).to(acc.device)
            z1, z2 = head(enc(v1)), head(enc(v2_))
            loss = nt_xent_loss(z1, z2, float(hp["temperature"]))
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if step % max(per_epoch, 1) == 0:
                log.info("SimCLR step %d/%d loss %.4f lr %.4g", step + 1, total, losses[-1], sched.get_last_lr()[0])
            run.step_done(step + 1, objects)
        run.finish(done_path, {"steps": total, "final_loss": losses[-1] if losses else None})
    return acc.unwrap_model(enc).eval(), acc.unwrap_model(head).eval(), losses


def save_encoder(path, encoder, head=None, *, clusters: Mapping | None = None, meta: Mapping | None = None) -> None:
    """Write an encoder checkpoint atomically (format described in the module docstring)."""
    import torch

    from crossmodal.fileio import atomic_path

    obj = {"format": FORMAT, "version": 1,
           "arch": {"depth": encoder.depth, "image_size": encoder.image_size,
                    "feature_dim": encoder.feature_dim,
                    "proj_dim": None if head is None else head.net[-1].out_features},
           "backbone": {k: v.cpu() for k, v in encoder.backbone.state_dict().items()},
           "head": None if head is None else {k: v.cpu() for k, v in head.state_dict().items()},
           "clusters": dict(clusters) if clusters else None, "meta": dict(meta or {})}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_encoder(path):
    """``(encoder in eval mode, checkpoint dict)`` from :func:`save_encoder`'s file; a clear
    error naming ``path`` when it is missing or not such a checkpoint."""
    from crossmodal.fileio import load_checkpoint

    ck = load_checkpoint(path, "SimCLR encoder", fmt=FORMAT, hint="the train_ssl_encoder rule writes it")
    a = ck["arch"]
    Encoder, _ = _module_classes()
    enc = Encoder(a["depth"], a["image_size"])
    enc.backbone.load_state_dict(ck["backbone"])
    return enc.eval(), ck


