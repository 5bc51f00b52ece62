"""Round trip expression -> tiles -> expression (issue 7 item 10; none of the papers measures this).

RNA-CDM's cascade generates tiles from the PathGen test cases' expression (rule
``generate_pathgen_round_trip_tiles``, which runs RNA-CDM's own generation step); here those
tiles go through the same patch encoder as the real patches (resized to the patch preset's
size, bright tiles dropped with the same threshold), and PathGen's sampler turns each case's
bag of generated-tile embeddings back into the six gene groups.  The table puts, per gene group
and over all genes, the Spearman correlation and MAE of the round-tripped expression against the
input (real) expression next to PathGen from the case's real slide patches
(``synthesized.tsv.gz``) on the same cases: how much of the input expression survives the trip.

``results/pathgen/round_trip.tsv`` columns: ``group``, ``n_genes``, ``n_cases``,
``spearman_round_trip``, ``mae_round_trip`` (round trip vs input), ``spearman_real_tiles``,
``mae_real_tiles`` (PathGen from the real slide vs the same input), ``tiles_per_case`` (median
generated tiles kept per case), ``n_seen_by_rna_cdm`` (cases whose tiles trained RNA-CDM:
their expression -> tile map was fitted on them).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


class RoundTripError(ValueError):
    """Bad round-trip input; the message names the file."""


def generated_bags(lmdb_path, samples, encode, *, size: int, max_intensity: float, batch_size: int = 64):
    """``(sample -> (n, d) float32 embeddings, sample -> tiles kept)`` for the generated tiles of
    ``samples`` in ``lmdb_path``: each tile resized to ``size`` px (bilinear) and dropped when
    its mean intensity in [0, 1] exceeds ``max_intensity`` (PathGen Methods 3.1)."""
    from PIL import Image

    from crossmodal.data import TileDataset

    ds = TileDataset([str(lmdb_path)])
    by_sample: dict[str, list[np.ndarray]] = {}
    n_bright = 0
    for i in range(len(ds)):
        s = str(ds.meta(i).get("sample", ""))
        if s not in samples:
            continue
        rgb = ds[i]
        if rgb.shape[0] != size or rgb.shape[1] != size:
            rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
        if rgb.mean() / 255.0 > max_intensity:
            n_bright += 1
            continue
        by_sample.setdefault(s, []).append(rgb)
    ds.close()
    missing = [s for s in samples if s not in by_sample]
    if len(missing) == len(samples):
        raise RoundTripError(f"round trip: generated tiles {lmdb_path} hold no usable tile of the "
                             f"{len(samples)} PathGen test case(s) ({n_bright} too bright)")
    if missing:
        log.warning("round trip: %d case(s) without a usable generated tile in %s: %s", len(missing), lmdb_path,
                    ", ".join(missing[:10]))
    bags = {s: encode(np.stack(t), batch_size).astype(np.float32) for s, t in by_sample.items()}
    return bags, {s: len(t) for s, t in by_sample.items()}


def table(real: pd.DataFrame, round_trip: pd.DataFrame, from_real_tiles: pd.DataFrame, genes: pd.DataFrame,
          samples, *, tiles_per_case: float, n_seen: int) -> pd.DataFrame:
    """One row per gene group plus ``all genes`` (see the module docstring for the columns)."""
    from crossmodal.pathgen.evaluate import table2

    rt = table2(real, round_trip, genes, samples).set_index("group")
    rl = table2(real, from_real_tiles, genes, samples).set_index("group")
    out = pd.DataFrame({"group": rt.index, "n_genes": rt.n_genes.to_numpy(), "n_cases": rt.n_cases.to_numpy(),
                        "spearman_round_trip": rt.spearman.to_numpy(), "mae_round_trip": rt.mae.to_numpy(),
                        "spearman_real_tiles": rl.loc[rt.index, "spearman"].to_numpy(),
                        "mae_real_tiles": rl.loc[rt.index, "mae"].to_numpy()})
    return out.assign(tiles_per_case=float(tiles_per_case), n_seen_by_rna_cdm=int(n_seen))


def plot(tab: pd.DataFrame, path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.fileio import save_figure

    x = np.arange(len(tab))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, name in ((axes[0], "spearman", "Spearman ρ vs input"), (axes[1], "mae", "MAE vs input (z)")):
        ax.bar(x - 0.2, tab[f"{metric}_round_trip"], 0.4, label="round trip (RNA-CDM tiles → PathGen)")
        ax.bar(x + 0.2, tab[f"{metric}_real_tiles"], 0.4, label="PathGen from the real slide")
        ax.set_xticks(x, [g.replace("_", "\n") for g in tab.group], fontsize=7)
        ax.set_ylabel(name)
        ax.axhline(0, color="k", lw=0.6)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Expression → tiles → expression, PathGen test cases (n = {int(tab.n_cases.iloc[0])}; "
                 f"patch encoder: {label})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
