"""RNA-CDM's cascade: U-Nets from config, training tiles, the training loop shared by the
base and the super-resolution stage, and cascade sampling (Karras or DDPM).

Stages (RNA-CDM Methods, "RNA-CDM: a cascaded diffusion model"):

* ``base`` -- :class:`~crossmodal.models.unet.UNet` ``rna_cdm.base_unet`` generating
  ``base_unet.image_size`` (paper 64) px tiles from noise, conditioned on the patient's
  β-VAE latent and the noise level;
* ``sr`` -- ``rna_cdm.sr_unet`` generating ``sr_unet.image_size`` (paper 256) px tiles,
  conditioned additionally on the low-resolution tile upsampled and Gaussian-blurred
  (:func:`~crossmodal.models.unet.prepare_lowres`).  During training the low-resolution
  input is the real tile downsampled to the base size; at sampling time it is the base
  stage's output.

Both train with the EDM loss and preconditioning (:class:`~crossmodal.models.diffusion.EDM`)
and keep an EMA copy (used for sampling).  Training is resumable through
:class:`crossmodal.training.ResumableRun` (checkpoints hold model, EMA, optimiser, history,
RNG state and step) and multi-GPU through :func:`crossmodal.training.relaunch_under_accelerate`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from crossmodal.models.diffusion import DDPM, EDM, make_ema
from crossmodal.models.unet import UNet, UNetConfig, prepare_lowres

log = logging.getLogger(__name__)

STAGES = ("base", "sr")


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def unet_config(cfg: dict, stage: str, cond_dim: int) -> dict:
    """The :class:`UNetConfig` dict of ``stage`` from the ``rna_cdm`` config section."""
    if stage not in STAGES:
        raise ValueError(f"rna_cdm: unknown stage {stage!r} (known: {', '.join(STAGES)})")
    u = dict(cfg["base_unet" if stage == "base" else "sr_unet"])
    u["cond_dim"] = int(cond_dim)
    u["lowres_channels"] = 3 if stage == "sr" else 0
    UNetConfig.from_dict(u)  # validate early, naming the problem
    return u


def check_sizes(cfg: dict) -> tuple[int, int]:
    base, sr = int(cfg["base_unet"]["image_size"]), int(cfg["sr_unet"]["image_size"])
    if sr <= base:
        raise ValueError(f"rna_cdm: sr_unet.image_size ({sr}) must exceed base_unet.image_size ({base})")
    return base, sr


def stage_steps(cfg: dict, stage: str) -> int:
    """Optimisation steps of a stage: ``train.steps`` (Methods: 79k), or ``train.sr_steps`` for
    the super-resolution stage when set."""
    tr = cfg["train"]
    return int(tr.get("sr_steps") or tr["steps"]) if stage == "sr" else int(tr["steps"])


def make_edm(cfg: dict) -> EDM:
    return EDM(**cfg["edm"])


def make_ddpm(cfg: dict) -> DDPM:
    return DDPM(**cfg["ddpm"])


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------
def to_model_space(tiles_uint8: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 ``(N, H, W, 3)`` -> float ``(N, 3, size, size)`` in [-1, 1] (area resize)."""
    x = torch.from_numpy(np.array(tiles_uint8, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear",
                          align_corners=None if x.shape[-1] > size else False)
    return x.clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-space ``(N, 3, H, W)`` in [-1, 1] -> RGB uint8 ``(N, H, W, 3)``."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def resize_uint8(tiles: np.ndarray, size: int) -> np.ndarray:
    return to_uint8(to_model_space(tiles, size))


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def read_latents(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", index_col="sample")
    if df.empty:
        raise ValueError(f"{path}: no latent codes")
    return df


def select_lmdbs(lmdbs, splits: pd.DataFrame, cohorts, which_splits) -> list[str]:
    """The tile LMDBs whose sample is in ``cohorts`` and in one of ``which_splits``
    (:func:`crossmodal.splits.select_lmdbs`)."""
    from crossmodal.splits import select_lmdbs as select

    return select(lmdbs, splits, which_splits, cohorts=cohorts, what="rna_cdm")


def tile_indices(ds, per_slide: int, seed: int) -> np.ndarray:
    """At most ``per_slide`` tiles of each slide (Methods: 4,000 per slide;
    :func:`crossmodal.data.per_slide_indices`)."""
    from crossmodal.data import per_slide_indices

    return per_slide_indices(ds, per_slide, seed)


class TileBatches:
    """Training batches ``(x at the stage's size, latent, low-res conditioning or None)``.

    Small sets (toy scale) are decoded and resized once into memory; large ones stream from
    the LMDBs batch by batch.
    """

    def __init__(self, ds, idx: np.ndarray, latents: np.ndarray, stage: str, base_size: int, sr_size: int,
                 blur_sigma: float, blur_kernel: int, cache_bytes: int = 1 << 30):
        self.ds, self.idx, self.lat = ds, idx, torch.as_tensor(latents, dtype=torch.float32)
        self.stage, self.base, self.sr = stage, base_size, sr_size
        self.blur_sigma, self.blur_kernel = blur_sigma, blur_kernel
        self.size = base_size if stage == "base" else sr_size
        self.cache = None
        if len(idx) * self.size * self.size * 3 * 4 <= cache_bytes:
            self.cache = torch.cat([to_model_space(np.stack([ds[int(i)] for i in idx[k:k + 256]]), self.size)
                                    for k in range(0, len(idx), 256)])
            log.info("cached %d training tiles at %d px", len(idx), self.size)

    def __len__(self):
        return len(self.idx)

    def __call__(self, b: np.ndarray):
        if self.cache is not None:
            x = self.cache[b]
        else:
            x = to_model_space(np.stack([self.ds[int(i)] for i in self.idx[b]]), self.size)
        lat = self.lat[b]
        if self.stage == "base":
            return x, lat, None
        low = F.interpolate(x, size=(self.base, self.base), mode="area")
        return x, lat, prepare_lowres(low, self.sr, self.blur_sigma, self.blur_kernel)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
class History:
    """Per-step loss rows, checkpointed with the run so a resumed run keeps the earlier rows."""

    def __init__(self):
        self.rows: list[dict] = []

    def state_dict(self):
        return {"rows": list(self.rows)}

    def load_state_dict(self, st):
        self.rows = list(st["rows"])


def train_stage(batches: TileBatches, ucfg: dict, cfg: dict, *, seed: int, ckpt_dir, device: str = "auto",
                time_limit_s: float | None = None, meta: dict | None = None, log_every: int = 10):
    """Train one stage; returns ``(ema_module, history_rows, accelerator, run, throughput)``.

    ``throughput`` (:func:`throughput_record`) covers the steps run in this job: steps, global
    batch, tiles, seconds of the step loop (checkpoint saves included), tiles/s, device and
    processes.  Each job's record (also one stopped early by SIGTERM / walltime) is appended to
    :data:`THROUGHPUT_FILE` in ``ckpt_dir``, so :func:`throughput_all_jobs` sums a run that
    spanned several jobs.

    Batches depend only on the step (:func:`crossmodal.training.step_batch`) and the EDM noise
    on ``(seed, step)``, so a killed-and-resumed run repeats or skips no step and, on CPU,
    ends with the weights an uninterrupted run would have.
    """
    from crossmodal import training

    tr = cfg["train"]
    acc = training.make_accelerator(device)
    training.seed_everything(seed)
    net = UNet(ucfg)
    ema = make_ema(net, float(tr["ema_decay"]))
    opt = torch.optim.Adam(net.parameters(), lr=float(tr["lr"]))
    net, opt = acc.prepare(net, opt)
    ema.to(acc.device)
    edm = make_edm(cfg)
    hist = History()
    run = training.ResumableRun(ckpt_dir, every_steps=int(tr["checkpoint_every"]), accelerator=acc,
                                meta=meta or {}, time_limit_s=time_limit_s,
                                margin_s=min(300.0, 0.1 * time_limit_s) if time_limit_s else 300.0)
    objects = {"model": net, "ema": ema, "opt": opt, "history": hist}
    start = run.restore(objects)
    steps, bs = stage_steps(cfg, "sr" if ucfg.get("lowres_channels") else "base"), int(tr["batch_size"])
    world, rank = acc.num_processes, acc.process_index
    n = len(batches)
    gbs = min(bs * world, n - n % world) if n >= world else n
    if gbs < world:
        raise ValueError(f"rna_cdm: {n} training tiles cannot fill a batch on {world} processes")
    log.info("training %d -> %d steps, batch %d x %d processes, %d tiles, %.1f M parameters, on %s",
             start, steps, gbs // world, world, n, sum(p.numel() for p in net.parameters()) / 1e6, acc.device)
    clip = tr.get("clip_grad_norm")
    drop = float(tr.get("cond_drop_prob", 0.0))
    crop = int(tr.get("sr_crop") or 0)
    if crop and ucfg.get("lowres_channels") and crop % 2 ** (len(ucfg["dim_mults"]) - 1):
        raise ValueError(f"rna_cdm.train.sr_crop {crop} is not divisible by 2^{len(ucfg['dim_mults']) - 1} "
                         f"(the super-resolution U-Net's levels)")
    net.train()
    t_loop, done = time.time(), start

    def record():
        rec = throughput_record(acc, done - start, gbs, time.time() - t_loop)
        if acc.is_main_process:
            _append_throughput(ckpt_dir, {"from_step": start, "to_step": done, **rec})
        log.info("this job: %d steps x %d tiles = %d tiles in %.1f s -> %s tiles/s on %s (%d process(es), %s)",
                 rec["steps_this_job"], gbs, rec["tiles_this_job"], rec["seconds_training_steps"],
                 "-" if rec["tiles_per_s"] is None else f"{rec['tiles_per_s']:.2f}", rec["device"],
                 rec["num_processes"], rec["mixed_precision"])
        return rec

    try:
        for step in range(start, steps):
            b = training.step_batch(step, n=n, batch_size=gbs, seed=seed)
            b = np.array_split(b, world)[rank]
            x, lat, low = batches(b)
            if crop and low is not None and crop < x.shape[-1]:
                # Imagen trains its super-resolution stages on random crops (the U-Net is convolutional
                # and samples full tiles); one offset per step, from (seed, step) so resumes repeat it
                gc = torch.Generator().manual_seed(int(seed) * 3_000_017 + step)
                i, j = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=gc))
                x, low = x[..., i:i + crop, j:j + crop], low[..., i:i + crop, j:j + crop]
            x, lat = x.to(acc.device), lat.to(acc.device)
            cond = {"cond": lat}
            if drop > 0:  # conditioning dropout for classifier-free guidance (Imagen)
                cond["cond_mask"] = (torch.rand(len(lat), generator=torch.Generator().manual_seed(
                    int(seed) * 7_777_777 + step * 31 + rank)) >= drop).to(acc.device)
            if low is not None:
                cond["lowres"] = low.to(acc.device)
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + step * 101 + rank)
            with acc.autocast():
                loss = edm.loss(net, x, generator=g, **cond)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if clip:
                acc.clip_grad_norm_(net.parameters(), float(clip))
            opt.step()
            ema.update_parameters(acc.unwrap_model(net))
            if step % log_every == 0 or step == steps - 1:
                lv = float(acc.reduce(loss.detach(), reduction="mean").item()) if world > 1 else float(loss.item())
                hist.rows.append({"step": step + 1, "loss": lv})
                log.info("step %d/%d loss %.4f", step + 1, steps, lv)
            run.step_done(step + 1, objects)
            done = step + 1
    except SystemExit as e:  # stopped early (checkpoint saved): keep this job's throughput
        if e.code == 75:
            done = run.last_saved or done
            record()
        raise
    return ema.module, hist.rows, acc, run, record()


#: per-job throughput records (JSON lines) kept beside the checkpoints of a training run
THROUGHPUT_FILE = "throughput.jsonl"


def device_name(device) -> str:
    """``cpu`` or e.g. ``cuda:0 (NVIDIA A100-SXM4-40GB)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def throughput_record(acc, steps_run: int, global_batch: int, seconds: float) -> dict:
    """Tiles processed and tiles/s of ``steps_run`` optimisation steps of ``global_batch`` tiles
    (all processes together) in ``seconds``; ``tiles_per_s`` is None when no step ran."""
    if torch.device(acc.device).type == "cuda":
        torch.cuda.synchronize(acc.device)
    steps_run, global_batch = int(steps_run), int(global_batch)
    tiles = steps_run * global_batch
    return {"steps_this_job": steps_run, "global_batch": global_batch, "tiles_this_job": tiles,
            "seconds_training_steps": round(float(seconds), 3),
            "tiles_per_s": round(tiles / seconds, 3) if steps_run > 0 and seconds > 0 else None,
            "device": device_name(acc.device), "num_processes": int(acc.num_processes),
            "mixed_precision": str(acc.mixed_precision)}


def _read_throughput(ckpt_dir) -> list[dict]:
    f = Path(ckpt_dir) / THROUGHPUT_FILE
    if not f.is_file():
        return []
    out = []
    for i, line in enumerate(f.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{f}: line {i} is not JSON ({e}); delete the file to restart the tally") from None
    return out


def _append_throughput(ckpt_dir, rec: dict) -> None:
    from crossmodal.fileio import write_text

    lines = [json.dumps(r, sort_keys=True) for r in _read_throughput(ckpt_dir) + [rec]]
    write_text(Path(ckpt_dir) / THROUGHPUT_FILE, "\n".join(lines) + "\n")


def throughput_all_jobs(ckpt_dir) -> dict:
    """Steps, tiles, seconds and tiles/s summed over every job of the run in ``ckpt_dir``."""
    recs = _read_throughput(ckpt_dir)
    steps = sum(int(r["steps_this_job"]) for r in recs)
    tiles = sum(int(r["tiles_this_job"]) for r in recs)
    secs = sum(float(r["seconds_training_steps"]) for r in recs)
    return {"jobs": len(recs), "steps": steps, "tiles": tiles, "seconds_training_steps": round(secs, 3),
            "tiles_per_s": round(tiles / secs, 3) if steps > 0 and secs > 0 else None,
            "devices": sorted({f"{r['device']} x{r['num_processes']}" for r in recs})}


def save_model(path, net: torch.nn.Module, ucfg: dict, info: dict) -> None:
    """The EMA network's weights and U-Net config (what sampling loads)."""
    from crossmodal.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"unet": ucfg, "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                    "info": info}, tmp)


def load_model(path, device="cpu") -> UNet:
    from crossmodal.fileio import CheckpointError, load_checkpoint

    ck = load_checkpoint(path, "RNA-CDM U-Net", keys=("unet", "state_dict"), hint="rule train_rna_cdm writes it")
    try:
        net = UNet(ck["unet"])
        net.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"RNA-CDM U-Net {path}: weights do not fit its U-Net config ({e})") from None
    return net.to(device).eval()


# --------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------
@torch.no_grad()
def sample_stage(net, edm: EDM, shape, cfg: dict, *, sampler: str = "karras", generator=None, device="cpu",
                 **cond) -> torch.Tensor:
    """One stage: the Karras stochastic sampler (``cfg["sampler"]``) or the DDPM ancestral
    sampler (``cfg["ddpm"]``) on the same EDM-trained network; images clipped to [-1, 1].
    ``cfg["generate"]["cond_scale"]`` != 1 samples with classifier-free guidance."""
    from crossmodal.models.unet import Guided

    scale = float(cfg.get("generate", {}).get("cond_scale", 1.0))
    if scale != 1.0:
        net = Guided(net, scale)
    if sampler == "karras":
        return edm.sample(net, shape, generator=generator, device=device, clip=(-1.0, 1.0),
                          **cfg["sampler"], **cond).clamp(-1, 1)
    if sampler == "ddpm":
        ddpm = make_ddpm(cfg)
        return ddpm.sample(edm.ddpm_eps_fn(net, ddpm), shape, generator=generator, device=device,
                           clip=(-1.0, 1.0), **cond).clamp(-1, 1)
    raise ValueError(f"rna_cdm: unknown sampler {sampler!r} (karras or ddpm)")


@torch.no_grad()
def sample_cascade(base: UNet, sr: UNet, latents: np.ndarray, cfg: dict, *, seed: int, sampler: str = "karras",
                   batch_size: int = 64, device="cpu", return_lowres: bool = False):
    """Tiles for each row of ``latents`` ``(N, d)``: base stage, then super-resolution of the
    upsampled, blurred base image.  Returns RGB uint8 ``(N, S, S, 3)`` (and the base tiles).
    Holds every tile in memory: large sets stream through :func:`iter_cascade`."""
    b_size, s_size = int(base.cfg.image_size), int(sr.cfg.image_size)
    outs, lows = [], []
    for _, hi, lo in iter_cascade(base, sr, latents, cfg, seed=seed, sampler=sampler, batch_size=batch_size,
                                  device=device):
        outs.append(hi)
        lows.append(lo)
    out = np.concatenate(outs) if outs else np.zeros((0, s_size, s_size, 3), np.uint8)
    if return_lowres:
        return out, (np.concatenate(lows) if lows else np.zeros((0, b_size, b_size, 3), np.uint8))
    return out


@torch.no_grad()
def iter_cascade(base: UNet, sr: UNet, latents: np.ndarray, cfg: dict, *, seed: int, sampler: str = "karras",
                 batch_size: int = 64, device="cpu"):
    """:func:`sample_cascade` one batch at a time: yields ``(offset, tiles, base tiles)`` (RGB
    uint8) for rows ``offset:offset + batch_size`` of ``latents``, so a caller can write each
    batch before the next is drawn.  Batch ``k`` is seeded from ``(seed, offset)``: the tiles do
    not depend on how the batches are consumed."""
    edm = make_edm(cfg)
    b_size, s_size = int(base.cfg.image_size), int(sr.cfg.image_size)
    lat = torch.as_tensor(np.asarray(latents, np.float32))
    if lat.ndim != 2 or lat.shape[1] != base.cfg.cond_dim:
        raise ValueError(f"rna_cdm: latents have shape {tuple(lat.shape)}, the model expects (N, {base.cfg.cond_dim})")
    for k in range(0, len(lat), batch_size):
        z = lat[k:k + batch_size].to(device)
        g = torch.Generator().manual_seed(int(seed) * 7919 + k)
        lo = sample_stage(base, edm, (len(z), 3, b_size, b_size), cfg, sampler=sampler, generator=g, device=device,
                          cond=z)
        up = prepare_lowres(lo, s_size, float(cfg["lowres_blur_sigma"]), int(cfg["lowres_blur_kernel"]))
        hi = sample_stage(sr, edm, (len(z), 3, s_size, s_size), cfg, sampler=sampler, generator=g, device=device,
                          cond=z, lowres=up)
        yield k, to_uint8(hi), to_uint8(lo)


@torch.no_grad()
def super_resolve_real(sr: UNet, tiles: np.ndarray, latents: np.ndarray, cfg: dict, *, seed: int,
                       base_size: int, batch_size: int = 64, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """The super-resolution stage alone, on real tiles: each tile is resized to the SR size,
    area-downsampled to the base size (what a perfect base stage would draw), upsampled and
    blurred as in training, and super-resolved with the row's latent.  Returns ``(real tiles
    at the SR size, super-resolved tiles)``, both RGB uint8 ``(N, S, S, 3)`` (beyond the paper:
    it tells whether the SR stage keeps what its low-resolution input shows)."""
    edm = make_edm(cfg)
    s_size = int(sr.cfg.image_size)
    if len(tiles) != len(latents):
        raise ValueError(f"rna_cdm: {len(tiles)} tiles but {len(latents)} latents")
    real = resize_uint8(np.asarray(tiles), s_size) if len(tiles) else np.zeros((0, s_size, s_size, 3), np.uint8)
    lat = torch.as_tensor(np.asarray(latents, np.float32))
    outs = []
    for k in range(0, len(real), batch_size):
        x = to_model_space(real[k:k + batch_size], s_size)
        low = F.interpolate(x, size=(base_size, base_size), mode="area")
        up = prepare_lowres(low, s_size, float(cfg["lowres_blur_sigma"]), int(cfg["lowres_blur_kernel"]))
        g = torch.Generator().manual_seed(int(seed) * 7919 + k)
        hi = sample_stage(sr, edm, tuple(x.shape), cfg, generator=g, device=device,
                          cond=lat[k:k + batch_size].to(device), lowres=up.to(device))
        outs.append(to_uint8(hi))
    return real, (np.concatenate(outs) if outs else np.zeros_like(real))


def network_evaluations(cfg: dict, sampler: str) -> int:
    """Network calls per stage: Heun 2N-1 for Karras, T for DDPM."""
    return 2 * int(cfg["sampler"]["num_steps"]) - 1 if sampler == "karras" else int(cfg["ddpm"]["timesteps"])


def fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def paper_param_counts() -> dict:
    """Parameters of the paper-size U-Nets (the schema defaults), counted on the meta device."""
    from crossmodal.config import SCHEMA_DIR, validate
    from crossmodal.models.unet import param_count

    d = validate({}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")
    lat = int(d["vae"]["latent"])
    base = param_count(unet_config(d, "base", lat))
    sr = param_count(unet_config(d, "sr", lat))
    return {"base": base, "sr": sr, "total": base + sr}
