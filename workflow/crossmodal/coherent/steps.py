"""Pipeline steps of the Coherent Denoising chain (rules in ``workflow/rules/coherent.smk``)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from crossmodal.coherent import inputs as I
from crossmodal.coherent.preprocess import MODALITIES, CoherentInputError, preprocess_modality
from crossmodal.fileio import atomic_path, load_checkpoint, write_json, write_table
from crossmodal.steps import step

_log = logging.getLogger(__name__)


def _by_sample(path) -> pd.DataFrame:
    """A TSV written by this chain, indexed by its ``sample`` column."""
    return pd.read_csv(path, sep="\t", index_col="sample")


def _device(params) -> str:
    """``config["device"]`` (rule param ``device``; auto = CUDA when torch sees one)."""
    from crossmodal.metrics.image import resolve_device

    return resolve_device(params.get("device", "auto"))


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


@step("embed_coherent_slides")
def embed_coherent_slides(inputs, outputs, params, *, threads=1, log=None):
    """Slide embeddings: mean of the cohort-ssl features of each slide's tiles (Titan stand-in)."""
    _threads(threads)
    lmdbs = inputs["tiles"] if isinstance(inputs["tiles"], list) else [inputs["tiles"]]
    df = I.slide_embeddings(lmdbs, inputs["encoder"], max_tiles=int(params["max_tiles"]), seed=int(params["seed"]))
    write_table(outputs["embeddings"], df, float_format="%.6g")


@step("preprocess_coherent")
def preprocess_coherent(inputs, outputs, params, *, threads=1, log=None):
    """Per-modality preprocessing, QC and imputation fit on the training split (Methods)."""
    s = params["preprocess"]
    labels = I.read_labels(inputs["clinical"], inputs.get("survival"), inputs["splits"], params["source"],
                           params.get("stage_column", "stage"))
    train = list(labels.index[labels["split"] == "train"])
    layouts = params["layouts"]
    qc, mats = [], {}
    for m in MODALITIES:
        df = I.read_matrix(inputs[m], layouts[m], m)
        df = df.loc[[i for i in df.index if i in labels.index]]
        if len(df) == 0:
            raise CoherentInputError(f"{m}: no sample of {inputs[m]} is in the split table {inputs['splits']}")
        df, rec = preprocess_modality(m, df, train, s)
        qc.append(rec)
        labels[f"has_{m}"] = labels.index.isin(df.index).astype(int)
        mats[m] = df
    test = labels[labels["split"] == "test"]
    incomplete = test.index[test[[f"has_{m}" for m in MODALITIES]].min(axis=1) == 0]
    if len(incomplete):  # e.g. a slide that yielded no tiles, or an outlier: not a complete case any more
        _log.warning("test samples lacking a modality after preprocessing are excluded from evaluation "
                    "(the test set must be complete cases): %s", list(incomplete))
        labels.loc[incomplete, "split"] = "excluded"
    if (labels["split"] == "test").sum() < 2:
        raise CoherentInputError(f"splits {inputs['splits']}: fewer than 2 complete test samples")
    for m, df in mats.items():  # nothing written before every check passed
        write_table(outputs[m], df, float_format="%.6g")
    write_table(outputs["labels"], labels)
    write_json(outputs["qc"], {"modalities": qc, "n_samples": int(len(labels)),
                               "splits": labels["split"].value_counts().to_dict()})


@step("encode_coherent_latents")
def encode_coherent_latents(inputs, outputs, params, *, threads=1, log=None):
    """``coherent.latents.dim``-d latents (paper: 32): an autoencoder per omics modality (the
    shared β-VAE with β = 0), PCA for slides; scalers fit on the training split; latents
    standardised on the training split."""
    from crossmodal.coherent.latents import encode_all

    _threads(threads)
    labels = _by_sample(inputs["labels"])
    data = {m: pd.read_csv(inputs[m], sep="\t", index_col="sample") for m in MODALITIES}
    lat, hist = encode_all(data, labels, params["latents"], seed=int(params["seed"]))
    write_table(outputs["latents"], lat, float_format="%.6g")
    write_table(outputs["history"], hist, index=False)


def _train_args(inputs, params, threads):
    _threads(threads)
    return (_by_sample(inputs["latents"]), _by_sample(inputs["labels"]), params["diffusion"]), {
        "seed": int(params["seed"]), "checkpoints": params.get("checkpoints")}


@step("train_coherent_shard")
def train_coherent_shard(inputs, outputs, params, *, threads=1, log=None):
    """One of ``coherent.train_jobs`` cluster jobs: the bank's models ``k`` with ``k % n == i``."""
    import torch

    from crossmodal.coherent.models import train_bank

    args, kw = _train_args(inputs, params, threads)
    i, n = (int(v) for v in params["shard"])
    bank, hist = train_bank(*args, **kw, device=_device(params), shard=(i, n))
    with atomic_path(outputs["shard"]) as tmp:
        torch.save({"bank": bank, "history": hist.to_dict("records")}, tmp)


@step("train_coherent_diffusion")
def train_coherent_diffusion(inputs, outputs, params, *, threads=1, log=None):
    """The 12 single-condition and 4 multi-condition MLP DDPMs with validation early stopping:
    trained here, or joined from the ``shards`` input (``coherent.train_jobs`` > 1)."""
    import torch

    from crossmodal.coherent.models import merge_banks, train_bank

    if inputs.get("shards"):
        parts = {}
        for path in inputs["shards"]:
            if str(path) in parts:
                raise ValueError(f"{path}: given twice as a shard bank")
            saved = load_checkpoint(path, "coherent shard bank", keys=("bank", "history"),
                                    hint="rule train_coherent_shard writes it")
            parts[str(path)] = (saved["bank"], pd.DataFrame(saved["history"]))
        bank, hist = merge_banks(parts)
    else:
        args, kw = _train_args(inputs, params, threads)
        bank, hist = train_bank(*args, **kw, device=_device(params))
    with atomic_path(outputs["models"]) as tmp:
        torch.save(bank, tmp)
    rows = [{"model": k, "kind": "single", "target": v["target"], "conditions": v["cond"], "val_mse": v["val_mse"],
             "n_train": v["n_train"]} for k, v in bank["single"].items()]
    rows += [{"model": f"{k}<-multi", "kind": "multi", "target": k, "conditions": "+".join(v["conds"]),
              "val_mse": v["val_mse"], "n_train": v["n_train"]} for k, v in bank["multi"].items()]
    write_table(outputs["val_mse"], pd.DataFrame(rows), index=False)
    write_table(outputs["history"], hist, index=False)


@step("generate_coherent")
def generate_coherent(inputs, outputs, params, *, threads=1, log=None):
    """Every (method, target, condition subset) generation of the test set, ``runs`` times, plus
    unconditional generation; rejection statistics and the threshold sensitivity (S9)."""
    from crossmodal.coherent.evaluate import generate_all

    _threads(threads)
    lat = _by_sample(inputs["latents"])
    labels = _by_sample(inputs["labels"])
    gens, rej = generate_all(inputs["models"], lat, labels, params["generate"], seed=int(params["seed"]),
                             device=_device(params))
    with atomic_path(outputs["generated"]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **gens)
    write_table(outputs["rejection"], rej, index=False)


def _load_gens(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@step("evaluate_coherent_reconstruction")
def evaluate_coherent_reconstruction(inputs, outputs, params, *, threads=1, log=None):
    """Table 1 (R² ± sd, output variance %) and Figure 1 (UMAP or PCA of real vs reconstructed, by cancer type)."""
    from crossmodal.coherent import evaluate as E

    lat = _by_sample(inputs["latents"])
    gens = _load_gens(inputs["generated"])
    t1 = E.table1(lat, gens, stand_in=params["stand_in"])
    write_table(outputs["table"], t1, index=False)
    E.figure1(lat, gens, outputs["figure"], labels=_by_sample(inputs["labels"]), seed=int(params["seed"]),
              method=params.get("embedding", "umap"))


@step("evaluate_coherent_classifiers")
def evaluate_coherent_classifiers(inputs, outputs, params, *, threads=1, log=None):
    """Figure 2: RF per modality trained on real data, tested on real vs synthetic (macro F1)."""
    from crossmodal.coherent import evaluate as E

    lat = _by_sample(inputs["latents"])
    labels = _by_sample(inputs["labels"])
    t = E.classifiers_real_vs_synthetic(lat, labels, _load_gens(inputs["generated"]), params["downstream"],
                                        seed=int(params["seed"]), stand_in=params["stand_in"])
    write_table(outputs["table"], t, index=False)
    E.figure2(t, outputs["figure"])


@step("evaluate_coherent_completion")
def evaluate_coherent_completion(inputs, outputs, params, *, threads=1, log=None):
    """Table 2 / Figure 3: stage RF and survival RSF under every missing-modality subset."""
    from crossmodal.coherent import evaluate as E

    lat = _by_sample(inputs["latents"])
    labels = _by_sample(inputs["labels"])
    raw, table = E.completion(lat, labels, _load_gens(inputs["generated"]), params["downstream"],
                              seed=int(params["seed"]), stand_in=params["stand_in"])
    write_table(outputs["table"], table, index=False)
    write_table(outputs["scores"], raw, index=False)
    E.figure3(raw, outputs["figure"])


@step("evaluate_coherent_privacy")
def evaluate_coherent_privacy(inputs, outputs, params, *, threads=1, log=None):
    """Table 3 / Figure 5: unconditional generation vs the training set (F1 coverage, energy distance)."""
    from crossmodal.coherent import evaluate as E

    lat = _by_sample(inputs["latents"])
    labels = _by_sample(inputs["labels"])
    gens = _load_gens(inputs["generated"])
    t = E.privacy(lat, labels, gens, k=int(params["downstream"]["knn_k"]), stand_in=params["stand_in"])
    write_table(outputs["table"], t, index=False)
    E.figure5(lat, labels, gens, outputs["figure"], seed=int(params["seed"]))


@step("evaluate_coherent_prioritisation")
def evaluate_coherent_prioritisation(inputs, outputs, params, *, threads=1, log=None):
    """Figure 4: counterfactual variance score, informed vs random acquisition curves, one stage
    forest per generation run (as Table 2); per-forest curves and their mean ± sd."""
    from crossmodal.coherent import evaluate as E

    lat = _by_sample(inputs["latents"])
    labels = _by_sample(inputs["labels"])
    raw = E.prioritisation(lat, labels, _load_gens(inputs["generated"]), params["downstream"], seed=int(params["seed"]))
    t = E.prioritisation_summary(raw)
    write_table(outputs["table"], t, index=False)
    write_table(outputs["scores"], raw, index=False)
    E.figure4(t, outputs["figure"])


@step("build_coherent_reproduction")
def build_coherent_reproduction(inputs, outputs, params, *, threads=1, log=None):
    """``results/coherent/reproduction.tsv``: the paper's claims next to this run's (shared layout)."""
    from crossmodal.coherent import evaluate as E
    from crossmodal.reproduction import tally

    names = ("table1", "fig2", "table2", "table3", "fig4") + (("fig4_scores",) if inputs.get("fig4_scores") else ())
    t = E.reproduction({k: pd.read_csv(inputs[k], sep="\t") for k in names},
                       pd.read_csv(inputs["rejection"], sep="\t"), data=params["data"], stand_in=params["stand_in"])
    _log.info("Coherent Denoising reproduction: %d of %d directional claims hold (%s data)", *tally(t), params["data"])
    write_table(outputs["table"], t, index=False)


@step("search_coherent_hyperparameters")
def search_coherent_hyperparameters(inputs, outputs, params, *, threads=1, log=None):
    """Optional: the paper's grid search (validation MSE per model and combination; best per model)."""
    from crossmodal.coherent.models import grid_search

    _threads(threads)
    lat = _by_sample(inputs["latents"])
    labels = _by_sample(inputs["labels"])
    t = grid_search(lat, labels, params["diffusion"], params["grid"], kinds=tuple(params["kinds"]),
                    seed=int(params["seed"]), device=_device(params))
    best = t.loc[t.groupby("model")["val_mse"].idxmin()]
    write_table(outputs["table"], t, index=False)
    write_table(outputs["best"], best, index=False)
