"""PathGen pipeline steps (rules in workflow/rules/pathgen.smk)."""
from __future__ import annotations

import logging

import pandas as pd

from crossmodal.fileio import write_table
from crossmodal.steps import step

log = logging.getLogger(__name__)


def _device(params) -> str:
    from crossmodal.metrics.image import resolve_device

    return resolve_device(params.get("device", "auto"))


@step("embed_patches")
def embed_patches(inputs, outputs, params, *, threads=1, log=None):
    """Every case's patch LMDB: bright patches dropped, embedded -> one .npz per slide."""
    from pathlib import Path

    import torch

    from crossmodal.pathgen.patches import embed_lmdb, load_patch_encoder

    torch.set_num_threads(max(1, threads))
    p = params["patches"]
    weights = inputs.get("encoder") if p["encoder"] == "cohort-ssl" else p.get("uni_weights")
    encode, label = load_patch_encoder(p["encoder"], weights, _device(params),
                                       native_resolution=bool(p.get("native_resolution", False)))
    lmdbs, outs = list(inputs["lmdbs"]), list(outputs["embeddings"])
    if len(lmdbs) != len(outs):
        raise ValueError(f"embed_patches: {len(lmdbs)} patch LMDBs for {len(outs)} outputs")
    levels = params["magnification_levels"]
    rows = []
    for lm, out in zip(lmdbs, outs):
        sample = Path(out).name[: -len(".npz")]
        preset = Path(lm).parent.name
        if Path(lm).name != f"{sample}.lmdb":
            raise ValueError(f"embed_patches: input {lm} does not belong to output {out}")
        rows.append(embed_lmdb(lm, sample, out, encode, label, preset=preset, magnification=levels[preset],
                               max_intensity=p["max_intensity"], max_patches=p["max_patches"],
                               seed=int(params["seed"]), batch_size=int(p["batch_size"])))
    write_table(outputs["summary"], pd.DataFrame(rows).assign(encoder=label), index=False)


@step("prepare_pathgen_data")
def prepare_pathgen_data(inputs, outputs, params, *, threads=1, log=None):
    """Cases (splits with calibration, labels, time bins, demographics), exact-symbol gene
    groups, real expression z-scored with training-split statistics."""
    from pathlib import Path

    from crossmodal.clinical import read_clinical
    from crossmodal.expression.steps import read_matrix
    from crossmodal.pathgen.cases import PathGenDataError, case_splits, prepare, read_gene_groups, write_prepared
    from crossmodal.pathgen.patches import read_embeddings

    counts = read_matrix(inputs["counts"])
    clin_path = Path(inputs["clinical"])
    if not clin_path.is_file():
        raise PathGenDataError(f"clinical table {clin_path}: not found")
    clinical = read_clinical(clin_path, error=PathGenDataError)
    need = {"patient", "grade", "survival_time", "event"} - set(clinical.columns)
    if need:
        raise PathGenDataError(f"clinical table {clin_path}: missing column(s) {', '.join(sorted(need))}")
    groups = read_gene_groups(inputs["gene_groups"])
    truth = inputs.get("truth_genes")
    if truth:
        from crossmodal.pathgen.cases import planted_groups

        groups = planted_groups(groups, truth[0] if isinstance(truth, list) else truth)
    emb = {}
    for path in inputs["embeddings"]:
        e = read_embeddings(path)
        emb[str(e["sample"])] = {"n": e["n"], "level": e["level"], "magnification": e["magnification"]}
    scheme = pd.read_csv(inputs["splits"], sep="\t", dtype=str, keep_default_na=False)
    splits = case_splits(scheme, emb, calibration_fraction=float(params["calibration_fraction"]),
                         seed=int(params["seed"]))
    res = prepare(splits, counts, clinical, groups, emb, splits, n_bins=int(params["n_bins"]),
                  pseudocount=float(params["pseudocount"]))
    write_prepared(outputs, *res)


def _load(inputs):
    from crossmodal.pathgen.cases import read_cases, read_expression, read_genes
    from crossmodal.pathgen.synthesis import load_bags

    cases = read_cases(inputs["cases"])
    genes = read_genes(inputs["genes"])
    real, _ = read_expression(inputs["real"], genes)
    bags = load_bags(inputs["embeddings"], cases.index)
    sizes = [int((genes.group == g).sum()) for g in dict.fromkeys(genes.group)]
    return cases, genes, real, bags, sizes


@step("train_pathgen")
def train_pathgen(inputs, outputs, params, *, threads=1, log=None):
    """PathGen diffusion (Algorithm 1) on the training split's cases."""
    import torch

    from crossmodal.pathgen import synthesis

    torch.set_num_threads(max(1, threads))
    cases, genes, real, bags, sizes = _load(inputs)
    train = cases.index[cases.split == "train"]
    meta = {}
    if params.get("fold") is not None:  # cross-fit: the training patients outside one fold
        fold, folds = int(params["fold"]), int(params["folds"])
        f = synthesis.cross_fit_folds(cases, folds, int(params["seed"]))
        train = f.index[f != fold]
        meta = {"fold": fold, "folds": folds, "held_out": sorted(f.index[f == fold])}
        logging.getLogger(__name__).info("cross-fit fold %d/%d: %d training cases, %d held out", fold + 1, folds,
                                         len(train), len(meta["held_out"]))
    hp = params["model"]
    model, losses = synthesis.train(real.loc[train], bags, sizes, hp, seed=int(params["seed"]),
                                    device=_device(params))
    synthesis.save_model(outputs["model"], model, hp, {"n_train": len(train), "genes": list(genes.feature), **meta})
    synthesis.write_losses(outputs["losses"], losses)


@step("sample_pathgen")
def sample_pathgen(inputs, outputs, params, *, threads=1, log=None):
    """Algorithm 2 for every case, ``n_draws`` samples averaged -> the per-case expression file."""
    import torch

    from crossmodal.pathgen import synthesis
    from crossmodal.pathgen.cases import write_expression

    torch.set_num_threads(max(1, threads))
    cases, genes, real, bags, sizes = _load(inputs)
    model, ck = synthesis.load_model(inputs["model"])
    ddpm = synthesis.make_ddpm(ck["hp"])
    n = int(params["n_draws"])
    dev = _device(params)
    x = synthesis.sample(model.to(dev), ddpm, bags, list(cases.index), len(genes), n_draws=n,
                         seed=int(params["seed"]) + 1, clip=ck["hp"].get("clip_denoised"), device=dev)
    vals = pd.DataFrame(x, index=cases.index, columns=list(genes.feature))
    meta = cases[["patient", "split"]].assign(source="pathgen", n_draws=n)
    fold_models = inputs.get("fold_models") or []
    fold_models = [fold_models] if isinstance(fold_models, str) else list(fold_models)
    # cross-fit: each training case from the model that did not train on it (the main model's draws
    # above cover every case, so the other cases keep exactly the values they get without cross-fit)
    if fold_models:
        folds = len(fold_models)
        f = synthesis.cross_fit_folds(cases, folds, int(params["seed"]))
        for k, path in enumerate(fold_models):
            m_k, ck_k = synthesis.load_model(path)
            ids = sorted(f.index[f == k])
            if (ck_k["meta"].get("fold"), ck_k["meta"].get("folds")) != (k, folds) or \
                    sorted(ck_k["meta"].get("held_out", [])) != ids:
                got = ck_k["meta"].get("fold")
                raise ValueError(f"PathGen cross-fit model {path}: trained for fold "
                                 f"{'none' if got is None else got + 1} of {ck_k['meta'].get('folds')} (or on "
                                 f"other cases), expected fold {k + 1} of {folds} holding out {len(ids)} cases")
            vals.loc[ids] = synthesis.sample(m_k.to(dev), synthesis.make_ddpm(ck_k["hp"]), bags, ids, len(genes),
                                             n_draws=n, seed=int(params["seed"]) + 1,
                                             clip=ck_k["hp"].get("clip_denoised"), device=dev)
            meta.loc[ids, "source"] = f"pathgen out of fold {k + 1}/{folds}"
        logging.getLogger(__name__).info("cross-fit: %d training cases synthesized by the %d fold models",
                                         len(f), folds)
    write_expression(outputs["synthesized"], vals, meta)


@step("evaluate_pathgen")
def evaluate_pathgen(inputs, outputs, params, *, threads=1, log=None):
    """Table 2 (Spearman / MAE / t-test per gene group, test patients) and the Figure 2(i) plot."""
    from crossmodal.pathgen import evaluate
    from crossmodal.pathgen.cases import read_cases, read_expression, read_genes

    cases = read_cases(inputs["cases"])
    genes = read_genes(inputs["genes"])
    real, _ = read_expression(inputs["real"], genes)
    synth, smeta = read_expression(inputs["synthesized"], genes)
    test = cases.index[cases.split == params["split"]]
    tr_src = smeta.loc[smeta.index.isin(cases.index[cases.split == "train"]), "source"].astype(str)
    fit_kind = "out of fold" if tr_src.str.contains("out of fold").all() and len(tr_src) else "in sample"
    # the training patients: their mean expression is the baseline predictor of mae_training_mean,
    # and PathGen's fit on them (in sample, or out of fold under pathgen.cross_fit: the synthesized
    # expression MCAT_GR's synthesized run trains on) goes next to the held-out numbers
    real_tr, synth_tr = (evaluate.per_patient(v, cases, cases.index[cases.split == "train"]) for v in (real, synth))
    real, synth = (evaluate.per_patient(v, cases, test) for v in (real, synth))  # a patient counts once
    test = list(real.index)
    label = str(pd.read_csv(inputs["summary"], sep="\t")["encoder"].iloc[0])
    t = evaluate.table2(real, synth, genes, test, baseline=real_tr.mean(axis=0)).assign(patch_encoder=label)
    fit = evaluate.table2(real_tr, synth_tr, genes, list(real_tr.index)).set_index("group")
    t["spearman_training_cases"] = t.group.map(fit.spearman)
    t["mae_training_cases"] = t.group.map(fit.mae)
    t["training_cases_synthesis"] = fit_kind
    write_table(outputs["table"], t, index=False, float_format="%.6g")
    evaluate.plot(real, synth, genes, test, t, outputs["figure"], label)
    logging.getLogger(__name__).info("PathGen test split: overall Spearman %.3f, MAE %.3f (training cases, %s: "
                                     "%.3f, %.3f)", t.spearman.iloc[-1], t.mae.iloc[-1], fit_kind,
                                     t.spearman_training_cases.iloc[-1], t.mae_training_cases.iloc[-1])


@step("train_mcat_gr")
def train_mcat_gr(inputs, outputs, params, *, threads=1, log=None):
    """MCAT_GR with WSI only / + synthesized / + real expression; predictions for every case."""
    import torch

    from crossmodal.pathgen import predict
    from crossmodal.pathgen.cases import read_expression

    torch.set_num_threads(max(1, threads))
    mode = params["wildcards"]["run"]
    if mode not in predict.MODES:
        raise ValueError(f"train_mcat_gr: unknown run {mode!r} (one of {', '.join(predict.MODES)})")
    cases, genes, real, bags, sizes = _load(inputs)
    synth, _ = read_expression(inputs["synthesized"], genes)
    exprs = {"real": real, "synthesized": synth}
    hp = params["mcat"]
    n_grades = int(cases.grade.max()) + 1
    train_expr = None if mode == "wsi" else exprs[mode]
    model, hist = predict.train(cases, bags, train_expr, None if mode == "wsi" else sizes, hp,
                                n_grades=n_grades, seed=int(params["seed"]), device=_device(params))
    kinds = ["none"] if mode == "wsi" else ["real", "synthesized"]
    preds = pd.concat([predict.predict(model, cases, bags, None if k == "none" else exprs[k], k) for k in kinds])
    predict.save(outputs["model"], model, hp, {"run": mode})
    write_table(outputs["history"], hist, index=False)
    predict.write_predictions(outputs["predictions"], preds)


@step("evaluate_mcat_gr")
def evaluate_mcat_gr(inputs, outputs, params, *, threads=1, log=None):
    """Test AUC / C-index of the three runs (per patient, each with its own kind of expression), rank-sum
    tests on per-patient scores and paired-bootstrap tests of the differences."""
    from crossmodal.pathgen import predict
    from crossmodal.pathgen.cases import read_cases

    cases = read_cases(inputs["cases"])
    preds = {}
    for path in inputs["predictions"]:
        p = pd.read_csv(path, sep="\t", dtype={"sample": str})
        run = path.rstrip("/").split("/")[-2]
        kind = {"wsi": "none"}.get(run, run)
        preds[run] = p[p.expression == kind]
    order = [m for m in predict.MODES if m in preds]
    table, tests = predict.evaluate(cases, {m: preds[m] for m in order}, n_boot=int(params["n_boot"]),
                                    seed=int(params["seed"]))
    write_table(outputs["table"], table, index=False, float_format="%.6g")
    write_table(outputs["tests"], tests, index=False, float_format="%.6g")


@step("compute_pathgen_conformal")
def compute_pathgen_conformal(inputs, outputs, params, *, threads=1, log=None):
    """Conformal grade sets / risk bounds (alpha from config), fairness tables, the Tables 4 / 5
    real-vs-synthesized rank-sum tests per group, Figure 5b."""
    from crossmodal.pathgen import uncertainty
    from crossmodal.pathgen.cases import read_cases

    cases = read_cases(inputs["cases"])
    per, summ, fair = [], [], []
    for path in inputs["predictions"]:
        run = path.rstrip("/").split("/")[-2]
        pred = pd.read_csv(path, sep="\t", dtype={"sample": str})
        a, b, c = uncertainty.conformal_tables(cases, pred, run, params["conformal"], seed=int(params["seed"]))
        per.append(a)
        summ.append(b)
        fair.append(c)
    per, summ, fair = (pd.concat(x, ignore_index=True) for x in (per, summ, fair))
    write_table(outputs["cases"], per, index=False, float_format="%.6g")
    write_table(outputs["summary"], summ, index=False, float_format="%.6g")
    write_table(outputs["fairness"], fair, index=False, float_format="%.6g")
    write_table(outputs["tests"], uncertainty.subgroup_tests(per, cases), index=False, float_format="%.6g")
    uncertainty.plot_fairness(per, cases, outputs["figure"])


@step("plot_pathgen_heatmaps")
def plot_pathgen_heatmaps(inputs, outputs, params, *, threads=1, log=None):
    """Distributed per-patch grade and risk over the slide thumbnail (Figures 3b/c) and the
    real-vs-synthesized co-attention table (Figure 3d, Table 3)."""
    import torch

    from crossmodal.pathgen import heatmaps

    torch.set_num_threads(max(1, threads))
    heatmaps.run(inputs, outputs, params)


@step("build_pathgen_reproduction")
def build_pathgen_reproduction(inputs, outputs, params, *, threads=1, log=None):
    """Paper claim vs this run, one row per claim -> results/pathgen/reproduction.tsv."""
    from crossmodal.pathgen.reproduction import build
    from crossmodal.reproduction import tally

    table = build(inputs, params)
    logging.getLogger(__name__).info("PathGen reproduction: %d of %d directional claims hold (%s data)",
                                     *tally(table), params["data"])
    write_table(outputs["table"], table, index=False)
    return table



@step("evaluate_pathgen_round_trip")
def evaluate_pathgen_round_trip(inputs, outputs, params, *, threads=1, log=None):
    """Expression -> RNA-CDM tiles -> the same patch encoder -> PathGen sampling, per gene group
    Spearman / MAE against the input expression next to PathGen from the real slide."""
    import numpy as np
    import torch

    from crossmodal.pathgen import round_trip, synthesis
    from crossmodal.pathgen.cases import read_cases, read_expression, read_genes, write_expression
    from crossmodal.pathgen.patches import load_patch_encoder

    torch.set_num_threads(max(1, threads))
    cases = read_cases(inputs["cases"])
    genes = read_genes(inputs["genes"])
    real, _ = read_expression(inputs["real"], genes)
    synth, _ = read_expression(inputs["synthesized"], genes)
    test = list(cases.index[cases.split == params["split"]])
    if not test:
        raise ValueError(f"round trip: no {params['split']} case in {inputs['cases']}")
    p = params["patches"]
    weights = inputs.get("encoder") or None
    if isinstance(weights, list):
        weights = weights[0] if weights else None
    weights = weights if p["encoder"] == "cohort-ssl" else p.get("uni_weights")
    encode, label = load_patch_encoder(p["encoder"], weights, _device(params),
                                       native_resolution=bool(p.get("native_resolution", False)))
    bags, kept = round_trip.generated_bags(inputs["tiles"], set(test), encode, size=int(params["patch_size"]),
                                           max_intensity=float(p["max_intensity"]), batch_size=int(p["batch_size"]))
    test = [s for s in test if s in bags]
    model, ck = synthesis.load_model(inputs["model"])
    if model.patch_proj[0].in_features != next(iter(bags.values())).shape[1]:
        raise ValueError(f"round trip: {label} embeddings of {inputs['tiles']} have dimension "
                         f"{next(iter(bags.values())).shape[1]}, the PathGen model {inputs['model']} expects "
                         f"{model.patch_proj[0].in_features}")
    n = int(params["n_draws"])
    dev = _device(params)
    x = synthesis.sample(model.to(dev), synthesis.make_ddpm(ck["hp"]), {s: torch.from_numpy(b) for s, b in bags.items()},
                         test, len(genes), n_draws=n, seed=int(params["seed"]) + 2, clip=ck["hp"].get("clip_denoised"),
                         device=dev)
    vals = pd.DataFrame(x, index=pd.Index(test, name="sample"), columns=list(genes.feature))
    meta = cases.loc[test, ["patient", "split"]].assign(source="round_trip", n_draws=n)
    seen = 0
    if inputs.get("rna_cdm_splits"):
        sp = pd.read_csv(inputs["rna_cdm_splits"], sep="\t", dtype=str).set_index("sample")
        seen = int(sp.reindex(test)["split"].isin(list(params["rna_cdm_train_splits"])).sum())
    tab = round_trip.table(real, vals, synth, genes, test, tiles_per_case=float(np.median(list(kept.values()))),
                           n_seen=seen)
    write_expression(outputs["expression"], vals, meta)
    write_table(outputs["table"], tab, index=False, float_format="%.6g")
    round_trip.plot(tab, outputs["figure"], label)
    r = tab.iloc[-1]
    logging.getLogger(__name__).info("round trip, %d test cases: Spearman %.3f (real tiles %.3f), MAE %.3f (%.3f)",
                                     len(test), r.spearman_round_trip, r.spearman_real_tiles, r.mae_round_trip,
                                     r.mae_real_tiles)
