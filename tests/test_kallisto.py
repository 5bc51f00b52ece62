"""The real kallisto (pinned 0.48.0) on a tiny transcriptome with known abundances."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from crossmodal.expression import kallisto, read_kallisto_abundance
from crossmodal.expression import steps as xsteps

COMP = str.maketrans("ACGT", "TGCA")


def make_transcriptome(rng, n_genes=6):
    """Genes with 1-2 isoforms; the second isoform skips the middle exon (shared k-mers)."""
    seqs, rows = {}, []
    for g in range(n_genes):
        exons = ["".join(rng.choice(list("ACGT"), size=int(rng.integers(200, 400)))) for _ in range(3)]
        iso = [exons[0] + exons[1] + exons[2]] + ([exons[0] + exons[2]] if g % 2 == 0 else [])
        for k, s in enumerate(iso):
            tid = f"ENST{g:05d}{k}.1"
            seqs[tid] = s
            rows.append((tid, f"ENSG{g:05d}.3", f"GENE{g}"))
    return seqs, pd.DataFrame(rows, columns=["transcript_id", "gene_id", "gene_name"])


def simulate(rng, seqs, reads_per_tx, L=75, mu=200, sd=20):
    out = []
    for tid, n in reads_per_tx.items():
        s = seqs[tid]
        for _ in range(n):
            f = int(np.clip(rng.normal(mu, sd), L, len(s)))
            st = int(rng.integers(0, len(s) - f + 1))
            frag = s[st:st + f]
            r = frag[:L] if rng.random() < 0.5 else frag[::-1].translate(COMP)[:L]
            out.append(f"@{tid}.{len(out)}\n{r}\n+\n{'I' * L}\n")
    order = rng.permutation(len(out))
    return "".join(out[i] for i in order)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("kallisto")
    rng = np.random.default_rng(7)
    seqs, t2g = make_transcriptome(rng)
    (d / "tx.fa").write_text("".join(f">{t}\n{s}\n" for t, s in seqs.items()))
    t2g.to_csv(d / "t2g.tsv", sep="\t", index=False)
    # abundances over two orders of magnitude, known per transcript
    truth = {t: int(n) for t, n in zip(seqs, np.geomspace(20, 2000, len(seqs)).round().astype(int)[rng.permutation(len(seqs))])}
    (d / "reads.fastq.gz").write_bytes(gzip.compress(simulate(rng, seqs, truth).encode()))
    return d, truth


def test_index_and_quant_recover_known_abundances(tiny, tmp_path):
    d, truth = tiny
    idx = tmp_path / "index.idx"
    xsteps.build_kallisto_index({"fasta": str(d / "tx.fa")}, {"index": str(idx)}, {"kmer": 31, "version": "0.48.0"})
    assert idx.stat().st_size > 0
    out = {"abundance": str(tmp_path / "q/abundance.tsv"), "run_info": str(tmp_path / "q/run_info.json")}
    xsteps.quantify_kallisto({"index": str(idx), "fastq": str(d / "reads.fastq.gz")}, out,
                             {"fragment_length": 200, "fragment_sd": 20, "seed": 0, "version": "0.48.0"})
    info = json.loads(open(out["run_info"]).read())
    assert info["n_processed"] == sum(truth.values()) and info["p_pseudoaligned"] > 95
    ab = pd.read_csv(out["abundance"], sep="\t", index_col="target_id")
    rho = spearmanr([truth[t] for t in ab.index], ab["est_counts"]).statistic
    assert rho > 0.9, rho
    genes = read_kallisto_abundance(out["abundance"], d / "t2g.tsv")
    t2g = pd.read_csv(d / "t2g.tsv", sep="\t").set_index("transcript_id")
    true_gene = pd.Series(truth).groupby(t2g.loc[list(truth), "gene_name"].to_numpy()).sum()
    assert spearmanr(true_gene.reindex(genes.index), genes).statistic > 0.9
    assert genes.sum() == pytest.approx(sum(truth.values()), rel=0.05)
    assert not list(tmp_path.glob("q/.tmp-*"))       # the temporary run folder is gone


def test_version_pin_mismatch_is_a_clear_error(tiny, tmp_path):
    d, _ = tiny
    assert kallisto.kallisto_version() == "0.48.0"
    with pytest.raises(kallisto.KallistoError, match=r"kallisto 0\.48\.0 found but 0\.50\.1 is pinned.*not compatible"):
        kallisto.build_index(d / "tx.fa", tmp_path / "i.idx", version="0.50.1")
    assert not (tmp_path / "i.idx").exists()


def test_bad_inputs_named(tmp_path):
    (tmp_path / "x.fa").write_text("not a fasta\n")
    with pytest.raises(kallisto.KallistoError, match=r"x\.fa: not a FASTA file"):
        kallisto.build_index(tmp_path / "x.fa", tmp_path / "i.idx")
    with pytest.raises(kallisto.KallistoError, match=r"missing\.fastq\.gz: FASTQ file not found"):
        kallisto.quant_single(tmp_path / "i.idx", tmp_path / "missing.fastq.gz", tmp_path / "a.tsv",
                              fragment_length=200, fragment_sd=20)


def test_truncated_fastq_is_refused_before_kallisto_runs(tiny, tmp_path):
    """kallisto quantified a FASTQ.gz cut in half without complaint (half the reads); a plain
    FASTQ cut inside a record was taken too.  Both are refused naming the file, nothing written."""
    d, truth = tiny
    raw = (d / "reads.fastq.gz").read_bytes()
    (tmp_path / "half.fastq.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "bad.fastq.gz").write_bytes(raw[:20] + b"\x00" * 64 + raw[84:])
    text = gzip.decompress(raw)
    cut = text.index(b"\n", text.index(b"\n@", len(text) // 2) + 1) + 1  # after a record's header line
    (tmp_path / "cut.fq").write_bytes(text[:cut])
    (tmp_path / "nonl.fq").write_bytes(text[:-1])  # complete, last newline missing: fine
    out = tmp_path / "q" / "abundance.tsv"
    for name, match in [("half.fastq.gz", "gzip stream truncated or corrupt .EOFError"),
                        ("bad.fastq.gz", "gzip stream truncated or corrupt"),
                        ("cut.fq", "ends inside a record")]:
        with pytest.raises(kallisto.KallistoError, match=rf"{name}: FASTQ {match}"):
            kallisto.quant_single(tmp_path / "i.idx", [d / "reads.fastq.gz", tmp_path / name], out,
                                  fragment_length=200, fragment_sd=20)
    assert not out.parent.exists() or not list(out.parent.iterdir())
    assert kallisto.check_fastq(d / "reads.fastq.gz") == sum(truth.values())
    assert kallisto.check_fastq(tmp_path / "nonl.fq") == sum(truth.values())


def test_gencode_headers_map_to_genes(tiny, tmp_path):
    """An index built from GENCODE's transcripts.fa names targets by the whole header
    (``ENST...|ENSG...|-|-|NAME-201|NAME|len|biotype|``: kallisto 0.48 cuts at the first blank
    only); the gene table keys plain transcript ids, which must still match."""
    d, truth = tiny
    t2g = pd.read_csv(d / "t2g.tsv", sep="\t").set_index("transcript_id")
    fa = []
    for block in (d / "tx.fa").read_text().split(">")[1:]:
        tid, seq = block.split("\n", 1)
        g = t2g.loc[tid]
        fa.append(f">{tid}|{g.gene_id}|-|-|{g.gene_name}-201|{g.gene_name}|{len(seq.strip())}|protein_coding|\n{seq}")
    (tmp_path / "gencode.fa").write_text("".join(fa))
    kallisto.build_index(tmp_path / "gencode.fa", tmp_path / "g.idx")
    kallisto.quant_single(tmp_path / "g.idx", d / "reads.fastq.gz", tmp_path / "q/abundance.tsv",
                          fragment_length=200, fragment_sd=20)
    ab = pd.read_csv(tmp_path / "q/abundance.tsv", sep="\t")
    assert ab["target_id"].str.contains(r"^ENST\d+\.\d\|ENSG", regex=True).all()   # whole headers
    genes = read_kallisto_abundance(tmp_path / "q/abundance.tsv", d / "t2g.tsv")
    assert sorted(genes.index) == sorted(t2g["gene_name"].unique())
    assert genes.sum() == pytest.approx(ab["est_counts"].sum())
    # a gene table without transcript versions matches too
    t2g.reset_index().assign(transcript_id=lambda x: x.transcript_id.str.replace(r"\.\d+$", "", regex=True)) \
        .to_csv(tmp_path / "t2g_nover.tsv", sep="\t", index=False)
    pd.testing.assert_series_equal(read_kallisto_abundance(tmp_path / "q/abundance.tsv", tmp_path / "t2g_nover.tsv"), genes)
