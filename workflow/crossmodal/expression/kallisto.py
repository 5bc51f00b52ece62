"""The real kallisto: index a transcriptome, quantify single-end FASTQ.

RNA-CDM Methods ("Data processing"): reads "aligned to the human transcriptome and quantified
using the Kallisto-Sleuth algorithm".  kallisto indices are not portable across versions, so
the version is pinned (``expression.kallisto.version``) and checked before every call.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

from crossmodal.fileio import atomic_path

log = logging.getLogger(__name__)


class KallistoError(RuntimeError):
    pass


def kallisto_version(exe: str = "kallisto") -> str:
    path = shutil.which(exe)
    if path is None:
        raise KallistoError(f"kallisto not found on PATH ({exe!r}); install it (Debian: apt-get install "
                            "kallisto; or the conda env envs/kallisto.yaml)")
    p = subprocess.run([path, "version"], capture_output=True, text=True)
    m = re.search(r"version\s+(\S+)", p.stdout + p.stderr)
    if not m:
        raise KallistoError(f"cannot parse `kallisto version` output: {(p.stdout + p.stderr)[:200]!r}")
    return m.group(1)


def check_version(expected: str, exe: str = "kallisto") -> str:
    """Fail unless the installed kallisto is ``expected`` (indices are not portable)."""
    found = kallisto_version(exe)
    if found != expected:
        raise KallistoError(f"kallisto {found} found but {expected} is pinned (expression.kallisto.version): "
                            "kallisto indices are not compatible across versions; install "
                            f"{expected} or rebuild everything with the new version pinned")
    return found


def _run(cmd: list[str], what: str) -> str:
    log.info("running: %s", " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.stderr:
        log.info("kallisto says:\n%s", p.stderr.strip())
    if p.returncode != 0:
        raise KallistoError(f"{what} failed (exit {p.returncode}): {p.stderr.strip()[-1000:]}")
    return p.stderr


def build_index(fasta, index, *, kmer: int = 31, version: str = "0.48.0", exe: str = "kallisto") -> None:
    """``kallisto index`` of ``fasta`` into ``index`` (written atomically)."""
    fasta = Path(fasta)
    if not fasta.exists():
        raise KallistoError(f"{fasta}: transcriptome FASTA not found (expression.kallisto.transcriptome)")
    head = fasta.read_bytes()[:1]
    if head not in (b">", b"\x1f"):
        raise KallistoError(f"{fasta}: not a FASTA file (does not start with '>')")
    check_version(version, exe)
    with atomic_path(index) as tmp:
        _run([exe, "index", "-k", str(kmer), "-i", str(tmp), str(fasta)], f"kallisto index of {fasta}")


def check_fastq(path, chunk: int = 1 << 20) -> int:
    """Number of reads in FASTQ ``path`` (plain or gzip); :class:`KallistoError` naming the file
    when it is truncated.

    kallisto quantifies a half-downloaded or half-copied FASTQ without complaint (it reads to
    the end of the gzip data it gets), silently counting half the library.  The file is
    streamed once (1 MiB at a time; memory does not grow with the file): a gzip stream that
    ends early raises ``EOFError`` and a damaged one ``BadGzipFile`` / ``zlib.error``; a plain
    or gzip FASTQ cut inside a record leaves a line count that is not a multiple of 4.  A cut
    exactly at a record boundary of a plain file cannot be told from a shorter library.
    Cost: one decompression pass, as long as ``gzip -t`` (measured ~1 s per 125 MB of FASTQ
    text, 22 MB of ``.fastq.gz``, on one core), a fraction of kallisto's own pass over the reads.
    """
    path = Path(path)
    if not path.is_file():
        raise KallistoError(f"{path}: FASTQ file not found (or not a regular file)")
    lines, last, gz = 0, b"\n", False
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            while block := f.read(chunk):
                lines += block.count(b"\n")
                last = block[-1:]
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise KallistoError(f"{path}: FASTQ {'gzip stream ' if gz else ''}truncated or corrupt "
                            f"({type(e).__name__}: {e}); a partial download or copy?") from None
    if last != b"\n":
        lines += 1  # a last line without its newline
    if lines % 4:
        raise KallistoError(f"{path}: FASTQ ends inside a record ({lines} lines, not a multiple of 4); "
                            "a truncated file?")
    return lines // 4


def quant_single(index, fastqs, abundance_out, *, fragment_length: float, fragment_sd: float,
                 threads: int = 1, seed: int = 0, version: str = "0.48.0", run_info_out=None,
                 exe: str = "kallisto") -> dict:
    """``kallisto quant --single`` of ``fastqs`` -> ``abundance_out`` (+ run_info.json).

    Every FASTQ is first checked to be complete (:func:`check_fastq`).  Runs in a temporary
    folder beside the output, so a failed run leaves nothing behind.  Returns kallisto's run info (reads processed, pseudoaligned, ...).
    """
    fastqs = [fastqs] if isinstance(fastqs, (str, Path)) else list(fastqs)
    for fq in fastqs:
        if not Path(fq).exists():
            raise KallistoError(f"{fq}: FASTQ file not found")
    for fq in fastqs:
        check_fastq(fq)
    check_version(version, exe)
    out = Path(abundance_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-kallisto-", dir=out.parent) as tmp:
        _run([exe, "quant", "-i", str(index), "-o", tmp, "--single", "-l", str(fragment_length),
              "-s", str(fragment_sd), "-t", str(threads), "--seed", str(seed), *map(str, fastqs)],
             f"kallisto quant of {', '.join(map(str, fastqs))}")
        info = json.loads((Path(tmp) / "run_info.json").read_text())
        if run_info_out:
            with atomic_path(run_info_out) as t:
                shutil.copyfile(Path(tmp) / "run_info.json", t)
        with atomic_path(out) as t:
            shutil.copyfile(Path(tmp) / "abundance.tsv", t)
    log.info("kallisto: %s reads processed, %s pseudoaligned (%.1f%%)", info.get("n_processed"),
             info.get("n_pseudoaligned"), info.get("p_pseudoaligned", float("nan")))
    return info
