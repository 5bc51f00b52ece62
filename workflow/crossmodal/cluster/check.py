"""A tiny, deterministic training job for checking cluster execution end to end.

``train_cluster_check`` trains a 2-layer MLP (dropout, SGD with momentum, step LR schedule,
an EMA copy, a data generator) through :class:`crossmodal.training.ResumableRun`, so every
kind of state a paper's trainer checkpoints is exercised; the result is bit-identical
whether or not the job was killed and resumed.  It is not science: it only proves that a
scheduler, a profile and the resume logic work together.  ``fail_cluster_check`` fails on
purpose when ``params["fail"]`` is true.

Run outside Snakemake with
``python -m crossmodal.training --import crossmodal.cluster.check train_cluster_check -o model=m.pt -o done=d.json
--params '{"ckpt_dir": "ck", "steps": 40, "checkpoint_every": 5, "seed": 0}'``.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from crossmodal import fileio, training
from crossmodal.steps import step

log = logging.getLogger(__name__)

N_SAMPLES, N_FEATURES, BATCH = 96, 8, 16


def _data(seed: int, path: str | None):
    """(x, y) float32 arrays: from ``path`` (TSV with columns f0..f7, y) or generated."""
    if path:
        import pandas as pd

        df = pd.read_csv(path, sep="\t")
        missing = [c for c in [f"f{i}" for i in range(N_FEATURES)] + ["y"] if c not in df]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        return (df[[f"f{i}" for i in range(N_FEATURES)]].to_numpy(np.float32),
                df["y"].to_numpy(np.float32))
    rng = np.random.default_rng([seed, 1])
    x = rng.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES).astype(np.float32)
    return x, (x @ w + 0.1 * rng.normal(size=N_SAMPLES)).astype(np.float32)


def _weights_digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@step("train_cluster_check")
def train_cluster_check(inputs, outputs, params, *, threads=1, log=None):
    """Train the self-check MLP with checkpoint/resume (exit 75 when preempted)."""
    import torch

    if training.relaunch_under_accelerate("train_cluster_check", inputs, outputs, params, log=log):
        return
    torch.set_num_threads(max(1, int(threads)))
    seed, steps = int(params["seed"]), int(params["steps"])
    acc = training.make_accelerator(params.get("device", "auto"))
    training.seed_everything(seed)
    x, y = _data(seed, inputs.get("data"))
    model = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 16), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.7)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    gen = torch.Generator().manual_seed(seed)  # input-noise stream, checkpointed too
    model, opt = acc.prepare(model, opt)
    ema.to(acc.device)
    objects = {"model": model, "opt": opt, "sched": sched, "ema": ema, "noise": gen}
    with training.ResumableRun(
            params["ckpt_dir"], every_steps=int(params["checkpoint_every"]), accelerator=acc,
            meta={"steps": steps, "seed": seed}, time_limit_s=params.get("time_limit_s"),
            margin_s=float(params.get("margin_s", 300))) as run:
        start = run.restore(objects)
        trace = Path(params["trace"]) if params.get("trace") else None
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        model.train()
        loss = torch.tensor(float("nan"))
        for s in range(start, steps):
            idx = torch.from_numpy(training.step_batch(s, n=len(x), batch_size=BATCH, seed=seed))
            xb = xt[idx] + 0.01 * torch.randn(len(idx), N_FEATURES, generator=gen)
            xb, yb = xb.to(acc.device), yt[idx].to(acc.device)
            with acc.autocast():
                loss = torch.nn.functional.mse_loss(model(xb).squeeze(-1).float(), yb)
            opt.zero_grad()
            acc.backward(loss)
            opt.step()
            sched.step()
            ema.update_parameters(acc.unwrap_model(model))
            if trace is not None and acc.is_main_process:
                with open(trace, "a") as fh:
                    fh.write(f"{s}\n")
            if params.get("step_delay_s"):
                time.sleep(float(params["step_delay_s"]))
            run.step_done(s + 1, objects)
        state = {f"model.{k}": v for k, v in acc.unwrap_model(model).state_dict().items()}
        state.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        if acc.is_main_process:
            with fileio.atomic_path(outputs["model"]) as tmp:
                torch.save(state, tmp)
        run.finish(outputs["done"], {"steps": steps, "resumed_from": start,
                                     "final_loss": float(loss.detach().cpu()),
                                     "weights_sha256": _weights_digest(state),
                                     "device": str(acc.device), "mixed_precision": acc.mixed_precision,
                                     "num_processes": acc.num_processes})


@step("fail_cluster_check")
def fail_cluster_check(inputs, outputs, params, *, threads=1, log=None):
    """Fail on purpose when ``params["fail"]`` is true; else write a small JSON."""
    if params.get("fail"):
        raise RuntimeError("fail_cluster_check: failing on purpose (config cluster.check_fail: true)")
    fileio.write_json(outputs["ok"], {"ok": True, "input": inputs.get("done")})

