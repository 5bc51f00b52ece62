"""RNA-CDM training throughput: tiles/s, peak memory and model-FLOP utilisation of one U-Net.

``python -m crossmodal.bench.bench_rna_cdm_unet [--size toy|paper] [--stage base|sr]
[--batch N] [--steps N] [--device auto|cpu|cuda] [--peak-tflops X]``

Runs the training step of :func:`crossmodal.rna_cdm.cascade.train_stage` - EDM loss on random
tiles and latents, ``accelerate`` backward (bf16 autocast on a CUDA device that has it, as
training does), Adam, EMA update - for ``--steps`` timed steps after one untimed warm-up step.
``--size paper`` builds the paper-size U-Net of the schema defaults (RNA-CDM Methods: base
width 256 at 64 px, super-resolution width 128 at 256 px, batch 64 per GPU); ``toy`` the
default config's.  Model FLOPs are counted once per step with ``torch.utils.flop_counter``
(forward + backward); MFU = achieved model FLOP/s / ``--peak-tflops`` (dense bf16 peak of the
card: A100 312, H100 / H200 SXM 989; looked up from the device name when not given). On a CPU
the achieved GFLOP/s is printed instead of an MFU. Tiles are full size (the toy trains its
super-resolution stage on ``train.sr_crop`` crops, so its training runs faster than printed here).

The default (no arguments) is the toy U-Net on the CPU, or the paper-size one when a CUDA
device is present: the paper-size base U-Net (469 M parameters, ~9 GB of weights, gradients,
Adam moments and EMA) is slow on a CPU.
"""
from __future__ import annotations

import argparse
import time

PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0}


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known data-centre card from its CUDA device name, else None."""
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return v
    return None


def rna_cdm_section(size: str) -> dict:
    """The validated ``rna_cdm`` section: schema defaults (paper) or the default toy config."""
    from pathlib import Path

    import yaml

    from crossmodal.config import SCHEMA_DIR, validate

    if size == "paper":
        return validate({}, SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")
    if size != "toy":
        raise ValueError(f"--size must be toy or paper, got {size!r}")
    toy = yaml.safe_load((Path(SCHEMA_DIR).parents[1] / "config" / "config.yaml").read_text())
    return validate(dict(toy.get("rna_cdm") or {}), SCHEMA_DIR / "config" / "rna_cdm.schema.yaml", "rna_cdm")


def measure(cfg: dict, stage: str, *, batch: int, steps: int, device: str = "auto", seed: int = 0) -> dict:
    """Time ``steps`` training steps of ``stage``; returns a dict of the measurements."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from crossmodal import training
    from crossmodal.models.diffusion import make_ema
    from crossmodal.models.unet import UNet
    from crossmodal.rna_cdm import cascade

    if steps < 1 or batch < 1:
        raise ValueError(f"--steps and --batch must be >= 1, got {steps}, {batch}")
    lat_dim = int(cfg["vae"]["latent"])
    ucfg = cascade.unet_config(cfg, stage, lat_dim)
    size = int(ucfg["image_size"])
    acc = training.make_accelerator(device)
    training.seed_everything(seed)
    net = UNet(ucfg)
    n_params = sum(p.numel() for p in net.parameters())
    ema = make_ema(net, float(cfg["train"]["ema_decay"]))
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg["train"]["lr"]))
    net, opt = acc.prepare(net, opt)
    ema.to(acc.device)
    edm = cascade.make_edm(cfg)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(acc.device)
    cond = {"cond": torch.randn(batch, lat_dim, generator=g).to(acc.device)}
    if stage == "sr":
        cond["lowres"] = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(acc.device)
    cuda = acc.device.type == "cuda"

    def one_step():
        with acc.autocast():
            loss = edm.loss(net, x, **cond)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        ema.update_parameters(acc.unwrap_model(net))
        return loss

    net.train()
    with FlopCounterMode(display=False) as fc:  # the warm-up step, counted
        one_step()
    flops_per_step = float(fc.get_total_flops())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = one_step()
    float(loss.detach())  # wait for the device
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"stage": stage, "image_size": size, "parameters_m": n_params / 1e6, "batch": batch, "steps": steps,
           "device": str(acc.device), "mixed_precision": acc.mixed_precision, "seconds": dt,
           "tiles_per_s": batch * steps / dt, "model_tflop_per_step": flops_per_step / 1e12,
           "achieved_tflops": flops_per_step * steps / dt / 1e12}
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        out["device_name"] = torch.cuda.get_device_name()
    else:
        from crossmodal.bench.bench_metrics import _rss_mb

        out["rss_gib"] = _rss_mb() / 1024
    return out


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    ap.add_argument("--size", choices=["toy", "paper"], default="paper" if cuda else "toy")
    ap.add_argument("--stage", choices=["base", "sr", "both"], default="both")
    ap.add_argument("--batch", type=int, default=None, help="tiles per step (default: train.batch_size)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None)
    a = ap.parse_args(argv)
    cfg = rna_cdm_section(a.size)
    batch = a.batch or int(cfg["train"]["batch_size"])
    stages = ["base", "sr"] if a.stage == "both" else [a.stage]
    print(f"RNA-CDM U-Net training throughput ({a.size} size, batch {batch}, {a.steps} timed steps "
          f"after 1 warm-up)")
    for stage in stages:
        r = measure(cfg, stage, batch=batch, steps=a.steps, device=a.device)
        peak = a.peak_tflops or peak_tflops(r.get("device_name", ""))
        mem = (f"peak memory {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r
               else f"process RSS {r['rss_gib']:.1f} GiB")
        util = (f"MFU {100 * r['achieved_tflops'] / peak:.1f} % of {peak:g} TFLOP/s"
                if peak and r["device"].startswith("cuda") else f"{1000 * r['achieved_tflops']:.1f} GFLOP/s achieved")
        print(f"  {stage:4s} {r['image_size']:3d} px  {r['parameters_m']:.1f} M params  {r['device']} "
              f"({r['mixed_precision']})  {r['tiles_per_s']:.2f} tiles/s  "
              f"{r['model_tflop_per_step'] / batch * 1e3:.2f} GFLOP/tile  {util}  {mem}", flush=True)


if __name__ == "__main__":
    main()
