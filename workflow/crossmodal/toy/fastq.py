"""A small transcriptome and single-end FASTQ reads with known abundances (for kallisto).

Each gene gets 3-6 random exons; transcript 1 joins all of them and further isoforms skip
one internal exon (so isoforms share k-mers and quantification must resolve them, as with
real alternative splicing).  Reads are drawn from fragments of Normal length, from either
strand, with uniform substitution errors.  The true TPM of each transcript in each sample
is written to ``results/toy/truth/fastq_abundance.tsv``.
"""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd

from crossmodal.fileio import atomic_path, write_text
from crossmodal.toy.model import rng_for

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_COMP = np.zeros(256, dtype=np.uint8)
for a, b in zip(b"ACGTN", b"TGCAN"):
    _COMP[a] = b


def build_transcriptome(genes: pd.DataFrame, toy: dict, seed: int):
    """``(transcripts table, {transcript_id: sequence bytes})`` for ``fastq_genes`` genes."""
    rng = rng_for(seed, "transcriptome")
    pc = genes[genes["gene_type"] == "protein_coding"]
    # prefer reasonably expressed genes so every gene gets reads
    order = pc.sort_values("baseline", ascending=False).index[: max(toy["fastq_genes"] * 3, toy["fastq_genes"])]
    chosen = sorted(rng.choice(order, size=min(toy["fastq_genes"], len(order)), replace=False))
    rows, seqs = [], {}
    t = 0
    for gi in chosen:
        n_exons = int(rng.integers(3, 7))
        exons = [BASES[rng.integers(0, 4, int(rng.integers(120, 400)))] for _ in range(n_exons)]
        n_iso = int(rng.integers(1, 4))
        skips = [None] + list(rng.choice(np.arange(1, n_exons - 1), size=min(n_iso - 1, n_exons - 2), replace=False))
        props = rng.dirichlet(np.full(len(skips), 2.0))
        for skip, p in zip(skips, props):
            t += 1
            tid = f"ENST99{t:09d}.1"
            seq = np.concatenate([e for k, e in enumerate(exons) if k != skip])
            seqs[tid] = seq
            rows.append(dict(transcript_id=tid, gene_id=genes.at[gi, "gene_id"],
                             gene_name=genes.at[gi, "gene"], length=len(seq), isoform_share=p))
    return pd.DataFrame(rows), seqs


def fasta_text(seqs: dict) -> str:
    out = []
    for tid, seq in seqs.items():
        s = seq.tobytes().decode()
        out.append(f">{tid}\n" + "\n".join(s[i:i + 60] for i in range(0, len(s), 60)))
    return "\n".join(out) + "\n"


def abundances(tx: pd.DataFrame, genes: pd.DataFrame, rate_of_sample: np.ndarray, toy: dict,
               rng: np.random.Generator):
    """True TPM and read counts per transcript for one sample (gene rates -> molecules)."""
    gidx = {g: i for i, g in enumerate(genes["gene_id"])}
    molecules = np.array([rate_of_sample[gidx[g]] for g in tx["gene_id"]]) * tx["isoform_share"].to_numpy()
    tpm = molecules / molecules.sum() * 1e6
    eff = np.maximum(tx["length"].to_numpy() - toy["fragment_length"][0] + 1, 1)
    p = molecules * eff
    reads = rng.multinomial(toy["fastq_reads"], p / p.sum())
    return tpm, reads


def simulate_reads(seqs: dict, tx: pd.DataFrame, reads: np.ndarray, toy: dict,
                   rng: np.random.Generator, name: str) -> bytes:
    """FASTQ text (bytes) of ``reads[i]`` reads from transcript ``i``, shuffled."""
    L = toy["read_length"]
    mu, sd = toy["fragment_length"]
    ids = list(tx["transcript_id"])
    cat = np.concatenate([seqs[t] for t in ids])
    starts = np.concatenate([[0], np.cumsum([len(seqs[t]) for t in ids])[:-1]])
    lens = tx["length"].to_numpy()
    which = np.repeat(np.arange(len(ids)), reads)
    which = which[rng.permutation(len(which))]
    tl = lens[which]
    frag = np.clip(np.round(rng.normal(mu, sd, len(which))).astype(int), L, None)
    frag = np.minimum(frag, tl)
    fstart = (rng.random(len(which)) * (tl - frag + 1)).astype(int)
    reverse = rng.random(len(which)) < 0.5
    rstart = np.where(reverse, fstart + frag - L, fstart)
    rstart = np.clip(rstart, 0, np.maximum(tl - L, 0))
    pos = starts[which][:, None] + rstart[:, None] + np.arange(L)[None, :]
    pos = np.minimum(pos, (starts[which] + tl - 1)[:, None])
    bases = cat[pos]
    bases[reverse] = _COMP[bases[reverse][:, ::-1]]
    err = rng.random(bases.shape) < toy["error_rate"]
    bases[err] = BASES[rng.integers(0, 4, int(err.sum()))]
    # fixed-width records assembled as one byte array (no per-read Python work)
    width = len(str(len(which)))
    heads = np.array([f"@{name}.{k + 1:0{width}d} {ids[w]}" for k, w in enumerate(which)], dtype="S")
    hw = heads.dtype.itemsize
    rec = np.empty((len(which), hw + 1 + L + 3 + L + 1), dtype=np.uint8)
    rec[:, :hw] = heads.view(np.uint8).reshape(len(which), hw)
    rec[:, hw] = ord("\n")
    rec[:, hw + 1:hw + 1 + L] = bases
    rec[:, hw + 1 + L:hw + 4 + L] = np.frombuffer(b"\n+\n", np.uint8)
    rec[:, hw + 4 + L:hw + 4 + 2 * L] = ord("I")
    rec[:, -1] = ord("\n")
    return rec.tobytes()


def write_fastq_gz(path, data: bytes) -> None:
    """gzip with a fixed mtime and no file name, so the same reads give the same bytes."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=1) as gz:
            gz.write(data)


def write_transcriptome(fa_path, t2g_path, tx: pd.DataFrame, seqs: dict) -> None:
    write_text(fa_path, fasta_text(seqs))
    write_text(t2g_path, tx[["transcript_id", "gene_id", "gene_name"]].to_csv(sep="\t", index=False))
