"""RNA-GAN's synthetic-pretraining experiment (Results "... self-supervised learning", Figure
S4): SimCLR on RNA-GAN tiles of the two tissues, then stratified k-fold fine-tuning on real
tiles of a two-class task vs the same network trained from scratch."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from crossmodal.fileio import save_figure, write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)


def depth_of(arch: str) -> int:
    return int(arch.replace("resnet", ""))


@step("generate_pretraining_tiles")
def generate_pretraining_tiles(inputs, outputs, params, *, threads=1, log=None):
    """``n_tiles`` RNA-GAN tiles split evenly over the tissues, each from the latents of that
    tissue's patients in turn (the paper's 10,000 tiles, 5,000 per class), on params["device"]."""
    from crossmodal.rna_gan.generators import load_generator, read_latents, step_device

    torch.set_num_threads(max(int(threads), 1))
    cfg, seed, tissues = params["gan"], int(params["seed"]), list(params["tissues"])
    models = inputs["models"] if isinstance(inputs["models"], list) else [inputs["models"]]
    lat = read_latents(inputs["latent"])
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str).set_index("sample")
    per = int(params["n_tiles"]) // len(tissues)
    from crossmodal.data import TileWriter

    with TileWriter(outputs["tiles"], {"mpp": None, "encoding": "png", "tile_size": int(cfg["image_size"]),
                                       "variant": "rna_gan", "purpose": "simclr"}) as w:
        for k, (t, mp) in enumerate(zip(tissues, models)):
            ss = [s for s in splits.index[splits["cohort"] == t] if s in lat.index]
            if not ss:
                raise ValueError(f"no {t} sample with a latent code in {inputs['latent']}")
            model = load_generator(mp, cfg, seed, step_device(params))
            counts = np.full(len(ss), per // len(ss))
            counts[: per % len(ss)] += 1
            for j, (s, c) in enumerate(zip(ss, counts)):
                if c:
                    z = torch.as_tensor(np.repeat(lat.loc[s].to_numpy(np.float32)[None], c, 0))
                    for tile in model.generate(int(c), z, seed=seed + 7919 * k + j):
                        w.add(tile, {"sample": s, "tissue": t})
    logging.getLogger(__name__).info("%d synthetic tiles (%d per tissue) for SimCLR", per * len(tissues), per)


@step("simclr_pretrain")
def simclr_pretrain(inputs, outputs, params, *, threads=1, log=None):
    """SimCLR (SGD, cosine annealing) on the synthetic tiles; writes the encoder checkpoint."""
    from crossmodal.data import TileDataset
    from crossmodal.models import ssl

    torch.set_num_threads(max(int(threads), 1))
    c = params["simclr"]
    hp = {"depth": depth_of(c["arch"]), "image_size": int(c["image_size"]), "proj_dim": int(c["proj_dim"]),
          "temperature": float(c["temperature"]), "epochs": int(c["epochs"]), "batch_size": int(c["batch_size"]),
          "lr": float(c["lr"]), "momentum": float(c["momentum"]), "weight_decay": float(c["weight_decay"]),
          "crop_scale": [float(v) for v in c["crop_scale"]], "jitter": float(c["jitter"])}
    ds = TileDataset(inputs["tiles"])
    enc, head, losses = ssl.train_simclr(ds, params["checkpoints"], outputs["done"], hp, seed=int(params["seed"]),
                                         device=params.get("device", "auto"))
    ssl.save_encoder(outputs["encoder"], enc, head, meta={"hp": hp, "n_tiles": len(ds), "source": "RNA-GAN tiles"})


def patient_groups(samples, sample_patient: dict | None) -> np.ndarray:
    """The CV group of each tile: its patient, so that the slides of one patient (TCGA-GBM has
    several per patient) never sit in both a training and a test fold; the sample itself only
    when no ``sample -> patient`` map is given (one slide per patient)."""
    samples = np.asarray(samples, dtype=object)
    if sample_patient is None:
        return samples
    missing = sorted(set(samples) - set(sample_patient))
    if missing:
        raise ValueError(f"SimCLR task: no patient for sample(s) {', '.join(missing[:5])} in the sample table")
    return np.array([sample_patient[s] for s in samples], dtype=object)


def _task_tiles(lmdbs, sample_cohort: dict, cohorts: list[str], n_total: int, size: int, seed: int,
                sample_patient: dict | None = None):
    """``n_total // len(cohorts)`` real tiles per cohort, spread over its patients (seeded), with
    each tile's CV group (:func:`patient_groups`); only the chosen tiles are decoded."""
    from crossmodal.rna_gan.evaluate import load_tiles

    per = n_total // len(cohorts)
    xs, ys, gs = [], [], []
    for k, c in enumerate(cohorts):
        ll = [p for p in lmdbs if sample_cohort.get(_sample_of(p)) == c]
        if not ll:
            raise ValueError(f"SimCLR task: no real tile LMDB of cohort {c}")
        tiles, samples = load_tiles(ll, size, seed=seed, max_total=per)
        xs.append(tiles); ys.append(np.full(len(tiles), k)); gs.append(patient_groups(samples, sample_patient))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def _sample_of(p: str) -> str:
    from pathlib import Path

    n = Path(p).name
    return n[:-5] if n.endswith(".lmdb") else n


def plot_fold_confusions(path, cms: dict, rows: list[dict], classes: list[str]) -> None:
    """Figure S4 layout: one confusion matrix per fold (columns) for each initialisation (rows:
    SimCLR on synthetic tiles, from scratch), accuracy and F1 of that fold in each panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = [i for i in ("ssl", "scratch") if i in cms]
    nf = max(len(cms[i]) for i in inits)
    fig, axes = plt.subplots(len(inits), nf, figsize=(2.6 * nf + 0.8, 2.7 * len(inits) + 0.5), squeeze=False)
    names = {"ssl": "SimCLR on synthetic", "scratch": "from scratch"}
    for r, init in enumerate(inits):
        sc = [q for q in rows if q["init"] == init]
        for f in range(nf):
            ax = axes[r, f]
            if f >= len(cms[init]):
                ax.axis("off")
                continue
            cm, q = cms[init][f], sc[f]
            ax.imshow(cm, cmap="Blues", vmin=0)
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 * cm.max() else "black")
            ax.set_xticks(range(len(classes)), classes, fontsize=6)
            ax.set_yticks(range(len(classes)), classes, fontsize=6)
            ax.set_title(f"fold {q['fold']}: acc {100 * q['accuracy']:.1f}%, F1 {100 * q['f1']:.1f}%", fontsize=8)
            if f == 0:
                ax.set_ylabel(f"{names[init]}\ntrue", fontsize=8)
            if r == len(inits) - 1:
                ax.set_xlabel("predicted", fontsize=8)
    summary = []
    for init in inits:
        acc = [q["accuracy"] for q in rows if q["init"] == init]
        sd = np.std(acc, ddof=1) if len(acc) > 1 else float("nan")
        summary.append(f"{names[init]} {100 * np.mean(acc):.1f}% ± {100 * sd:.1f}%")
    fig.suptitle("Test-split confusion matrices per fold (Fig. S4); accuracy " + " vs ".join(summary), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@step("simclr_cv")
def simclr_cv(inputs, outputs, params, *, threads=1, log=None):
    """Stratified k-fold CV (folds grouped by patient) of the two-class real-tile task with
    the SimCLR weights as initialisation vs from scratch; per-fold scores and one confusion
    matrix per fold and initialisation (Figure S4)."""
    from crossmodal.models import classifier as clf
    from crossmodal.models import ssl

    torch.set_num_threads(max(int(threads), 1))
    c, seed = params["simclr"], int(params["seed"])
    cohorts = list(c["task_cohorts"])
    x, y, groups = _task_tiles(inputs["real"] if isinstance(inputs["real"], list) else [inputs["real"]],
                               params["sample_cohort"], cohorts, int(c["real_tiles"]), int(c["image_size"]), seed,
                               params.get("sample_patient"))
    _, ck = ssl.load_encoder(inputs["encoder"])
    backbone = ck["backbone"]
    s = clf.TrainSettings(epochs=int(c["finetune_epochs"]), lr=float(c["finetune_lr"]),
                          weight_decay=float(c["finetune_weight_decay"]), batch_size=int(c["finetune_batch_size"]),
                          val_fraction=0.0, image_size=int(c["image_size"]), device=params.get("device", "cpu"))
    rows, cms = [], {}
    for init in ("ssl", "scratch"):
        make = (lambda: clf.make_resnet(c["arch"], len(cohorts), backbone)) if init == "ssl" else \
            (lambda: clf.make_resnet(c["arch"], len(cohorts), None))
        torch.manual_seed(seed)  # the first fold's fresh head / network (cross_validate seeds only training)
        r, _ = clf.cross_validate(x, y, make, s, folds=int(c["folds"]), seed=seed, groups=groups)
        for row in r:
            row["init"] = init
        rows += r
        cms[init] = [row["confusion"] for row in r]  # Figure S4: one matrix per fold, not their sum
        acc = [q["accuracy"] for q in r]
        logging.getLogger(__name__).info("%s: accuracy %.3f ± %.3f over %d folds", init, np.mean(acc), np.std(acc, ddof=1), len(r))
    write_table(outputs["cv"], pd.DataFrame(rows)[["init", "fold", "accuracy", "f1", "auc", "n"]], index=False)
    plot_fold_confusions(outputs["figure"], cms, rows, cohorts)
