"""RNA-GAN's tile generators: one WGAN-GP DCGAN per tissue and variant (gan / rna_gan /
control), trained on tiles of the tissue's training patients, and tile generation from
patients' expression (test split, external cohort) into tile LMDBs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crossmodal.fileio import write_table
from crossmodal.models import gan as gan_lib
from crossmodal.steps import step

log = logging.getLogger(__name__)


def step_device(params) -> str:
    """The torch device of a GAN step: params["device"] ("auto" -> cuda when available, else
    cpu; "cuda" without CUDA is an error, as everywhere in the project)."""
    from crossmodal.metrics.image import resolve_device

    return resolve_device(str(params.get("device", "auto")))


def epochs_for(gan_cfg: dict, tissue: str, variant: str) -> int:
    return int(gan_cfg.get("tissue_epochs", {}).get(tissue, {}).get(variant, gan_cfg["epochs"][variant]))


def read_latents(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", index_col="sample")
    if df.empty:
        raise ValueError(f"{path}: no latent codes")
    return df


def training_tiles(lmdbs: list[str], splits: pd.DataFrame, tissue: str, train_splits, per_slide: int,
                   seed: int):
    """(TileDataset, tile indices, sample of each index) for the tissue's training patients,
    at most ``per_slide`` tiles per slide drawn reproducibly; an LMDB of another tissue is an error."""
    from crossmodal.data import TileDataset, per_slide_indices
    from crossmodal.splits import select_lmdbs

    keep = select_lmdbs(lmdbs, splits, train_splits, cohorts=[tissue], only_cohorts=True, what=f"RNA-GAN {tissue}")
    ds = TileDataset(keep)
    idx = per_slide_indices(ds, per_slide, seed)
    return ds, idx, ds.labels[idx]


def build_model(variant: str, gan_cfg: dict, latent_dim: int, seed: int, device="cpu") -> gan_lib.WGANGP:
    nz = latent_dim if variant in ("rna_gan", "control") else int(gan_cfg["noise_dim"])
    return gan_lib.WGANGP(variant, nz, int(gan_cfg["image_size"]), ngf=gan_cfg["ngf"], ndf=gan_cfg["ndf"],
                          max_channels=gan_cfg.get("max_channels"), lr_g=gan_cfg["lr_g"], lr_d=gan_cfg["lr_d"], betas=gan_cfg["betas"],
                          gp_lambda=gan_cfg["gp_lambda"], n_critic=gan_cfg["n_critic"],
                          noise_std=gan_cfg["noise_std"], noise_clip=gan_cfg["noise_clip"], seed=seed,
                          mode_seeking=float(gan_cfg.get("mode_seeking", 0.0)), device=device)


def save_model(model: gan_lib.WGANGP, path, info: dict) -> None:
    from crossmodal.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"G": gan_lib.cpu_state(model.G.state_dict()), "variant": model.variant, "nz": model.nz,
                    "image_size": model.image_size, "max_channels": model.max_channels, "info": info}, tmp)


def load_generator(path, gan_cfg: dict, seed: int = 0, device="cpu") -> gan_lib.WGANGP:
    """A saved generator (CPU checkpoint) on ``device``, in eval mode.  Its width cap is the one
    it was trained with (checkpoints written before ``max_channels`` was saved had the old
    hardcoded 512)."""
    from crossmodal.fileio import load_checkpoint

    ck = load_checkpoint(path, "RNA-GAN generator", keys=("G", "variant", "nz", "image_size"),
                         hint="rule train_tile_gan writes it")
    m = gan_lib.WGANGP(ck["variant"], ck["nz"], ck["image_size"], ngf=gan_cfg["ngf"], ndf=gan_cfg["ndf"],
                       max_channels=ck.get("max_channels", 512),
                       noise_std=gan_cfg["noise_std"], noise_clip=gan_cfg["noise_clip"], seed=seed, device=device)
    m.G.load_state_dict(ck["G"])
    m.G.eval()
    return m


@step("train_tile_gan")
def train_tile_gan(inputs, outputs, params, *, threads=1, log=None):
    """Train one tissue's GAN / RNA-GAN / control generator (WGAN-GP) on its training
    patients' tiles on params["device"]; resumable from checkpoints (exit 75 on SIGTERM,
    rerun resumes; checkpoints and the saved generator hold CPU tensors)."""
    from crossmodal import training

    torch.set_num_threads(max(int(threads), 1))
    lg = logging.getLogger(__name__)
    tissue, variant = params["tissue"], params["variant"]
    cfg, seed = params["gan"], int(params["seed"])
    training.seed_everything(seed)
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    lmdbs = inputs["tiles"] if isinstance(inputs["tiles"], list) else [inputs["tiles"]]
    ds, idx, samples = training_tiles(lmdbs, splits, tissue, cfg["train_splits"], int(cfg["tiles_per_slide"]), seed)
    lat = read_latents(inputs["latent"])
    missing = sorted(set(samples) - set(lat.index))
    if missing:
        raise ValueError(f"{inputs['latent']}: no latent code for training sample(s) {', '.join(missing[:5])}")
    tile_lat = lat.loc[samples].to_numpy(np.float32)
    device = step_device(params)
    model = build_model(variant, cfg, lat.shape[1], seed, device)
    epochs = epochs_for(cfg, tissue, variant)
    lg.info("%s %s: %d tiles of %d slides, %d epochs, batch %d, %dx%d px, on %s", tissue, variant, len(idx),
            len(set(samples)), epochs, cfg["batch_size"], cfg["image_size"], cfg["image_size"], device)

    size = int(cfg["image_size"])
    if len(idx) * size * size * 3 <= int(params.get("cache_bytes", 1 << 30)):
        # small enough (toy scale): decode and resize every training tile once
        from crossmodal.rna_gan.evaluate import resize_uint8

        cache = resize_uint8(np.stack([ds[int(i)] for i in idx]), size)
        lg.info("cached %d training tiles at %d px in memory", len(cache), size)

        def get_batch(b):
            return cache[b], tile_lat[b]
    else:  # paper scale: stream tiles from the LMDBs

        def get_batch(b):
            return np.stack([ds[int(i)] for i in idx[b]]), tile_lat[b]

    from crossmodal.fileio import atomic_path
    from crossmodal.rna_gan import convergence

    # the same tiles after every epoch, for the reference patients of the FID (evaluate_gan_convergence)
    ref = _patients_to_generate(splits, lat, tissue, list(params["real_splits"]))
    enc = str(params["convergence"].get("encoding", "png"))
    conv_header = {"tissue": tissue, "variant": variant, "source": "convergence", "encoding": enc,
                   **({"jpeg_quality": 95} if enc == "jpeg" else {})}
    on_epoch = convergence.EpochTiles(
        Path(params["checkpoints"]) / "convergence",
        convergence.epoch_plan(ref, lat, tissue, variant, int(params["convergence"]["tiles_per_epoch"])),
        seed + 5, conv_header)
    with training.ResumableRun(params["checkpoints"], every_steps=int(cfg["checkpoint_every"]),
                               meta={"gan": cfg, "tissue": tissue, "variant": variant, "seed": seed,
                                     "n_tiles": int(len(idx))}) as run:
        rows, snaps = gan_lib.fit(model, get_batch, len(idx), epochs=epochs, batch_size=int(cfg["batch_size"]),
                                  seed=seed, jitter=float(cfg["jitter"]), snapshot_latents=tile_lat,
                                  max_steps_per_epoch=cfg.get("max_steps_per_epoch"), run=run,
                                  on_epoch=on_epoch)
        n_conv = convergence.gather(on_epoch.folder, epochs, outputs["convergence"], conv_header,
                                    per_epoch=int(params["convergence"]["tiles_per_epoch"]))
        lg.info("%d convergence tiles (%d epochs x %d) -> %s", n_conv, epochs, n_conv // max(epochs, 1),
                outputs["convergence"])
        save_model(model, outputs["model"], {"tissue": tissue, "epochs": epochs, "n_tiles": int(len(idx))})
        write_table(outputs["history"], pd.DataFrame(rows), index=False)
        with atomic_path(outputs["snapshots"]) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, snapshots=snaps)
        run.finish(outputs["done"], {"steps": model.steps, "epochs": epochs})


def _patients_to_generate(splits: pd.DataFrame, lat: pd.DataFrame, tissue: str, which) -> pd.DataFrame:
    """The ``tissue`` samples with a latent code in split(s) ``which`` (a name, a list, or "all")."""
    sp = splits.set_index("sample")
    sp = sp[sp.index.isin(lat.index) & (sp["cohort"] == tissue)]
    which = [which] if isinstance(which, str) else list(which)
    if "all" not in which:
        sp = sp[sp["split"].isin(which)]
    if sp.empty:
        raise ValueError(f"no {tissue} samples with expression in split(s) {', '.join(which)} to generate tiles from")
    return sp


def write_generated(path, model: gan_lib.WGANGP, plan: list[tuple[str, dict, np.ndarray | None, int]],
                    seed: int, header: dict) -> int:
    """Generate ``n`` tiles per (sample, meta, latent, n) entry of ``plan`` into one LMDB."""
    from crossmodal.data import TileWriter

    total = 0
    with TileWriter(path, {"mpp": None, "encoding": "png", "tile_size": model.image_size, **header}) as w:
        for k, (sample, meta, z, n) in enumerate(plan):
            lat = torch.as_tensor(np.repeat(z[None], n, 0)) if z is not None else None
            tiles = model.generate(n, lat, seed=seed + k)
            for t in tiles:
                w.add(t, {"sample": sample, **meta})
            total += n
    return total


@step("generate_tiles")
def generate_tiles(inputs, outputs, params, *, threads=1, log=None):
    """Tiles from a trained generator for the tissue's patients of ``params["splits"]`` (the
    splits whose real tiles are the FID reference, so that generated and real tiles come from
    the same patients; RNA-GAN: from each patient's latent; GAN / control: the same number
    from noise) into a tile LMDB, on params["device"]."""
    torch.set_num_threads(max(int(threads), 1))
    cfg, seed = params["gan"], int(params["seed"])
    tissue, variant = params["tissue"], params["variant"]
    model = load_generator(inputs["model"], cfg, seed, step_device(params))
    lat = read_latents(inputs["latent"])
    splits = pd.read_csv(inputs["splits"], sep="\t", dtype=str)
    which = list(params.get("splits", ["test"]))
    pts = _patients_to_generate(splits, lat, tissue, which)
    n = int(params["tiles_per_patient"])
    plan = [(s, {"patient": pts.loc[s, "patient"], "cohort": tissue, "variant": variant},
             lat.loc[s].to_numpy(np.float32) if variant == "rna_gan" else None, n) for s in pts.index]
    total = write_generated(outputs["tiles"], model, plan, seed, {"tissue": tissue, "variant": variant})
    logging.getLogger(__name__).info("%s %s: %d tiles from %d patients (splits %s)", tissue, variant, total, len(pts),
                                      ", ".join(which))


@step("generate_external_tiles")
def generate_external_tiles(inputs, outputs, params, *, threads=1, log=None):
    """RNA-GAN tiles from the external cohort's expression (Figure 4D): each external cohort's
    profiles through the RNA-GAN of its tissue; ``n`` tiles per tissue spread over its samples
    (on params["device"])."""
    torch.set_num_threads(max(int(threads), 1))
    cfg, seed = params["gan"], int(params["seed"])
    cohort_map: dict = params["cohorts"]
    models = dict(zip(params["tissues"], inputs["models"] if isinstance(inputs["models"], list) else [inputs["models"]]))
    lat = read_latents(inputs["latent"])
    # cohort of each external sample, from the sample table (params["sample_cohort"])
    sc = pd.Series(params["sample_cohort"], dtype=str)
    sc = sc[sc.index.isin(lat.index)]
    sp = pd.DataFrame({"cohort": sc[sc.isin(list(cohort_map))]})
    if sp.empty:
        raise ValueError(f"{inputs['latent']}: no samples of the external cohorts {', '.join(cohort_map)} "
                         f"(present: {', '.join(sorted(sc.unique()))})")
    per_tissue = int(params["tiles_per_tissue"])
    from crossmodal.data import TileWriter

    with TileWriter(outputs["tiles"], {"mpp": None, "encoding": "png", "tile_size": int(cfg["image_size"]),
                                       "variant": "rna_gan", "source": "external"}) as w:
        for k, (coh, tissue) in enumerate(sorted(cohort_map.items())):
            ss = sp.index[sp["cohort"] == coh]
            if tissue not in models:
                raise ValueError(f"external cohort {coh} maps to {tissue}, which has no RNA-GAN (tissues: {', '.join(models)})")
            if len(ss) == 0:
                raise ValueError(f"external cohort {coh}: no samples with expression")
            model = load_generator(models[tissue], cfg, seed, step_device(params))
            counts = np.full(len(ss), per_tissue // len(ss))
            counts[: per_tissue % len(ss)] += 1
            for j, (s, c) in enumerate(zip(ss, counts)):
                if c == 0:
                    continue
                z = torch.as_tensor(np.repeat(lat.loc[s].to_numpy(np.float32)[None], c, 0))
                for t in model.generate(int(c), z, seed=seed + 1000 * k + j):
                    w.add(t, {"sample": s, "cohort": coh, "tissue": tissue})
    logging.getLogger(__name__).info("external tiles: %s", json.dumps({c: t for c, t in cohort_map.items()}))
