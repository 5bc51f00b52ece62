"""Training and using the bank of Coherent Denoising models: 12 single-condition models (every
ordered modality pair) and one multi-condition model per target, on the 32-d latents.

Generation helpers return ``(runs, n, d)`` arrays: the test rows are repeated ``runs`` times in
one batch, so 10 generations cost one sampling pass.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import torch

from crossmodal.coherent import diffusion as D
from crossmodal.coherent.preprocess import MODALITIES

log = logging.getLogger(__name__)


def latent_blocks(lat: pd.DataFrame, modalities=MODALITIES) -> dict[str, pd.DataFrame]:
    """Split the latent table (columns ``<modality>_<i>``) into one frame per modality."""
    out = {}
    for m in modalities:
        cols = [c for c in lat.columns if c.rsplit("_", 1)[0] == m]
        if not cols:
            raise ValueError(f"latents: no columns for modality {m!r}")
        out[m] = lat[cols]
    return out


def _rows(blocks, ids, mods):
    """Condition arrays (missing rows zero) and availability mask for ``ids``."""
    conds, avail = [], []
    for m in mods:
        b = blocks[m].reindex(ids)
        a = b.notna().all(axis=1).to_numpy()
        conds.append(np.nan_to_num(b.to_numpy(np.float32)))
        avail.append(a)
    return conds, np.stack(avail, 1).astype(np.float32)


def model_datasets(lat: pd.DataFrame, labels: pd.DataFrame, modalities=MODALITIES):
    """Per model: ``(name, record, multi, (x, conds, avail) train, (x, conds, avail) val)`` -
    single-condition models on patients with both modalities, multi-condition models on
    patients with the target (missing conditions zero, flagged in ``avail``)."""
    blocks = latent_blocks(lat, modalities)
    tr = labels.index[labels["split"] == "train"]
    va = labels.index[labels["split"] == "val"]
    for target in modalities:
        has_t = blocks[target].notna().all(axis=1)
        others = [m for m in modalities if m != target]
        for conds, multi in [([c], False) for c in others] + [(others, True)]:
            has = [has_t] + ([] if multi else [blocks[conds[0]].notna().all(axis=1)])
            ok = lambda ids: [i for i in ids if all(h.get(i, False) for h in has)]  # noqa: E731
            ok_tr, ok_va = ok(tr), ok(va)
            ct, at = _rows(blocks, ok_tr, conds)
            cv, av = _rows(blocks, ok_va, conds)
            name = f"{target}<-multi" if multi else f"{target}<-{conds[0]}"
            rec = {"target": target, "n_train": len(ok_tr)}
            rec.update({"conds": conds} if multi else {"cond": conds[0]})
            yield (name, rec, multi, (blocks[target].loc[ok_tr].to_numpy(), ct, at),
                   (blocks[target].loc[ok_va].to_numpy(), cv, av))


def _fingerprint(settings: dict, seed: int, trn, val) -> str:
    """What a finished model depends on: its settings, seed and training / validation arrays."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"settings": settings, "seed": seed}, sort_keys=True, default=str).encode())
    for part in (trn, val):
        for a in (part[0], *part[1], part[2]):
            h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes())
    return h.hexdigest()


def model_order(modalities=MODALITIES) -> list[str]:
    """The bank's model names in training order (that of :func:`model_datasets`): per target, its
    single-condition models, then its multi-condition model ``<target><-multi``."""
    return [n for t in modalities for n in [f"{t}<-{c}" for c in modalities if c != t] + [f"{t}<-multi"]]


def _cached(path):
    """A finished model saved by an earlier job, or None when the file cannot be read (a job killed
    mid-copy, a damaged disk): the model is then trained again, with a warning naming the file,
    instead of every retry failing on it."""
    from crossmodal.fileio import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(path, "coherent model cache", keys=("fingerprint", "entry", "history"))
    except CheckpointError as e:
        log.warning("%s - training that model again", e)
        return None


def train_bank(lat: pd.DataFrame, labels: pd.DataFrame, settings: dict, *, seed: int = 0,
               modalities=MODALITIES, device: str = "cpu", checkpoints=None,
               shard: tuple[int, int] = (0, 1)) -> tuple[dict, pd.DataFrame]:
    """Train every single-condition and multi-condition model on ``device``; returns (bank,
    history); the bank's weights are CPU tensors.

    ``checkpoints`` (a folder): each finished model is saved there (atomically), and a rerun - a
    job killed at its walltime and retried - reloads every model whose settings, seed and data
    are unchanged instead of training it again (the 16 paper-size models take hours each).

    ``shard=(i, n)``: train only the models ``k`` (in :func:`model_order`) with ``k % n == i`` -
    one of ``n`` cluster jobs; :func:`merge_banks` joins the ``n`` parts. Model ``k`` is seeded
    ``seed + k`` whatever ``n`` is, so the joined bank equals a one-job bank."""
    from pathlib import Path

    from crossmodal.fileio import atomic_path

    i, n = (int(v) for v in shard)
    if not 0 <= i < n:
        raise ValueError(f"train_bank: shard {i} of {n} does not exist (shards are 0..{n - 1})")
    s = D.DiffusionSettings.from_dict(settings)
    blocks = latent_blocks(lat, modalities)
    bank = {"settings": settings, "modalities": list(modalities),
            "dims": {m: blocks[m].shape[1] for m in modalities}, "single": {}, "multi": {}}
    hist = []
    ck = Path(checkpoints) if checkpoints else None
    if ck:
        ck.mkdir(parents=True, exist_ok=True)
    bank["shard"] = [i, n]
    for k, (name, rec, multi, trn, val) in enumerate(model_datasets(lat, labels, modalities)):
        if k % n != i:
            continue
        fp = _fingerprint(settings, seed + k, trn, val) if ck else None
        path = ck / (name.replace("<-", "_from_") + ".pt") if ck else None
        saved = _cached(path) if ck and path.is_file() else None
        if saved is not None and saved.get("fingerprint") == fp:
            entry, history = saved["entry"], saved["history"]
            log.info("%s: reloaded from %s (finished by an earlier job)", name, path)
        else:
            model, fit = D.fit_denoiser(*trn, *val, s, multi=multi, seed=seed + k, name=name, device=device)
            entry = {"arch": model.arch, "state": model.state_dict(), "val_mse": fit["val_mse"], **rec}
            history = fit["history"]
            if ck:
                with atomic_path(path) as tmp:
                    torch.save({"fingerprint": fp, "entry": entry, "history": history}, tmp)
        if multi:
            bank["multi"][rec["target"]] = entry
        else:
            bank["single"][name] = entry
        hist += history
    if n == 1:
        del bank["shard"]
    return bank, pd.DataFrame(hist)


def merge_banks(parts: dict[str, tuple[dict, pd.DataFrame]]) -> tuple[dict, pd.DataFrame]:
    """Join the shard banks of :func:`train_bank` (``{source: (bank, history)}``, one per shard
    ``0..n-1``) into the bank and history one job would have produced, models in
    :func:`model_order`. Refuses, naming the file, a missing / repeated shard or shards trained
    with other settings or modalities."""
    if not parts:
        raise ValueError("merge_banks: no shard banks given")
    first_src, (first, _) = next(iter(parts.items()))
    n = first.get("shard", [0, 1])[1]
    seen = {}
    for src, (b, _) in parts.items():
        i, n_b = b.get("shard", [0, 1])
        if n_b != n:
            raise ValueError(f"{src}: shard {i} of {n_b}, but {first_src} is one of {n}")
        if i in seen:
            raise ValueError(f"{src}: shard {i} of {n} is also in {seen[i]}")
        for key in ("settings", "modalities", "dims"):
            if b[key] != first[key]:
                raise ValueError(f"{src}: {key} differ from {first_src}'s - the shards come from different runs")
        seen[i] = src
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise ValueError(f"merge_banks: shards {missing} of {n} are missing (got {sorted(parts)})")
    order = {name: k for k, name in enumerate(model_order(first["modalities"]))}
    single = {k: v for b, _ in parts.values() for k, v in b["single"].items()}
    multi = {k: v for b, _ in parts.values() for k, v in b["multi"].items()}
    bank = {key: first[key] for key in ("settings", "modalities", "dims")}
    bank["single"] = dict(sorted(single.items(), key=lambda kv: order[kv[0]]))
    bank["multi"] = dict(sorted(multi.items(), key=lambda kv: order[f"{kv[0]}<-multi"]))
    hist = pd.concat([h for _, h in parts.values()], ignore_index=True)
    if len(hist):
        hist = hist.sort_values("model", key=lambda m: m.map(order), kind="stable", ignore_index=True)
    return bank, hist


def grid_search(lat: pd.DataFrame, labels: pd.DataFrame, base: dict, grid: dict, *, kinds=("multi",),
                seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """Validation MSE of every combination of ``grid`` (the paper's hyperparameter grid,
    Methods "Model implementation and training") for the models of ``kinds``."""
    keys = sorted(grid)
    rows = []
    data = [d for d in model_datasets(lat, labels) if ("multi" if d[2] else "single") in kinds]
    for combo in itertools.product(*(grid[k] for k in keys)):
        hp = dict(base, **dict(zip(keys, combo)))
        s = D.DiffusionSettings.from_dict(hp)
        for k, (name, rec, multi, trn, val) in enumerate(data):
            _, fit = D.fit_denoiser(*trn, *val, s, multi=multi, seed=seed + k, name=name, device=device)
            rows.append({"model": name, **dict(zip(keys, combo)), "val_mse": fit["val_mse"]})
    return pd.DataFrame(rows)


class Bank:
    """A loaded model bank with generation methods on latent blocks; the models run on ``device``
    (the random draws stay on CPU generators, so a GPU run draws the same noise)."""

    def __init__(self, bank: dict, device: str = "cpu"):
        self.raw = bank
        self.device = torch.device(device)
        self.settings = D.DiffusionSettings.from_dict(bank["settings"])
        self.ddpm = self.settings.ddpm()
        self.modalities = bank["modalities"]
        self.dims = bank["dims"]
        self.single = {k: self._load(v) for k, v in bank["single"].items()}
        self.multi = {k: self._load(v) for k, v in bank["multi"].items()}

    def _load(self, rec):
        a = dict(rec["arch"])
        m = D.MLPDenoiser(a.pop("x_dim"), a.pop("cond_dims"), **a)
        m.load_state_dict(rec["state"])
        return m.to(self.device).eval()

    def val_mse(self, target, cond) -> float:
        return float(self.raw["single"][f"{target}<-{cond}"]["val_mse"])

    def generate(self, method: str, target: str, conds: dict[str, np.ndarray], runs: int, *,
                 n: int | None = None, seed: int = 0, threshold: float = 1.0, max_fraction: float = 0.05,
                 max_retries: int = 3) -> tuple[np.ndarray, dict]:
        """``runs`` generations of ``target`` for each row of the given conditions.

        ``method``: ``single`` (exactly one condition), ``multi`` or ``ensemble``.  With no
        condition at all give ``n`` (unconditional generation).
        """
        names = sorted(conds)
        if n is None:
            if not names:
                raise ValueError("generate: no condition given and no n")
            n = len(conds[names[0]])
        gen = torch.Generator().manual_seed(int(seed))
        dev = self.device
        rep = lambda a: torch.as_tensor(np.tile(np.asarray(a, np.float32), (runs, 1))).to(dev)  # noqa: E731
        dim = self.dims[target]
        info: dict = {}
        if method == "single":
            if len(names) != 1:
                raise ValueError(f"single-condition generation needs one condition, got {names}")
            m = self.single[f"{target}<-{names[0]}"]
            x = D.sample(m, self.ddpm, [rep(conds[names[0]])], generator=gen, clip=self.settings.clip)
        elif method == "multi":
            m = self.multi[target]
            order = self.raw["multi"][target]["conds"]
            cs, mask = [], []
            for c in order:
                if c in conds:
                    cs.append(rep(conds[c])); mask.append(1.0)
                else:
                    cs.append(torch.zeros((n * runs, self.dims[c]), device=dev)); mask.append(0.0)
            mk = torch.tensor(mask, dtype=torch.float32, device=dev).repeat(n * runs, 1)
            x = D.sample(m, self.ddpm, cs, mk, generator=gen, clip=self.settings.clip)
        elif method == "ensemble":
            # no condition: every member sees the training-mean condition (zeros after scaling)
            use = names or [c for c in self.modalities if c != target]
            fns, mses = [], []
            for c in use:
                cv = rep(conds[c]) if c in conds else torch.zeros((n * runs, self.dims[c]), device=dev)
                fns.append(D.BoundEps(self.single[f"{target}<-{c}"], [cv]))
                mses.append(self.val_mse(target, c))
            x, info = D.coherent_sample(fns, mses, self.ddpm, n * runs, dim, threshold=threshold,
                                        max_fraction=max_fraction, max_retries=max_retries, generator=gen,
                                        clip=self.settings.clip, device=dev)
        else:
            raise ValueError(f"unknown generation method {method!r}")
        return x.cpu().numpy().reshape(runs, n, dim), info


def condition_subsets(target: str, modalities=MODALITIES) -> list[tuple[str, ...]]:
    """Every non-empty subset of the other modalities, smallest first."""
    others = [m for m in modalities if m != target]
    return [c for r in range(1, len(others) + 1) for c in itertools.combinations(others, r)]
