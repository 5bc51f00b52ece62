"""Readers for the expression formats real data arrive in.

Every reader returns genes identified by **symbol** (``gene_name``), with Ensembl version
suffixes stripped from any id it keeps, and validates what it reads.  Bad input raises
:class:`ExpressionInputError` whose message names the file (and the sample or gene):

- wrong layout (missing header / columns, wrong GCT dimensions, no series-matrix table);
- NaN or non-numeric values (``nan_policy="error"``, the default; ``"drop_gene"`` drops the
  genes instead, as RNA-CDM Methods "Data processing" does: "NaN values were removed");
- infinite values (``inf``, or a number too large for a float such as ``1e400``), whatever the
  NaN policy;
- negative counts;
- duplicated gene symbols: **summed** (counts of one symbol split over several Ensembl ids,
  e.g. the PAR_Y copies in GENCODE, belong to one gene), or an error with
  ``duplicates="error"``.

Formats:

- GDC STAR-counts TSV (``*.rna_seq.augmented_star_gene_counts.tsv``): ``# gene-model`` comment,
  header ``gene_id gene_name gene_type unstranded ...``, four ``N_*`` STAR summary rows;
- GTEx GCT v1.2 (``#1.2``, a dimensions line, ``Name`` / ``Description`` + one column per sample);
- GEO series matrix (``!Sample_*`` lines, table between ``!series_matrix_table_begin`` / ``_end``);
- kallisto ``abundance.tsv`` (``target_id length eff_length est_counts tpm``; target ids may be
  whole GENCODE FASTA headers, ``ENST...|ENSG...|...|``) + a transcript-to-gene table.
"""
from __future__ import annotations

import gzip
import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

STAR_COLUMNS = ["gene_id", "gene_name", "gene_type", "unstranded", "stranded_first",
                "stranded_second", "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded"]
KALLISTO_COLUMNS = ["target_id", "length", "eff_length", "est_counts", "tpm"]
_NAN_TOKENS = ["", "NA", "NaN", "nan", "null", "NULL", "N/A"]
_VERSION = re.compile(r"\.\d+(_PAR_Y)?$")


class ExpressionInputError(ValueError):
    """An expression file that cannot be used; the message names the file."""


def strip_version(ids) -> pd.Index:
    """``ENSG00000141510.17`` -> ``ENSG00000141510`` (``_PAR_Y`` ids keep their suffix)."""
    return pd.Index([_VERSION.sub(lambda m: m.group(1) or "", str(i)) for i in ids])


def _open_text(path: Path) -> str:
    if not path.exists():
        raise ExpressionInputError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ExpressionInputError(f"{path}: corrupt gzip file ({e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ExpressionInputError(f"{path}: not a text file") from None


def _numeric(df: pd.DataFrame, path, *, nan_policy: str = "error", counts: bool = True) -> pd.DataFrame:
    """Coerce to float; apply the NaN policy; reject negative values (counts).

    Columns already numeric (parsed by pandas) are taken as they are; the others are checked
    value by value so that a bad value is named."""
    from pandas.api.types import is_numeric_dtype

    text_cols = [c for c in df.columns if not is_numeric_dtype(df[c])]
    if text_cols:
        txt = df[text_cols].replace({t: np.nan for t in _NAN_TOKENS})
        conv = txt.apply(pd.to_numeric, errors="coerce")
        bad = conv.isna() & txt.notna() & (txt.astype(str).apply(lambda c: c.str.strip()) != "")
        if bad.to_numpy().any():
            r, c = np.argwhere(bad.to_numpy())[0]
            raise ExpressionInputError(f"{path}: non-numeric value {txt.iat[r, c]!r} for gene "
                                       f"{txt.index[r]} in column {txt.columns[c]}")
        num = df.copy() if len(text_cols) < df.shape[1] else conv
        if len(text_cols) < df.shape[1]:
            num[text_cols] = conv
    else:
        num = df
    num = num.astype(float)  # a lazy copy under pandas copy-on-write
    inf = np.isinf(num.to_numpy())
    if inf.any():  # "inf", "1e400" (overflows to inf) or a parsed inf: never a count or a level
        r, c = np.argwhere(inf)[0]
        raise ExpressionInputError(f"{path}: non-finite value {num.iat[r, c]} for gene {num.index[r]} "
                                   f"in column {num.columns[c]}; {int(inf.any(axis=1).sum())} gene(s) affected")
    nan = num.isna().any(axis=1)
    if nan.any():
        genes = list(num.index[nan])
        if nan_policy == "error":
            raise ExpressionInputError(
                f"{path}: {len(genes)} gene(s) with missing (NaN) values, e.g. {', '.join(map(str, genes[:5]))} "
                "(set expression.nan_policy: drop_gene to drop them, as RNA-CDM does)")
        if nan_policy != "drop_gene":
            raise ValueError(f"unknown nan_policy {nan_policy!r}")
        log.warning("%s: dropping %d gene(s) with NaN values (nan_policy=drop_gene)", path, len(genes))
        num = num.loc[~nan]
    if counts:
        neg = (num < 0).any(axis=1)
        if neg.any():
            g = num.index[neg][0]
            col = num.columns[(num.loc[[g]] < 0).to_numpy()[0]][0]
            raise ExpressionInputError(f"{path}: negative count {num.at[g, col]} for gene {g} "
                                       f"(column {col}); {int(neg.sum())} gene(s) affected")
    return num


def collapse_duplicates(df, path, *, duplicates: str = "sum"):
    """Sum rows sharing a gene symbol (``duplicates="sum"``) or fail (``"error"``)."""
    dup = df.index.duplicated(keep=False)
    if not dup.any():
        return df
    names = sorted(set(df.index[dup]))
    if duplicates == "error":
        raise ExpressionInputError(f"{path}: duplicated gene symbol(s) {', '.join(names[:10])}"
                                   f"{' ...' if len(names) > 10 else ''} (expression.duplicates: error)")
    if duplicates != "sum":
        raise ValueError(f"unknown duplicates policy {duplicates!r}")
    log.info("%s: summing %d duplicated gene symbol(s), e.g. %s", path, len(names), ", ".join(names[:5]))
    return df.groupby(level=0, sort=False).sum()


def _check_symbols(index, path) -> None:
    empty = pd.Series(index).astype(str).str.strip().isin(["", "nan"])
    if empty.any():
        raise ExpressionInputError(f"{path}: {int(empty.sum())} row(s) without a gene symbol")


def read_star_table(path) -> pd.DataFrame:
    """The gene rows of a GDC STAR-counts TSV as a table (``N_*`` rows dropped, ids unversioned)."""
    path = Path(path)
    text = _open_text(path)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#") and ln.strip()]
    if not lines or lines[0].split("\t")[:4] != STAR_COLUMNS[:4]:
        raise ExpressionInputError(
            f"{path}: not a GDC STAR-counts TSV (expected a header starting "
            f"{' '.join(STAR_COLUMNS[:4])}, got {lines[0][:80] if lines else 'an empty file'!r})")
    df = pd.read_csv(io.StringIO("\n".join(lines)), sep="\t", dtype=str, keep_default_na=False)
    df = df[~df["gene_id"].str.startswith("N_")]
    if df.empty:
        raise ExpressionInputError(f"{path}: STAR-counts TSV has no gene rows")
    df["gene_id"] = strip_version(df["gene_id"])
    return df


def read_star_counts(path, *, column: str = "unstranded", nan_policy: str = "error",
                     duplicates: str = "sum") -> pd.Series:
    """One sample's GDC STAR-counts TSV -> counts per gene symbol (``column``, default unstranded)."""
    df = read_star_table(path)
    if column not in df.columns:
        raise ExpressionInputError(f"{path}: no column {column!r} (columns: {', '.join(df.columns)})")
    _check_symbols(df["gene_name"], path)
    vals = df[["gene_name", column]].set_index("gene_name").replace({"": np.nan})
    num = _numeric(vals, path, nan_policy=nan_policy)
    num = collapse_duplicates(num, path, duplicates=duplicates)
    s = num[column].rename(None)
    s.index.name = "gene"
    return s


def _open_stream(path: Path):
    """A text stream of ``path`` (gunzipped when it starts with the gzip magic)."""
    if not path.exists():
        raise ExpressionInputError(f"{path}: file not found")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


def read_gct(path, *, nan_policy: str = "error", duplicates: str = "sum") -> pd.DataFrame:
    """GTEx GCT v1.2 -> genes (symbol, from ``Description``) x samples.

    Values are parsed straight to float by pandas' C parser (a GTEx v8 GCT of one tissue set
    is ~56,000 genes x ~1,000+ samples: reading every cell as a Python string first needs
    several GB per copy); only a column that is not numeric goes through the string checks
    that name the bad value.
    """
    path = Path(path)
    try:
        with _open_stream(path) as f:
            head = [f.readline().rstrip("\r\n") for _ in range(3)]
            if not head[0].startswith("#1.") or not head[2]:
                raise ExpressionInputError(f"{path}: not a GCT file (first line must be '#1.2', got {head[0][:40]!r})")
            try:
                n_rows, n_cols = (int(x) for x in head[1].split("\t")[:2])
            except ValueError:
                raise ExpressionInputError(f"{path}: GCT dimensions line {head[1][:40]!r} is not two integers") from None
            cols = head[2].split("\t")
            if cols[:2] != ["Name", "Description"]:
                raise ExpressionInputError(f"{path}: GCT header must start with Name, Description (got {cols[:2]})")
            dups = sorted({c for c in cols if cols.count(c) > 1})
            if dups:
                raise ExpressionInputError(f"{path}: duplicated sample column(s) {', '.join(dups)}")
            df = pd.read_csv(f, sep="\t", header=None, names=cols, index_col=False,
                             dtype={"Name": str, "Description": str}, keep_default_na=False,
                             na_values={c: _NAN_TOKENS for c in cols[2:]}, low_memory=False)
    except UnicodeDecodeError:
        raise ExpressionInputError(f"{path}: not a text file") from None
    except (OSError, EOFError) as e:
        raise ExpressionInputError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    except (pd.errors.ParserError, ValueError) as e:
        if isinstance(e, ExpressionInputError):
            raise
        raise ExpressionInputError(f"{path}: malformed GCT table ({e})") from None
    if df.shape[0] != n_rows or df.shape[1] - 2 != n_cols:
        raise ExpressionInputError(f"{path}: GCT declares {n_rows} genes x {n_cols} samples but holds "
                                   f"{df.shape[0]} x {df.shape[1] - 2}")
    _check_symbols(df["Description"], path)
    vals = df.drop(columns=["Name"]).set_index("Description")
    del df
    num = collapse_duplicates(_numeric(vals, path, nan_policy=nan_policy), path, duplicates=duplicates)
    num.index.name = "gene"
    num.columns.name = "sample"
    return num


def read_geo_series_matrix(path, *, nan_policy: str = "error", duplicates: str = "sum"):
    """GEO series matrix -> ``(genes x samples matrix, sample characteristics)``.

    ``ID_REF`` must hold gene symbols.  The characteristics table is indexed by the sample
    accession (``!Sample_geo_accession``) and has one column per ``!Sample_*`` field, with
    ``!Sample_characteristics_ch1`` lines of the form ``key: value`` split into columns ``key``.
    """
    path = Path(path)
    text = _open_text(path)
    lines = text.splitlines()
    try:
        b = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "!series_matrix_table_begin")
        e = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "!series_matrix_table_end")
    except StopIteration:
        raise ExpressionInputError(f"{path}: not a GEO series matrix (no !series_matrix_table_begin/end lines)") from None
    fields: dict[str, list[str]] = {}
    chars: dict[str, list[str]] = {}
    for ln in lines[:b]:
        if not ln.startswith("!Sample_"):
            continue
        key, *vals = ln.split("\t")
        vals = [v.strip().strip('"') for v in vals]
        key = key[len("!Sample_"):]
        if key.startswith("characteristics"):
            if vals and all(": " in v for v in vals if v):
                name = vals[0].split(": ", 1)[0] if vals[0] else key
                chars[name] = [v.split(": ", 1)[1] if v else "" for v in vals]
            else:
                chars[f"{key}_{len(chars)}"] = vals
        elif key not in fields:
            fields[key] = vals
    table = "\n".join(lines[b + 1:e])
    df = pd.read_csv(io.StringIO(table), sep="\t", dtype=str, keep_default_na=False, quotechar='"')
    if df.empty or df.columns[0] != "ID_REF":
        raise ExpressionInputError(f"{path}: series-matrix table must start with an ID_REF column")
    df = df.set_index("ID_REF")
    _check_symbols(df.index, path)
    dups = df.columns[df.columns.duplicated()]
    if len(dups):
        raise ExpressionInputError(f"{path}: duplicated sample column(s) {', '.join(dups)}")
    vals = df
    num = collapse_duplicates(_numeric(vals, path, nan_policy=nan_policy), path, duplicates=duplicates)
    num.index.name = "gene"
    num.columns.name = "sample"
    acc = fields.get("geo_accession", list(num.columns))
    meta = pd.DataFrame({**fields, **chars})
    if len(meta) == len(acc):
        meta.index = pd.Index(acc, name="sample")
    else:
        meta = pd.DataFrame(index=pd.Index(num.columns, name="sample"))
    return num, meta


def read_t2g(t2g) -> pd.DataFrame:
    """Transcript-to-gene table (``transcript_id gene_id gene_name``; header optional)."""
    if isinstance(t2g, pd.DataFrame):
        df = t2g.copy()
    else:
        path = Path(t2g)
        if not path.exists():
            raise ExpressionInputError(f"{path}: transcript-to-gene table not found")
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, header=None)
        if df.shape[1] < 3:
            raise ExpressionInputError(f"{path}: transcript-to-gene table needs 3 columns "
                                       "(transcript_id, gene_id, gene_name)")
        if df.iloc[0, 0] == "transcript_id":
            df = df.iloc[1:]
        df = df.iloc[:, :3]
        df.columns = ["transcript_id", "gene_id", "gene_name"]
    df = df[["transcript_id", "gene_id", "gene_name"]].copy()
    df["gene_id"] = strip_version(df["gene_id"])
    return df.drop_duplicates("transcript_id").set_index("transcript_id")


def transcript_gene_names(target_ids, tg: pd.DataFrame) -> pd.Series:
    """Gene symbol of each kallisto ``target_id`` (NaN where ``tg`` has none).

    kallisto names a target by its FASTA header up to the first blank, so an index built from
    GENCODE's ``gencode.vXX.transcripts.fa`` reports whole headers
    (``ENST00000456328.2|ENSG00000290825.1|-|-|DDX11L2-202|DDX11L2|1657|lncRNA|``; kallisto
    0.48 has no option to shorten them).  The transcript id is the header's first ``|`` field;
    a version suffix present on one side only (``ENST...`` vs ``ENST....2``) is tolerated.
    """
    ids = pd.Index([str(t).split("|", 1)[0] for t in target_ids])
    exact = tg["gene_name"]
    out = pd.Series(exact.reindex(ids).to_numpy(), index=pd.Index(target_ids))
    if out.isna().any():
        bare = exact.groupby(strip_version(exact.index)).agg(lambda g: g.iloc[0] if g.nunique() == 1 else np.nan)
        fill = bare.reindex(strip_version(ids)).to_numpy()
        out = out.where(out.notna(), pd.Series(fill, index=out.index))
    return out


def read_kallisto_abundance(path, t2g, *, value: str | None = "est_counts",
                            nan_policy: str = "error") -> pd.Series | pd.DataFrame:
    """kallisto ``abundance.tsv`` -> per-gene sums of ``est_counts`` and ``tpm`` over transcripts.

    ``value`` picks one column as a Series (``est_counts`` or ``tpm``); ``None`` returns both
    as a DataFrame.  Transcripts are mapped to symbols with ``t2g`` (path or table); a
    transcript missing from ``t2g`` is an error naming it.
    """
    path = Path(path)
    text = _open_text(path)
    df = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    if list(df.columns) != KALLISTO_COLUMNS:
        raise ExpressionInputError(f"{path}: not a kallisto abundance.tsv (expected columns "
                                   f"{' '.join(KALLISTO_COLUMNS)}, got {' '.join(map(str, df.columns))})")
    tg = read_t2g(t2g)
    vals = df.set_index("target_id")[["est_counts", "tpm"]].replace({"": np.nan})
    num = _numeric(vals, path, nan_policy=nan_policy)
    names = transcript_gene_names(num.index, tg)
    missing = num.index[names.isna().to_numpy()]
    if len(missing):
        raise ExpressionInputError(f"{path}: {len(missing)} transcript(s) not in the transcript-to-gene "
                                   f"table, e.g. {', '.join(missing[:5])}")
    num.index = pd.Index(names.to_numpy(), name="gene")
    out = num.groupby(level=0, sort=True).sum()
    if value is None:
        return out
    if value not in out.columns:
        raise ValueError(f"value must be est_counts, tpm or None, got {value!r}")
    return out[value].rename(None)
